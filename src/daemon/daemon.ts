import type { Config } from '../config';
import {
  LeaseLostError,
  PermanentError,
  errorMessage,
  isPermanent,
} from '../errors';
import type { Logger } from '../logger';
import type { LeasedTask, TaskQueue } from '../queue/queue';
import type { Renderer } from '../render/renderer';
import type { Catalogue } from '../resources/catalogue';
import { checkTask, decodePayload, knownViewOf } from '../resources/task';
import type { RenderJob } from '../resources/task';
import type { DocumentStore } from '../storage/storage';
import { LeaseKeeper } from './lease-keeper';
import type { CurrentTask, DaemonMessage, DaemonState } from './messages';
import {
  TASK_TAG,
  failureResult,
  inlineResult,
  linkResult,
  putResult,
} from './result';
import type { ResultMessage } from './result';
import { taskErrorOf } from './task-error';

/** The parts a daemon works with. */
export interface DaemonParts {
  config: Config;
  queue: TaskQueue;
  catalogue: Catalogue;
  renderer: Renderer;
  store: DocumentStore;
  logger: Logger;
  /** Where heartbeats and task events go (the supervisor, or nowhere). */
  report: (message: DaemonMessage) => void;
}

/** Longest wait after a failed lease call before trying again, in ms. */
const MAX_LEASE_BACKOFF_MS = 30_000;

/** First and longest wait before launching a browser again, in ms. */
const FIRST_LAUNCH_BACKOFF_MS = 500;
const MAX_LAUNCH_BACKOFF_MS = 30_000;

/** Longest retry backoff given to a task that failed for a passing reason. */
const MAX_RETRY_BACKOFF_SECONDS = 60;

/** First and longest wait before putting a result again, in ms. */
const FIRST_ANSWER_BACKOFF_MS = 1_000;
const MAX_ANSWER_BACKOFF_MS = 30_000;

/**
 * How long a drain waits for the tasks it gave back to drop their work
 * (renders stop at once; a queue call may take longer), in ms. Below the
 * supervisor's 5 s between the end of the grace and its kill.
 */
const GIVE_BACK_WAIT_MS = 3_000;

/** A task in hand. */
interface Held {
  info: CurrentTask;
  /** The task's time on the queue before this lease, in ms. */
  queueWaitMs: number;
  lease: LeaseKeeper;
  /** Stops the render: aborted when the lease is lost or given back. */
  abort: AbortController;
  /** Set when a drain gave the task back: its work is dropped unanswered. */
  givenBack: boolean;
  /** The checked task, once validation passed. */
  job?: RenderJob;
}

/** A finished render's result message and figures. */
interface Answer {
  message: ResultMessage;
  pages: number;
  bytes: number;
  url?: string;
}

/**
 * The lease loop of one daemon process: lease, validate, render, store or
 * inline, publish the result, acknowledge. Every task leased ends with one
 * result message, or is given back to the queue for a retry; no error in a
 * task's handling escapes the loop.
 */
export class Daemon {
  private state: DaemonState = 'starting';
  private stopping = false;
  private readonly current = new Map<string, Held>();
  private rendersDone = 0;
  private rendersFailed = 0;
  private lastError: string | undefined;
  private browserReady = false;
  private lastProbeMs = 0;
  private idleRun: Promise<void> | undefined;
  private launchFailures = 0;
  private nextLaunchMs = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Heartbeats begun, and the number of the newest one sent. */
  private heartbeatsStarted = 0;
  private heartbeatsSent = 0;
  private loops: Promise<void>[] = [];
  private readonly sleepers = new Set<() => void>();

  constructor(private readonly parts: DaemonParts) {
    parts.renderer.onRestart = (reason) => {
      parts.report({ type: 'browser-restart', reason });
      void this.heartbeat();
    };
    // The supervisor learns a new browser's pid at once, so it can kill
    // that browser even if this daemon dies before its next heartbeat.
    parts.renderer.onLaunch = () => void this.heartbeat();
    // A browser that disconnects or fails a probe mid-render is reported
    // not ready at once, not at the next heartbeat.
    parts.renderer.onHealthChange = () => void this.heartbeat();
  }

  /**
   * Starts the browser, the heartbeat and the lease loops. A browser that
   * does not start is tried again with a backoff; no task is leased until
   * one runs.
   */
  async start(): Promise<void> {
    const { config } = this.parts;
    this.heartbeatTimer = setInterval(
      () => void this.heartbeat(),
      config.heartbeatMs,
    );
    void this.heartbeat();
    await this.launchBrowser();
    this.setState('idle');
    this.loops = Array.from({ length: config.pagesPerDaemon }, () =>
      this.loop(),
    );
  }

  /**
   * Stops leasing, lets the tasks in hand finish within `graceMs`, gives
   * back those that did not (they get no result: their next delivery does),
   * and closes the browser.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.setState('draining');
    this.wakeAll();
    const finished = Promise.all(this.loops);
    if (!(await settlesWithin(finished, graceMs))) {
      this.giveBackLeases();
      if (!(await settlesWithin(finished, GIVE_BACK_WAIT_MS))) {
        this.parts.logger.warn('tasks still in hand after giving them back', {
          task_ids: [...this.current.keys()],
        });
      }
    }
    clearInterval(this.heartbeatTimer);
    await this.parts.renderer.stop();
  }

  private async loop(): Promise<void> {
    const { queue, config, logger } = this.parts;
    let failures = 0;
    while (!this.stopping) {
      if (!this.browserReady) {
        // A daemon without a working browser takes no work: the task would
        // only fail here while a healthy daemon elsewhere could render it.
        await this.idleWork();
        if (!this.browserReady) await this.sleep(config.pollMs);
        continue;
      }
      // A browser due for replacement takes no new work, so that the
      // renders in hand end and the idle work can replace it: otherwise a
      // daemon whose pages are always busy would never recycle.
      if (this.idleRun || this.parts.renderer.recycleDue()) {
        await this.idleWork();
        if (this.current.size > 0 || this.idleRun)
          await this.sleep(config.pollMs);
        continue;
      }
      let tasks: LeasedTask[];
      try {
        tasks = await queue.lease({
          tag: TASK_TAG,
          max: 1,
          leaseSeconds: config.leaseSeconds,
        });
        failures = 0;
      } catch (error) {
        failures++;
        const waitMs = Math.min(
          MAX_LEASE_BACKOFF_MS,
          config.pollMs * 2 ** failures,
        );
        if (failures === 1)
          logger.warn('lease failed; backing off', {
            error: errorMessage(error),
          });
        await this.sleep(waitMs * (0.5 + Math.random() / 2));
        continue;
      }
      if (tasks.length === 0) {
        await this.idleWork();
        await this.sleep(config.pollMs);
        continue;
      }
      // An idle run (probe, recycle) that began while this lease call was
      // out must end before the render starts in the browser it may close.
      if (this.idleRun) await this.idleRun;
      for (const task of tasks) await this.handle(task);
      // Between renders too, not only when the queue is empty: a busy
      // daemon must still probe and recycle its browser.
      await this.idleWork();
    }
  }

  /**
   * Between renders only: probes the browser every `browserProbeMs` with a
   * CDP round trip (a crashed or frozen browser is replaced), recycles it
   * when too old, big or used, and launches a missing one with backoff.
   */
  private idleWork(): Promise<void> {
    // The lease loops (one a page) share one run: two would launch or
    // replace the browser twice and count one failure twice.
    this.idleRun ??= this.idleWorkOnce().finally(() => {
      this.idleRun = undefined;
    });
    return this.idleRun;
  }

  private async idleWorkOnce(): Promise<void> {
    // Renders in hand: nothing to do now. The lease loops do not start a
    // render while this runs (see loop), so none can start mid-recycle.
    if (this.current.size > 0) return;
    const { renderer, config } = this.parts;
    const now = Date.now();
    const due = now - this.lastProbeMs >= config.browserProbeMs;
    if (this.browserReady && (due || !renderer.running)) {
      this.lastProbeMs = now;
      const answered = await renderer.ping(config.browserProbeTimeoutMs);
      if (!answered) this.setBrowserReady(false);
    }
    if (this.browserReady) {
      try {
        await renderer.recycleIfDue();
        // Recycled: start the new browser now, not in the time of the next
        // render's deadline (and without a gap in readiness).
        if (!renderer.running) await this.launchBrowser();
      } catch (error) {
        this.setBrowserReady(false);
        this.lastError = `browser could not be recycled: ${errorMessage(error)}`;
        this.parts.logger.error('browser could not be recycled', {
          error: errorMessage(error),
        });
      }
    }
    if (!this.browserReady && Date.now() >= this.nextLaunchMs)
      await this.launchBrowser();
  }

  /** Launches the browser; on failure schedules the next try with backoff. */
  private async launchBrowser(): Promise<void> {
    const { renderer, logger } = this.parts;
    try {
      await renderer.start();
      if (!(await renderer.ping(this.parts.config.browserProbeTimeoutMs))) {
        throw new Error(
          'the new browser did not answer its first health check',
        );
      }
      if (this.launchFailures > 0) {
        logger.warn('browser started after failed launches', {
          failures: this.launchFailures,
        });
      }
      this.launchFailures = 0;
      this.nextLaunchMs = 0;
      this.lastProbeMs = Date.now();
      this.setBrowserReady(true);
    } catch (error) {
      this.launchFailures++;
      const delayMs = Math.min(
        MAX_LAUNCH_BACKOFF_MS,
        FIRST_LAUNCH_BACKOFF_MS * 2 ** (this.launchFailures - 1),
      );
      this.nextLaunchMs = Date.now() + delayMs;
      this.lastError = `browser could not start: ${errorMessage(error)}`;
      logger.error('browser could not start; trying again later', {
        error: errorMessage(error),
        failures: this.launchFailures,
        retry_in_ms: delayMs,
      });
      this.parts.report({ type: 'browser-restart', reason: 'launch-failed' });
      this.setBrowserReady(false);
    }
  }

  private setBrowserReady(ready: boolean): void {
    if (this.browserReady === ready) return;
    this.browserReady = ready;
    void this.heartbeat();
  }

  /** Handles one leased task to its end; never throws. */
  private async handle(task: LeasedTask): Promise<void> {
    const log = this.parts.logger.child({
      task_id: task.id,
      attempt: task.attempts,
    });
    const held = this.hold(task, log);
    try {
      let answer: Answer;
      try {
        answer = await this.produce(held, log);
      } catch (error) {
        if (await this.dropIfLetGo(held, log, error)) return;
        await this.fail(held, error, log);
        return;
      }
      if (!(await this.answer(held, answer.message, log))) return;
      this.rendersDone++;
      await this.finished(held, 'success', answer);
      log.info('task rendered', {
        resource_view: held.info.view,
        kind: answer.message.kind,
        pages: answer.pages,
        bytes: answer.bytes,
        duration_ms: Date.now() - held.info.sinceMs,
        queue_wait_ms: held.queueWaitMs,
      });
    } catch (error) {
      // Not expected (every step catches its own); logged so that nothing
      // leaves the loop unseen. The lease runs out and the task comes back.
      log.error('task handling failed', { error: errorMessage(error) });
    } finally {
      await this.release(held);
    }
  }

  /** Takes a leased task in hand: keeps its lease, tells the supervisor. */
  private hold(task: LeasedTask, log: Logger): Held {
    const abort = new AbortController();
    const held: Held = {
      info: {
        taskId: task.id,
        attempt: task.attempts,
        view: '',
        sinceMs: Date.now(),
      },
      queueWaitMs: Date.now() - task.enqueuedAt.getTime(),
      abort,
      givenBack: false,
      lease: new LeaseKeeper(
        task,
        this.parts.queue,
        this.parts.config.leaseSeconds,
        log,
        {
          renewed: () => void this.heartbeat(),
          // A lost lease stops the render at once: another worker may hold
          // the task now, and this one's result would only repeat its.
          lost: (error) => abort.abort(error),
        },
      ),
    };
    this.current.set(task.id, held);
    // A heartbeat even when already rendering: the supervisor must know of
    // every lease held, to settle it should this daemon die.
    this.state = 'rendering';
    void this.heartbeat();
    return held;
  }

  /** Validates, renders and stores: the result of a task, or a throw. */
  private async produce(held: Held, log: Logger): Promise<Answer> {
    const { config, catalogue } = this.parts;
    const task = held.lease.current;
    const fields = decodePayload(task.payload, config.maxTaskBytes);
    held.info.view = knownViewOf(fields, catalogue) ?? '';
    // The supervisor answers the last attempt of a task whose daemon died
    // with it; this covers a supervisor that could not (it died too, or
    // its copy of the lease was stale). Known limit: this answer is itself
    // a delivery past the limit (reliability.md, "Poison tasks when the
    // whole machine dies").
    if (task.attempts > config.maxAttempts) {
      throw new PermanentError(
        `gave up after ${config.maxAttempts} attempts: each one was interrupted ` +
          '(the daemon or its browser stopped in the middle of the render)',
      );
    }
    const job = checkTask(fields, task.id, catalogue, config);
    held.job = job;
    return this.renderAndStore(job, held.abort.signal, log);
  }

  private async renderAndStore(
    job: RenderJob,
    signal: AbortSignal,
    log: Logger,
  ): Promise<Answer> {
    const { renderer, store, config } = this.parts;
    const output = await renderer.render(job, signal);
    signal.throwIfAborted();
    for (const warning of output.warnings)
      log.warn('render warning', { warning });
    const inline =
      job.delivery === 'auto'
        ? inlineResult(
            job,
            output.pdf,
            output.pages,
            output.warnings,
            config.inlineLimitBytes,
          )
        : undefined;
    const base = { pages: output.pages, bytes: output.pdf.length };
    if (inline) return { message: inline, ...base };
    const url = await store.save(job.taskId, job.filename, output.pdf);
    return {
      message: linkResult(job, url, output.pages, output.warnings),
      ...base,
      url,
    };
  }

  /**
   * When the task is no longer this daemon's (its lease was lost, or a
   * drain gave it back), drops the work: no result, no failure counted.
   * Resolves whether it did.
   */
  private async dropIfLetGo(
    held: Held,
    log: Logger,
    error?: unknown,
  ): Promise<boolean> {
    await held.lease.pause();
    const lost =
      held.lease.lost ?? (error instanceof LeaseLostError ? error : undefined);
    if (held.givenBack) {
      await this.giveBack(held, log);
      return true;
    }
    if (lost === undefined) return false;
    log.warn('lease lost during the task; dropping the work', {
      resource_view: held.info.view || undefined,
      error: errorMessage(lost),
    });
    return true;
  }

  /** Cancels the lease of a task given back, so it is leased again at once. */
  private async giveBack(held: Held, log: Logger): Promise<void> {
    if (held.lease.lost !== undefined) return;
    try {
      await this.parts.queue.cancelLease(held.lease.current);
      log.info('gave back the lease of an unfinished task');
    } catch (error) {
      log.warn('could not give back a lease; it will expire', {
        error: errorMessage(error),
      });
    }
  }

  /**
   * Puts the result, then acknowledges the task. A queue failure is tried
   * again with backoff, the lease kept meanwhile, for as long as the lease
   * holds and the daemon is not told to give its tasks back: a queue outage
   * never counts against the task's attempts, and never turns a finished
   * render into a failure. Resolves true once the result is out, false when
   * the work was dropped instead.
   */
  private async answer(
    held: Held,
    message: ResultMessage,
    log: Logger,
  ): Promise<boolean> {
    const { queue } = this.parts;
    let put = false;
    for (let failures = 0; ;) {
      if (!put && (await this.dropIfLetGo(held, log))) return false;
      await held.lease.pause();
      try {
        if (!put) {
          await held.lease.freshen();
          await putResult(queue, held.lease.current.id, message, log);
          put = true;
        }
        await queue.acknowledge(held.lease.current);
        if (failures > 0)
          log.info('queue answers again; task answered', { failures });
        return true;
      } catch (error) {
        if (error instanceof LeaseLostError && !put) {
          await this.dropIfLetGo(held, log, error);
          return false;
        }
        if (error instanceof LeaseLostError || (put && held.givenBack)) {
          // The result is out: a delivery that follows is answered again,
          // flagged as a repeat (at least once).
          log.warn('acknowledge failed after the result was published', {
            error: errorMessage(error),
          });
          return true;
        }
        failures++;
        const waitMs = Math.min(
          MAX_ANSWER_BACKOFF_MS,
          FIRST_ANSWER_BACKOFF_MS * 2 ** (failures - 1),
        );
        const fields = {
          error: errorMessage(error),
          retry_in_ms: waitMs,
          failures,
        };
        // Once at the start, then every tenth try (minutes apart): a queue
        // that refuses for good shows, without a line every few seconds.
        if (failures % 10 === 1)
          log.warn(
            put
              ? 'acknowledge failed; trying again'
              : 'could not put the result; trying again',
            fields,
          );
        else log.debug('queue still failing; trying again', fields);
        held.lease.resume();
        await this.sleep(waitMs * (0.5 + Math.random() / 2));
      }
    }
  }

  /**
   * A permanent failure, or a passing one on its last attempt, gets a
   * failure result; a passing one with attempts left is given back with a
   * backoff: its lease is shortened to the backoff, not cancelled (see
   * "Passing failures: backoff through the lease" in reliability.md).
   */
  private async fail(held: Held, thrown: unknown, log: Logger): Promise<void> {
    const { config, queue } = this.parts;
    const error = taskErrorOf(thrown);
    const task = held.lease.current;
    const reason = errorMessage(error);
    // The dashboard's "last error" is the daemon's or its browser's; a bad
    // task's own failure is shown with its result, not held against it.
    if (!isPermanent(error)) this.lastError = reason;
    const fields = {
      resource_view: held.info.view || undefined,
      error: reason,
      ...(error !== thrown ? { cause: errorMessage(thrown) } : {}),
    };
    if (isPermanent(error) || task.attempts >= config.maxAttempts) {
      const text = isPermanent(error)
        ? reason
        : `gave up after ${task.attempts} attempts: ${reason}`;
      const answered = await this.answer(
        held,
        failureResult(task.id, text),
        log,
      );
      if (!answered) return;
      this.rendersFailed++;
      log.error('task failed', { ...fields, error: text });
      await this.finished(held, 'failure', undefined, text);
      return;
    }
    const backoffSeconds = Math.min(
      MAX_RETRY_BACKOFF_SECONDS,
      2 ** (task.attempts - 1),
    );
    log.warn('task failed for a passing reason; retrying later', {
      ...fields,
      backoff_seconds: backoffSeconds,
    });
    try {
      // A short lease instead of a cancelled one: the task comes back to
      // the queue when the backoff is over, not at once.
      await queue.renew(task, backoffSeconds);
    } catch (backoffError) {
      // The task then comes back when its full lease runs out, one
      // attempt used, as the backoff meant anyway; nothing is lost.
      log.warn('could not shorten the lease to the backoff', {
        error: errorMessage(backoffError),
      });
    }
    await this.finished(held, 'retry', undefined, reason);
  }

  /**
   * Gives up the tasks in hand at the end of a drain's grace: marks them
   * given back (their work is then dropped without a result) and stops their
   * renders. Each task's own handler cancels its lease.
   */
  private giveBackLeases(): void {
    // Known limit: the queue has counted this delivery, so a task given
    // back on its last attempt is answered "gave up" on its next one
    // (reliability.md, "Drain"); no queue can take a delivery back.
    for (const held of this.current.values()) {
      held.givenBack = true;
      held.abort.abort(
        new LeaseLostError('the daemon is stopping; the task was given back'),
      );
    }
    this.wakeAll();
  }

  /**
   * Reports a task settled: first a heartbeat without its lease (the
   * supervisor must not settle it again), then the outcome.
   */
  private async finished(
    held: Held,
    outcome: 'success' | 'failure' | 'retry',
    answer?: Answer,
    error?: string,
  ): Promise<void> {
    const { job } = held;
    const durationMs = Date.now() - held.info.sinceMs;
    await this.release(held);
    this.parts.report({
      type: 'task-finished',
      taskId: held.info.taskId,
      view: held.info.view || 'unknown',
      outcome,
      durationMs,
      queueWaitMs: held.queueWaitMs,
      pages: answer?.pages ?? 0,
      bytes: answer?.bytes ?? 0,
      ...(answer?.url ? { url: answer.url } : {}),
      ...(job ? { filename: job.filename } : {}),
      ...(error ? { error } : {}),
    });
  }

  /** Lets go of a task: its lease unwatched, and gone from the heartbeat. */
  private async release(held: Held): Promise<void> {
    await held.lease.pause();
    if (!this.current.delete(held.info.taskId)) return;
    if (this.current.size === 0 && !this.stopping) this.state = 'idle';
    await this.heartbeat();
  }

  private setState(state: DaemonState): void {
    if (this.state === state) return;
    this.state = state;
    void this.heartbeat();
  }

  private async heartbeat(): Promise<void> {
    const seq = ++this.heartbeatsStarted;
    try {
      const browser = await this.parts.renderer.status();
      // A heartbeat whose browser reading began before a newer one was sent
      // would bring back a state already gone (a crashed browser as ready).
      if (seq < this.heartbeatsSent) return;
      this.heartbeatsSent = seq;
      this.parts.report({
        type: 'heartbeat',
        state: this.state,
        tasks: [...this.current.values()].map((held) => held.info),
        leases: [...this.current.values()].map(({ lease }) => ({
          taskId: lease.current.id,
          attempts: lease.current.attempts,
          leaseToken: lease.current.leaseToken,
        })),
        rendersDone: this.rendersDone,
        rendersFailed: this.rendersFailed,
        browserPid: browser.pid,
        browserProfileDir: browser.profileDir,
        browserMemoryBytes: browser.memoryBytes,
        browserReady: this.browserReady && browser.pid !== 0 && browser.healthy,
        browserLaunchFailures: this.launchFailures,
        ...(this.nextLaunchMs > Date.now()
          ? { nextBrowserLaunchMs: this.nextLaunchMs }
          : {}),
        ...(this.lastError ? { lastError: this.lastError } : {}),
      });
    } catch (error) {
      this.parts.logger.debug('heartbeat failed', {
        error: errorMessage(error),
      });
    }
  }

  /** Waits `ms`, or less when the daemon is stopped meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.sleepers]) wake();
  }
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
