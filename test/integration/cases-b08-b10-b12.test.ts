// Cases B08 (renderer crash fails fast, pool recovers), B10 (no zombie or
// leftover Chromium processes or profiles after crashes) and B12 (health
// tells the truth about dead, frozen and unstartable browsers), failures
// reported against other render services, here run on a real supervisor
// with real Chromium.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TaskFinishedMessage } from '../../src/daemon/messages';
import {
  SupervisorHarness,
  chromiumZombies,
  metric,
  parsePrometheus,
  busiestRenderer,
  rendererPids,
  sleep,
  waitFor,
} from '../support/supervisor-harness';
import { chromiumProcessesOf } from '../support/renderer';

/**
 * The per-render timeout T of these tests, in seconds. A heap-exhausting
 * script takes Chromium's V8 1.3 to 3.6 s of GC thrashing to die on this
 * 2-core machine, and up to 6.1 s with a busy render beside it while other
 * suites load the machine (measured); B08 wants the failure in under
 * 0.5·T, 8 s.
 */
const T_SECONDS = 16;

/**
 * B10's kill cycles and renders in this test. The case asks for 20 and 50;
 * a cycle takes about 5 s here (a 3 s render, its retry after a 1 s
 * backoff), so the full run takes two minutes and is the "soak" figure of
 * scripts/benchmark.ts instead.
 */
const B10_CYCLES = 3;
const B10_RENDERS = 10;

/** The browser probe interval I of these tests, in ms. */
const PROBE_MS = 1_500;

type Finished = TaskFinishedMessage & { daemon: string; atMs: number };

/** Records every task-finished event of the supervisor. */
function recordFinished(h: SupervisorHarness): Finished[] {
  const events: Finished[] = [];
  h.supervisor.pool.on(
    'task-finished',
    (m: TaskFinishedMessage & { daemon: string }) =>
      events.push({ ...m, atMs: Date.now() }),
  );
  return events;
}

/**
 * The task-finished events of a task, once there are `count` of them: the
 * daemon reports an attempt to the supervisor just after it publishes the
 * result, so a result can be on the queue a moment before its event.
 */
async function finishedOf(
  finished: Finished[],
  taskId: string,
  count: number,
): Promise<Finished[]> {
  const of = () => finished.filter((e) => e.taskId === taskId);
  await waitFor(
    () => of().length >= count,
    10_000,
    () => `${count} finished events of ${taskId}, got ${of().length}`,
  );
  return of();
}

async function metrics(h: SupervisorHarness): Promise<Map<string, number>> {
  return parsePrometheus(await (await h.get('/metrics')).text());
}

async function browserRestarts(
  h: SupervisorHarness,
  reason: string,
): Promise<number> {
  return metric(await metrics(h), 'render_browser_restarts_total', { reason });
}

/**
 * "P smoke tasks at once": with pool size P (pages of the one daemon), P
 * smoke tasks enqueued together all succeed in under 10 s. Only honest
 * with every slot free, so it first waits until nothing is rendering.
 */
async function poolSmokesOk(h: SupervisorHarness): Promise<void> {
  await waitFor(
    () => h.daemons().every((d) => d.tasks.length === 0),
    60_000,
    'every slot free',
  );
  const pool = h.config.daemons * h.config.pagesPerDaemon;
  const startedAt = Date.now();
  const ids: string[] = [];
  for (let i = 0; i < pool; i++) ids.push(await h.enqueue('smoke'));
  for (const id of ids) {
    const result = await h.waitForResult(id, 10_000);
    assert.equal(result.success, true, result.error);
  }
  const tookMs = Date.now() - startedAt;
  assert.ok(tookMs < 10_000, `${pool} smoke tasks took ${tookMs} ms`);
}

/** "Next task OK": a smoke task succeeds in under 10 s and /healthz is 200. */
async function nextTaskOk(h: SupervisorHarness): Promise<void> {
  const started = Date.now();
  const id = await h.enqueue('smoke');
  const result = await h.waitForResult(id, 10_000);
  assert.equal(result.success, true, result.error);
  assert.ok(Date.now() - started < 10_000);
  assert.equal((await h.get('/healthz')).status, 200);
}

async function waitRendering(
  h: SupervisorHarness,
  taskId: string,
): Promise<void> {
  await waitFor(
    () => h.daemons().some((d) => d.tasks.some((t) => t.taskId === taskId)),
    15_000,
    `task ${taskId} rendering`,
  );
}

describe('cases B08, B10, B12', function () {
  this.timeout(120_000);
  const env = {
    RENDER_PAGES_PER_DAEMON: '2',
    RENDER_MAX_ATTEMPTS: '2',
    RENDER_TIMEOUT_SECONDS: String(T_SECONDS),
    RENDER_LEASE_SECONDS: String(T_SECONDS + 2),
    RENDER_BROWSER_PROBE_MS: String(PROBE_MS),
    RENDER_BROWSER_PROBE_TIMEOUT_MS: '700',
  };

  describe('with a plain supervisor', () => {
    let h: SupervisorHarness;
    let finished: Finished[];
    let zombiesBefore: number;

    before(async () => {
      zombiesBefore = chromiumZombies().length;
      h = await SupervisorHarness.start(env);
      finished = recordFinished(h);
      await h.waitReady();
    });
    after(async () => h?.stop());
    beforeEach(async () => h.waitReady());

    it('B08(a): a heap-exhausting template fails in under 0.5·T with a crash error; a render beside it is unaffected', async () => {
      const started = Date.now();
      const hog = await h.enqueue('heap-hog');
      await waitRendering(h, hog);
      // A 3 s render in the daemon's other page while the hog grows.
      const beside = await h.enqueue('slow', { wait_ms: 3000 });

      const besideResult = await h.waitForResult(beside, 30_000);
      assert.equal(besideResult.success, true, besideResult.error);
      const result = await h.waitForResult(hog, 40_000);
      assert.equal(result.success, false);
      assert.match(result.error ?? '', /crash/i);
      assert.match(result.error ?? '', /gave up after 2 attempts/);

      const attempts = await finishedOf(finished, hog, 2);
      assert.deepEqual(
        attempts.map((e) => e.outcome),
        ['retry', 'failure'],
      );
      for (const attempt of attempts) {
        // The crash, not the deadline, ended each attempt, in under 0.5·T.
        assert.match(attempt.error ?? '', /renderer crashed/);
        assert.ok(
          attempt.durationMs < (T_SECONDS * 1000) / 2,
          `attempt took ${attempt.durationMs} ms`,
        );
      }
      // The render beside it ran at the same time as the first crash, in
      // one attempt.
      const besideDone = await finishedOf(finished, beside, 1);
      assert.deepEqual(
        besideDone.map((e) => e.outcome),
        ['success'],
      );
      const first = attempts[0] as Finished;
      const besideEvent = besideDone[0] as Finished;
      assert.ok(
        besideEvent.atMs - besideEvent.durationMs < first.atMs &&
          besideEvent.atMs > first.atMs - first.durationMs,
        'the two renders overlapped',
      );
      assert.ok(Date.now() - started < 40_000);
      await nextTaskOk(h);
      await poolSmokesOk(h);
    });

    it('B08(b): killing the renderer of a slow render fails that attempt with a crash error within 0.5·T', async () => {
      // Renderers of earlier renders (or spare ones) are not the render's.
      const older = new Set(rendererPids(h.daemon().browserPid));
      const slow = await h.enqueue('slow', { wait_ms: 100000 });
      await waitRendering(h, slow);
      // Once one of the renderers started for it burns CPU, the busy script
      // runs; under load it may take a moment to start.
      await waitFor(
        async () =>
          (await busiestRenderer(h.daemon().browserPid, 1_500, 30, older)) !==
          undefined,
        10_000,
        'the renderer running the busy script',
      );
      // Chromium starts several renderers for a render; which one
      // serves the page cannot be told from outside (the busiest is not
      // always it), so all of them go. The page's is among them.
      const fresh = rendererPids(h.daemon().browserPid).filter(
        (pid) => !older.has(pid),
      );
      const killedAt = Date.now();
      for (const pid of fresh) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already (a spare renderer that Chromium retired).
        }
      }

      await waitFor(
        () => finished.some((e) => e.taskId === slow),
        (T_SECONDS * 1000) / 2,
        () =>
          `first attempt over (killed renderers ${JSON.stringify(fresh)}; ` +
          `renderers now ${JSON.stringify(rendererPids(h.daemon().browserPid))})`,
      );
      const first = finished.find((e) => e.taskId === slow) as Finished;
      assert.equal(first.outcome, 'retry');
      assert.match(first.error ?? '', /crash/i);
      assert.ok(
        first.atMs - killedAt < (T_SECONDS * 1000) / 2,
        `${first.atMs - killedAt} ms`,
      );

      // Its retry hangs again until T and gives up; then, with every slot
      // free, P smoke tasks at once.
      const last = await h.waitForResult(slow, T_SECONDS * 1000 + 30_000);
      assert.equal(last.success, false);
      assert.match(last.error ?? '', /gave up after 2 attempts/);
      await nextTaskOk(h);
      await poolSmokesOk(h);
    });

    it(`B10: ${B10_CYCLES} cycles of killing the browser mid-render, then ${B10_RENDERS} renders, leave no zombie, extra process or profile behind (the full 20 and 50: scripts/benchmark.ts soak)`, async function () {
      // About 10 s a cycle while other suites load the machine.
      this.timeout(240_000);
      const cycles = B10_CYCLES;
      // Chromium's singleton-socket folders of this test's browsers (other
      // suites on the machine make their own), read from each profile's
      // SingletonSocket link while the profile exists.
      const socketDirs = new Set<string>();
      const watchSockets = setInterval(() => {
        for (const profile of h.profilesSeen) {
          try {
            const target = fs.readlinkSync(
              path.join(profile, 'SingletonSocket'),
            );
            socketDirs.add(path.dirname(target));
          } catch {
            // Not made yet, or the profile is gone already.
          }
        }
      }, 50);
      watchSockets.unref();
      // The steady state after start-up: one idle browser and its helpers.
      await h.waitReady();
      await waitFor(
        () => h.daemons().every((d) => d.tasks.length === 0),
        60_000,
        'every slot free',
      );
      await sleep(1_000);
      const baseline = chromiumProcessesOf(process.pid, h.profilesSeen).length;
      assert.ok(baseline > 0, 'the live browser is counted');
      const tasks: string[] = [];
      for (let cycle = 0; cycle < cycles; cycle++) {
        await h.waitReady();
        const id = await h.enqueue('slow', { wait_ms: 3000 });
        tasks.push(id);
        await waitRendering(h, id);
        const browserPid = h.daemon().browserPid;
        process.kill(browserPid, 'SIGKILL');
        // One cycle at a time: a retry rendering beside the next cycle's
        // task would be killed too and run out of attempts.
        assert.equal((await h.waitForResult(id, 30_000)).success, true);
        assert.notEqual(h.daemon().browserPid, browserPid);
      }
      const normal: string[] = [];
      for (let i = 0; i < B10_RENDERS; i++)
        normal.push(await h.enqueue('smoke'));
      for (const id of [...tasks, ...normal]) {
        assert.equal((await h.waitForResult(id, 60_000)).success, true);
        assert.equal(h.resultsOf(id).length, 1);
      }

      const retries = finished.filter(
        (e) => tasks.includes(e.taskId) && e.outcome === 'retry',
      );
      assert.equal(
        retries.length,
        cycles,
        'each killed render was retried, none lost',
      );
      await h.waitNoLeftovers();
      assert.ok(h.profilesSeen.size > cycles, 'the test saw every browser');
      // Chromium's singleton-socket folders: at most the live browser's.
      clearInterval(watchSockets);
      assert.ok(socketDirs.size >= cycles, 'the test saw the socket folders');
      const leftSockets = [...socketDirs].filter((dir) => fs.existsSync(dir));
      assert.ok(leftSockets.length <= 1, leftSockets.join(', '));
      // A zombie whose parent is alive is reaped a moment later: only one
      // that stays is a leak.
      await waitFor(
        () => chromiumZombies().length <= zombiesBefore,
        5_000,
        () => chromiumZombies().join('; '),
      );
      // `pgrep -c chrom` ≤ baseline + 2, for this supervisor's processes.
      await waitFor(
        () =>
          chromiumProcessesOf(process.pid, h.profilesSeen).length <=
          baseline + 2,
        15_000,
        () =>
          `at most ${baseline + 2} Chromium processes, still ` +
          chromiumProcessesOf(process.pid, h.profilesSeen).join('; '),
      );
    });

    it('B12(a): a SIGSTOPped browser makes /readyz fail within 2·I, is replaced, and service resumes', async () => {
      const before = await browserRestarts(h, 'unresponsive');
      h.startSampling(250);
      const browserPid = h.daemon().browserPid;
      const stoppedAt = Date.now();
      process.kill(browserPid, 'SIGSTOP');
      try {
        await waitFor(
          () =>
            h.readySamples.some((s) => s.status !== 200 && s.atMs > stoppedAt),
          2 * PROBE_MS,
          'a non-200',
        );
        await waitFor(
          () =>
            h.readySamples.some(
              (s) => s.status === 200 && s.atMs > stoppedAt + 2 * PROBE_MS,
            ),
          30_000,
          '200 again',
        );
      } finally {
        h.stopSampling();
      }
      assert.notEqual(h.daemon().browserPid, browserPid);
      assert.equal((await browserRestarts(h, 'unresponsive')) - before, 1);
      await h.waitNoLeftovers();
      await nextTaskOk(h);
    });

    it('B12(a): a browser SIGSTOPped during a render makes /readyz fail within 2·I; the task is retried and answered once', async () => {
      const before = await browserRestarts(h, 'unresponsive');
      const id = await h.enqueue('slow', { wait_ms: 3000 });
      await waitRendering(h, id);
      h.startSampling(250);
      const browserPid = h.daemon().browserPid;
      const stoppedAt = Date.now();
      process.kill(browserPid, 'SIGSTOP');
      try {
        await waitFor(
          () =>
            h.readySamples.some(
              (s) => s.status !== 200 && s.sentMs > stoppedAt,
            ),
          2 * PROBE_MS,
          'a non-200 while the render was running',
        );
        const result = await h.waitForResult(id, 40_000);
        assert.equal(result.success, true, result.error);
      } finally {
        h.stopSampling();
        // Killed by the renderer already; a no-op then.
        try {
          process.kill(browserPid, 'SIGCONT');
        } catch {
          // Gone, as it should be.
        }
      }
      const attempts = await finishedOf(finished, id, 2);
      assert.deepEqual(
        attempts.map((e) => e.outcome),
        ['retry', 'success'],
      );
      assert.match(attempts[0]?.error ?? '', /crash|closed/i);
      assert.equal(h.resultsOf(id).length, 1, 'answered once');
      assert.notEqual(h.daemon().browserPid, browserPid);
      assert.equal((await browserRestarts(h, 'unresponsive')) - before, 1);
      await h.waitNoLeftovers();
      await nextTaskOk(h);
    });

    it('B12: a SIGKILLed idle browser is reported not ready by the heartbeat of its disconnect', async () => {
      const changes: { pid: number; ready: boolean; atMs: number }[] = [];
      const record = () => {
        const d = h.daemon();
        changes.push({
          pid: d.browserPid,
          ready: d.browserReady,
          atMs: Date.now(),
        });
      };
      h.supervisor.pool.on('change', record);
      try {
        const browserPid = h.daemon().browserPid;
        const killedAt = Date.now();
        process.kill(browserPid, 'SIGKILL');
        // The heartbeat sent at the disconnect says not ready while it still
        // names the dead browser. (Before, the first not-ready report came
        // from the replacement, with pid 0, then from the new browser.)
        await waitFor(
          () =>
            changes.some(
              (c) => c.atMs > killedAt && !c.ready && c.pid === browserPid,
            ),
          10_000,
          () =>
            `a not-ready heartbeat naming the dead browser; got ${JSON.stringify(
              changes.filter((c) => c.atMs > killedAt),
            )}`,
        );
      } finally {
        h.supervisor.pool.off('change', record);
      }
      await h.waitReady();
      await h.waitNoLeftovers();
      await nextTaskOk(h);
    });

    it('B12(c): a busy-loop render leaves the daemon healthy; only it is killed at T', async () => {
      h.startSampling(500);
      const started = Date.now();
      const hang = await h.enqueue('slow', { wait_ms: 100000 });
      await waitRendering(h, hang);
      const smoke = await h.enqueue('smoke');
      assert.equal(
        (await h.waitForResult(smoke, 15_000)).success,
        true,
        'a free slot still renders',
      );

      await waitFor(
        () => finished.some((e) => e.taskId === hang),
        T_SECONDS * 1000 + 15_000,
        'the render killed',
      );
      const first = finished.find((e) => e.taskId === hang) as Finished;
      h.stopSampling();
      assert.equal(first.outcome, 'retry');
      assert.match(
        first.error ?? '',
        new RegExp(`render time limit of ${T_SECONDS} s exceeded`),
      );
      assert.ok(
        first.atMs - started < T_SECONDS * 1000 + 4_000,
        `${first.atMs - started} ms`,
      );
      assert.ok(h.readySamples.length > 10);
      assert.deepEqual(
        h.readySamples.filter((s) => s.status !== 200),
        [],
        '/readyz always 200',
      );
      assert.equal(h.daemon().restarts, 0, 'the daemon was never restarted');
      // Its second attempt is left to the drain at the end of the suite.
    });
  });

  describe('with a browser that fails to start', () => {
    let h: SupervisorHarness;
    let dir: string;
    let budget: string;

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-chromium-wrapper-'));
      budget = path.join(dir, 'fail-budget');
      const wrapper = path.join(dir, 'chromium');
      fs.writeFileSync(
        wrapper,
        [
          '#!/bin/sh',
          '# Fails while the budget file holds a positive number, then runs Chromium.',
          `n=$(cat '${budget}' 2>/dev/null || echo 0)`,
          'if [ "$n" -gt 0 ]; then',
          `  echo $((n - 1)) > '${budget}'`,
          '  echo "chromium wrapper: failing on purpose" >&2',
          '  exit 1',
          'fi',
          'exec /usr/bin/chromium "$@"',
          '',
        ].join('\n'),
        { mode: 0o755 },
      );
      h = await SupervisorHarness.start({ ...env, CHROMIUM_PATH: wrapper });
      await h.waitReady();
    });
    after(async () => {
      await h?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('B12(b): /readyz stays 503 without flapping until the third launch starts a browser', async () => {
      const restartsBefore = await metrics(h);
      fs.writeFileSync(budget, '2');
      h.startSampling(250);
      const browserPid = h.daemon().browserPid;
      const killedAt = Date.now();
      process.kill(browserPid, 'SIGKILL');

      let sawBackoff = false;
      // When the second failing launch used up the budget: no browser can
      // have run before then.
      let failuresOverAt = 0;
      await waitFor(
        () => {
          if (!failuresOverAt && fs.readFileSync(budget, 'utf8').trim() === '0')
            failuresOverAt = Date.now();
          sawBackoff ||=
            h.daemon().browserLaunchFailures > 0 &&
            h.daemon().nextBrowserLaunchMs !== undefined;
          return (
            h.daemon().browserPid !== 0 && h.daemon().browserPid !== browserPid
          );
        },
        30_000,
        'a browser started by the third launch',
      );
      const launchedAt = Date.now();
      await h.waitReady();
      await sleep(500);
      h.stopSampling();

      assert.equal(
        fs.readFileSync(budget, 'utf8').trim(),
        '0',
        'both failing launches were tried',
      );
      assert.ok(sawBackoff, 'the launch backoff was visible in the status');
      const firstBad = h.readySamples.findIndex(
        (s) => s.atMs > killedAt && s.status !== 200,
      );
      assert.ok(firstBad >= 0, 'readyz went 503');
      // From the first 503 (the crash noticed) until the failing launches
      // are over, nothing but 503.
      const firstBadAt = h.readySamples[firstBad]?.atMs ?? 0;
      assert.ok(
        failuresOverAt > firstBadAt,
        'the budget ran out after the crash',
      );
      const early = h.readySamples.filter(
        (s) =>
          s.atMs > firstBadAt && s.atMs < failuresOverAt && s.status === 200,
      );
      assert.deepEqual(early, [], 'no 200 before the third launch');
      // No flapping: once /readyz answers 200 again it stays 200. (The
      // moment the test notices the new browser lags the heartbeat that
      // made /readyz true, so the samples are checked for order instead.)
      const after503 = h.readySamples.slice(firstBad).map((s) => s.status);
      const firstGood = after503.indexOf(200);
      assert.ok(firstGood > 0, 'readyz came back');
      assert.ok(
        after503.slice(firstGood).every((status) => status === 200),
        `no 503 after the first 200: ${after503.join(',')}`,
      );
      assert.ok(
        (h.readySamples[firstBad + firstGood]?.atMs ?? 0) <= launchedAt + 1_000,
        'ready again once the browser started',
      );
      assert.equal(h.readySamples[h.readySamples.length - 1]?.status, 200);

      const after = await metrics(h);
      const delta = (reason: string) =>
        metric(after, 'render_browser_restarts_total', { reason }) -
        metric(restartsBefore, 'render_browser_restarts_total', { reason });
      assert.equal(delta('crash') + delta('launch-failed'), 3);
      assert.equal(delta('launch-failed'), 2);
      await h.waitNoLeftovers();
      await nextTaskOk(h);
    });
  });
});
