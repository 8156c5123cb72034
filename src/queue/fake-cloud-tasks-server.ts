/**
 * A stand-in for Google Cloud Tasks (`v2beta2`, pull queues only) served over
 * gRPC on loopback, built from the `.proto` files that ship inside
 * `@google-cloud/tasks`. Tests point the real `CloudTasksClient` at it with
 * insecure credentials; developers can run it as an emulator:
 *
 *     node dist/src/queue/fake-cloud-tasks-server.js --port 8123
 *
 * It keeps the service's pull-queue rules: a lease moves a task's
 * `schedule_time` to the lease's end, and acknowledge, renew and cancel must
 * name that exact `schedule_time`, so a worker whose lease expired and was
 * taken by another cannot touch the task any more. Queues spring into being
 * on first use. State lives in memory and survives {@link
 * FakeCloudTasks.pause} / {@link FakeCloudTasks.resume}, which stop and
 * restart serving on the same port to imitate an outage.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Command, InvalidArgumentError } from 'commander';

/** A protobuf `Timestamp` as proto-loader hands it over (longs as strings). */
interface TimestampMessage {
  seconds?: string | number | null;
  nanos?: number | null;
}

/** A protobuf `Duration` as proto-loader hands it over. */
interface DurationMessage {
  seconds?: string | number | null;
  nanos?: number | null;
}

interface PullMessage {
  payload?: Buffer | null;
  tag?: string | null;
}

interface TaskMessage {
  name?: string;
  pullMessage?: PullMessage | null;
  scheduleTime?: TimestampMessage | null;
  payloadType?: string;
}

/** One task as the fake holds it. */
interface StoredTask {
  name: string;
  queue: string;
  seq: number;
  tag: string;
  payload: Buffer;
  /** Leasable from this instant on; while leased, the lease's end. */
  scheduleMicros: number;
  createMicros: number;
  dispatchCount: number;
}

/** What {@link FakeCloudTasks.tasks} shows of one stored task. */
export interface FakeTaskSnapshot {
  /** Full resource name: `projects/P/locations/L/queues/Q/tasks/T`. */
  name: string;
  /** The queue's resource name. */
  queue: string;
  /** The pull message's tag. */
  tag: string;
  /** The pull message's payload bytes. */
  payload: Buffer;
  /** When the task may next be leased (the lease's end while leased). */
  scheduleTime: Date;
  /** Leases handed out so far. */
  attemptDispatchCount: number;
  /** True while a lease on the task has not run out. */
  leased: boolean;
}

/** Options of {@link startFakeCloudTasks}. */
export interface FakeCloudTasksOptions {
  /** Port to listen on; 0 (the default) picks a free one. */
  port?: number;
  /** Address to bind. Default `127.0.0.1`: loopback only. */
  host?: string;
}

/** A running fake Cloud Tasks service. */
export interface FakeCloudTasks {
  /** The port it listens on (stable across pause and resume). */
  readonly port: number;
  /** `host:port`, as the client's `apiEndpoint` and `port` want it. */
  readonly address: string;
  /** Every stored task, in lease order, optionally of one queue only. */
  tasks(queue?: string): FakeTaskSnapshot[];
  /** Drops every task of every queue. */
  clear(): void;
  /**
   * Makes the next `count` calls of a method (`LeaseTasks`, `CreateTask`,
   * ...) fail with a gRPC status code before touching any state.
   */
  failNext(method: string, code: grpc.status, count?: number): void;
  /** Stops serving at once (open calls fail); tasks are kept. */
  pause(): Promise<void>;
  /** Serves again on the same port after {@link pause}. */
  resume(): Promise<void>;
  /** Stops serving for good. */
  stop(): Promise<void>;
}

/** The longest lease the service allows: one week, in seconds. */
const MAX_LEASE_SECONDS = 7 * 24 * 3_600;
/** The most tasks one LeaseTasks call may ask for. */
const MAX_LEASE_TASKS = 1_000;
/** How long a removed task's name stays taken, in seconds (about 1 h). */
const NAME_REUSE_AFTER_SECONDS = 3_600;
/** The largest ListTasks page. */
const MAX_PAGE_SIZE = 1_000;
/** The service's limit on a tag used in a filter, in characters. */
const MAX_TAG_CHARS = 500;

const QUEUE_NAME =
  /^projects\/[A-Za-z0-9:.-]+\/locations\/[A-Za-z0-9-]+\/queues\/[A-Za-z0-9-]{1,100}$/;
const TASK_ID = /^[A-Za-z0-9_-]{1,500}$/;

/**
 * Loads the CloudTasks `v2beta2` service definition from the protos shipped
 * in `@google-cloud/tasks`, with the `google/api`, `google/rpc` and
 * `google/protobuf` imports resolved from `google-gax`, which ships them.
 */
export function loadCloudTasksService(): grpc.ServiceDefinition {
  const tasksPackage = packageRoot('@google-cloud/tasks', __dirname);
  const gaxPackage = packageRoot('google-gax', tasksPackage);
  const tasksRoot = path.join(tasksPackage, 'build', 'protos');
  const gaxRoot = path.join(gaxPackage, 'build', 'protos');
  const definition = protoLoader.loadSync(
    'google/cloud/tasks/v2beta2/cloudtasks.proto',
    {
      includeDirs: [tasksRoot, gaxRoot],
      keepCase: false,
      longs: String,
      enums: String,
      defaults: false,
      oneofs: true,
    },
  );
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    google: {
      cloud: {
        tasks: {
          v2beta2: { CloudTasks: grpc.ServiceClientConstructor };
        };
      };
    };
  };
  return loaded.google.cloud.tasks.v2beta2.CloudTasks.service;
}

/**
 * The folder of an installed package, found from its entry point as seen
 * from `from` (neither package exports its `package.json`).
 */
function packageRoot(name: string, from: string): string {
  let dir = path.dirname(require.resolve(name, { paths: [from] }));
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      const { name: found } = JSON.parse(fs.readFileSync(manifest, 'utf8')) as {
        name?: string;
      };
      if (found === name) return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the folder of ${name}`);
    dir = parent;
  }
}

/** A gRPC error with a status code, as handlers pass to their callback. */
function rpcError(code: grpc.status, details: string): grpc.ServiceError {
  const error = new Error(details) as grpc.ServiceError;
  error.code = code;
  error.details = details;
  error.metadata = new grpc.Metadata();
  return error;
}

/** Now, in whole microseconds (the service's precision). */
function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1_000);
}

function toMicros(time: TimestampMessage | null | undefined): number {
  const seconds = Number(time?.seconds ?? 0);
  const nanos = time?.nanos ?? 0;
  return seconds * 1_000_000 + Math.floor(nanos / 1_000);
}

function toTimestamp(micros: number): TimestampMessage {
  const seconds = Math.floor(micros / 1_000_000);
  return {
    seconds: String(seconds),
    nanos: (micros - seconds * 1_000_000) * 1_000,
  };
}

/** Whole seconds of a duration: the service truncates lease durations. */
function durationSeconds(duration: DurationMessage | null | undefined) {
  return Math.floor(Number(duration?.seconds ?? 0));
}

/** The in-memory state of every queue and the rules applied to it. */
class FakeState {
  private readonly store = new Map<string, StoredTask>();
  /** Names of removed tasks and when: the service keeps them taken. */
  private readonly tombstones = new Map<string, number>();
  private seq = 0;
  private readonly faults = new Map<
    string,
    { code: grpc.status; left: number }
  >();

  snapshot(queue?: string): FakeTaskSnapshot[] {
    const now = nowMicros();
    return this.ordered(queue).map((task) => ({
      name: task.name,
      queue: task.queue,
      tag: task.tag,
      payload: Buffer.from(task.payload),
      scheduleTime: new Date(task.scheduleMicros / 1_000),
      attemptDispatchCount: task.dispatchCount,
      leased: task.dispatchCount > 0 && task.scheduleMicros > now,
    }));
  }

  clear(): void {
    this.store.clear();
    this.tombstones.clear();
  }

  failNext(method: string, code: grpc.status, count: number): void {
    this.faults.set(method, { code, left: count });
  }

  /** Throws the injected fault for a method, if one is armed. */
  checkFault(method: string): void {
    const fault = this.faults.get(method);
    if (fault === undefined || fault.left <= 0) return;
    fault.left -= 1;
    throw rpcError(fault.code, `injected fault on ${method}`);
  }

  create(parent: string, task: TaskMessage, full: boolean): object {
    checkQueue(parent);
    if (task.pullMessage === undefined || task.pullMessage === null) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        'task.pull_message is required: this fake serves pull queues only',
      );
    }
    const name = this.newTaskName(parent, task.name);
    const now = nowMicros();
    const asked = toMicros(task.scheduleTime);
    const stored: StoredTask = {
      name,
      queue: parent,
      seq: ++this.seq,
      tag: task.pullMessage.tag ?? '',
      payload: Buffer.from(task.pullMessage.payload ?? Buffer.alloc(0)),
      // A schedule time in the past or unset means "now".
      scheduleMicros: asked > now ? asked : now,
      createMicros: now,
      dispatchCount: 0,
    };
    this.store.set(name, stored);
    return render(stored, full);
  }

  lease(
    parent: string,
    maxTasks: number,
    leaseSeconds: number,
    filter: string,
    full: boolean,
  ): object[] {
    checkQueue(parent);
    if (maxTasks < 0 || maxTasks > MAX_LEASE_TASKS) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        `max_tasks: got ${maxTasks}, expected 1 to ${MAX_LEASE_TASKS}`,
      );
    }
    checkLeaseSeconds(leaseSeconds);
    const now = nowMicros();
    const available = this.ordered(parent).filter(
      (task) => task.scheduleMicros <= now,
    );
    const tag = tagOfFilter(filter, available);
    const until = now + leaseSeconds * 1_000_000;
    return available
      .filter((task) => tag === undefined || task.tag === tag)
      .slice(0, maxTasks === 0 ? MAX_LEASE_TASKS : maxTasks)
      .map((task) => {
        task.scheduleMicros = until;
        task.dispatchCount += 1;
        return render(task, full);
      });
  }

  acknowledge(name: string, scheduleTime: TimestampMessage | null): void {
    const task = this.leasedBy(name, scheduleTime);
    this.bury(task.name);
  }

  renew(
    name: string,
    scheduleTime: TimestampMessage | null,
    leaseSeconds: number,
    full: boolean,
  ): object {
    checkLeaseSeconds(leaseSeconds);
    const task = this.leasedBy(name, scheduleTime);
    const now = nowMicros();
    if (task.scheduleMicros <= now) {
      throw rpcError(
        grpc.status.FAILED_PRECONDITION,
        `the lease on ${name} has expired`,
      );
    }
    task.scheduleMicros = now + leaseSeconds * 1_000_000;
    return render(task, full);
  }

  cancel(
    name: string,
    scheduleTime: TimestampMessage | null,
    full: boolean,
  ): object {
    const task = this.leasedBy(name, scheduleTime);
    task.scheduleMicros = nowMicros();
    return render(task, full);
  }

  get(name: string, full: boolean): object {
    return render(this.find(name), full);
  }

  remove(name: string): void {
    this.bury(this.find(name).name);
  }

  private bury(name: string): void {
    this.store.delete(name);
    this.tombstones.set(name, nowMicros());
  }

  list(
    parent: string,
    pageSize: number,
    pageToken: string,
    full: boolean,
  ): { tasks: object[]; nextPageToken: string } {
    checkQueue(parent);
    const size = pageSize <= 0 ? MAX_PAGE_SIZE : pageSize;
    if (size > MAX_PAGE_SIZE) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        `page_size: got ${pageSize}, expected at most ${MAX_PAGE_SIZE}`,
      );
    }
    const start = pageToken === '' ? 0 : Number(pageToken);
    if (!Number.isInteger(start) || start < 0) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        `page_token: got "${pageToken}", not a token this service issued`,
      );
    }
    const all = this.ordered(parent);
    const page = all.slice(start, start + size);
    const next = start + size < all.length ? String(start + size) : '';
    return {
      tasks: page.map((task) => render(task, full)),
      nextPageToken: next,
    };
  }

  /** Tasks in the order the service hands them out: oldest schedule first. */
  private ordered(queue?: string): StoredTask[] {
    return [...this.store.values()]
      .filter((task) => queue === undefined || task.queue === queue)
      .sort((a, b) => a.scheduleMicros - b.scheduleMicros || a.seq - b.seq);
  }

  private find(name: string): StoredTask {
    const task = this.store.get(name);
    if (task === undefined) {
      throw rpcError(grpc.status.NOT_FOUND, `task ${name} does not exist`);
    }
    return task;
  }

  /** The task, if `scheduleTime` proves the caller holds its lease. */
  private leasedBy(
    name: string,
    scheduleTime: TimestampMessage | null,
  ): StoredTask {
    const task = this.find(name);
    if (scheduleTime === null) {
      throw rpcError(grpc.status.INVALID_ARGUMENT, 'schedule_time is required');
    }
    if (
      task.dispatchCount === 0 ||
      toMicros(scheduleTime) !== task.scheduleMicros
    ) {
      throw rpcError(
        grpc.status.FAILED_PRECONDITION,
        `schedule_time does not match the current lease of ${name}`,
      );
    }
    return task;
  }

  private newTaskName(parent: string, asked: string | undefined): string {
    if (asked === undefined || asked === '') {
      return `${parent}/tasks/${randomBytes(16).toString('hex')}`;
    }
    const id = asked.slice(`${parent}/tasks/`.length);
    if (!asked.startsWith(`${parent}/tasks/`) || !TASK_ID.test(id)) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        `task.name: got "${asked}", expected ${parent}/tasks/TASK_ID`,
      );
    }
    const buriedMicros = this.tombstones.get(asked);
    const recent =
      buriedMicros !== undefined &&
      nowMicros() - buriedMicros < NAME_REUSE_AFTER_SECONDS * 1_000_000;
    if (this.store.has(asked) || recent) {
      throw rpcError(grpc.status.ALREADY_EXISTS, `task ${asked} exists`);
    }
    return asked;
  }
}

function checkQueue(parent: string): void {
  if (!QUEUE_NAME.test(parent)) {
    throw rpcError(
      grpc.status.INVALID_ARGUMENT,
      `parent: got "${parent}", expected ` +
        'projects/PROJECT/locations/LOCATION/queues/QUEUE',
    );
  }
}

function checkLeaseSeconds(seconds: number): void {
  if (seconds <= 0 || seconds > MAX_LEASE_SECONDS) {
    throw rpcError(
      grpc.status.INVALID_ARGUMENT,
      `lease_duration: got ${seconds} s, expected 1 to ${MAX_LEASE_SECONDS}`,
    );
  }
}

/**
 * The tag a LeaseTasks filter selects: undefined for "any tag". Grammar:
 * `tag=TAG` or `tag_function=oldest_tag()`.
 */
function tagOfFilter(
  filter: string,
  available: StoredTask[],
): string | undefined {
  if (filter === '') return undefined;
  if (filter.startsWith('tag=')) {
    const tag = filter.slice('tag='.length);
    if (tag.length >= MAX_TAG_CHARS) {
      throw rpcError(
        grpc.status.INVALID_ARGUMENT,
        `filter: tag must be under ${MAX_TAG_CHARS} characters`,
      );
    }
    return tag;
  }
  if (filter === 'tag_function=oldest_tag()') {
    // No task available: a tag no task has, so the lease is empty.
    return available[0]?.tag ?? '\u0000none';
  }
  throw rpcError(
    grpc.status.INVALID_ARGUMENT,
    `filter: got "${filter}", expected tag=TAG or tag_function=oldest_tag()`,
  );
}

/** A stored task as the service returns it in the BASIC or FULL view. */
function render(task: StoredTask, full: boolean): object {
  const pullMessage: PullMessage = { tag: task.tag };
  if (full) pullMessage.payload = Buffer.from(task.payload);
  return {
    name: task.name,
    pullMessage,
    scheduleTime: toTimestamp(task.scheduleMicros),
    // The service truncates create_time to whole seconds.
    createTime: toTimestamp(Math.floor(task.createMicros / 1e6) * 1e6),
    status: {
      attemptDispatchCount: task.dispatchCount,
      attemptResponseCount: 0,
    },
    view: full ? 'FULL' : 'BASIC',
  };
}

function isFull(view: unknown): boolean {
  return view === 'FULL' || view === 2;
}

type Request = Record<string, unknown>;
type Handler = (
  call: grpc.ServerUnaryCall<Request, object>,
  callback: grpc.sendUnaryData<object>,
) => void;

/** Wraps a handler body: a thrown status error becomes the call's error. */
function unary(
  state: FakeState,
  method: string,
  body: (request: Request) => object,
): Handler {
  return (call, callback) => {
    try {
      state.checkFault(method);
      callback(null, body(call.request));
    } catch (error) {
      const status = error as Partial<grpc.ServiceError>;
      if (typeof status.code === 'number') {
        callback(status as grpc.ServiceError);
      } else {
        callback(
          rpcError(grpc.status.INTERNAL, `fake failed: ${String(error)}`),
        );
      }
    }
  };
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value ?? 0);
}

function stamp(value: unknown): TimestampMessage | null {
  return value !== null && typeof value === 'object'
    ? (value as TimestampMessage)
    : null;
}

/** The implemented methods; the rest answer UNIMPLEMENTED. */
function handlers(state: FakeState): grpc.UntypedServiceImplementation {
  return {
    CreateTask: unary(state, 'CreateTask', (r) =>
      state.create(
        str(r.parent),
        (r.task ?? {}) as TaskMessage,
        isFull(r.responseView),
      ),
    ),
    LeaseTasks: unary(state, 'LeaseTasks', (r) => ({
      tasks: state.lease(
        str(r.parent),
        num(r.maxTasks),
        durationSeconds(r.leaseDuration as DurationMessage | undefined),
        str(r.filter),
        isFull(r.responseView),
      ),
    })),
    AcknowledgeTask: unary(state, 'AcknowledgeTask', (r) => {
      state.acknowledge(str(r.name), stamp(r.scheduleTime));
      return {};
    }),
    RenewLease: unary(state, 'RenewLease', (r) =>
      state.renew(
        str(r.name),
        stamp(r.scheduleTime),
        durationSeconds(r.leaseDuration as DurationMessage | undefined),
        isFull(r.responseView),
      ),
    ),
    CancelLease: unary(state, 'CancelLease', (r) =>
      state.cancel(str(r.name), stamp(r.scheduleTime), isFull(r.responseView)),
    ),
    ListTasks: unary(state, 'ListTasks', (r) =>
      state.list(
        str(r.parent),
        num(r.pageSize),
        str(r.pageToken),
        isFull(r.responseView),
      ),
    ),
    GetTask: unary(state, 'GetTask', (r) =>
      state.get(str(r.name), isFull(r.responseView)),
    ),
    DeleteTask: unary(state, 'DeleteTask', (r) => {
      state.remove(str(r.name));
      return {};
    }),
  };
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(
      address,
      grpc.ServerCredentials.createInsecure(),
      (error, port) => (error ? reject(error) : resolve(port)),
    );
  });
}

/**
 * Starts the fake service on loopback. Resolves once it accepts calls; the
 * returned handle reports the port and can pause, resume and stop it.
 */
export async function startFakeCloudTasks(
  options: FakeCloudTasksOptions = {},
): Promise<FakeCloudTasks> {
  const host = options.host ?? '127.0.0.1';
  const service = loadCloudTasksService();
  const state = new FakeState();
  const serve = async (port: number) => {
    const server = new grpc.Server();
    server.addService(service, handlers(state));
    const bound = await bind(server, `${host}:${port}`);
    return { server, bound };
  };

  let current: grpc.Server | undefined;
  const first = await serve(options.port ?? 0);
  current = first.server;
  const port = first.bound;

  return {
    port,
    address: `${host}:${port}`,
    tasks: (queue) => state.snapshot(queue),
    clear: () => state.clear(),
    failNext: (method, code, count = 1) => state.failNext(method, code, count),
    pause: () => {
      // forceShutdown cancels open calls and closes connections, as a
      // crashed or unreachable service would.
      current?.forceShutdown();
      current = undefined;
      return Promise.resolve();
    },
    resume: async () => {
      if (current !== undefined) return;
      current = (await serve(port)).server;
    },
    stop: () => {
      current?.forceShutdown();
      current = undefined;
      return Promise.resolve();
    },
  };
}

/** Reads `--port N` and `--host H` from command-line arguments. */
function parseArgs(argv: string[]): FakeCloudTasksOptions {
  const program = new Command('fake-cloud-tasks-server')
    .description(
      'A local stand-in for Google Cloud Tasks (v2beta2 pull queues) over gRPC.',
    )
    .option(
      '--port <port>',
      'port to listen on; 0 picks a free one',
      port,
      8123,
    )
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .showHelpAfterError()
    .parse(argv, { from: 'user' });
  return program.opts<{ port: number; host: string }>();
}

function port(value: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n > 65_535)
    throw new InvalidArgumentError('expected a port from 0 to 65535');
  return n;
}

async function main(): Promise<void> {
  const fake = await startFakeCloudTasks(parseArgs(process.argv.slice(2)));
  process.stdout.write(
    `fake Cloud Tasks (v2beta2 pull queues) listening on ${fake.address}\n` +
      `use RENDER_CLOUD_TASKS_ENDPOINT=${fake.address}\n`,
  );
  const shutdown = () => {
    void fake.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`fake Cloud Tasks failed: ${String(error)}\n`);
    process.exit(1);
  });
}
