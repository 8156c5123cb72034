// One contract, two backends: the embedded SQLite queue and the Cloud Tasks
// queue, whose real generated client talks gRPC to a fake service on
// loopback. Nothing here reaches Google or the metadata server.
process.env.METADATA_SERVER_DETECTION = 'none';

import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import winston from 'winston';
import {
  InvalidTaskIdError,
  LeaseLostError,
  QueueUnavailableError,
} from '../../src/errors';
import { CloudTasksQueue } from '../../src/queue/cloud-tasks-queue';
import type { CloudTasksRetryPolicy } from '../../src/queue/cloud-tasks-queue';
import { startFakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { FakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { LeasedTask, TaskQueue } from '../../src/queue/queue';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import type { WorkerMessage } from '../support/lease-worker';

/** Retries kept short so that outages in tests last well under a second. */
const TEST_RETRY: CloudTasksRetryPolicy = {
  initialDelayMs: 20,
  maxDelayMs: 200,
  budgetMs: 5_000,
  callTimeoutMs: 2_000,
};

/** A little past a one-second lease, for the backends' clocks. */
const PAST_LEASE_MS = 1_150;

/** Opens queues on one shared location; `close` removes what it made. */
interface Backend {
  /** Another handle on the same queue, as a second worker would hold. */
  open(): TaskQueue;
  /** The queue as a `RENDER_QUEUE` spec and emulator endpoint. */
  spec: { queue: string; endpoint?: string };
  close(): Promise<void>;
}

/** The compiled worker process of the concurrent-leasing test. */
const LEASE_WORKER = path.resolve(
  __dirname,
  '..',
  'support',
  'lease-worker.js',
);

/**
 * Forks `count` worker processes on the queue, starts them together once
 * all are ready, and resolves the ids each one leased.
 */
async function leaseFromProcesses(
  spec: Backend['spec'],
  count: number,
): Promise<string[][]> {
  const workers = Array.from({ length: count }, () =>
    fork(LEASE_WORKER, [spec.queue, spec.endpoint ?? ''], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  const message = (worker: ChildProcess, type: WorkerMessage['type']) =>
    new Promise<WorkerMessage>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === type) resolve(m);
      });
      worker.once('exit', (code) =>
        reject(new Error(`lease worker exited with ${code} before "${type}"`)),
      );
    });
  try {
    await Promise.all(workers.map((w) => message(w, 'ready')));
    const done = workers.map((w) => message(w, 'done'));
    for (const worker of workers) worker.send('go');
    return (await Promise.all(done)).map((m) =>
      m.type === 'done' ? m.seen : [],
    );
  } finally {
    for (const worker of workers) if (worker.exitCode === null) worker.kill();
  }
}

type BackendFactory = () => Promise<Backend>;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function leaseOne(
  queue: TaskQueue,
  leaseSeconds = 30,
): Promise<LeasedTask> {
  const [task, ...rest] = await queue.lease({
    tag: 'task',
    max: 1,
    leaseSeconds,
  });
  assert.equal(rest.length, 0);
  if (task === undefined) throw new Error('expected a task, leased none');
  return task;
}

/** Every available task tagged `task`, leased for 30 s. */
function leaseAll(queue: TaskQueue): Promise<LeasedTask[]> {
  return queue.lease({ tag: 'task', max: 100, leaseSeconds: 30 });
}

/**
 * What a queue call failed with. Takes a thunk so that a backend which
 * throws synchronously instead of rejecting is still caught.
 */
async function rejection(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail, it succeeded');
}

function contract(name: string, makeBackend: BackendFactory): void {
  describe(`TaskQueue contract: ${name}`, function () {
    let backend: Backend;
    let queue: TaskQueue;

    beforeEach(async function () {
      backend = await makeBackend();
      queue = backend.open();
    });

    afterEach(async function () {
      await backend.close();
    });

    it('leases only tasks with the requested tag', async function () {
      const resultId = await queue.put('{"kind":"result#document"}', 'result');
      const taskId = await queue.put('{"kind":"task#render"}', 'task');

      const leased = await queue.lease({
        tag: 'task',
        max: 10,
        leaseSeconds: 30,
      });
      assert.deepEqual(
        leased.map((task) => task.id),
        [taskId],
      );
      assert.equal(leased[0]?.tag, 'task');
      assert.equal(leased[0]?.payload.toString(), '{"kind":"task#render"}');

      const results = await queue.lease({
        tag: 'result',
        max: 10,
        leaseSeconds: 30,
      });
      assert.deepEqual(
        results.map((task) => task.id),
        [resultId],
      );
    });

    it('hands tasks out first in, first out', async function () {
      const ids: string[] = [];
      for (const n of [1, 2, 3, 4]) ids.push(await queue.put(`t${n}`, 'task'));

      const first = await leaseOne(queue);
      const rest = await queue.lease({
        tag: 'task',
        max: 10,
        leaseSeconds: 30,
      });
      assert.deepEqual(
        [first, ...rest].map((task) => task.id),
        ids,
      );
      assert.deepEqual(
        [first, ...rest].map((task) => task.payload.toString()),
        ['t1', 't2', 't3', 't4'],
      );
    });

    it('counts the first delivery as attempt 1', async function () {
      const id = await queue.put('x', 'task');
      const task = await leaseOne(queue);
      assert.equal(task.id, id);
      assert.equal(task.attempts, 1);
      assert.ok(task.leaseExpiresAt.getTime() > Date.now());
      assert.ok(Math.abs(task.enqueuedAt.getTime() - Date.now()) < 5_000);
    });

    it('makes a task available again when its lease expires', async function () {
      const id = await queue.put('x', 'task');
      const first = await leaseOne(queue, 1);
      assert.deepEqual(await leaseAll(queue), []);

      await sleep(PAST_LEASE_MS);
      const second = await leaseOne(queue);
      assert.equal(second.id, id);
      assert.equal(second.attempts, first.attempts + 1);
      assert.notEqual(second.leaseToken, first.leaseToken);
    });

    it('keeps a renewed lease past its first expiry', async function () {
      await queue.put('x', 'task');
      const task = await leaseOne(queue, 1);
      const renewed = await queue.renew(task, 3);
      assert.ok(
        renewed.leaseExpiresAt.getTime() >
          task.leaseExpiresAt.getTime() + 1_000,
      );

      await sleep(PAST_LEASE_MS);
      assert.deepEqual(await leaseAll(queue), []);
      await queue.acknowledge(renewed);
      assert.equal(await queue.depth?.('task'), 0);
    });

    it('refuses renew, ack and cancel from a worker whose lease was taken over', async function () {
      await queue.put('x', 'task');
      const stale = await leaseOne(queue, 1);
      await sleep(PAST_LEASE_MS);
      const current = await leaseOne(backend.open());

      assert.ok(
        (await rejection(() => queue.renew(stale, 30))) instanceof
          LeaseLostError,
      );
      assert.ok(
        (await rejection(() => queue.acknowledge(stale))) instanceof
          LeaseLostError,
      );
      assert.ok(
        (await rejection(() => queue.cancelLease(stale))) instanceof
          LeaseLostError,
      );

      // The new holder is untouched by the stale worker's attempts.
      await queue.acknowledge(current);
      assert.equal(await queue.depth?.('task'), 0);
    });

    it('refuses to renew a lease that has run out', async function () {
      await queue.put('x', 'task');
      const task = await leaseOne(queue, 1);
      await sleep(PAST_LEASE_MS);
      assert.ok(
        (await rejection(() => queue.renew(task, 30))) instanceof
          LeaseLostError,
      );
    });

    it('makes a cancelled task available at once', async function () {
      const id = await queue.put('x', 'task');
      const first = await leaseOne(queue, 60);
      await queue.cancelLease(first);

      const again = await leaseOne(queue, 60);
      assert.equal(again.id, id);
      assert.equal(again.attempts, 2);
    });

    it('removes an acknowledged task for good', async function () {
      await queue.put('keep', 'result');
      await queue.put('x', 'task');
      const task = await leaseOne(queue, 1);
      await queue.acknowledge(task);

      await sleep(PAST_LEASE_MS);
      assert.deepEqual(await leaseAll(queue), []);
      assert.equal(await queue.depth?.('task'), 0);
      assert.equal(await queue.depth?.('result'), 1);
      assert.ok(
        (await rejection(() => queue.acknowledge(task))) instanceof
          LeaseLostError,
      );
    });

    it('never gives one task to two worker processes leasing at once', async function () {
      this.timeout(60_000);
      const count = 200;
      for (let n = 0; n < count; n += 1) await queue.put(`t${n}`, 'task');

      const perWorker = await leaseFromProcesses(backend.spec, 4);
      const seen = perWorker.flat();
      assert.equal(seen.length, count, 'every task leased once');
      assert.equal(new Set(seen).size, count, 'no task leased twice');
      // The workers did run side by side: more than one got tasks.
      assert.ok(perWorker.filter((ids) => ids.length > 0).length > 1);
    });

    it('puts a task with its own id only once', async function () {
      const first = await queue.put('one', 'task', { id: 'order-42_a' });
      const again = await queue.put('two', 'task', { id: 'order-42_a' });
      assert.equal(again, first);

      const leased = await leaseAll(queue);
      assert.deepEqual(
        leased.map((task) => [task.id, task.payload.toString()]),
        [[first, 'one']],
      );
      assert.ok(
        (await rejection(() =>
          queue.put('x', 'task', { id: 'no spaces' }),
        )) instanceof InvalidTaskIdError,
      );
    });

    it('creates a task with putIfNew once, and says whether it did', async function () {
      assert.equal(await queue.putIfNew('one', 'result', 'result-t1'), true);
      assert.equal(await queue.putIfNew('two', 'result', 'result-t1'), false);
      const [held] = await queue.lease({
        tag: 'result',
        max: 5,
        leaseSeconds: 30,
      });
      assert.equal(held?.payload.toString(), 'one');
      assert.equal(await queue.putIfNew('three', 'result', 'result-t1'), false);
      // Caller task ids may not take the results' prefix.
      assert.ok(
        (await rejection(() =>
          queue.put('x', 'task', { id: 'result-t1' }),
        )) instanceof InvalidTaskIdError,
      );
    });

    it('keeps binary and UTF-8 payloads byte for byte', async function () {
      const binary = Buffer.concat([
        Buffer.from(Array.from({ length: 256 }, (_, n) => n)),
        randomBytes(4_096),
      ]);
      const text = 'Zahlen: Ünïcödé ✓ 二进制卡片 🃏 "quotes" \\ \u0000 end';
      await queue.put(binary, 'task');
      await queue.put(text, 'task');

      const [first, second] = await queue.lease({
        tag: 'task',
        max: 2,
        leaseSeconds: 30,
      });
      assert.equal(first?.payload.equals(binary), true);
      assert.equal(second?.payload.toString('utf8'), text);
      assert.equal(second?.payload.equals(Buffer.from(text, 'utf8')), true);
    });
  });
}

function sqliteBackend(): Promise<Backend> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'queue-contract-'));
  const file = path.join(dir, 'queue.db');
  const opened: SqliteQueue[] = [];
  return Promise.resolve({
    spec: { queue: `sqlite:${file}` },
    open: () => {
      const queue = new SqliteQueue(file);
      opened.push(queue);
      return queue;
    },
    close: async () => {
      for (const queue of opened) await queue.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  });
}

let fake: FakeCloudTasks | undefined;

/** A fresh queue on the shared fake for each test. */
function cloudTasksBackend(): Promise<Backend> {
  if (fake === undefined) throw new Error('fake Cloud Tasks not started');
  const address = fake.address;
  const queuePath = `projects/test/locations/here/queues/q-${randomUUID()}`;
  const opened: CloudTasksQueue[] = [];
  return Promise.resolve({
    spec: { queue: `cloud-tasks:${queuePath}`, endpoint: address },
    open: () => {
      const queue = new CloudTasksQueue(queuePath, {
        emulatorEndpoint: address,
        retry: TEST_RETRY,
      });
      opened.push(queue);
      return queue;
    },
    close: async () => {
      for (const queue of opened) await queue.close();
    },
  });
}

describe('queue backends', function () {
  this.timeout(20_000);

  before(async function () {
    fake = await startFakeCloudTasks({ port: 0 });
  });

  after(async function () {
    await fake?.stop();
  });

  contract('SqliteQueue', sqliteBackend);
  contract('CloudTasksQueue (real client, fake service)', cloudTasksBackend);
});

/** Log lines a queue wrote, parsed, for assertions about what it logs. */
function capturingLogger(): { logger: winston.Logger; lines: object[] } {
  const lines: object[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as object);
      }
      done();
    },
  });
  const logger = winston.createLogger({
    level: 'info',
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream: sink })],
  });
  return { logger, lines };
}

describe('CloudTasksQueue when the service fails', function () {
  this.timeout(30_000);
  let server: FakeCloudTasks;
  let queuePath: string;

  beforeEach(async function () {
    server = await startFakeCloudTasks({ port: 0 });
    queuePath = `projects/test/locations/here/queues/q-${randomUUID()}`;
  });

  afterEach(async function () {
    await server.stop();
  });

  function open(
    retry: Partial<CloudTasksRetryPolicy> = {},
    logger?: winston.Logger,
  ): CloudTasksQueue {
    return new CloudTasksQueue(queuePath, {
      emulatorEndpoint: server.address,
      retry: { ...TEST_RETRY, ...retry },
      // Kept out of the test output; the restart test reads its own.
      logger: logger ?? capturingLogger().logger,
    });
  }

  it('retries through a restart of the service and loses nothing', async function () {
    const { logger, lines } = capturingLogger();
    const queue = open({}, logger);
    try {
      const before = await queue.put('before', 'task');
      const held = await leaseOne(queue, 30);
      assert.equal(held.id, before);
      await queue.put('queued', 'task');

      await server.pause();
      const during = queue.put('during', 'task');
      const renewal = queue.renew(held, 60);
      const leased = queue.lease({ tag: 'task', max: 10, leaseSeconds: 30 });
      await sleep(600);
      assert.equal(server.tasks(queuePath).length, 2);
      await server.resume();

      const [duringId, renewed, batch] = await Promise.all([
        during,
        renewal,
        leased,
      ]);
      assert.ok(
        renewed.leaseExpiresAt.getTime() > held.leaseExpiresAt.getTime(),
      );
      await queue.acknowledge(renewed);

      const rest = await queue.lease({
        tag: 'task',
        max: 10,
        leaseSeconds: 30,
      });
      const payloads = [...batch, ...rest].map((t) => t.payload.toString());
      assert.deepEqual(payloads.sort(), ['during', 'queued']);
      assert.ok([...batch, ...rest].map((t) => t.id).includes(duringId));

      const warns = lines.filter(
        (l) => (l as { level: string }).level === 'warn',
      );
      const infos = lines.filter(
        (l) => (l as { level: string }).level === 'info',
      );
      assert.equal(warns.length, 1, 'one warning for the whole outage');
      assert.equal(infos.length, 1, 'one line when it recovers');
      assert.ok(
        Number(
          (infos[0] as { failedCalls?: number } | undefined)?.failedCalls,
        ) >= 3,
      );
    } finally {
      await queue.close();
    }
  });

  it('throws QueueUnavailableError once the retry budget is spent', async function () {
    const queue = open({ budgetMs: 400 });
    try {
      await server.pause();
      const startedMs = Date.now();
      const error = await rejection(() => queue.put('x', 'task'));
      const elapsedMs = Date.now() - startedMs;
      assert.ok(error instanceof QueueUnavailableError);
      assert.match(String(error), /UNAVAILABLE/);
      assert.ok(elapsedMs >= 400);
      assert.ok(elapsedMs < 400 + TEST_RETRY.maxDelayMs + 2_000);
    } finally {
      await queue.close();
    }
  });

  it('retries RESOURCE_EXHAUSTED and INTERNAL answers', async function () {
    const queue = open();
    try {
      server.failNext('CreateTask', grpc.status.RESOURCE_EXHAUSTED, 2);
      server.failNext('LeaseTasks', grpc.status.INTERNAL, 2);
      const id = await queue.put('x', 'task');
      const task = await leaseOne(queue);
      assert.equal(task.id, id);
      assert.equal(server.tasks(queuePath).length, 1);
    } finally {
      await queue.close();
    }
  });

  it('fails at once, without retrying, on PERMISSION_DENIED', async function () {
    const queue = open({ budgetMs: 10_000 });
    try {
      server.failNext('CreateTask', grpc.status.PERMISSION_DENIED, 1);
      const startedMs = Date.now();
      const error = await rejection(() => queue.put('x', 'task'));
      assert.ok(error instanceof QueueUnavailableError);
      assert.match(String(error), /PERMISSION_DENIED/);
      assert.ok(Date.now() - startedMs < 1_000);
      // The fault was used up by that one call: the next one succeeds.
      await queue.put('y', 'task');
      assert.deepEqual(
        server.tasks(queuePath).map((t) => t.payload.toString()),
        ['y'],
      );
    } finally {
      await queue.close();
    }
  });

  it('keeps the name of a removed task taken, as the service does', async function () {
    const queue = open();
    try {
      const name = await queue.put('x', 'task', { id: 'once' });
      const task = await leaseOne(queue);
      await queue.acknowledge(task);
      assert.equal(await queue.put('y', 'task', { id: 'once' }), name);
      assert.equal(await queue.putIfNew('y', 'task', 'once'), false);
      assert.deepEqual(server.tasks(queuePath), []);
    } finally {
      await queue.close();
    }
  });

  it('treats a task gone after a retried acknowledgement as acknowledged', async function () {
    const queue = open();
    try {
      await queue.put('x', 'task');
      const task = await leaseOne(queue);
      // Stand-in for a first try that landed but whose answer was lost:
      // the task is removed behind the queue's back, and its next call
      // fails once with UNAVAILABLE before the retry finds the task gone.
      const name = task.id;
      const other = open();
      await other.acknowledge(task);
      await other.close();
      server.failNext('AcknowledgeTask', grpc.status.UNAVAILABLE, 1);
      await queue.acknowledge(task);
      assert.ok(
        !server
          .tasks(queuePath)
          .map((t) => t.name)
          .includes(name),
      );
    } finally {
      await queue.close();
    }
  });
});
