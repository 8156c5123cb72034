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
import { parseTask } from '../resources/task';
import type { RenderJob } from '../resources/task';
import type { DocumentStore } from '../storage/storage';
import type { CurrentTask, DaemonMessage, DaemonState } from './messages';
import {
  TASK_TAG,
  failureResult,
  inlineResult,
  linkResult,
  publishAnswer,
} from './result';
import type { ResultMessage } from './result';

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

/**
 * The lease loop of one daemon process: lease, validate, render, store or
 * inline, publish the result, acknowledge. Every task leased ends with one
 * result message, or is given back to the queue for a retry; no error in a
 * task's handling escapes the loop.
 */
export class Daemon {
  private state: DaemonState = 'starting';
  private stopping = false;
  private readonly current = new Map<
    string,
    { task: LeasedTask; info: CurrentTask }
  >();
  private rendersDone = 0;
  private rendersFailed = 0;
  private lastError: string | undefined;
  private browserReady = false;
  private lastProbeMs = 0;
  private idleRun: Promise<void> | undefined;
  private launchFailures = 0;
  private nextLaunchMs = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatsStarted = 0;
  private heartbeatsSent = 0;
  private loops: Promise<void>[] = [];
  private wakeUp: (() => void) | undefined;

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
   * back the leases of those that did not, and closes the browser.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.setState('draining');
    this.wakeUp?.();
    const finished = Promise.all(this.loops).then(() => true);
    const late = new Promise<boolean>((resolve) =>
      setTimeout(() => resolve(false), graceMs),
    );
    if (!(await Promise.race([finished, late]))) await this.giveBackLeases();
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
    // Known limit: with several pages, another loop may lease and start a
    // render while a recycle below is under way; that render then fails as
    // a crash and is retried. Ends when leasing waits on this run.
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
    const { logger, config, queue } = this.parts;
    const log = logger.child({ task_id: task.id, attempt: task.attempts });
    const info: CurrentTask = {
      taskId: task.id,
      attempt: task.attempts,
      view: '',
      sinceMs: Date.now(),
    };
    this.current.set(task.id, { task, info });
    // A heartbeat even when already rendering: the supervisor must know of
    // every lease held, to settle it should this daemon die.
    this.state = 'rendering';
    void this.heartbeat();
    const lease = this.keepLease(task, log);
    const queueWaitMs = Date.now() - task.enqueuedAt.getTime();
    let job: RenderJob | undefined;
    try {
      // The supervisor answers the last attempt of a task whose daemon
      // died with it; this covers a supervisor that could not (it died
      // too, or its copy of the lease was stale).
      if (task.attempts > config.maxAttempts) {
        throw new PermanentError(
          `gave up after ${config.maxAttempts} attempts: each one was interrupted ` +
            '(the daemon or its browser stopped in the middle of the render)',
        );
      }
      job = parseTask(task.payload, task.id, this.parts.catalogue, config);
      info.view = job.manifest.view;
      // Known limit: a lease lost mid-render is noticed when the render
      // ends, not at once; the render finishes and its result is dropped.
      const result = await this.renderAndStore(job, log);
      if (lease.lost()) return;
      await publishAnswer(queue, lease.current(), result.message, log);
      this.rendersDone++;
      this.finished(task, job, 'success', queueWaitMs, result);
      log.info('task rendered', {
        resource_view: job.manifest.view,
        kind: result.message.kind,
        pages: result.pages,
        bytes: result.bytes,
        duration_ms: Date.now() - info.sinceMs,
        queue_wait_ms: queueWaitMs,
      });
    } catch (error) {
      if (lease.lost() || error instanceof LeaseLostError) {
        log.warn('lease lost during the task; dropping the work', {
          error: errorMessage(error),
        });
        return;
      }
      await this.fail(lease.current(), job, error, queueWaitMs, log);
    } finally {
      lease.stop();
      this.current.delete(task.id);
      if (this.current.size === 0 && !this.stopping) this.setState('idle');
    }
  }

  private async renderAndStore(
    job: RenderJob,
    log: Logger,
  ): Promise<{
    message: ResultMessage;
    pages: number;
    bytes: number;
    url?: string;
  }> {
    const { renderer, store, config } = this.parts;
    const output = await renderer.render(job);
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
   * A permanent failure, or a passing one on its last attempt, gets a
   * failure result; a passing one with attempts left is given back with a
   * backoff.
   */
  private async fail(
    task: LeasedTask,
    job: RenderJob | undefined,
    error: unknown,
    queueWaitMs: number,
    log: Logger,
  ): Promise<void> {
    const { config, queue } = this.parts;
    const reason = errorMessage(error);
    this.lastError = reason;
    const fields = { resource_view: job?.manifest.view, error: reason };
    try {
      if (isPermanent(error) || task.attempts >= config.maxAttempts) {
        const text = isPermanent(error)
          ? reason
          : `gave up after ${task.attempts} attempts: ${reason}`;
        this.rendersFailed++;
        log.error('task failed', { ...fields, error: text });
        await publishAnswer(queue, task, failureResult(task.id, text), log);
        this.finished(task, job, 'failure', queueWaitMs, undefined, text);
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
      // A short lease instead of a cancelled one: the task comes back to
      // the queue when the backoff is over, not at once.
      await queue.renew(task, backoffSeconds);
      this.finished(task, job, 'retry', queueWaitMs, undefined, reason);
    } catch (publishError) {
      // The queue refused the failure result or the backoff: the lease runs
      // out and the task is delivered again, so nothing is lost.
      log.error('could not answer the task; it will be delivered again', {
        error: errorMessage(publishError),
      });
    }
  }

  /** Renews the lease while the task is in hand; notices a lost lease. */
  private keepLease(task: LeasedTask, log: Logger) {
    const { queue, config } = this.parts;
    let held = task;
    let lost = false;
    const everyMs = Math.max(1_000, (config.leaseSeconds * 1000) / 3);
    const timer = setInterval(() => {
      queue.renew(held, config.leaseSeconds).then(
        (renewed) => {
          held = renewed;
          const entry = this.current.get(task.id);
          if (entry) entry.task = renewed;
          void this.heartbeat();
        },
        (error: unknown) => {
          if (error instanceof LeaseLostError) lost = true;
          log.warn('lease renewal failed', { error: errorMessage(error) });
        },
      );
    }, everyMs);
    return {
      current: () => held,
      lost: () => lost,
      stop: () => clearInterval(timer),
    };
  }

  private async giveBackLeases(): Promise<void> {
    for (const { task } of this.current.values()) {
      try {
        await this.parts.queue.cancelLease(task);
        this.parts.logger.info('gave back the lease of an unfinished task', {
          task_id: task.id,
        });
      } catch (error) {
        this.parts.logger.warn('could not give back a lease; it will expire', {
          task_id: task.id,
          error: errorMessage(error),
        });
      }
    }
  }

  private finished(
    task: LeasedTask,
    job: RenderJob | undefined,
    outcome: 'success' | 'failure' | 'retry',
    queueWaitMs: number,
    result?: { pages: number; bytes: number; url?: string },
    error?: string,
  ): void {
    this.parts.report({
      type: 'task-finished',
      taskId: task.id,
      view: job?.manifest.view ?? 'unknown',
      outcome,
      durationMs:
        Date.now() - (this.current.get(task.id)?.info.sinceMs ?? Date.now()),
      queueWaitMs,
      pages: result?.pages ?? 0,
      bytes: result?.bytes ?? 0,
      ...(result?.url ? { url: result.url } : {}),
      ...(job ? { filename: job.filename } : {}),
      ...(error ? { error } : {}),
    });
  }

  private setState(state: DaemonState): void {
    if (this.state === state) return;
    this.state = state;
    void this.heartbeat();
  }

  private async heartbeat(): Promise<void> {
    try {
      const seq = ++this.heartbeatsStarted;
      const browser = await this.parts.renderer.status();
      // A heartbeat that took longer than a later one would undo its news.
      if (seq < this.heartbeatsSent) return;
      this.heartbeatsSent = seq;
      this.parts.report({
        type: 'heartbeat',
        state: this.state,
        tasks: [...this.current.values()].map((entry) => entry.info),
        leases: [...this.current.values()].map(({ task }) => ({
          taskId: task.id,
          attempts: task.attempts,
          leaseToken: task.leaseToken,
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

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
