import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Koa from 'koa';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from './config';
import type { Config } from './config';
import { RESULT_TAG, TASK_TAG } from './daemon/result';
import { rendererOptions } from './daemon/main';
import { ConfigError, RenderFarmError, errorMessage } from './errors';
import { partLogger, setLogLevel } from './logger';
import { openQueue } from './queue/open-queue';
import { checkTaskId } from './queue/queue';
import { Renderer } from './render/renderer';
import { Catalogue } from './resources/catalogue';
import {
  MAX_JSON_DEPTH,
  TASK_KIND,
  checkTask,
  jsonDepth,
} from './resources/task';
import { startSupervisor } from './supervisor/supervisor';
import { PREVIEW_PATH, Preview } from './supervisor/preview';

/** Runs the `render-farm` command line with `argv` (as in process.argv). */
export function main(argv: string[]): void {
  program()
    .parseAsync(argv)
    .catch((error: unknown) => {
      const known = error instanceof RenderFarmError;
      process.stderr.write(
        `render-farm: ${known ? errorMessage(error) : String(error)}\n`,
      );
      process.exit(error instanceof ConfigError ? 2 : 1);
    });
}

function program(): Command {
  const cli = new Command('render-farm')
    .description(
      'Render queued tasks to print-ready PDF resources with headless Chromium.',
    )
    .showHelpAfterError();

  cli
    .command('start')
    .description(
      'Start the supervisor: one daemon per core (RENDER_DAEMONS), health checks, ' +
        'metrics and the dashboard on RENDER_HOST:RENDER_PORT (default 127.0.0.1:8080).',
    )
    .action(async () => {
      const config = configure();
      const running = await startSupervisor(config);
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      process.stdout.write(
        `render-farm: serving on http://${host}:${running.port}/ with ${config.daemons} daemon(s)\n`,
      );
    });

  cli
    .command('render')
    .description('Render one resource to a PDF file, without any queue.')
    .argument(
      '<view>',
      'resource view, e.g. binary-cards (see `render-farm resources`)',
    )
    .option(
      '-o, --option <key=value>',
      'an option of the resource (repeatable)',
      collect,
      [],
    )
    .option('-c, --copies <n>', 'number of copies', whole, 1)
    .option('--header-text <text>', 'text printed at the top of every page', '')
    .option(
      '--url <url>',
      'url printed at the foot of every page',
      'https://example.org/',
    )
    .option('--name <name>', 'resource name (default: the manifest title)')
    .option('--task-id <id>', 'seed of the random numbers', 'cli')
    .requiredOption('--out <file>', 'where to write the PDF')
    .action(async (view: string, opts: RenderOptions) => {
      const config = configure('warn');
      await renderOnce(config, view, opts);
    });

  cli
    .command('enqueue')
    .description(
      'Put render tasks on the queue (RENDER_QUEUE), tagged "task". Each FILE ' +
        '(or - for stdin) holds a task object or an array of them; prints one task id a line.',
    )
    .argument('[files...]', 'task JSON files; - reads stdin', ['-'])
    .action(async (files: string[]) => {
      const config = configure('warn');
      await enqueue(config, files);
    });

  cli
    .command('results')
    .description(
      'Take result messages off the queue and print each as one JSON line.',
    )
    .option(
      '--wait <n>',
      'take this many results, waiting for them (default: all waiting now)',
      whole,
      0,
    )
    .option('--timeout <seconds>', 'give up waiting after this long', whole, 60)
    .option(
      '--save <dir>',
      'write inline documents into DIR and print their path instead',
    )
    .action(async (opts: { wait: number; timeout: number; save?: string }) => {
      const config = configure('warn');
      const missing = await takeResults(config, opts);
      if (missing > 0) {
        process.stderr.write(
          `render-farm: ${missing} result(s) did not arrive in time\n`,
        );
        process.exitCode = 1;
      }
    });

  cli
    .command('resources')
    .description(
      'List the resource views with their options and allowed values.',
    )
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const config = configure('warn');
      listResources(config, opts.json ?? false);
    });

  cli
    .command('preview')
    .description(
      'Serve a live preview of every resource for content authors: pick options, ' +
        'open the HTML or the PDF; pages reload when a template, stylesheet or manifest changes.',
    )
    .option('--port <port>', 'port to listen on', whole, 8090)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .action(async (opts: { port: number; host: string }) => {
      const config = configure();
      const url = await startPreview(config, opts.host, opts.port);
      process.stdout.write(`render-farm: preview on ${url}\n`);
    });

  return cli;
}

async function startPreview(
  config: Config,
  host: string,
  port: number,
): Promise<string> {
  const preview = new Preview(config, partLogger('preview'));
  preview.watch();
  const app = new Koa();
  app.use(preview.routes(PREVIEW_PATH));
  app.use((ctx) => {
    if (ctx.path === '/') ctx.redirect(`${PREVIEW_PATH}/`);
  });
  const server = app.listen(port, host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const stop = () => {
    server.close();
    void preview.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const bound = (server.address() as AddressInfo).port;
  return `http://${host.includes(':') ? `[${host}]` : host}:${bound}${PREVIEW_PATH}/`;
}

interface RenderOptions {
  option: string[];
  copies: number;
  headerText: string;
  url: string;
  name?: string;
  taskId: string;
  out: string;
}

/**
 * The settings, with the log level set. Commands that print their own
 * output log at `defaultLogLevel` unless RENDER_LOG_LEVEL says otherwise,
 * so their output is not mixed with the parts' info lines.
 */
function configure(defaultLogLevel = 'info'): Config {
  const config = loadConfig(process.env, { defaultLogLevel });
  setLogLevel(config.logLevel);
  return config;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function whole(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError('expected a whole number');
  return n;
}

async function renderOnce(
  config: Config,
  view: string,
  opts: RenderOptions,
): Promise<void> {
  const catalogue = Catalogue.load(config.resourcesDir);
  const manifest = catalogue.get(view);
  const task: Record<string, unknown> = {
    kind: TASK_KIND,
    resource_slug: view,
    resource_name: opts.name ?? manifest?.title ?? view,
    resource_view: view,
    url: opts.url,
    header_text: opts.headerText,
    copies: opts.copies,
  };
  for (const [name, spec] of Object.entries(manifest?.options ?? {}))
    task[name] = spec.default;
  for (const pair of opts.option) {
    const at = pair.indexOf('=');
    if (at < 1)
      throw new ConfigError(`--option: got "${pair}", expected KEY=VALUE`);
    const key = pair.slice(0, at);
    if (manifest && !(key in manifest.options)) {
      throw new ConfigError(
        `--option ${key}: ${view} has no such option; its options are ` +
          Object.keys(manifest.options).join(', '),
      );
    }
    task[key] = pair.slice(at + 1);
  }
  const job = checkTask(task, opts.taskId, catalogue, config);
  const renderer = new Renderer(
    rendererOptions(config),
    catalogue,
    partLogger('render'),
  );
  try {
    const output = await renderer.render(job);
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    fs.writeFileSync(opts.out, output.pdf);
    for (const warning of output.warnings)
      process.stderr.write(`warning: ${warning}\n`);
    process.stdout.write(
      `${opts.out}: ${output.pages} pages, ${output.pdf.length} bytes, ` +
        `${output.durationMs} ms (${job.filename})\n`,
    );
  } finally {
    await renderer.stop();
  }
}

/**
 * Puts the tasks of every file on the queue, all or nothing as far as
 * input goes: every file is read and every task checked before the first
 * is put. A queue that fails part way leaves the tasks put so far (their
 * ids are printed).
 */
async function enqueue(config: Config, files: string[]): Promise<void> {
  const tasks = files.flatMap((file) =>
    tasksOf(
      file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8'),
      file === '-' ? 'stdin' : file,
      config.maxTaskBytes,
    ),
  );
  const queue = await openQueue(config.queue, {
    cloudTasksEndpoint: config.cloudTasksEndpoint,
  });
  try {
    for (const task of tasks) {
      const id = await queue.put(
        task.payload,
        TASK_TAG,
        task.id === undefined ? {} : { id: task.id },
      );
      process.stdout.write(`${id}\n`);
    }
  } finally {
    await queue.close();
  }
}

/**
 * The task payloads in a file: an object, or each item of an array. A task
 * with a `task_id` is put under that id (1 to 100 letters, digits, `-` or
 * `_`, not starting with `result-`), so putting it twice does not render
 * it twice. Throws a ConfigError naming the file and item of the first
 * task that the queue or a daemon would refuse for its shape: a bad
 * `task_id`, nesting deeper than the daemons take, or too many bytes.
 */
function tasksOf(
  text: string,
  file: string,
  maxTaskBytes: number,
): { payload: string; id?: string }[] {
  // An array of tasks is one level deeper than each of its tasks.
  const isArray = text.trimStart().startsWith('[');
  const limit = MAX_JSON_DEPTH + (isArray ? 1 : 0);
  if (jsonDepth(text, limit) > limit) {
    throw new ConfigError(
      `${file}: a task is nested more than ${MAX_JSON_DEPTH} levels deep ` +
        `(arrays and objects), deeper than the limit of ${MAX_JSON_DEPTH}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${file}: not valid JSON (${errorMessage(error)})`);
  }
  const items: unknown[] = Array.isArray(value) ? value : [value];
  return items.map((item, index) => {
    const where = Array.isArray(value) ? `${file} item ${index + 1}` : file;
    const payload = JSON.stringify(item);
    const bytes = Buffer.byteLength(payload);
    if (bytes > maxTaskBytes) {
      throw new ConfigError(
        `${where}: task is ${bytes} bytes, larger than the limit of ` +
          `${maxTaskBytes} bytes (RENDER_MAX_TASK_BYTES)`,
      );
    }
    const id = (item as Record<string, unknown> | null)?.['task_id'];
    if (id === undefined) return { payload };
    try {
      if (typeof id !== 'string')
        throw new ConfigError(
          `task_id: got ${JSON.stringify(id)}, expected a string`,
        );
      checkTaskId(id);
    } catch (error) {
      throw new ConfigError(`${where}: ${errorMessage(error)}`);
    }
    return { payload, id };
  });
}

async function takeResults(
  config: Config,
  opts: { wait: number; timeout: number; save?: string },
): Promise<number> {
  const queue = await openQueue(config.queue, {
    cloudTasksEndpoint: config.cloudTasksEndpoint,
  });
  const deadline = Date.now() + opts.timeout * 1000;
  let taken = 0;
  try {
    do {
      const leased = await queue.lease({
        tag: RESULT_TAG,
        // With --wait N, never more than the N asked for.
        max: opts.wait > 0 ? Math.min(10, opts.wait - taken) : 10,
        leaseSeconds: 60,
      });
      for (const task of leased) {
        process.stdout.write(`${resultLine(task.payload, opts.save)}\n`);
        await queue.acknowledge(task);
        taken++;
      }
      if (leased.length === 0 && taken < opts.wait) await sleep(250);
      else if (leased.length === 0) break;
    } while (Date.now() < deadline && (opts.wait === 0 || taken < opts.wait));
  } finally {
    await queue.close();
  }
  return Math.max(0, opts.wait - taken);
}

function resultLine(payload: Buffer, saveDir: string | undefined): string {
  const text = payload.toString('utf8');
  if (!saveDir) return text;
  const message = JSON.parse(text) as Record<string, unknown>;
  if (
    typeof message['document'] === 'string' &&
    typeof message['filename'] === 'string'
  ) {
    const dir = path.join(saveDir, String(message['task_id']));
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, path.basename(message['filename']));
    fs.writeFileSync(file, Buffer.from(message['document'], 'base64'));
    message['document'] = path.resolve(file);
  }
  return JSON.stringify(message);
}

function listResources(config: Config, json: boolean): void {
  const catalogue = Catalogue.load(config.resourcesDir);
  const list = catalogue.list().map((m) => ({
    view: m.view,
    title: m.title,
    description: m.description,
    copies_differ: m.copiesDiffer,
    options: Object.fromEntries(
      Object.entries(m.options).map(([name, spec]) => [
        name,
        { label: spec.label, values: spec.values, default: spec.default },
      ]),
    ),
  }));
  if (json) {
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return;
  }
  for (const item of list) {
    process.stdout.write(`${item.view}  (${item.title})\n`);
    for (const [name, spec] of Object.entries(item.options)) {
      const values = spec.values.map((v) =>
        v === spec.default ? `[${v}]` : String(v),
      );
      process.stdout.write(`    ${name}: ${values.join(', ')}\n`);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
