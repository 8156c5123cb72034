/**
 * Prints the farm's speed and memory figures; targets live here, never in
 * timed unit tests. Run with `npm run benchmark` (after a build). Settings:
 * BENCH_RENDERS (per resource, default 5), BENCH_TASKS (through the farm,
 * default 40), BENCH_MEMORY_RENDERS (default 200), BENCH_SOAK_CYCLES and
 * BENCH_SOAK_RENDERS (default 20 and 50; 0 cycles skips the soak),
 * BENCH_ONLY (`soak`: that section alone).
 *
 * 1. Browser start-up time.
 * 2. Render time of each resource's default options in a warm browser.
 * 3. Throughput of `render-farm start` (RENDER_DAEMONS daemons) on the
 *    embedded queue, and queue wait of the tasks.
 * 4. Resident memory of a renderer's browser over many renders.
 * 5. Soak (case B10 at full size): kill cycles of the browser in the middle
 *    of a 3 s render on a real supervisor, then normal renders; what is
 *    left behind (zombies, Chromium processes, profiles) and the time.
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
import { chromiumProcessesOf } from '../test/support/renderer';
import {
  SupervisorHarness,
  chromiumZombies,
  waitFor,
} from '../test/support/supervisor-harness';

const ROOT = path.resolve(__dirname, '..', '..');
const env = process.env;
const RENDERS = Number(env['BENCH_RENDERS'] ?? 5);
const TASKS = Number(env['BENCH_TASKS'] ?? 40);
const MEMORY_RENDERS = Number(env['BENCH_MEMORY_RENDERS'] ?? 200);
const SOAK_CYCLES = Number(env['BENCH_SOAK_CYCLES'] ?? 20);
const SOAK_RENDERS = Number(env['BENCH_SOAK_RENDERS'] ?? 50);

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

/**
 * B10 at full size on the supervisor test harness (one daemon, two pages):
 * each cycle starts a 3 s render and SIGKILLs its browser, then waits for
 * the retried task's result; then the normal renders.
 */
async function soak(): Promise<void> {
  if (SOAK_CYCLES <= 0) return;
  const h = await SupervisorHarness.start({
    RENDER_PAGES_PER_DAEMON: '2',
    RENDER_MAX_ATTEMPTS: '2',
    RENDER_TIMEOUT_SECONDS: '20',
    RENDER_LEASE_SECONDS: '22',
  });
  try {
    const retried = new Set<string>();
    h.supervisor.pool.on(
      'task-finished',
      (m: { taskId: string; outcome: string }) => {
        if (m.outcome === 'retry') retried.add(m.taskId);
      },
    );
    await h.waitReady();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const zombiesBefore = chromiumZombies().length;
    const baseline = chromiumProcessesOf(process.pid, h.profilesSeen).length;
    const started = Date.now();
    const tasks: string[] = [];
    let failed = 0;
    for (let cycle = 0; cycle < SOAK_CYCLES; cycle++) {
      await h.waitReady(60_000);
      const id = await h.enqueue('slow', { wait_ms: 3000 });
      tasks.push(id);
      await waitFor(
        () => h.daemons().some((d) => d.tasks.some((t) => t.taskId === id)),
        30_000,
        `task ${id} rendering`,
      );
      process.kill(h.daemon().browserPid, 'SIGKILL');
      if (!(await h.waitForResult(id, 60_000)).success) failed++;
    }
    const cyclesS = (Date.now() - started) / 1000;
    const normal: string[] = [];
    for (let i = 0; i < SOAK_RENDERS; i++)
      normal.push(await h.enqueue('smoke'));
    for (const id of normal)
      if (!(await h.waitForResult(id, 60_000)).success) failed++;
    const totalS = (Date.now() - started) / 1000;
    let processes = chromiumProcessesOf(process.pid, h.profilesSeen).length;
    for (let i = 0; i < 150 && processes > baseline + 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      processes = chromiumProcessesOf(process.pid, h.profilesSeen).length;
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const left = h.leftovers();
    const answered = [...tasks, ...normal].filter(
      (id) => h.resultsOf(id).length === 1,
    ).length;
    console.log(
      `\nsoak (B10): ${SOAK_CYCLES} browser kills mid-render in ${cyclesS.toFixed(0)} s, ` +
        `then ${SOAK_RENDERS} renders; ${totalS.toFixed(0)} s in all\n` +
        `  killed renders retried: ${tasks.filter((id) => retried.has(id)).length} of ${SOAK_CYCLES}; ` +
        `failed tasks: ${failed}; answered exactly once: ${answered} of ${tasks.length + normal.length}\n` +
        `  Chromium processes: ${processes} (baseline ${baseline}, limit ${baseline + 2}); ` +
        `zombies: ${chromiumZombies().length - zombiesBefore}; ` +
        `leftover processes: ${left.processes.length}, profiles: ${left.profiles.length}`,
    );
  } finally {
    await h.stop();
  }
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
  if (env['BENCH_ONLY'] === 'soak') return soak();
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
  await soak();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
