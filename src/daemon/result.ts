import { errorMessage } from '../errors';
import type { Logger } from '../logger';
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
 * base64 and all, would not fit under `inlineLimitBytes`.
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
  return messageBytes(message) <= inlineLimitBytes ? message : undefined;
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
 * Publishes a task's result, then acknowledges the task: never the other
 * way round. A task answered before (delivered again after a lost
 * acknowledgement) is answered with `duplicate: true`, so consumers can drop
 * the repeat.
 */
export async function publishAnswer(
  queue: TaskQueue,
  task: LeasedTask,
  message: ResultMessage,
  log: Logger,
): Promise<void> {
  const repeat = (await queue.wasAnswered?.(task.id)) ?? false;
  const sent: ResultMessage = repeat
    ? { ...message, duplicate: true }
    : message;
  if (repeat)
    log.warn('task was answered before; marking the result a duplicate');
  await queue.put(JSON.stringify(sent), RESULT_TAG);
  await queue.recordAnswer?.(task.id);
  try {
    await queue.acknowledge(task);
  } catch (error) {
    // The result is out; the task may be delivered again and answered a
    // second time with the same pages (at-least-once delivery).
    log.warn('acknowledge failed after the result was published', {
      error: errorMessage(error),
    });
  }
}
