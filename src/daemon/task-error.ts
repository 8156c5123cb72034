import { ProtocolError } from 'puppeteer-core';
import { BrowserCrashedError, RenderFarmError } from '../errors';

/** What puppeteer says when the page, its session or the browser went away. */
const CLOSED = /Target closed|Session closed|Connection closed/i;

/**
 * The error a task fails with, for one thrown while it was handled. The
 * farm's own errors pass as they are. A puppeteer protocol error (such as
 * "Protocol error (Runtime.callFunctionOn): Target closed") becomes a
 * passing {@link BrowserCrashedError} in words a caller can act on: the
 * task is tried again, and the raw text stays in the `cause` for the logs.
 */
export function taskErrorOf(error: unknown): unknown {
  if (error instanceof RenderFarmError || !(error instanceof Error))
    return error;
  // TargetCloseError is a ProtocolError that puppeteer does not declare in
  // its types: known by its name.
  if (error.name === 'TargetCloseError' || CLOSED.test(error.message)) {
    return new BrowserCrashedError('the browser closed during the render', {
      cause: error,
    });
  }
  if (error instanceof ProtocolError) {
    return new BrowserCrashedError(
      'the browser failed to carry out a step of the render',
      { cause: error },
    );
  }
  return error;
}
