/**
 * The error hierarchy of the farm. The daemon decides between "fail the task
 * now" and "give the lease back and retry" from the class of an error alone:
 * a {@link PermanentError} can never succeed on a retry, a
 * {@link TransientError} might.
 */

/** Base class of every error the farm raises on purpose. */
export class RenderFarmError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A task that can never succeed: bad payload, unknown view, bad option. */
export class PermanentError extends RenderFarmError {}

/** The task payload or one of its fields is not what the contract allows. */
export class InvalidTaskError extends PermanentError {}

/** A task id given by a caller is not one the queue accepts. */
export class InvalidTaskIdError extends PermanentError {}

/** A template or manifest is wrong; the message names the file and line. */
export class TemplateError extends PermanentError {}

/** The document is larger than the farm is configured to produce. */
export class DocumentTooLargeError extends PermanentError {}

/** A failure that may pass: the task is retried up to the attempt limit. */
export class TransientError extends RenderFarmError {}

/** The browser or the page's renderer process crashed or disconnected. */
export class BrowserCrashedError extends TransientError {}

/** A render ran past its deadline and was torn down. */
export class RenderTimeoutError extends TransientError {}

/** Writing a linked document failed. */
export class StorageError extends TransientError {}

/** The queue service did not answer or refused a call. */
export class QueueUnavailableError extends TransientError {}

/** The lease on a task was lost: another worker may now hold it. */
export class LeaseLostError extends RenderFarmError {}

/** A bad setting: the message names the variable and what it accepts. */
export class ConfigError extends RenderFarmError {}

/** True when retrying the work that threw `error` cannot help. */
export function isPermanent(error: unknown): boolean {
  return error instanceof PermanentError;
}

/** The message of any thrown value, for logs and failure results. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
