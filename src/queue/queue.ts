import { InvalidTaskIdError } from '../errors';

/**
 * The queue interface every backend implements. Tasks and results travel as
 * opaque payloads with a tag (`task` or `result`); a worker leases tasks for
 * a time, renews the lease while it works, and acknowledges a task once its
 * result is published, or cancels the lease to give the task back.
 */

/** One task held under a lease. */
export interface LeasedTask {
  /** The queue's name for the task; stable across deliveries. */
  id: string;
  /** The payload exactly as it was put. */
  payload: Buffer;
  /** The tag it was put with. */
  tag: string;
  /**
   * Deliveries so far, this one included, counted by the queue itself so
   * that a worker killed mid-task still moves the count.
   */
  attempts: number;
  /** When the task was first put. */
  enqueuedAt: Date;
  /** When the current lease runs out. */
  leaseExpiresAt: Date;
  /**
   * Proof of this lease, passed back on renew, ack and cancel. A lease that
   * expired and was taken by another worker no longer matches.
   */
  leaseToken: string;
}

/** What {@link TaskQueue.put} may take. */
export interface PutOptions {
  /** The task's own id (letters, digits, `-` and `_`), for de-duplication. */
  id?: string;
}

/** What {@link TaskQueue.lease} takes. */
export interface LeaseRequest {
  /** Only tasks with this tag. */
  tag: string;
  /** At most this many tasks. */
  max: number;
  /** Length of the lease, in seconds. */
  leaseSeconds: number;
}

/** A durable queue of tagged tasks with leases. */
export interface TaskQueue {
  /** A short description for logs: backend and location. */
  readonly description: string;

  /**
   * Puts a payload with a tag; returns the task's id. With `options.id` the
   * put is idempotent: a task of that id that is waiting, leased or was
   * answered recently is not put again.
   */
  put(
    payload: Buffer | string,
    tag: string,
    options?: PutOptions,
  ): Promise<string>;

  /**
   * Puts a payload under `id` unless the queue knows that id already, and
   * says which: true when this call created the task, false when a task of
   * that id was waiting, leased, or removed recently (within about an hour
   * on Cloud Tasks, whose names stay taken that long; on SQLite only while
   * it is still on the queue, or answered as a task). Results are put this
   * way, under an id derived from their task's, so a repeat is recognised.
   */
  putIfNew(payload: Buffer | string, tag: string, id: string): Promise<boolean>;

  /** Leases up to `max` available tasks with the tag. */
  lease(request: LeaseRequest): Promise<LeasedTask[]>;

  /**
   * Removes a leased task for good. Throws `LeaseLostError` when the lease
   * is no longer this worker's.
   */
  acknowledge(task: LeasedTask): Promise<void>;

  /**
   * Extends a lease to `leaseSeconds` from now and returns the task with
   * its new expiry and token. Throws `LeaseLostError` when the lease is no
   * longer this worker's.
   */
  renew(task: LeasedTask, leaseSeconds: number): Promise<LeasedTask>;

  /** Gives a leased task back so it can be leased again at once. */
  cancelLease(task: LeasedTask): Promise<void>;

  /**
   * Whether a result for the task was published before (a task delivered
   * again after its acknowledgement was lost), where the backend can tell;
   * backends that cannot omit this and {@link recordAnswer}.
   */
  wasAnswered?(taskId: string): Promise<boolean>;

  /** Remembers that a result for the task was published. */
  recordAnswer?(taskId: string): Promise<void>;

  /** Tasks with the tag waiting or leased, where the backend can tell. */
  depth?(tag: string): Promise<number>;

  /** Releases connections and file handles. */
  close(): Promise<void>;
}

/**
 * The last segment of a task id: the id itself on SQLite, the `T` of a
 * Cloud Tasks name `projects/P/locations/L/queues/Q/tasks/T`. Unique within
 * one queue; what storage keys and result ids are made from.
 */
export function shortTaskId(id: string): string {
  const tail = id.slice(id.lastIndexOf('/') + 1);
  return tail === '' ? id : tail;
}

/** Prefix of the ids results are put under; kept from callers' task ids. */
export const RESULT_ID_PREFIX = 'result-';

/**
 * Ids the queue accepts: 1 to 100 letters, digits, `-` or `_`, safe in file
 * names and URLs. Throws an `InvalidTaskIdError` naming the id.
 */
export function checkQueueId(id: string): void {
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(id)) {
    throw new InvalidTaskIdError(
      `task id: got ${JSON.stringify(id)}, expected 1 to 100 letters, digits, - or _`,
    );
  }
}

/**
 * Task ids given by callers: those of {@link checkQueueId}, except ones
 * starting with `result-`, which results are put under.
 */
export function checkTaskId(id: string): void {
  checkQueueId(id);
  if (id.startsWith(RESULT_ID_PREFIX)) {
    throw new InvalidTaskIdError(
      `task id: got ${JSON.stringify(id)}, expected one not starting with "${RESULT_ID_PREFIX}" (kept for results)`,
    );
  }
}
