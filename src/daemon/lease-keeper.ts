import { LeaseLostError, errorMessage } from '../errors';
import type { Logger } from '../logger';
import type { LeasedTask, TaskQueue } from '../queue/queue';

/** What a {@link LeaseKeeper} is told of. */
export interface LeaseEvents {
  /** A renewal landed: the task with its new expiry and token. */
  renewed(task: LeasedTask): void;
  /** The lease is gone: the queue refused a renewal, or it ran out. */
  lost(error: LeaseLostError): void;
}

/**
 * Keeps the lease on one task while the daemon works on it: renews it every
 * third of its length, and notices when it is lost (a renewal refused, or
 * the lease ran out while the queue could not be reached). Before anything
 * that names the lease (acknowledge, give back, back off), the caller
 * {@link pause}s it: a renewal landing in between would change the lease's
 * token on Cloud Tasks, and the call would be refused.
 */
export class LeaseKeeper {
  private held: LeasedTask;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private lostError: LeaseLostError | undefined;
  private readonly everyMs: number;

  /**
   * Starts renewing at once.
   * @param leaseSeconds length of each renewal, in seconds
   */
  constructor(
    task: LeasedTask,
    private readonly queue: TaskQueue,
    private readonly leaseSeconds: number,
    private readonly log: Logger,
    private readonly events: LeaseEvents,
  ) {
    this.held = task;
    this.everyMs = Math.max(1_000, (leaseSeconds * 1_000) / 3);
    this.resume();
  }

  /** The task as last leased or renewed: its token is the current one. */
  get current(): LeasedTask {
    return this.held;
  }

  /** Why the lease was lost, or undefined while it holds. */
  get lost(): LeaseLostError | undefined {
    return this.lostError;
  }

  /** Renews on the timer again after {@link pause}; not once lost. */
  resume(): void {
    if (this.timer !== undefined || this.lostError !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.everyMs);
  }

  /** Stops the timer and waits for a renewal under way to land or fail. */
  async pause(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }

  /**
   * Makes sure the lease holds before a result is put: renews it when less
   * than a renewal interval is left (earlier renewals failed), and throws
   * {@link LeaseLostError} when it is lost or has run out. Call paused.
   */
  async freshen(): Promise<void> {
    if (this.remainingMs() < this.everyMs) await this.renew();
    if (this.lostError === undefined && this.remainingMs() <= 0)
      this.markLost('the lease ran out before the result could be put');
    if (this.lostError !== undefined) throw this.lostError;
  }

  private tick(): void {
    if (this.remainingMs() <= 0) {
      this.markLost('the lease ran out while the queue could not renew it');
      return;
    }
    void this.renew();
  }

  /** One renewal, never two at once; failures are noted, not thrown. */
  private renew(): Promise<void> {
    this.inFlight ??= this.queue
      .renew(this.held, this.leaseSeconds)
      .then(
        (renewed) => {
          this.held = renewed;
          this.events.renewed(renewed);
        },
        (error: unknown) => {
          if (error instanceof LeaseLostError) {
            this.markLost(error);
            return;
          }
          // A passing queue failure: the lease may still hold until it
          // runs out; the next tick tries again.
          this.log.warn('lease renewal failed; trying again', {
            error: errorMessage(error),
            lease_left_ms: this.remainingMs(),
          });
        },
      )
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  private markLost(why: LeaseLostError | string): void {
    if (this.lostError !== undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.lostError =
      typeof why === 'string'
        ? new LeaseLostError(`lease on task ${this.held.id} lost: ${why}`)
        : why;
    this.events.lost(this.lostError);
  }

  private remainingMs(): number {
    return this.held.leaseExpiresAt.getTime() - Date.now();
  }
}
