/**
 * The Google Cloud Tasks backend: a `v2beta2` pull queue reached with
 * `@google-cloud/tasks`. Many machines lease from the same queue; the
 * service, not this code, keeps two workers from holding one task.
 *
 * A lease is proven by the task's `schedule_time` as the lease (or the last
 * renewal) returned it: that is the {@link LeasedTask.leaseToken}. Calls that
 * fail for a passing reason (UNAVAILABLE, DEADLINE_EXCEEDED, ...) are retried
 * with exponential backoff and full jitter within a time budget; an outage is
 * logged once when it starts and once when it ends.
 */
import * as grpc from '@grpc/grpc-js';
// The package is an ES module whose CommonJS build is loaded at run time by
// the `import()` below (compiled to `require`); its types are taken from the
// ES build, which declares the same API.
import type { protos, v2beta2 } from '@google-cloud/tasks' with {
  'resolution-mode': 'import',
};
import { backOff } from 'exponential-backoff';
import {
  ConfigError,
  LeaseLostError,
  QueueUnavailableError,
  errorMessage,
} from '../errors';
import { partLogger } from '../logger';
import type { Logger } from '../logger';
import { checkQueueId, checkTaskId } from './queue';
import type { LeaseRequest, LeasedTask, PutOptions, TaskQueue } from './queue';

type ITask = protos.google.cloud.tasks.v2beta2.ITask;
type ITimestamp = protos.google.protobuf.ITimestamp;

/** Per-call options: one attempt's deadline, the client's retries off. */
interface CallOptions {
  timeout: number;
  retry: null;
}

/** Options of the generated client: endpoint, port, credentials, ... */
export type CloudTasksClientOptions = NonNullable<
  ConstructorParameters<typeof v2beta2.CloudTasksClient>[0]
>;

/** How calls that fail for a passing reason are retried. */
export interface CloudTasksRetryPolicy {
  /** Ceiling of the first backoff delay, in ms. Default 200. */
  initialDelayMs: number;
  /** Largest backoff delay, in ms. Default 5_000. */
  maxDelayMs: number;
  /**
   * Time after which a failing call stops being retried and throws
   * `QueueUnavailableError`, in ms. A call can run past it by at most one
   * delay and one call timeout. Default 30_000.
   */
  budgetMs: number;
  /** Deadline of one attempt of one call, in ms. Default 10_000. */
  callTimeoutMs: number;
}

/** What {@link CloudTasksQueue} takes besides the queue's name. */
export interface CloudTasksQueueOptions {
  /**
   * `host:port` of an emulator reached without TLS or Google credentials,
   * such as the fake server of the tests. Default: the real service.
   */
  emulatorEndpoint?: string;
  /**
   * Options passed to the generated client as they are; they win over what
   * `emulatorEndpoint` sets. Default: Google's endpoint and Application
   * Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS` or the machine's
   * service account).
   */
  client?: CloudTasksClientOptions;
  /** Retry settings; unset fields keep their defaults. */
  retry?: Partial<CloudTasksRetryPolicy>;
  /** Logger; default the `queue` part logger. */
  logger?: Logger;
}

/** The defaults of {@link CloudTasksRetryPolicy}. */
export const DEFAULT_CLOUD_TASKS_RETRY: Readonly<CloudTasksRetryPolicy> = {
  initialDelayMs: 200,
  maxDelayMs: 5_000,
  budgetMs: 30_000,
  callTimeoutMs: 10_000,
};

/**
 * Status codes worth another try: the service may answer next time. This
 * code never cancels its own calls, so CANCELLED can only come from a
 * connection the server dropped (a restart or a failover).
 */
const TRANSIENT_CODES: ReadonlySet<number> = new Set([
  grpc.status.CANCELLED,
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.INTERNAL,
  grpc.status.ABORTED,
]);

/**
 * Codes meaning the caller no longer holds the lease: the task is gone
 * (acknowledged or deleted) or its schedule time moved on (the lease ran out
 * and another worker took it, or a renewal we did not see landed).
 */
const LEASE_LOST_CODES: ReadonlySet<number> = new Set([
  grpc.status.NOT_FOUND,
  grpc.status.FAILED_PRECONDITION,
]);

/** The most tasks one LeaseTasks call may return. */
const MAX_LEASE_TASKS = 1_000;

const QUEUE_NAME = /^projects\/[^/]+\/locations\/[^/]+\/queues\/[^/]+$/;

/**
 * A Cloud Tasks `v2beta2` pull queue as a {@link TaskQueue}. It has no
 * `wasAnswered`/`recordAnswer` (the service keeps no such record): a task
 * answered before is recognised when its result, put under a name derived
 * from the task's ({@link TaskQueue.putIfNew}), is refused as existing.
 */
export class CloudTasksQueue implements TaskQueue {
  readonly description: string;
  private readonly clientOptions: CloudTasksClientOptions;
  private clientReady: Promise<v2beta2.CloudTasksClient> | undefined;
  private readonly retry: CloudTasksRetryPolicy;
  private readonly log: Logger;
  /** Whether the queue is on a local emulator, without credentials. */
  private readonly emulated: boolean;
  /** The outage under way, if calls are failing: for one log line each. */
  private outage: { sinceMs: number; failedCalls: number } | undefined;

  /**
   * @param queuePath `projects/P/locations/L/queues/Q`; the queue must exist
   *   and be a pull queue.
   */
  constructor(
    private readonly queuePath: string,
    options: CloudTasksQueueOptions = {},
  ) {
    if (!QUEUE_NAME.test(queuePath)) {
      throw new RangeError(
        `queue: got "${queuePath}", expected projects/P/locations/L/queues/Q`,
      );
    }
    this.retry = { ...DEFAULT_CLOUD_TASKS_RETRY, ...options.retry };
    this.log = options.logger ?? partLogger('queue');
    this.clientOptions = {
      ...channelOptions(this.retry),
      ...emulatorOptions(options.emulatorEndpoint),
      ...options.client,
    };
    this.emulated = Boolean(options.emulatorEndpoint);
    this.description =
      `cloud-tasks:${queuePath}` +
      (options.emulatorEndpoint ? ` via ${options.emulatorEndpoint}` : '');
  }

  /**
   * Creates a pull task. Without `options.id` a retry after a lost answer
   * can create the task twice; consumers de-duplicate by `task_id`, as
   * at-least-once delivery asks of them anyway. With `options.id` the task
   * is named after it and a second put of that id (waiting, leased, or
   * removed within about an hour, by the service's rules) is a no-op.
   */
  async put(
    payload: Buffer | string,
    tag: string,
    options: PutOptions = {},
  ): Promise<string> {
    if (options.id === undefined) return (await this.create(payload, tag)).name;
    checkTaskId(options.id);
    return (await this.create(payload, tag, options.id)).name;
  }

  /**
   * Creates a task named `id`; false when the service answers
   * ALREADY_EXISTS, which it does for a name in use or removed within about
   * an hour. A retry of a create that landed but whose answer was lost also
   * reads ALREADY_EXISTS: callers take false as "put before", which is then
   * true of this very call.
   */
  async putIfNew(
    payload: Buffer | string,
    tag: string,
    id: string,
  ): Promise<boolean> {
    checkQueueId(id);
    return (await this.create(payload, tag, id)).created;
  }

  /** CreateTask, named after `id` when given; ALREADY_EXISTS is `created: false`. */
  private async create(
    payload: Buffer | string,
    tag: string,
    id?: string,
  ): Promise<{ name: string; created: boolean }> {
    const name = id === undefined ? undefined : `${this.queuePath}/tasks/${id}`;
    try {
      const [task] = await this.call('CreateTask', (client, callOptions) =>
        client.createTask(
          {
            parent: this.queuePath,
            task: { name, pullMessage: { payload: Buffer.from(payload), tag } },
          },
          callOptions,
        ),
      );
      if (!task.name) throw this.malformed('CreateTask', 'task without a name');
      return { name: task.name, created: true };
    } catch (error) {
      const exists =
        error instanceof QueueUnavailableError &&
        grpcCode(error.cause) === grpc.status.ALREADY_EXISTS;
      if (name === undefined || !exists) throw error;
      this.log.debug('task name taken; not created again', { name });
      return { name, created: false };
    }
  }

  /**
   * Leases up to `max` tasks tagged `tag`. The lease length is truncated to
   * whole seconds by the service, and is at least one second. A retry after
   * a lost answer leaves the tasks of the lost answer leased until their
   * lease runs out; they then come back with one more attempt.
   */
  async lease(request: LeaseRequest): Promise<LeasedTask[]> {
    const leaseSeconds = Math.max(1, Math.floor(request.leaseSeconds));
    const [response] = await this.call('LeaseTasks', (client, options) =>
      client.leaseTasks(
        {
          parent: this.queuePath,
          maxTasks: Math.min(Math.max(1, request.max), MAX_LEASE_TASKS),
          leaseDuration: { seconds: leaseSeconds },
          responseView: 'FULL',
          filter: `tag=${request.tag}`,
        },
        options,
      ),
    );
    return (response.tasks ?? []).map((task) => this.toLeased(task));
  }

  /** Deletes a leased task for good. */
  async acknowledge(task: LeasedTask): Promise<void> {
    let retried = false;
    try {
      await this.call(
        'AcknowledgeTask',
        (client, options) =>
          client.acknowledgeTask(
            { name: task.id, scheduleTime: fromToken(task.leaseToken) },
            options,
          ),
        () => {
          retried = true;
        },
      );
    } catch (error) {
      // The first try may have landed before its answer was lost: the task
      // is then gone, which is what acknowledging asked for.
      if (retried && error instanceof LeaseLostError && isNotFound(error)) {
        this.log.debug('acknowledged task was already gone after a retry', {
          taskId: task.id,
        });
        return;
      }
      throw error;
    }
  }

  /**
   * Extends the lease to `leaseSeconds` from now. If a renewal's answer is
   * lost and the retry finds the schedule time moved, this throws
   * `LeaseLostError` though the lease is still ours: the task then comes
   * back when that lease ends, which at-least-once delivery allows.
   */
  async renew(task: LeasedTask, leaseSeconds: number): Promise<LeasedTask> {
    const [renewed] = await this.call('RenewLease', (client, options) =>
      client.renewLease(
        {
          name: task.id,
          scheduleTime: fromToken(task.leaseToken),
          leaseDuration: { seconds: Math.max(1, Math.floor(leaseSeconds)) },
          responseView: 'BASIC',
        },
        options,
      ),
    );
    const scheduleTime = renewed.scheduleTime;
    if (!scheduleTime) {
      throw this.malformed('RenewLease', 'task without a schedule time');
    }
    return {
      ...task,
      leaseExpiresAt: toDate(scheduleTime),
      leaseToken: toToken(scheduleTime),
    };
  }

  /** Gives the task back: its schedule time becomes now. */
  async cancelLease(task: LeasedTask): Promise<void> {
    await this.call('CancelLease', (client, options) =>
      client.cancelLease(
        {
          name: task.id,
          scheduleTime: fromToken(task.leaseToken),
          responseView: 'BASIC',
        },
        options,
      ),
    );
  }

  /**
   * Counts the queue's tasks with the tag, leased or not, by listing them
   * all: one call per 1_000 tasks, so meant for dashboards, not hot paths.
   */
  async depth(tag: string): Promise<number> {
    const [tasks] = await this.call('ListTasks', (client, options) =>
      client.listTasks(
        { parent: this.queuePath, responseView: 'BASIC' },
        { ...options, autoPaginate: true },
      ),
    );
    return tasks.filter((task) => task.pullMessage?.tag === tag).length;
  }

  /** Closes the client's channel, if one was opened. */
  async close(): Promise<void> {
    const ready = this.clientReady;
    this.clientReady = undefined;
    if (ready !== undefined) await (await ready).close();
  }

  /**
   * Finds the Google credentials now, so that a machine without any stops
   * at start-up with a clear message instead of failing every call. Not
   * needed (and skipped) on an emulator.
   */
  async checkCredentials(): Promise<void> {
    if (this.emulated) return;
    const client = await this.client();
    try {
      await client.auth.getClient();
    } catch (error) {
      throw new ConfigError(
        `Google credentials for ${this.description}: ${errorMessage(error)}; ` +
          'set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, ' +
          'or run on a machine with a service account',
      );
    }
  }

  /** The generated client, loaded on first use: the package is large. */
  private client(): Promise<v2beta2.CloudTasksClient> {
    this.clientReady ??= import('@google-cloud/tasks').then(
      (tasks) => new tasks.v2beta2.CloudTasksClient(this.clientOptions),
    );
    return this.clientReady;
  }

  /**
   * Runs one call with retries. The generated client's own retries are
   * turned off so that one policy, and one log line per outage, applies.
   */
  private async call<T>(
    method: string,
    attempt: (
      client: v2beta2.CloudTasksClient,
      options: CallOptions,
    ) => Promise<T>,
    onRetry?: () => void,
  ): Promise<T> {
    const client = await this.client();
    const startedMs = Date.now();
    const options = { timeout: this.retry.callTimeoutMs, retry: null };
    try {
      const result = await backOff(() => attempt(client, options), {
        jitter: 'full',
        startingDelay: this.retry.initialDelayMs,
        maxDelay: this.retry.maxDelayMs,
        timeMultiple: 2,
        numOfAttempts: Number.MAX_SAFE_INTEGER,
        retry: (error: unknown, next: number) => {
          if (!isTransient(error)) return false;
          this.noteFailure(method, error, next);
          const retrying = Date.now() - startedMs < this.retry.budgetMs;
          if (retrying) onRetry?.();
          return retrying;
        },
      });
      this.noteSuccess();
      return result;
    } catch (error) {
      throw this.translate(method, error, Date.now() - startedMs);
    }
  }

  /** Logs the start of an outage once, and each retry at debug. */
  private noteFailure(method: string, error: unknown, next: number): void {
    const code = codeName(error);
    if (this.outage === undefined) {
      this.outage = { sinceMs: Date.now(), failedCalls: 0 };
      this.log.warn('Cloud Tasks is failing; retrying with backoff', {
        queue: this.queuePath,
        method,
        code,
        error: errorMessage(error),
      });
    }
    this.outage.failedCalls += 1;
    this.log.debug('Cloud Tasks call failed; will retry', {
      method,
      code,
      attempt: next - 1,
    });
  }

  /** Logs the end of an outage once. */
  private noteSuccess(): void {
    if (this.outage === undefined) return;
    this.log.info('Cloud Tasks answers again', {
      queue: this.queuePath,
      outageMs: Date.now() - this.outage.sinceMs,
      failedCalls: this.outage.failedCalls,
    });
    this.outage = undefined;
  }

  /** The farm's error for a call's final failure. */
  private translate(method: string, error: unknown, elapsedMs: number): Error {
    const code = grpcCode(error);
    const leaseCall =
      method === 'AcknowledgeTask' ||
      method === 'RenewLease' ||
      method === 'CancelLease';
    if (leaseCall && code !== undefined && LEASE_LOST_CODES.has(code)) {
      return new LeaseLostError(
        `lease on task lost (${codeName(error)}): ${errorMessage(error)}`,
        { cause: error },
      );
    }
    if (code !== undefined && TRANSIENT_CODES.has(code)) {
      return new QueueUnavailableError(
        `Cloud Tasks ${method} still failing after ${elapsedMs} ms ` +
          `(${codeName(error)}): ${errorMessage(error)}`,
        { cause: error },
      );
    }
    return new QueueUnavailableError(
      `Cloud Tasks ${method} refused (${codeName(error)}) on ` +
        `${this.queuePath}: ${errorMessage(error)}`,
      { cause: error },
    );
  }

  private malformed(method: string, what: string): QueueUnavailableError {
    return new QueueUnavailableError(
      `Cloud Tasks ${method} answered with a ${what}`,
    );
  }

  private toLeased(task: ITask): LeasedTask {
    const { name, pullMessage, scheduleTime } = task;
    if (!name || !pullMessage || !scheduleTime) {
      throw this.malformed('LeaseTasks', 'task without name, message or time');
    }
    const dispatches = Number(task.status?.attemptDispatchCount ?? 0);
    return {
      id: name,
      payload: toBuffer(pullMessage.payload),
      tag: pullMessage.tag ?? '',
      // The service counts a lease as a dispatched attempt as it hands it
      // out, so the first delivery reads 1; never report less than that.
      attempts: Math.max(1, dispatches),
      enqueuedAt: task.createTime ? toDate(task.createTime) : new Date(0),
      leaseExpiresAt: toDate(scheduleTime),
      leaseToken: toToken(scheduleTime),
    };
  }
}

/** Channel settings: reconnect no slower than the retries come. */
function channelOptions(retry: CloudTasksRetryPolicy): CloudTasksClientOptions {
  return {
    'grpc.initial_reconnect_backoff_ms': Math.min(1_000, retry.maxDelayMs),
    'grpc.max_reconnect_backoff_ms': retry.maxDelayMs,
  };
}

/** Client options for an emulator at `host:port`: plain TCP, no Google auth. */
function emulatorOptions(endpoint?: string): CloudTasksClientOptions {
  if (endpoint === undefined || endpoint === '') return {};
  const match = /^(.*):(\d+)$/.exec(endpoint);
  if (match === null || match[1] === undefined || match[2] === undefined) {
    throw new RangeError(
      `emulator endpoint: got "${endpoint}", expected host:port`,
    );
  }
  return {
    apiEndpoint: match[1].replace(/^\[(.*)\]$/, '$1'),
    port: Number(match[2]),
    sslCreds: grpc.credentials.createInsecure(),
    // Never used on an insecure channel, but keeps the auth library from
    // looking for real credentials or probing the metadata server.
    credentials: { client_email: 'emulator@localhost', private_key: 'none' },
    projectId: 'emulator',
  };
}

function grpcCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

function codeName(error: unknown): string {
  const code = grpcCode(error);
  return code === undefined ? 'no status' : (grpc.status[code] ?? String(code));
}

function isTransient(error: unknown): boolean {
  const code = grpcCode(error);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

function isNotFound(error: LeaseLostError): boolean {
  return grpcCode(error.cause) === grpc.status.NOT_FOUND;
}

function toBuffer(payload: Uint8Array | string | null | undefined): Buffer {
  if (payload === null || payload === undefined) return Buffer.alloc(0);
  // JSON transports hand bytes over as base64 text.
  return typeof payload === 'string'
    ? Buffer.from(payload, 'base64')
    : Buffer.from(payload);
}

function seconds(time: ITimestamp): bigint {
  return BigInt(String(time.seconds ?? 0));
}

function toDate(time: ITimestamp): Date {
  const ms =
    Number(seconds(time)) * 1_000 + Math.floor((time.nanos ?? 0) / 1e6);
  return new Date(ms);
}

/** A schedule time as a lease token: `SECONDS.NANOS`, exact. */
function toToken(time: ITimestamp): string {
  const nanos = String(time.nanos ?? 0).padStart(9, '0');
  return `${seconds(time)}.${nanos}`;
}

/** The schedule time a lease token stands for. */
function fromToken(token: string): ITimestamp {
  const match = /^(-?\d+)\.(\d{9})$/.exec(token);
  if (match === null || match[1] === undefined || match[2] === undefined) {
    throw new LeaseLostError(
      `lease token "${token}" is not a Cloud Tasks schedule time`,
    );
  }
  return { seconds: match[1], nanos: Number(match[2]) };
}
