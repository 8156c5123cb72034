import { errorMessage } from '../errors';
import type { Logger } from '../logger';
import type { TaskQueue } from '../queue/queue';

/** How long one depth reading is reused, in ms: dashboards ask 4 times a second. */
const DEPTH_MAX_AGE_MS = 1_000;

/** Longest wait for the queue to tell its depth, in ms; then "unknown". */
const DEPTH_TIMEOUT_MS = 2_000;

/**
 * The queue's backlog for the dashboard, the status API and `/metrics`. A
 * backend that cannot tell, refuses (Cloud Tasks without the right to list
 * tasks answers PERMISSION_DENIED) or does not answer in time gives `null`
 * ("unknown") instead of an error, so those pages keep working. A failure
 * is logged once when it starts and once when it ends, not on every page.
 * Readings are shared for a second, so many dashboards cost one call.
 */
export class QueueDepth {
  private cached: { atMs: number; depth: number | null } | undefined;
  private inFlight: Promise<number | null> | undefined;
  private failing = false;

  constructor(
    private readonly queue: TaskQueue,
    private readonly tag: string,
    private readonly logger: Logger,
  ) {}

  /** Tasks with the tag waiting or leased, or null when unknown. */
  read(): Promise<number | null> {
    if (!this.queue.depth) return Promise.resolve(null);
    const cached = this.cached;
    if (cached && Date.now() - cached.atMs < DEPTH_MAX_AGE_MS)
      return Promise.resolve(cached.depth);
    this.inFlight ??= this.ask().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async ask(): Promise<number | null> {
    const queue = this.queue;
    if (!queue.depth) return null;
    let depth: number | null;
    let timer: NodeJS.Timeout | undefined;
    try {
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${DEPTH_TIMEOUT_MS} ms`)),
          DEPTH_TIMEOUT_MS,
        );
      });
      depth = await Promise.race([queue.depth(this.tag), late]);
      if (this.failing) {
        this.failing = false;
        this.logger.info('queue depth can be read again', {
          queue: this.queue.description,
          depth,
        });
      }
    } catch (error) {
      depth = null;
      if (!this.failing) {
        this.failing = true;
        this.logger.warn(
          'cannot read the queue depth; shown as unknown until it can',
          { queue: this.queue.description, error: errorMessage(error) },
        );
      } else {
        this.logger.debug('queue depth still cannot be read', {
          queue: this.queue.description,
          error: errorMessage(error),
        });
      }
    } finally {
      clearTimeout(timer);
    }
    this.cached = { atMs: Date.now(), depth };
    return depth;
  }
}
