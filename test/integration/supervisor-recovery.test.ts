// The supervisor watching real daemons and their Chromium: each fault is
// injected with a signal while a task is in hand, and the test checks that
// the daemon or browser is replaced in time, the task ends with exactly one
// result, nothing of the dead processes is left, and /readyz told the truth.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  SupervisorHarness,
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

/** Samples sent after `fromMs` and before `toMs` must all be 503. */
function notReadyBetween(
  h: SupervisorHarness,
  fromMs: number,
  toMs: number,
): void {
  const window = h.samplesSentBetween(fromMs, toMs);
  const after = h.samplesSentBetween(fromMs - 1_000, Number.MAX_SAFE_INTEGER);
  assert.ok(
    after.some((s) => s.status === 503),
    'readyz went 503 after the fault',
  );
  assert.deepEqual(
    window.filter((s) => s.status !== 503),
    [],
    'readyz said ready while no daemon was',
  );
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
    const readyAt = Date.now();
    // Margins of a second: this machine's event loop lags under load.
    notReadyBetween(h, killedAt + 1_000, readyAt - 1_000);
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

    const result = await exactlyOneResult(h, id);
    assert.equal(result.success, true, result.error);
  });

  it("replaces a daemon's SIGKILLed Chromium and retries the task in hand", async () => {
    const before = parsePrometheus(await (await h.get('/metrics')).text());
    const id = await h.enqueue('slow', { wait_ms: 3000 });
    const old = await waitRendering(h, id);
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

  before(async () => {
    scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-dying-daemon-'));
    const script = path.join(scriptDir, 'dying-daemon.js');
    fs.writeFileSync(script, 'process.exit(3);\n');
    h = await SupervisorHarness.start({}, { daemonScript: script });
  });
  after(async () => {
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
  });
});
