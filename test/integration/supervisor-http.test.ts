// The supervisor's HTTP surface on a real supervisor: health checks,
// metrics that match the tasks run, access control (admin token, loopback,
// CSRF), the files of the embedded default, the pid file, and drain.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type Koa from 'koa';
import type { Config } from '../../src/config';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { authorised, sameOrigin } from '../../src/supervisor/access';
import {
  SupervisorHarness,
  metric,
  parsePrometheus,
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

  describe('drain', () => {
    it('drains on an authenticated POST /api/drain: the task in hand is answered or given back, the pid file removed', async () => {
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
      assert.equal(fs.existsSync(h.config.pidFile), false);
      const answered =
        h.resultsOf(id).length === 1 && h.attemptsOf(id) === undefined;
      const givenBack =
        h.resultsOf(id).length === 0 && h.leaseUntilOf(id) === 0;
      assert.ok(
        answered || givenBack,
        'finished within the grace, or given back',
      );
      assert.equal(
        (await fetch(`${h.baseUrl}/healthz`).catch(() => null))?.status,
        undefined,
      );
    });
  });
});
