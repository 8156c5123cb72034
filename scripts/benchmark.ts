/**
 * Prints the farm's speed and memory figures; targets live here, never in
 * timed unit tests. Run with `npm run benchmark` (after a build). Settings:
 * BENCH_RENDERS (per resource, default 5), BENCH_TASKS (through the farm,
 * default 40), BENCH_MEMORY_RENDERS (default 200).
 *
 * 1. Browser start-up time.
 * 2. Render time of each resource's default options in a warm browser.
 * 3. Throughput of `render-farm start` (RENDER_DAEMONS daemons) on the
 *    embedded queue, and queue wait of the tasks.
 * 4. Resident memory of a renderer's browser over many renders.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config';
import { rendererOptions } from '../src/daemon/main';
import { partLogger, setLogLevel } from '../src/logger';
import { SqliteQueue } from '../src/queue/sqlite-queue';
import {
  launchBrowser,
  retireBrowser,
  treeMemoryBytes,
} from '../src/render/browser';
import { Renderer } from '../src/render/renderer';
import { Catalogue } from '../src/resources/catalogue';
import { checkTask } from '../src/resources/task';

const ROOT = path.resolve(__dirname, '..', '..');
const env = process.env;
const RENDERS = Number(env['BENCH_RENDERS'] ?? 5);
const TASKS = Number(env['BENCH_TASKS'] ?? 40);
const MEMORY_RENDERS = Number(env['BENCH_MEMORY_RENDERS'] ?? 200);

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return (
    sorted[
      Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))
    ] ?? 0
  );
}

function taskOf(catalogue: Catalogue, view: string, id: string) {
  const manifest = catalogue.get(view);
  const task: Record<string, unknown> = {
    kind: 'task#render',
    resource_slug: view,
    resource_name: manifest?.title ?? view,
    resource_view: view,
    url: `https://example.org/resources/${view}`,
    header_text: 'Benchmark',
    copies: 1,
  };
  for (const [name, spec] of Object.entries(manifest?.options ?? {}))
    task[name] = spec.default;
  return {
    task,
    job: () =>
      checkTask(task, id, catalogue, { maxCopies: 50, maxTaskBytes: 1e6 }),
  };
}

async function browserStartup(chromiumPath: string): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const handle = await launchBrowser(chromiumPath, 30_000);
    times.push(Date.now() - started);
    await retireBrowser(handle, partLogger('bench'));
  }
  console.log(
    `browser start-up: median ${percentile(times, 50)} ms (3 launches)`,
  );
}

async function renderTimes(
  renderer: Renderer,
  catalogue: Catalogue,
): Promise<void> {
  console.log(
    `\nrender time per resource, default options, ${RENDERS} renders (ms):`,
  );
  console.log(
    'view'.padEnd(26),
    'p50'.padStart(6),
    'p95'.padStart(6),
    'pages'.padStart(6),
    'KiB'.padStart(7),
  );
  for (const manifest of catalogue.list()) {
    const times: number[] = [];
    let pages = 0;
    let bytes = 0;
    for (let i = 0; i < RENDERS; i++) {
      const output = await renderer.render(
        taskOf(catalogue, manifest.view, `bench-${i}`).job(),
      );
      times.push(output.durationMs);
      pages = output.pages;
      bytes = output.pdf.length;
    }
    console.log(
      manifest.view.padEnd(26),
      String(percentile(times, 50)).padStart(6),
      String(percentile(times, 95)).padStart(6),
      String(pages).padStart(6),
      String(Math.round(bytes / 1024)).padStart(7),
    );
  }
}

async function memoryOverRenders(
  renderer: Renderer,
  catalogue: Catalogue,
): Promise<void> {
  console.log(
    `\nbrowser memory over ${MEMORY_RENDERS} renders (three resources in turn, fresh context each):`,
  );
  const views = ['binary-cards', 'sorting-network', 'treasure-hunt'];
  for (let i = 1; i <= MEMORY_RENDERS; i++) {
    await renderer.render(
      taskOf(
        catalogue,
        views[i % views.length] ?? 'binary-cards',
        `mem-${i}`,
      ).job(),
    );
    if (i % 50 === 0 || i === 10) {
      const status = await renderer.status();
      const mib = (await treeMemoryBytes(status.pid)) / 1024 / 1024;
      console.log(
        `  after ${String(i).padStart(4)} renders: ${mib.toFixed(0)} MiB resident`,
      );
    }
  }
}

async function throughput(catalogue: Catalogue): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-bench-'));
  const queue = new SqliteQueue(path.join(dir, 'queue.db'));
  const daemons = env['RENDER_DAEMONS'] ?? String(os.availableParallelism());
  const child = spawn(
    'node',
    [path.join(ROOT, 'bin', 'render-farm.js'), 'start'],
    {
      env: {
        ...env,
        RENDER_QUEUE: `sqlite:${path.join(dir, 'queue.db')}`,
        RENDER_OUTPUT_DIR: path.join(dir, 'output'),
        RENDER_PORT: '0',
        RENDER_DAEMONS: daemons,
        RENDER_POLL_MS: '50',
        RENDER_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  await new Promise<void>((resolve) =>
    child.stdout?.once('data', () => resolve()),
  );
  // Let every daemon start its browser before the clock starts.
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  const views = [
    'binary-cards',
    'parity-cards',
    'sorting-network',
    'searching-cards',
  ];
  const started = Date.now();
  for (let i = 0; i < TASKS; i++) {
    const view = views[i % views.length] ?? 'binary-cards';
    await queue.put(
      JSON.stringify(taskOf(catalogue, view, String(i)).task),
      'task',
    );
  }
  let done = 0;
  while (done < TASKS && Date.now() - started < 600_000) {
    const results = await queue.lease({
      tag: 'result',
      max: 100,
      leaseSeconds: 60,
    });
    for (const result of results) await queue.acknowledge(result);
    done += results.length;
    if (results.length === 0)
      await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(
    `\nthroughput: ${done} tasks through render-farm start with ${daemons} daemons in ` +
      `${seconds.toFixed(1)} s = ${(done / seconds).toFixed(2)} tasks/s ` +
      `(${((seconds * 1000) / done).toFixed(0)} ms a task)`,
  );
  child.kill('SIGTERM');
  await queue.close();
}

async function main(): Promise<void> {
  const config = loadConfig({
    ...env,
    RENDER_RESOURCES_DIR: path.join(ROOT, 'resource-templates'),
  });
  setLogLevel('warn');
  const catalogue = Catalogue.load(config.resourcesDir);
  console.log(
    `render-farm benchmark on ${os.availableParallelism()} cores, ${os.cpus()[0]?.model ?? ''}`,
  );
  await browserStartup(config.chromiumPath);
  const renderer = new Renderer(
    {
      ...rendererOptions(config),
      staticDirs: [path.join(ROOT, 'static')],
      browserMaxRenders: 1e9,
    },
    catalogue,
    partLogger('bench'),
  );
  await renderer.start();
  await renderTimes(renderer, catalogue);
  await memoryOverRenders(renderer, catalogue);
  await renderer.stop();
  await throughput(catalogue);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
