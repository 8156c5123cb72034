// The supervisor watching real daemons and their Chromium: each fault is
// injected with a signal while a task is in hand, and the test checks that
// the daemon or browser is replaced in time, the task ends with exactly one
// result, nothing of the dead processes is left, and /readyz told the truth.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LogRecorder, ReadySample } from '../support/supervisor-harness';
import {
  PROJECT_ROOT,
  SupervisorHarness,
  recordLogs,
  chromiumZombies,
  metric,
  parsePrometheus,
  sleep,
  waitFor,
} from '../support/supervisor-harness';

/** Waits until the daemon renders the task; returns its pid and browser pid. */
async function waitRendering(h: SupervisorHarness, taskId: string) {
  await waitFor(
    () => h.daemon().tasks.some((t) => t.taskId === taskId),
    15_000,
    `daemon rendering ${taskId}`,
  );
  const d = h.daemon();
  return { pid: d.pid, browserPid: d.browserPid };
}

/** Checks the task has exactly one result, a little after the first. */
async function exactlyOneResult(
  h: SupervisorHarness,
  taskId: string,
  timeoutMs = 30_000,
) {
  const first = await h.waitForResult(taskId, timeoutMs);
  await sleep(1_000);
  assert.equal(h.resultsOf(taskId).length, 1, 'exactly one result');
  return first;
}

/**
 * Checks that /readyz told the truth around a fault injected at `faultAt`:
 * the pool lost its last ready daemon within `detectMs` of the fault; every
 * sample sent after that and answered before the pool was ready again was
 * 503; every sample sent once it was ready again was 200; and the samples
 * before the fault were 200. Returns when the pool was not ready and ready
 * again, epoch ms. Call it once the pool is ready again and some samples
 * of the recovered farm were taken.
 */
function readinessTruth(
  h: SupervisorHarness,
  faultAt: number,
  detectMs: number,
): { notReadyAt: number; readyAt: number } {
  const down = h.changeTo(false, faultAt);
  assert.ok(down, 'the pool noticed no daemon was ready');
  assert.ok(
    down.atMs - faultAt <= detectMs,
    `noticed ${down.atMs - faultAt} ms after the fault, limit ${detectMs} ms`,
  );
  const up = h.changeTo(true, down.atMs);
  assert.ok(up, 'the pool was ready again');
  const samples = h.readySamples;
  const wrong = (s: ReadySample, expected: number) =>
    s.status !== expected ? [{ ...s, expected }] : [];
  const lies = [
    ...samples.filter((s) => s.atMs < faultAt).flatMap((s) => wrong(s, 200)),
    ...samples
      .filter((s) => s.sentMs >= down.atMs && s.atMs <= up.atMs)
      .flatMap((s) => wrong(s, 503)),
    ...samples.filter((s) => s.sentMs >= up.atMs).flatMap((s) => wrong(s, 200)),
  ];
  assert.deepEqual(lies, [], 'readyz answers that were not the truth');
  assert.ok(
    samples.some((s) => s.status === 503),
    'a sample saw the outage (503)',
  );
  assert.ok(
    samples.some((s) => s.sentMs >= up.atMs && s.status === 200),
    'a sample saw the recovery (200)',
  );
  return { notReadyAt: down.atMs, readyAt: up.atMs };
}

function isGone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /\)\s+[ZX]/.test(stat);
  } catch {
    return true;
  }
}

describe('supervisor recovery', function () {
  this.timeout(90_000);
  let h: SupervisorHarness;
  let zombiesBefore: number;

  before(async () => {
    zombiesBefore = chromiumZombies().length;
    h = await SupervisorHarness.start({ RENDER_MAX_ATTEMPTS: '2' });
    await h.waitReady();
  });
  after(async () => h?.stop());

  beforeEach(async () => {
    await h.waitReady();
    h.startSampling(150);
  });
  afterEach(async () => {
    h.stopSampling();
    await h.waitNoLeftovers();
    await waitFor(
      () => chromiumZombies().length <= zombiesBefore,
      5_000,
      () => `no new zombies: ${chromiumZombies().join('; ')}`,
    );
  });

  it('restarts a SIGKILLed daemon, kills its Chromium and redelivers its task once', async () => {
    const id = await h.enqueue('slow', { wait_ms: 3000 });
    const old = await waitRendering(h, id);
    const killedAt = Date.now();
    process.kill(old.pid, 'SIGKILL');

    await waitFor(
      () => h.daemon().pid !== old.pid && h.daemon().pid !== 0,
      5_000,
      'a new daemon',
    );
    await h.waitReady();
    await sleep(1_000);
    // The exit event comes at once; 3 s covers a loaded machine.
    readinessTruth(h, killedAt, 3_000);
    await waitFor(() => isGone(old.browserPid), 3_000, 'the old browser gone');

    const result = await exactlyOneResult(h, id);
    assert.equal(result.success, true, result.error);
    assert.equal(h.daemon().restarts, 1);
  });

  it('restarts a SIGSTOPped daemon once its heartbeats stop', async () => {
    const id = await h.enqueue('slow', { wait_ms: 3000 });
    const old = await waitRendering(h, id);
    const stoppedAt = Date.now();
    process.kill(old.pid, 'SIGSTOP');

    await waitFor(
      () => h.daemon().pid !== old.pid,
      5_000,
      'the frozen daemon replaced',
    );
    const replacedAfterMs = Date.now() - stoppedAt;
    assert.ok(
      replacedAfterMs >= 1_500,
      `replaced after ${replacedAfterMs} ms, before the timeout`,
    );
    assert.match(h.daemon().lastError ?? '', /no heartbeat/);
    await waitFor(
      () => isGone(old.pid) && isGone(old.browserPid),
      3_000,
      'frozen processes gone',
    );
    await h.waitReady();
    await sleep(1_000);
    // Not ready once the last heartbeat is older than the timeout (2 s).
    const { notReadyAt } = readinessTruth(h, stoppedAt, 2_000 + 1_500);
    assert.ok(
      notReadyAt - stoppedAt >= 1_000,
      `not ready ${notReadyAt - stoppedAt} ms after SIGSTOP, before the timeout`,
    );

    const result = await exactlyOneResult(h, id);
    assert.equal(result.success, true, result.error);
  });

  it("replaces a daemon's SIGKILLed Chromium and retries the task in hand", async () => {
    const before = parsePrometheus(await (await h.get('/metrics')).text());
    const id = await h.enqueue('slow', { wait_ms: 3000 });
    const old = await waitRendering(h, id);
    const killedAt = Date.now();
    process.kill(old.browserPid, 'SIGKILL');

    const result = await exactlyOneResult(h, id);
    assert.equal(result.success, true, result.error);
    assert.equal(
      h.daemon().pid,
      old.pid,
      'the daemon itself was not restarted',
    );
    assert.notEqual(h.daemon().browserPid, old.browserPid);
    assert.ok(isGone(old.browserPid));
    await h.waitReady();
    // No browser, no readiness: the daemon tells at once (3 s covers load).
    readinessTruth(h, killedAt, 3_000);

    const after = parsePrometheus(await (await h.get('/metrics')).text());
    const crashes = (m: Map<string, number>) =>
      metric(m, 'render_browser_restarts_total', { reason: 'crash' });
    assert.equal(crashes(after) - crashes(before), 1);
    const retries = (m: Map<string, number>) =>
      metric(m, 'render_retries_total', { view: 'slow' });
    assert.equal(retries(after) - retries(before), 1);
  });

  it('kills a hanging render at the deadline and answers it once after its attempts', async () => {
    const id = await h.enqueue('slow', { wait_ms: 100000 });
    const old = await waitRendering(h, id);
    const startedAt = Date.now();

    const result = await exactlyOneResult(h, id, 40_000);
    const tookMs = Date.now() - startedAt;
    assert.equal(result.success, false);
    assert.match(
      result.error ?? '',
      /gave up after 2 attempts: render time limit of 8 s exceeded/,
    );
    // Two attempts of T = 8 s and a 1 s backoff, plus the check's second.
    assert.ok(tookMs < 25_000, `took ${tookMs} ms`);
    assert.equal(
      h.daemon().pid,
      old.pid,
      'only the render was killed, not the daemon',
    );
    assert.ok(
      h.readySamples.every((s) => s.status === 200),
      'the daemon stayed ready',
    );
    assert.equal(h.attemptsOf(id), undefined, 'the task was acknowledged');
  });
});

describe('supervisor backoff', function () {
  this.timeout(30_000);
  let h: SupervisorHarness;
  let scriptDir: string;
  let logs: LogRecorder;

  before(async () => {
    scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-dying-daemon-'));
    const script = path.join(scriptDir, 'dying-daemon.js');
    fs.writeFileSync(script, 'process.exit(3);\n');
    logs = recordLogs();
    h = await SupervisorHarness.start({}, { daemonScript: script });
  });
  after(async () => {
    logs?.stop();
    await h?.stop();
    fs.rmSync(scriptDir, { recursive: true, force: true });
  });

  it('backs off exponentially when a daemon keeps dying, and shows it', async () => {
    await waitFor(
      () => h.daemon().crashStreak >= 4,
      15_000,
      'four crashes in a row',
    );
    const d = h.daemon();
    assert.equal(d.state, 'backoff');
    assert.match(d.lastError ?? '', /exited with code 3/);
    assert.ok(
      d.nextStartMs !== undefined && d.nextStartMs - Date.now() > 1_000,
      'a growing delay',
    );

    const ready = await h.get('/readyz');
    assert.equal(ready.status, 503);
    assert.match(
      ((await ready.json()) as { reason: string }).reason,
      /1: backoff/,
    );

    const status = (await (await h.get('/api/status')).json()) as {
      daemons: { state: string; crashStreak: number; nextStartMs: number }[];
    };
    assert.equal(status.daemons[0]?.state, 'backoff');
    const page = await (await h.get('/')).text();
    assert.match(page, /backoff \(restart in \d+ s\)/);

    const samples = parsePrometheus(await (await h.get('/metrics')).text());
    assert.ok(
      metric(samples, 'render_daemon_restarts_total', { reason: 'exit' }) >= 4,
    );

    // Each delay doubles, and the log says so...
    const scheduled = logs.lines
      .filter((l) => l['message'] === 'daemon restart scheduled')
      .slice(0, 4);
    assert.deepEqual(
      scheduled.map((l) => [l['crash_streak'], l['delay_ms'], l['reason']]),
      [
        [1, 500, 'exit'],
        [2, 1_000, 'exit'],
        [3, 2_000, 'exit'],
        [4, 4_000, 'exit'],
      ],
    );
    assert.equal(scheduled[0]?.['level'], 'warn');
    const dying = logs.lines.find(
      (l) => l['message'] === 'daemon keeps dying; backing off',
    );
    assert.equal(dying?.['level'], 'error');
    assert.equal(dying?.['crash_streak'], 3);
    // ...and the daemon really waits that long between two starts.
    const starts = logs.lines
      .filter((l) => l['message'] === 'daemon started')
      .map((l) => Date.parse(String(l['timestamp'])));
    assert.ok(starts.length >= 4, `${starts.length} starts`);
    const gaps = starts.slice(1, 4).map((t, i) => t - (starts[i] ?? 0));
    [500, 1_000, 2_000].forEach((delayMs, i) =>
      assert.ok(
        (gaps[i] ?? 0) >= delayMs,
        `start ${i + 2} came ${gaps[i]} ms after start ${i + 1}, before ${delayMs} ms`,
      ),
    );
  });
});

/**
 * A stand-in daemon that leases one task and then claims, in every
 * heartbeat, to have been rendering it for ten minutes (a render that
 * ignores its deadline), with a child process standing in for its browser.
 * It writes "DAEMON_PID CHILD_PID" lines to the file in STUCK_PIDS_FILE.
 */
const STUCK_DAEMON = `
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const { SqliteQueue } = require(process.env.STUCK_QUEUE_MODULE);
const queue = new SqliteQueue(process.env.RENDER_QUEUE.slice('sqlite:'.length));
const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
fs.appendFileSync(process.env.STUCK_PIDS_FILE, process.pid + ' ' + child.pid + '\\n');
const tasks = [];
const leases = [];
function beat() {
  process.send({
    type: 'heartbeat', state: tasks.length ? 'rendering' : 'idle', tasks, leases,
    rendersDone: 0, rendersFailed: 0, browserPid: 0, browserProfileDir: '',
    browserMemoryBytes: 0, browserReady: true, browserLaunchFailures: 0,
  });
}
setInterval(beat, 250);
beat();
(async () => {
  for (;;) {
    const [task] = await queue.lease({ tag: 'task', max: 1, leaseSeconds: 60 });
    if (task) {
      tasks.push({ taskId: task.id, attempt: task.attempts, view: 'slow',
        sinceMs: Date.now() - 10 * 60_000 });
      leases.push({ taskId: task.id, attempts: task.attempts,
        leaseToken: task.leaseToken });
      beat();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
})();
`;

describe('supervisor and a render stuck past its deadline', function () {
  this.timeout(60_000);
  let h: SupervisorHarness;
  let dir: string;
  let pidsFile: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-stuck-daemon-'));
    const script = path.join(dir, 'stuck-daemon.js');
    pidsFile = path.join(dir, 'pids');
    fs.writeFileSync(script, STUCK_DAEMON);
    fs.writeFileSync(pidsFile, '');
    h = await SupervisorHarness.start(
      {
        RENDER_MAX_ATTEMPTS: '2',
        STUCK_PIDS_FILE: pidsFile,
        STUCK_QUEUE_MODULE: path.join(
          PROJECT_ROOT,
          'dist',
          'src',
          'queue',
          'sqlite-queue.js',
        ),
      },
      { daemonScript: script },
    );
    await h.waitReady();
  });
  after(async () => {
    await h?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('kills the stuck daemon with its tree, twice, and answers the task once', async () => {
    const id = await h.enqueue('slow', { wait_ms: 3000 });
    const result = await exactlyOneResult(h, id);
    assert.equal(result.success, false);
    assert.match(
      result.error ?? '',
      /^gave up after 2 attempts: the daemon rendering the last one died \(restarted: stuck\)/,
    );
    assert.equal(h.attemptsOf(id), undefined, 'the task was acknowledged');
    assert.match(h.daemon().lastError ?? '', /render ran more than 26000 ms/);

    // Both stuck daemons and their children are gone; the third one, which
    // found nothing to lease, still runs.
    const pairs = () =>
      fs
        .readFileSync(pidsFile, 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(' ').map(Number));
    await waitFor(() => pairs().length >= 3, 10_000, 'a third daemon');
    assert.equal(pairs().length, 3, 'no daemon after the third');
    const stuck = pairs().slice(0, 2).flat();
    await waitFor(
      () => stuck.every(isGone),
      5_000,
      () => `stuck trees gone: ${stuck.filter((p) => !isGone(p)).join(' ')}`,
    );
    const samples = parsePrometheus(await (await h.get('/metrics')).text());
    assert.equal(
      metric(samples, 'render_daemon_restarts_total', { reason: 'stuck' }),
      2,
    );
    assert.equal(h.daemon().state, 'idle');
  });
});

describe('B12: liveness when no browser can ever start', function () {
  this.timeout(90_000);
  let h: SupervisorHarness;
  let dir: string;
  let broken: string;
  let startedAt: number;
  const samples: {
    sentMs: number;
    atMs: number;
    path: string;
    status: number;
  }[] = [];
  let sampler: NodeJS.Timeout | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-no-browser-'));
    broken = path.join(dir, 'broken');
    fs.writeFileSync(broken, '');
    const wrapper = path.join(dir, 'chromium');
    fs.writeFileSync(
      wrapper,
      [
        '#!/bin/sh',
        '# Fails while the "broken" file exists, then runs Chromium.',
        `if [ -e '${broken}' ]; then`,
        '  echo "chromium wrapper: cannot start" >&2',
        '  exit 1',
        'fi',
        'exec /usr/bin/chromium "$@"',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    startedAt = Date.now();
    h = await SupervisorHarness.start({
      CHROMIUM_PATH: wrapper,
      RENDER_UNHEALTHY_AFTER_SECONDS: '5',
    });
    const sample = (pathname: string) => {
      const sentMs = Date.now();
      h.get(pathname).then(
        (response) =>
          samples.push({
            sentMs,
            atMs: Date.now(),
            path: pathname,
            status: response.status,
          }),
        (error: unknown) => assert.fail(`${pathname}: ${String(error)}`),
      );
    };
    sampler = setInterval(() => sample('/healthz'), 250);
    h.startSampling(250);
  });
  after(async () => {
    clearInterval(sampler);
    await h?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('B12: /healthz turns 503 once no daemon was ready for RENDER_UNHEALTHY_AFTER_SECONDS, and 200 again with a browser', async () => {
    await waitFor(
      () => samples.some((s) => s.path === '/healthz' && s.status === 503),
      20_000,
      '/healthz 503',
    );
    const firstBad = samples.find(
      (s) => s.path === '/healthz' && s.status === 503,
    );
    assert.ok(firstBad);
    assert.ok(
      firstBad.atMs - startedAt >= 5_000,
      `unhealthy ${firstBad.atMs - startedAt} ms after start, before 5 s`,
    );
    assert.ok(h.daemon().browserLaunchFailures >= 2, 'launches failed');
    const health = await h.get('/healthz');
    assert.equal(health.status, 503);
    const body = (await health.json()) as { status: string; reason: string };
    assert.equal(body.status, 'unhealthy');
    assert.match(
      body.reason,
      /no daemon has been ready for \d+ s \(limit 5 s\)/,
    );
    const ah = await h.get('/_ah/health');
    assert.equal(ah.status, 503);
    assert.match(await ah.text(), /^unhealthy: no daemon has been ready/);
    assert.deepEqual(
      h.readySamples.filter((s) => s.status !== 503),
      [],
      '/readyz was 503 all along',
    );

    // A browser can start again: ready, and healthy, once it runs.
    fs.rmSync(broken);
    await h.waitReady(40_000);
    await sleep(1_000);
    const readyAt = h.changeTo(true, firstBad.atMs)?.atMs ?? 0;
    assert.equal((await h.get('/healthz')).status, 200);
    assert.equal(await (await h.get('/_ah/health')).text(), 'ok');
    // No flapping: unhealthy from the first 503 until a browser ran.
    const flaps = samples.filter(
      (s) =>
        s.path === '/healthz' &&
        s.sentMs > firstBad.atMs &&
        s.atMs < readyAt &&
        s.status !== 503,
    );
    assert.deepEqual(flaps, [], '/healthz stayed 503 until a browser started');
    const healthyAgain = samples.filter(
      (s) => s.path === '/healthz' && s.sentMs >= readyAt,
    );
    assert.ok(healthyAgain.length > 0, 'samples after the recovery');
    assert.ok(
      healthyAgain.every((s) => s.status === 200),
      '/healthz 200 once a daemon was ready',
    );
  });
});

/** Records every browser pid the daemons report, in order. */
function recordBrowsers(h: SupervisorHarness): number[] {
  const pids: number[] = [];
  const note = () => {
    for (const d of h.daemons()) {
      if (d.browserPid && !pids.includes(d.browserPid)) pids.push(d.browserPid);
    }
  };
  note();
  h.supervisor.pool.on('change', note);
  return pids;
}

async function restartCount(
  h: SupervisorHarness,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  return metric(
    parsePrometheus(await (await h.get('/metrics')).text()),
    name,
    labels,
  );
}

/** Enqueues `count` smoke tasks at once; all must succeed, none retried. */
async function smokeBatch(h: SupervisorHarness, count: number): Promise<void> {
  const retriesBefore = await restartCount(h, 'render_retries_total', {
    view: 'smoke',
  });
  const ids = await Promise.all(
    Array.from({ length: count }, () => h.enqueue('smoke')),
  );
  for (const id of ids) {
    const result = await h.waitForResult(id, 60_000);
    assert.equal(result.success, true, result.error);
  }
  await sleep(500);
  for (const id of ids) assert.equal(h.resultsOf(id).length, 1, id);
  assert.equal(
    (await restartCount(h, 'render_retries_total', { view: 'smoke' })) -
      retriesBefore,
    0,
    'no render failed and was retried',
  );
}

describe('browser recycling', function () {
  this.timeout(120_000);

  describe('by render count, one page', () => {
    let h: SupervisorHarness;
    let browsers: number[];

    before(async () => {
      h = await SupervisorHarness.start({ RENDER_BROWSER_MAX_RENDERS: '2' });
      browsers = recordBrowsers(h);
      await h.waitReady();
    });
    after(async () => h?.stop());

    it('replaces the browser every 2 renders; no task fails, nothing of the old ones is left', async () => {
      const before = await restartCount(h, 'render_browser_restarts_total', {
        reason: 'renders',
      });
      const first = browsers.length;
      await smokeBatch(h, 5);
      const recycled =
        (await restartCount(h, 'render_browser_restarts_total', {
          reason: 'renders',
        })) - before;
      assert.ok(recycled >= 2, `${recycled} recycles for 5 renders`);
      assert.ok(
        browsers.length - first >= 2,
        `browsers ${browsers.join(', ')}`,
      );
      await h.waitReady();
      const live = h.daemon().browserPid;
      await waitFor(
        () => browsers.filter((pid) => pid !== live).every(isGone),
        10_000,
        'old browsers gone',
      );
      await h.waitNoLeftovers();
    });
  });

  describe('by age', () => {
    let h: SupervisorHarness;

    before(async () => {
      h = await SupervisorHarness.start({
        RENDER_BROWSER_MAX_AGE_SECONDS: '10',
      });
      await h.waitReady();
    });
    after(async () => h?.stop());

    it('replaces a browser older than RENDER_BROWSER_MAX_AGE_SECONDS while idle', async () => {
      const before = await restartCount(h, 'render_browser_restarts_total', {
        reason: 'age',
      });
      await h.waitReady();
      const old = h.daemon().browserPid;
      await waitFor(
        () => h.daemon().browserPid !== 0 && h.daemon().browserPid !== old,
        30_000,
        'a younger browser',
      );
      assert.ok(
        (await restartCount(h, 'render_browser_restarts_total', {
          reason: 'age',
        })) > before,
      );
      await waitFor(() => isGone(old), 10_000, 'the old browser gone');
      await h.waitReady();
      await h.waitNoLeftovers();
      await smokeBatch(h, 1);
    });
  });

  describe('by render count, two pages kept busy', () => {
    let h: SupervisorHarness;
    let browsers: number[];

    before(async () => {
      h = await SupervisorHarness.start({
        RENDER_PAGES_PER_DAEMON: '2',
        RENDER_BROWSER_MAX_RENDERS: '2',
        // Two pages at once on a loaded 2-core machine: room for slow renders.
        RENDER_TIMEOUT_SECONDS: '20',
        RENDER_LEASE_SECONDS: '30',
      });
      browsers = recordBrowsers(h);
      await h.waitReady();
    });
    after(async () => h?.stop());

    it('recycles a busy browser between renders without failing one', async () => {
      const before = await restartCount(h, 'render_browser_restarts_total', {
        reason: 'renders',
      });
      await smokeBatch(h, 8);
      const recycled =
        (await restartCount(h, 'render_browser_restarts_total', {
          reason: 'renders',
        })) - before;
      assert.ok(recycled >= 2, `${recycled} recycles for 8 renders`);
      assert.ok(browsers.length >= 3, `browsers ${browsers.join(', ')}`);
      await h.waitReady();
      await h.waitNoLeftovers();
    });
  });

  describe('by memory', () => {
    let h: SupervisorHarness;

    before(async () => {
      // Below what any Chromium uses: every idle check replaces it.
      h = await SupervisorHarness.start({ RENDER_BROWSER_MAX_MEMORY_MB: '64' });
      await h.waitReady();
    });
    after(async () => h?.stop());

    it('replaces a browser above RENDER_BROWSER_MAX_MEMORY_MB and still renders', async () => {
      await waitFor(
        async () =>
          (await restartCount(h, 'render_browser_restarts_total', {
            reason: 'memory',
          })) >= 1,
        30_000,
        'a memory recycle',
      );
      await smokeBatch(h, 2);
      await h.waitNoLeftovers(15_000);
    });
  });
});
