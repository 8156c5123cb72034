import { createHash } from 'node:crypto';
import { errorMessage } from '../errors';
import type { Logger } from '../logger';
import { RESULT_ID_PREFIX, shortTaskId } from '../queue/queue';
import type { LeasedTask, TaskQueue } from '../queue/queue';
import type { RenderJob } from '../resources/task';

/** A result message, as it is put on the queue with the tag `result`. */
export type ResultMessage =
  | {
      kind: 'result#document';
      success: true;
      task_id: string;
      filename: string;
      document: string;
      pages: number;
      warnings?: string[];
      duplicate?: true;
    }
  | {
      kind: 'result#link';
      success: true;
      task_id: string;
      filename: string;
      url: string;
      pages: number;
      warnings?: string[];
      duplicate?: true;
    }
  | {
      kind: 'result#document';
      success: false;
      task_id: string;
      filename: null;
      document: null;
      error: string;
      duplicate?: true;
    };

/** The tag results are put with. */
export const RESULT_TAG = 'result';

/** The tag tasks are put with. */
export const TASK_TAG = 'task';

/**
 * The inline result of a document, or undefined when the whole message,
 * base64 and all, would not fit under `inlineLimitBytes`. The room of a
 * `duplicate` flag is counted too: whether the message is a repeat is only
 * known when it is put.
 */
export function inlineResult(
  job: RenderJob,
  pdf: Buffer,
  pages: number,
  warnings: string[],
  inlineLimitBytes: number,
): ResultMessage | undefined {
  // base64 grows 4 bytes per 3: check the estimate before encoding a
  // document that can never fit.
  if (Math.ceil(pdf.length / 3) * 4 > inlineLimitBytes) return undefined;
  const message: ResultMessage = {
    kind: 'result#document',
    success: true,
    task_id: job.taskId,
    filename: job.filename,
    document: pdf.toString('base64'),
    pages,
    ...(warnings.length > 0 ? { warnings } : {}),
  };
  const flagged: ResultMessage = { ...message, duplicate: true };
  return messageBytes(flagged) <= inlineLimitBytes ? message : undefined;
}

/** The result of a document stored and linked. */
export function linkResult(
  job: RenderJob,
  url: string,
  pages: number,
  warnings: string[],
): ResultMessage {
  return {
    kind: 'result#link',
    success: true,
    task_id: job.taskId,
    filename: job.filename,
    url,
    pages,
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}

/** The failure result of a task, with the reason in words. */
export function failureResult(taskId: string, error: string): ResultMessage {
  return {
    kind: 'result#document',
    success: false,
    task_id: taskId,
    filename: null,
    document: null,
    error,
  };
}

/** The size of a message as it will sit on the queue, in bytes. */
export function messageBytes(message: ResultMessage): number {
  return Buffer.byteLength(JSON.stringify(message));
}

/**
 * The queue id a task's result is put under: `result-` and the task's short
 * id, or a hash of it when that would be too long for a task id. One task,
 * one result id, so the queue itself can tell a repeat.
 */
export function resultIdOf(taskId: string): string {
  const id = `${RESULT_ID_PREFIX}${shortTaskId(taskId)}`;
  if (/^[A-Za-z0-9_-]{1,100}$/.test(id)) return id;
  const hash = createHash('sha256').update(taskId).digest('hex');
  return `${RESULT_ID_PREFIX}${hash}`;
}

/**
 * Puts a task's result on the queue. A task answered before (delivered
 * again after a lost acknowledgement) is recognised by the queue, from its
 * record of answered tasks (SQLite) or because the result id is taken
 * (Cloud Tasks); the repeat is then put with `duplicate: true` under a new
 * id, so consumers can drop it. Resolves whether it was a repeat. Throws
 * what the queue throws; calling it again after a failure is safe (a first
 * put that landed makes the second a flagged repeat).
 */
export async function putResult(
  queue: TaskQueue,
  taskId: string,
  message: ResultMessage,
  log: Logger,
): Promise<{ duplicate: boolean }> {
  const answered = (await queue.wasAnswered?.(taskId)) ?? false;
  const created =
    !answered &&
    (await queue.putIfNew(
      JSON.stringify(message),
      RESULT_TAG,
      resultIdOf(taskId),
    ));
  if (!created) {
    log.warn('task was answered before; marking the result a duplicate');
    await queue.put(
      JSON.stringify({ ...message, duplicate: true }),
      RESULT_TAG,
    );
  }
  await queue.recordAnswer?.(taskId);
  return { duplicate: !created };
}

/**
 * Publishes a task's result, then acknowledges the task: never the other
 * way round. See {@link putResult} for repeats. A refused acknowledgement
 * is logged, not thrown: the result is out, and a delivery that follows is
 * answered as a duplicate (at least once).
 */
export async function publishAnswer(
  queue: TaskQueue,
  task: LeasedTask,
  message: ResultMessage,
  log: Logger,
): Promise<void> {
  await putResult(queue, task.id, message, log);
  try {
    await queue.acknowledge(task);
  } catch (error) {
    log.warn('acknowledge failed after the result was published', {
      error: errorMessage(error),
    });
  }
}
