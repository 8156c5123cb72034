// The supervisor's HTTP surface on a real supervisor: health checks,
// metrics that match the tasks run, access control (admin token, loopback,
// CSRF), the files of the embedded default, the pid file, and drain.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import type Koa from 'koa';
import type { Config } from '../../src/config';
import { startFakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { FakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { authorised, sameOrigin } from '../../src/supervisor/access';
import { CLI, startFarm } from '../support/farm';
import type { Farm } from '../support/farm';
import type { LogRecorder } from '../support/supervisor-harness';
import {
  FIXTURE_RESOURCES,
  PROJECT_ROOT,
  SupervisorHarness,
  metric,
  parsePrometheus,
  recordLogs,
  sleep,
  taskFor,
  waitFor,
} from '../support/supervisor-harness';

const TOKEN = 'test-admin-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** A stand-in for a Koa context: what access.ts reads and writes. */
function fakeContext(
  ip: string,
  headers: Record<string, string> = {},
  host = '127.0.0.1:8080',
) {
  const ctx = {
    request: { ip },
    host,
    origin: `http://${host}`,
    status: 404,
    body: undefined as unknown,
    get: (name: string) => headers[name.toLowerCase()] ?? '',
  };
  return ctx as unknown as Koa.Context & { status: number; body: unknown };
}

describe('supervisor HTTP', function () {
  this.timeout(60_000);
  let h: SupervisorHarness;

  before(async () => {
    h = await SupervisorHarness.start({
      RENDER_ADMIN_TOKEN: TOKEN,
      RENDER_INLINE_LIMIT_BYTES: '1000',
    });
    await h.waitReady();
  });
  after(async () => h?.stop());

  describe('health checks', () => {
    it('answers /healthz, /_ah/health and /readyz with a reason', async () => {
      assert.equal((await h.get('/healthz')).status, 200);
      const ah = await h.get('/_ah/health');
      assert.equal(ah.status, 200);
      assert.equal(await ah.text(), 'ok');
      const ready = await h.get('/readyz');
      assert.equal(ready.status, 200);
      assert.match(
        ((await ready.json()) as { reason: string }).reason,
        /1 daemon\(s\) ready/,
      );
    });

    it('writes the pid file', () => {
      assert.equal(
        fs.readFileSync(h.config.pidFile, 'utf8').trim(),
        String(process.pid),
      );
    });
  });

  describe('leases', () => {
    it('render_leases_held counts the leases a daemon holds', async () => {
      const held = async () =>
        metric(
          parsePrometheus(await (await h.get('/metrics')).text()),
          'render_leases_held',
          { daemon: '1' },
        );
      const id = await h.enqueue('slow', { wait_ms: 3000 });
      await waitFor(
        () => h.daemon().tasks.some((t) => t.taskId === id),
        15_000,
        'rendering',
      );
      assert.equal(await held(), 1);
      await h.waitForResult(id);
      await waitFor(() => h.daemon().tasks.length === 0, 5_000, 'idle');
      assert.equal(await held(), 0);
    });
  });

  describe('metrics', () => {
    it('counts the tasks run, their pages, bytes and durations', async () => {
      const before = parsePrometheus(await (await h.get('/metrics')).text());
      const ids = [
        await h.enqueue('smoke'),
        await h.enqueue('smoke', { copies: 3 }),
      ];
      const raw = new SqliteQueue(h.config.queue.slice('sqlite:'.length));
      ids.push(await raw.put('not json', 'task'));
      await raw.close();
      for (const id of ids) await h.waitForResult(id);

      // The result is on the queue a moment before the daemon reports it.
      let after = new Map<string, number>();
      await waitFor(
        async () => {
          const response = await h.get('/metrics');
          assert.match(
            response.headers.get('content-type') ?? '',
            /^text\/plain/,
          );
          after = parsePrometheus(await response.text());
          const total = (labels: Record<string, string>) =>
            metric(after, 'render_tasks_total', labels) -
            metric(before, 'render_tasks_total', labels);
          return (
            total({ view: 'smoke', outcome: 'success' }) +
              total({ view: 'unknown', outcome: 'failure' }) >=
            3
          );
        },
        5_000,
        'metrics of three tasks',
      );
      const delta = (name: string, labels: Record<string, string> = {}) =>
        metric(after, name, labels) - metric(before, name, labels);
      assert.equal(
        delta('render_tasks_total', { view: 'smoke', outcome: 'success' }),
        2,
      );
      assert.equal(
        delta('render_tasks_total', { view: 'unknown', outcome: 'failure' }),
        1,
      );
      assert.equal(delta('render_pages_total', { view: 'smoke' }), 4);
      assert.ok(delta('render_bytes_total', { view: 'smoke' }) > 1_000);
      assert.equal(
        delta('render_duration_seconds_count', {
          view: 'smoke',
          outcome: 'success',
        }),
        2,
      );
      assert.equal(
        delta('render_queue_wait_seconds_count', { view: 'smoke' }),
        2,
      );
      assert.equal(metric(after, 'render_daemons_ready'), 1);
      assert.equal(metric(after, 'render_leases_held', { daemon: '1' }), 0);
      assert.ok(
        metric(after, 'render_browser_memory_bytes', { daemon: '1' }) >
          10_000_000,
      );
    });
  });

  describe('files', () => {
    it('serves a linked result as a PDF and nothing outside the output folder', async () => {
      const id = await h.enqueue('smoke');
      const result = await h.waitForResult(id);
      assert.equal(result.kind, 'result#link');
      const pdf = await fetch(String(result.url));
      assert.equal(pdf.status, 200);
      assert.equal(pdf.headers.get('content-type'), 'application/pdf');
      assert.equal(
        Buffer.from(await pdf.arrayBuffer())
          .subarray(0, 4)
          .toString(),
        '%PDF',
      );
      assert.equal((await h.get('/files/..%2Fqueue.db')).status, 404);
      assert.equal((await h.get('/files/../queue.db')).status, 404);
      assert.equal((await h.get('/files/')).status, 404);
    });
  });

  describe('access', () => {
    it('refuses enqueue and restart without the admin token', async () => {
      assert.equal((await h.post('/api/tasks', taskFor('smoke'))).status, 401);
      assert.equal((await h.post('/api/daemons/1/restart')).status, 401);
      const wrong = { authorization: 'Bearer nope' };
      assert.equal(
        (await h.post('/api/tasks', taskFor('smoke'), wrong)).status,
        401,
      );
      assert.equal((await h.post('/api/drain', undefined, wrong)).status, 401);
    });

    it('enqueues with the token, and answers bad input with a 400 naming the field', async () => {
      const ok = await h.post('/api/tasks', taskFor('smoke'), AUTH);
      assert.equal(ok.status, 202);
      const bad = await h.post(
        '/api/tasks',
        taskFor('slow', { wait_ms: 5 }),
        AUTH,
      );
      assert.equal(bad.status, 400);
      assert.match(
        ((await bad.json()) as { error: string }).error,
        /option wait_ms: got 5/,
      );
      const form = await fetch(`${h.baseUrl}/api/tasks`, {
        method: 'POST',
        headers: {
          ...AUTH,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: 'resource_view=smoke',
      });
      assert.equal(form.status, 415);
      await h.waitForResult(((await ok.json()) as { task_id: string }).task_id);
    });

    it('refuses cross-site browser requests even with the token', async () => {
      const evil = { ...AUTH, origin: 'https://evil.example' };
      assert.equal(
        (await h.post('/api/daemons/1/restart', undefined, evil)).status,
        403,
      );
      const crossSite = { ...AUTH, 'sec-fetch-site': 'cross-site' };
      assert.equal(
        (await h.post('/api/daemons/1/restart', undefined, crossSite)).status,
        403,
      );
      const noCsrf = {
        ...AUTH,
        origin: h.baseUrl,
        'sec-fetch-site': 'same-origin',
      };
      const refused = await h.post('/api/daemons/1/restart', undefined, noCsrf);
      assert.equal(refused.status, 403);
      assert.match(
        ((await refused.json()) as { error: string }).error,
        /x-csrf-token/,
      );
      assert.equal(h.daemon().restarts, 0);
    });

    it('restarts a daemon with the token, and 404s an unknown one', async () => {
      assert.equal(
        (await h.post('/api/daemons/9/restart', undefined, AUTH)).status,
        404,
      );
      const old = h.daemon().pid;
      assert.equal(
        (await h.post('/api/daemons/1/restart', undefined, AUTH)).status,
        202,
      );
      await waitFor(
        () => h.daemon().pid !== old && h.daemon().pid !== 0,
        5_000,
        'new daemon',
      );
      await h.waitReady();
      assert.equal(h.daemon().restarts, 1);
    });

    it('without a token, allows actions from loopback only', () => {
      const config = { adminToken: undefined } as Config;
      const remote = fakeContext('10.1.2.3');
      assert.equal(authorised(remote, config), false);
      assert.equal(remote.status, 403);
      assert.equal(authorised(fakeContext('127.0.0.1'), config), true);
      assert.equal(authorised(fakeContext('::1'), config), true);
      assert.equal(authorised(fakeContext('::ffff:127.0.0.2'), config), true);
    });

    it('without a token, refuses a non-loopback Host (DNS rebinding)', () => {
      const config = { adminToken: undefined } as Config;
      const rebound = fakeContext('127.0.0.1', {}, 'evil.example:8080');
      assert.equal(sameOrigin(rebound, config, 'csrf'), false);
      assert.equal(rebound.status, 403);
      assert.equal(
        sameOrigin(
          fakeContext('127.0.0.1', {}, 'localhost:8080'),
          config,
          'csrf',
        ),
        true,
      );
      const browser = fakeContext('127.0.0.1', {
        origin: 'http://127.0.0.1:8080',
        'x-csrf-token': 'csrf',
      });
      assert.equal(sameOrigin(browser, config, 'csrf'), true);
    });
  });

  describe('event streams', () => {
    it('treats a dashboard or preview closing its event stream as routine, not an error', async () => {
      const logs = recordLogs();
      try {
        for (const pathname of ['/api/events', '/preview/events']) {
          for (let i = 0; i < 3; i++) {
            const abort = new AbortController();
            const response = await fetch(h.baseUrl + pathname, {
              signal: abort.signal,
            });
            assert.equal(response.status, 200, pathname);
            const reader = response.body?.getReader();
            await reader?.read();
            abort.abort();
          }
        }
        // Let the server notice the closed connections.
        await sleep(1_000);
        const errors = logs.lines.filter((l) => l['level'] === 'error');
        assert.deepEqual(errors, [], 'no error logged');
        assert.equal((await h.get('/healthz')).status, 200);
      } finally {
        logs.stop();
      }
    });
  });
});

describe('supervisor HTTP with Cloud Tasks refusing ListTasks', function () {
  this.timeout(60_000);
  let fake: FakeCloudTasks;
  let h: SupervisorHarness;
  let logs: LogRecorder;

  before(async () => {
    fake = await startFakeCloudTasks({ port: 0 });
    // The service account may lease and acknowledge, not list.
    fake.failNext('ListTasks', grpc.status.PERMISSION_DENIED, 1_000_000);
    logs = recordLogs();
    h = await SupervisorHarness.start({
      RENDER_QUEUE: `cloud-tasks:projects/test/locations/here/queues/q-${randomUUID()}`,
      RENDER_CLOUD_TASKS_ENDPOINT: fake.address,
      METADATA_SERVER_DETECTION: 'none',
    });
  });
  after(async () => {
    logs?.stop();
    await h?.stop();
    await fake?.stop();
  });

  it('shows the depth as unknown on /, /api/status and /metrics, logged once, and again once it can be read', async () => {
    for (let round = 0; round < 3; round++) {
      const page = await h.get('/');
      assert.equal(page.status, 200);
      assert.match(
        await page.text(),
        /<strong id="queue-depth">unknown<\/strong>/,
      );
      const status = await h.get('/api/status');
      assert.equal(status.status, 200);
      assert.equal(
        ((await status.json()) as { queueDepth: unknown }).queueDepth,
        null,
      );
      const metrics = await h.get('/metrics');
      assert.equal(metrics.status, 200);
      assert.equal(
        metric(parsePrometheus(await metrics.text()), 'render_queue_depth'),
        -1,
      );
      // Past the second a reading is shared: each round asks the queue.
      await sleep(1_100);
    }
    const warned = logs.lines.filter(
      (l) =>
        l['message'] ===
        'cannot read the queue depth; shown as unknown until it can',
    );
    assert.equal(warned.length, 1, 'one warning for the whole episode');
    assert.equal(warned[0]?.['level'], 'warn');
    assert.match(
      String(warned[0]?.['error']),
      /PERMISSION_DENIED|injected fault/,
    );
    assert.equal(
      logs.lines.filter((l) => l['message'] === 'request failed').length,
      0,
    );

    fake.failNext('ListTasks', grpc.status.PERMISSION_DENIED, 0);
    await sleep(1_100);
    const status = (await (await h.get('/api/status')).json()) as {
      queueDepth: unknown;
    };
    assert.equal(status.queueDepth, 0);
    assert.ok(
      logs.lines.some((l) => l['message'] === 'queue depth can be read again'),
    );
  });
});

describe('supervisor pid file', function () {
  this.timeout(60_000);
  let farm: Farm | undefined;

  after(async () => {
    if (farm?.process.exitCode === null) await farm.stop();
  });

  it('refuses a second supervisor on the same pid file, and the first keeps its file', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: FIXTURE_RESOURCES,
    });
    const pidFile = path.join(farm.dir, 'supervisor.pid');
    const firstPid = farm.process.pid;
    assert.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(firstPid));

    const second = spawnSync('node', [CLI, 'start'], {
      env: {
        ...process.env,
        RENDER_QUEUE: `sqlite:${path.join(farm.dir, 'second.db')}`,
        RENDER_OUTPUT_DIR: path.join(farm.dir, 'second-output'),
        RENDER_RESOURCES_DIR: FIXTURE_RESOURCES,
        RENDER_PID_FILE: pidFile,
        RENDER_PORT: '0',
        RENDER_DAEMONS: '1',
      },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(second.status, 2, second.stderr);
    assert.match(second.stderr, /RENDER_PID_FILE/);
    assert.match(
      second.stderr,
      new RegExp(
        `names pid ${firstPid}, a render-farm supervisor that is still running`,
      ),
    );
    assert.doesNotMatch(second.stdout, /serving on/);
    assert.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(firstPid));

    // A pid file naming some other live process is stale: replaced.
    assert.equal(await farm.stop(), 0);
    assert.equal(fs.existsSync(pidFile), false, 'removed by its owner');
    fs.writeFileSync(pidFile, `${process.pid}\n`);
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: FIXTURE_RESOURCES,
      RENDER_PID_FILE: pidFile,
    });
    assert.equal(
      fs.readFileSync(pidFile, 'utf8').trim(),
      String(farm.process.pid),
    );
    assert.ok(
      farm.logs.some((l) =>
        String(l['message']).startsWith(
          'pid file names a live process that is not a render-farm',
        ),
      ),
    );
    // Only its own pid file is removed: one naming someone else stays.
    fs.writeFileSync(pidFile, `${process.pid}\n`);
    assert.equal(await farm.stop(), 0);
    assert.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(process.pid));
  });
});

describe('supervisor drain', function () {
  this.timeout(90_000);

  it('finishes a render well inside the grace, answers it, and every process exits 0', async () => {
    const h = await SupervisorHarness.start({
      RENDER_ADMIN_TOKEN: TOKEN,
      RENDER_DRAIN_GRACE_SECONDS: '20',
      RENDER_TIMEOUT_SECONDS: '20',
      RENDER_LEASE_SECONDS: '30',
    });
    try {
      await h.waitReady();
      const id = await h.enqueue('slow', { wait_ms: 3000 });
      await waitFor(
        () => h.daemon().tasks.some((t) => t.taskId === id),
        15_000,
        'rendering',
      );
      const response = await h.post('/api/drain', undefined, AUTH);
      assert.equal(response.status, 202);
      await h.supervisor.drain();

      assert.equal(h.daemon().state, 'stopped');
      assert.equal(h.daemon().lastExit, 'exited with code 0');
      assert.equal(fs.existsSync(h.config.pidFile), false);
      const results = h.resultsOf(id);
      assert.equal(results.length, 1, 'answered once');
      assert.equal(results[0]?.success, true, results[0]?.error);
      assert.equal(h.attemptsOf(id), undefined, 'acknowledged');
      assert.equal(
        (await fetch(`${h.baseUrl}/healthz`).catch(() => null))?.status,
        undefined,
        'no longer serving',
      );
    } finally {
      await h.stop();
    }
  });

  it('gives back a render longer than the grace; it is answered later, once, and every process exits 0', async () => {
    const farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: FIXTURE_RESOURCES,
      RENDER_STATIC_DIRS: path.join(PROJECT_ROOT, 'static'),
      RENDER_DRAIN_GRACE_SECONDS: '1',
    });
    const queueFile = path.join(farm.dir, 'queue.db');
    let later: SupervisorHarness | undefined;
    try {
      await farm.daemonsUp();
      const id = await farm.enqueue(taskFor('slow', { wait_ms: 3000 }));
      const holder = await farm.holderOf(id);
      assert.equal(await farm.stop(), 0, 'the supervisor exited 0');
      const stopped = farm.logs.filter(
        (l) => l['message'] === 'daemon stopped' && l['part'] === 'supervisor',
      );
      assert.deepEqual(
        stopped.map((l) => [l['daemon'], l['code'], l['signal']]),
        [['1', 0, null]],
        'the daemon exited 0',
      );
      assert.ok(
        farm.logs.some(
          (l) =>
            l['message'] === 'gave back the lease of an unfinished task' &&
            l['task_id'] === id &&
            l['pid'] === holder.pid,
        ),
        'the daemon gave the lease back',
      );

      const db = new Database(queueFile, { readonly: true });
      const row = db
        .prepare('SELECT lease_until_ms, attempts FROM tasks WHERE id = ?')
        .get(id) as { lease_until_ms: number; attempts: number } | undefined;
      const answers = db
        .prepare("SELECT COUNT(*) AS n FROM tasks WHERE tag = 'result'")
        .get() as { n: number };
      db.close();
      assert.deepEqual(
        row,
        { lease_until_ms: 0, attempts: 1 },
        'given back, not left leased',
      );
      assert.equal(answers.n, 0, 'not answered before the drain ended');

      later = await SupervisorHarness.start({
        RENDER_QUEUE: `sqlite:${queueFile}`,
      });
      const result = await later.waitForResult(id, 30_000);
      assert.equal(result.success, true, result.error);
      await sleep(1_000);
      assert.equal(later.resultsOf(id).length, 1, 'answered exactly once');
    } finally {
      await later?.stop();
      fs.rmSync(farm.dir, { recursive: true, force: true });
    }
  });
});
