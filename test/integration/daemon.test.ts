// The daemon in this process, on a real queue (SQLite, or the real Cloud
// Tasks client against the fake service on loopback) and a real Chromium.
// Faults are injected by thin wrappers around the real queue.
process.env.METADATA_SERVER_DETECTION = 'none';

import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { ProtocolError } from 'puppeteer-core';
import winston from 'winston';
import { loadConfig } from '../../src/config';
import type { Config } from '../../src/config';
import { Daemon } from '../../src/daemon/daemon';
import type {
  DaemonMessage,
  HeartbeatMessage,
  TaskFinishedMessage,
} from '../../src/daemon/messages';
import { inlineResult, messageBytes } from '../../src/daemon/result';
import { taskErrorOf } from '../../src/daemon/task-error';
import { BrowserCrashedError, LeaseLostError } from '../../src/errors';
import { CloudTasksQueue } from '../../src/queue/cloud-tasks-queue';
import { startFakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { FakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { LeasedTask, TaskQueue } from '../../src/queue/queue';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { DocumentStore } from '../../src/storage/storage';
import { takeResults, waitFor, waitTasksAcknowledged } from '../support/farm';
import { makeResourceRoot, taskFor } from '../support/resources';
import { testRenderer } from '../support/renderer';

type Backend = 'sqlite' | 'cloud-tasks';
type Result = Record<string, unknown>;

/** The real queue with every call passed through; tests override some. */
class Passing implements TaskQueue {
  wasAnswered?: (taskId: string) => Promise<boolean>;
  recordAnswer?: (taskId: string) => Promise<void>;
  constructor(readonly inner: TaskQueue) {
    if (inner.wasAnswered) this.wasAnswered = (id) => inner.wasAnswered!(id);
    if (inner.recordAnswer) this.recordAnswer = (id) => inner.recordAnswer!(id);
  }
  get description() {
    return this.inner.description;
  }
  put(...args: Parameters<TaskQueue['put']>) {
    return this.inner.put(...args);
  }
  putIfNew(...args: Parameters<TaskQueue['putIfNew']>) {
    return this.inner.putIfNew(...args);
  }
  lease(...args: Parameters<TaskQueue['lease']>) {
    return this.inner.lease(...args);
  }
  renew(...args: Parameters<TaskQueue['renew']>) {
    return this.inner.renew(...args);
  }
  acknowledge(task: LeasedTask) {
    return this.inner.acknowledge(task);
  }
  cancelLease(task: LeasedTask) {
    return this.inner.cancelLease(task);
  }
  depth(tag: string) {
    return this.inner.depth?.(tag) ?? Promise.resolve(0);
  }
  close() {
    return this.inner.close();
  }
}

/**
 * The first acknowledgement is lost after the lease was taken back, as when
 * a worker stalls past its lease between publishing a result and
 * acknowledging it.
 */
class LosingFirstAck extends Passing {
  private lost = false;
  override async acknowledge(task: LeasedTask): Promise<void> {
    if (this.lost) return this.inner.acknowledge(task);
    this.lost = true;
    await this.inner.cancelLease(task);
    throw new LeaseLostError(`injected: acknowledgement of ${task.id} lost`);
  }
}

/**
 * Renewals land at the service at once but their answer comes back late,
 * as over a slow network: for most of the time a renewal is in flight.
 */
class SlowRenewAnswers extends Passing {
  override async renew(task: LeasedTask, leaseSeconds: number) {
    const renewed = await this.inner.renew(task, leaseSeconds);
    await sleep(900);
    return renewed;
  }
}

/**
 * At the first renewal, another worker's takeover: the lease is given back
 * behind the daemon's back and taken by `thief`, so the real queue refuses
 * the renewal (the daemon's lease token is stale).
 */
class TakenOverAtFirstRenewal extends Passing {
  /** The thief's lease, once taken. */
  taken: LeasedTask | undefined;
  constructor(
    inner: TaskQueue,
    private readonly thief: TaskQueue,
  ) {
    super(inner);
  }
  override async renew(task: LeasedTask, leaseSeconds: number) {
    if (this.taken === undefined) {
      await this.inner.cancelLease(task);
      [this.taken] = await this.thief.lease({
        tag: 'task',
        max: 1,
        leaseSeconds: 60,
      });
    }
    return this.inner.renew(task, leaseSeconds);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Log lines, parsed, of a logger the daemon writes to. */
function capturingLogger(): {
  logger: winston.Logger;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n'))
        if (line.trim() !== '')
          lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream: sink })],
  });
  return { logger, lines };
}

describe('Daemon (in process, real queue and browser)', function () {
  this.timeout(120_000);
  const root = makeResourceRoot({
    numbers: {
      manifest: { copies_differ: true },
      template:
        '<section class="page"><p>NUMBERS {{ random.sample(1, 999, 6) | join(" ") }}</p></section>',
    },
    slow: {
      manifest: {
        options: {
          wait_ms: {
            label: 'Busy wait',
            values: [0, 2500, 7000, 30000],
            default: 0,
          },
        },
      },
      template:
        '<script>const until = Date.now() + {{ wait_ms }}; while (Date.now() < until) {}</script>' +
        '<section class="page"><p>SLOW {{ wait_ms }}</p></section>',
    },
  });
  let fake: FakeCloudTasks;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-daemon-'));
  const running: Daemon[] = [];
  const opened: TaskQueue[] = [];

  before(async () => {
    fake = await startFakeCloudTasks({ port: 0 });
  });
  afterEach(async () => {
    fake.failNext('CreateTask', grpc.status.UNAVAILABLE, 0);
    for (const daemon of running.splice(0)) await daemon.stop(0);
    for (const queue of opened.splice(0)) await queue.close();
  });
  after(async () => {
    await fake.stop();
  });

  /** A fresh queue of a backend: `client()` opens one more handle on it. */
  function freshQueue(backend: Backend) {
    const file = path.join(dir, `${randomUUID()}.db`);
    const queuePath = `projects/test/locations/here/queues/q-${randomUUID()}`;
    const client = (retry: { budgetMs?: number } = {}): TaskQueue => {
      const queue =
        backend === 'sqlite'
          ? new SqliteQueue(file)
          : new CloudTasksQueue(queuePath, {
              emulatorEndpoint: fake.address,
              retry: { initialDelayMs: 20, maxDelayMs: 200, ...retry },
              logger: capturingLogger().logger,
            });
      opened.push(queue);
      return queue;
    };
    return { client, queuePath };
  }

  async function startDaemon(
    queue: TaskQueue,
    overrides: Partial<Config> = {},
  ) {
    const config: Config = {
      ...loadConfig({ RENDER_POLL_MS: '50', RENDER_DAEMONS: '1' }),
      ...overrides,
    };
    const { renderer, catalogue } = testRenderer(root, { pages: 1 });
    const store = new DocumentStore(
      path.join(dir, 'output'),
      'http://127.0.0.1/files/',
    );
    const events: DaemonMessage[] = [];
    const { logger, lines } = capturingLogger();
    const daemon = new Daemon({
      config,
      queue,
      catalogue,
      renderer,
      store,
      logger,
      report: (message) => events.push(message),
    });
    running.push(daemon);
    await daemon.start();
    const heartbeats = () =>
      events.filter((e): e is HeartbeatMessage => e.type === 'heartbeat');
    const finished = () =>
      events.filter(
        (e): e is TaskFinishedMessage => e.type === 'task-finished',
      );
    const holding = (taskId: string) =>
      heartbeats()
        .at(-1)
        ?.tasks.some((t) => t.taskId === taskId) ?? false;
    return { daemon, events, lines, heartbeats, finished, holding };
  }

  const sha256 = (r: Result) =>
    createHash('sha256')
      .update(Buffer.from(String(r['document']), 'base64'))
      .digest('hex');

  for (const backend of ['sqlite', 'cloud-tasks'] as const) {
    describe(`on ${backend}`, () => {
      it('B17(c): a task delivered again after a lost acknowledgement gives the same document, flagged duplicate', async () => {
        const { client } = freshQueue(backend);
        const inner = client();
        const id = await inner.put(
          JSON.stringify(taskFor('numbers', { copies: 2 })),
          'task',
          { id: 'T3' },
        );
        await startDaemon(new LosingFirstAck(client()));
        const results = await takeResults(inner, 2, 60_000);
        expect(results).to.have.length(2);
        expect(results.map((r) => r['task_id'])).to.deep.equal([id, id]);
        expect(results.filter((r) => r['duplicate'] !== true)).to.have.length(
          1,
        );
        expect(results[1]?.['duplicate']).to.equal(true);
        for (const r of results) {
          expect(r['kind']).to.equal('result#document');
          expect(String(r['document']).length).to.be.greaterThan(1000);
        }
        expect(sha256(results[0] ?? {})).to.equal(sha256(results[1] ?? {}));
        await waitTasksAcknowledged(inner);
        expect(await takeResults(inner, 1, 2_000)).to.have.length(0);
      });

      it('keeps the lease through a render longer than the lease, renewing it', async () => {
        const { client } = freshQueue(backend);
        const inner = client();
        const id = await inner.put(
          JSON.stringify(taskFor('slow', { wait_ms: 7000 })),
          'task',
        );
        const d = await startDaemon(client(), { leaseSeconds: 3 });
        await waitFor(() => d.holding(id) || undefined, 30_000, 'task held');
        // Another worker polls all along; a lapsed lease would hand it the
        // task.
        let stolen = 0;
        const results: Result[] = [];
        const deadline = Date.now() + 60_000;
        while (results.length === 0 && stolen === 0 && Date.now() < deadline) {
          const taken = await inner.lease({
            tag: 'task',
            max: 1,
            leaseSeconds: 30,
          });
          stolen += taken.length;
          results.push(...(await takeResults(inner, 1, 300)));
        }
        expect(stolen).to.equal(0);
        expect(results.map((r) => [r['task_id'], r['success']])).to.deep.equal([
          [id, true],
        ]);
        await waitTasksAcknowledged(inner);
      });

      it('stops the render at once when a renewal is refused, and publishes nothing', async () => {
        const { client } = freshQueue(backend);
        const inner = client();
        const id = await inner.put(
          JSON.stringify(taskFor('slow', { wait_ms: 30000 })),
          'task',
        );
        const wrapper = new TakenOverAtFirstRenewal(client(), inner);
        const d = await startDaemon(wrapper, { leaseSeconds: 6 });
        await waitFor(() => d.holding(id) || undefined, 30_000, 'task held');
        // Its first renewal comes 2 s into the render, and is refused.
        const other = await waitFor(() => wrapper.taken, 15_000, 'takeover');
        expect(other.id).to.equal(id);
        const takenMs = Date.now();

        await waitFor(
          () => (d.holding(id) ? undefined : true),
          12_000,
          'daemon let go of the task',
        );
        // The render (30 s of script, 20 s deadline) did not run on.
        expect(Date.now() - takenMs).to.be.below(12_000);
        await sleep(2_000);
        expect(await takeResults(inner, 1, 1_000)).to.have.length(0);
        expect(d.finished()).to.have.length(0);
        expect(
          d.lines.filter((l) =>
            /task failed|passing reason/.test(String(l['message'])),
          ),
        ).to.have.length(0);
        expect(
          d.lines.some((l) => /lease lost/.test(String(l['message']))),
        ).to.equal(true);
        // The other worker still holds the task, untouched.
        await inner.acknowledge(other);
      });

      it('drains a task on its last attempt without answering it: one result overall after a restart', async () => {
        const { client } = freshQueue(backend);
        const inner = client();
        const id = await inner.put(
          JSON.stringify(taskFor('slow', { wait_ms: 7000 })),
          'task',
        );
        const first = await startDaemon(client(), { maxAttempts: 1 });
        await waitFor(
          () => first.holding(id) || undefined,
          30_000,
          'task held',
        );
        await sleep(500);
        await first.daemon.stop(200);
        expect(first.finished()).to.have.length(0);
        expect(
          first.lines.filter((l) => l['level'] === 'error'),
          'no failure logged',
        ).to.have.length(0);
        expect(
          first.lines.some((l) =>
            /gave back the lease/.test(String(l['message'])),
          ),
        ).to.equal(true);

        // The restarted daemon gets the task back at once. The drain used
        // up its only attempt (the queue counts every delivery), so it is
        // answered without a render; either way there is one answer.
        await startDaemon(client(), { maxAttempts: 1 });
        const results = await takeResults(inner, 1, 30_000);
        expect(results).to.have.length(1);
        expect(results[0]?.['task_id']).to.equal(id);
        expect(String(results[0]?.['error'])).to.match(
          /^gave up after 1 attempts: each one was interrupted/,
        );
        expect(await takeResults(inner, 1, 3_000)).to.have.length(0);
      });
    });
  }

  it('acknowledges with the renewed lease, not one a renewal in flight made stale (Cloud Tasks)', async () => {
    const { client } = freshQueue('cloud-tasks');
    const inner = client();
    const id = await inner.put(
      JSON.stringify(taskFor('slow', { wait_ms: 2500 })),
      'task',
    );
    await startDaemon(new SlowRenewAnswers(client()), { leaseSeconds: 3 });
    const results = await takeResults(inner, 1, 30_000);
    expect(results.map((r) => r['task_id'])).to.deep.equal([id]);
    // An acknowledgement refused would leave the task to come back when
    // its 3 s lease ran out, and be answered twice.
    await waitTasksAcknowledged(inner);
    expect(await takeResults(inner, 1, 6_000)).to.have.length(0);
  });

  it('keeps putting a finished result through a queue outage; the outage costs no attempt (Cloud Tasks)', async () => {
    const { client } = freshQueue('cloud-tasks');
    const inner = client();
    const id = await inner.put(JSON.stringify(taskFor('numbers')), 'task');
    // Every CreateTask fails for a while: each of the daemon's puts spends
    // its short retry budget, so the daemon itself must try again.
    fake.failNext('CreateTask', grpc.status.UNAVAILABLE, 25);
    const d = await startDaemon(client({ budgetMs: 300 }), { maxAttempts: 1 });
    const results = await takeResults(inner, 1, 60_000);
    expect(results.map((r) => [r['task_id'], r['success']])).to.deep.equal([
      [id, true],
    ]);
    // The task-finished event follows the result, a moment later.
    const finished = await waitFor(
      () => (d.finished().length > 0 ? d.finished() : undefined),
      5_000,
      'task-finished event',
    );
    expect(finished.map((f) => f.outcome)).to.deep.equal(['success']);
    expect(
      d.lines.some((l) =>
        /could not put the result/.test(String(l['message'])),
      ),
    ).to.equal(true);
  });

  it('reports the view of a task that names a known view but fails its checks', async () => {
    const { client } = freshQueue('sqlite');
    const inner = client();
    await inner.put(
      JSON.stringify(taskFor('numbers', { copies: 'x' })),
      'task',
    );
    const d = await startDaemon(client());
    const [result] = await takeResults(inner, 1, 30_000);
    expect(String(result?.['error'])).to.match(/field copies: got "x"/);
    const [finished] = await waitFor(
      () => (d.finished().length > 0 ? d.finished() : undefined),
      5_000,
      'task-finished event',
    );
    expect(finished?.view).to.equal('numbers');
    expect(finished?.outcome).to.equal('failure');
  });
});

describe('result messages and task errors', () => {
  it('counts the room of a duplicate flag before sending a document inline', () => {
    const job = {
      taskId: 't',
      filename: 'a.pdf',
    } as Parameters<typeof inlineResult>[0];
    const pdf = Buffer.alloc(300, 1);
    const plain = inlineResult(job, pdf, 1, [], 1_000_000);
    if (plain === undefined) throw new Error('expected an inline result');
    const exact = messageBytes(plain);
    // At its exact size the message fits, but a repeat flagged
    // `duplicate: true` would not: it is linked instead.
    expect(inlineResult(job, pdf, 1, [], exact)).to.equal(undefined);
    const flagged = messageBytes({ ...plain, duplicate: true });
    expect(inlineResult(job, pdf, 1, [], flagged)).to.deep.equal(plain);
  });

  it('turns a puppeteer "Target closed" into a passing browser crash in plain words', () => {
    const raw = new ProtocolError(
      'Protocol error (Runtime.callFunctionOn): Target closed',
    );
    const mapped = taskErrorOf(raw);
    expect(mapped).to.be.instanceOf(BrowserCrashedError);
    expect((mapped as Error).message).to.equal(
      'the browser closed during the render',
    );
    const session = taskErrorOf(
      new Error('Protocol error (Page.printToPDF): Session closed.'),
    );
    expect(session).to.be.instanceOf(BrowserCrashedError);
    const other = new Error('something else');
    expect(taskErrorOf(other)).to.equal(other);
  });
});
