import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import type {
  DaemonMessage,
  DaemonState,
  HeartbeatMessage,
  HeldLease,
  TaskFinishedMessage,
} from '../daemon/messages';
import type { Logger } from '../logger';
import {
  processTree,
  processesUsingProfile,
  removeProfile,
} from '../render/browser';

/** Why a daemon was (re)started; also a metric label. */
export type DaemonRestartReason = 'exit' | 'heartbeat' | 'stuck' | 'manual';

/** What the supervisor knows of one daemon. */
export interface DaemonInfo extends Omit<
  HeartbeatMessage,
  'type' | 'state' | 'leases'
> {
  id: string;
  pid: number;
  /** The daemon's own state, or the supervisor's view while none runs. */
  state: DaemonState | 'stopped' | 'backoff';
  startedAtMs: number;
  lastHeartbeatMs: number;
  restarts: number;
  /** Restarts in a row without a healthy run in between. */
  crashStreak: number;
  /** When a daemon in backoff will be started again, epoch ms. */
  nextStartMs?: number;
  /** How the last process of this slot ended ("exited with code 0"). */
  lastExit?: string;
}

/** What `/healthz` says: whether the machine is worth keeping. */
export interface PoolHealth {
  healthy: boolean;
  reason: string;
  /** How long no daemon has been ready, in ms; 0 while one is. */
  notReadyForMs: number;
}

/** A daemon that ran this long without dying resets its crash streak. */
const HEALTHY_RUN_MS = 30_000;

/** Longest wait before restarting a daemon that keeps dying, in ms. */
const MAX_RESTART_BACKOFF_MS = 60_000;

/** How often heartbeats and stuck renders are checked, in ms. */
const WATCH_EVERY_MS = 500;

/**
 * Silence allowed before a new daemon's first heartbeat, in ms (at least
 * the heartbeat timeout): loading Node, the queue and puppeteer can take
 * seconds on a busy machine, and killing it for that would loop for ever.
 */
const FIRST_HEARTBEAT_TIMEOUT_MS = 30_000;

/**
 * Time given to killed processes to disappear before one is reported as a
 * survivor, in ms; a busy machine can take seconds to tear down a
 * browser's memory.
 */
const KILL_CHECK_MS = 5_000;

interface Slot {
  info: DaemonInfo;
  child: ChildProcess | undefined;
  /** Whether the current child has sent a heartbeat yet. */
  heard: boolean;
  timer: NodeJS.Timeout | undefined;
  /** The leases the current child last said it holds; kept from the
   * status API, which anyone who can read the dashboard sees. */
  leases: HeldLease[];
}

/** The leases of a daemon that died holding them. */
export interface OrphanedLeases {
  /** The daemon's slot id. */
  daemon: string;
  /** How it died, for the failure result of a last attempt. */
  why: string;
  leases: (HeldLease & { view: string })[];
}

/**
 * Forks and watches the daemons of one machine. A daemon that exits, stops
 * sending heartbeats, or renders far past the deadline is killed with its
 * whole process tree (its Chromium included) and started again, with an
 * exponential backoff when it keeps dying.
 *
 * Events: `task-finished` (TaskFinishedMessage & {daemon}), `daemon-restart`
 * ({id, reason}), `browser-restart` ({id, reason}), `orphaned`
 * (OrphanedLeases, once the dead daemon's processes are gone), `change`
 * (after any state change).
 */
export class DaemonPool extends EventEmitter {
  private readonly slots: Slot[] = [];
  private watchTimer: NodeJS.Timeout | undefined;
  private draining = false;
  /** When a daemon was last seen ready (or the pool started), epoch ms. */
  private lastReadyMs = Date.now();

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    /** Script the daemons run; the compiled daemon entry by default. */
    private readonly daemonScript = path.join(
      __dirname,
      '..',
      'daemon',
      'main.js',
    ),
    /** Extra environment for the daemons. */
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    super();
  }

  /** Forks `config.daemons` daemons and starts watching them. */
  start(): void {
    for (let i = 1; i <= this.config.daemons; i++) {
      const slot: Slot = {
        info: blankInfo(String(i)),
        child: undefined,
        heard: false,
        timer: undefined,
        leases: [],
      };
      this.slots.push(slot);
      this.spawn(slot);
    }
    // A new farm gets the whole allowance to start its first browser.
    this.lastReadyMs = Date.now();
    this.watchTimer = setInterval(() => this.watch(), WATCH_EVERY_MS);
  }

  /** Leases each daemon said in its last heartbeat that it holds. */
  leaseCounts(): Map<string, number> {
    return new Map(this.slots.map((s) => [s.info.id, s.leases.length]));
  }

  /**
   * Unhealthy once no daemon has been ready for longer than
   * `unhealthyAfterMs` (say, a browser that can never start): restarting
   * the whole machine is then the only thing left to try. Draining is
   * healthy: it ends by itself.
   */
  health(unhealthyAfterMs: number): PoolHealth {
    this.noteReadiness();
    if (this.draining)
      return { healthy: true, reason: 'draining', notReadyForMs: 0 };
    const ready = this.readyIds().length;
    const notReadyForMs = ready > 0 ? 0 : Date.now() - this.lastReadyMs;
    if (notReadyForMs > unhealthyAfterMs) {
      return {
        healthy: false,
        reason:
          `no daemon has been ready for ${Math.round(notReadyForMs / 1000)} s ` +
          `(limit ${Math.round(unhealthyAfterMs / 1000)} s): ` +
          this.readiness().reason,
        notReadyForMs,
      };
    }
    return {
      healthy: true,
      reason:
        ready > 0
          ? `${ready} daemon(s) ready`
          : `no daemon ready for ${Math.round(notReadyForMs / 1000)} s, ` +
            `unhealthy after ${Math.round(unhealthyAfterMs / 1000)} s`,
      notReadyForMs,
    };
  }

  /** Remembers now as the last ready moment when a daemon is ready. */
  private noteReadiness(): void {
    if (this.readyIds().length > 0) this.lastReadyMs = Date.now();
  }

  /** A snapshot of every daemon. */
  list(): DaemonInfo[] {
    return this.slots.map((slot) => ({
      ...slot.info,
      tasks: [...slot.info.tasks],
    }));
  }

  /** Ids of the daemons with a live browser, taking work, heard lately. */
  readyIds(): string[] {
    if (this.draining) return [];
    const now = Date.now();
    return this.slots
      .filter(
        (s) =>
          s.child &&
          s.info.browserReady &&
          (s.info.state === 'idle' || s.info.state === 'rendering') &&
          now - s.info.lastHeartbeatMs < this.config.heartbeatTimeoutMs,
      )
      .map((s) => s.info.id);
  }

  /** Whether at least one daemon has a live browser and takes work. */
  readiness(): { ready: boolean; reason: string } {
    if (this.draining)
      return { ready: false, reason: 'draining: not taking work' };
    const ready = this.readyIds();
    if (ready.length > 0)
      return { ready: true, reason: `${ready.length} daemon(s) ready` };
    const states = this.slots
      .map((s) => `${s.info.id}: ${s.info.state}`)
      .join(', ');
    return {
      ready: false,
      reason: `no daemon with a live browser is ready (${states})`,
    };
  }

  /** Kills a daemon's process tree and starts it again. */
  restart(id: string, reason: DaemonRestartReason = 'manual'): boolean {
    const slot = this.slots.find((s) => s.info.id === id);
    if (!slot) return false;
    this.kill(slot, reason);
    return true;
  }

  /**
   * Asks every daemon to drain (stop leasing, finish or give back its work,
   * exit) and resolves once all have exited, or kills what is left after
   * `graceMs`.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    clearInterval(this.watchTimer);
    for (const slot of this.slots) clearTimeout(slot.timer);
    const exits = this.slots.map((slot) => this.waitForExit(slot));
    for (const slot of this.slots) {
      if (slot.child?.connected) slot.child.send({ type: 'drain' });
      else slot.child?.kill('SIGTERM');
    }
    const late = new Promise<'late'>((resolve) =>
      setTimeout(() => resolve('late'), graceMs),
    );
    if ((await Promise.race([Promise.all(exits), late])) === 'late') {
      this.logger.warn('daemons did not drain in time; killing them');
      for (const slot of this.slots) await this.killTree(slot);
    }
    this.emit('change');
  }

  private spawn(slot: Slot): void {
    const child = fork(this.daemonScript, [], {
      env: { ...this.env, RENDER_DAEMON_ID: slot.info.id },
      // Its own process group, so the daemon and every Chromium process it
      // started can be killed together.
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    slot.child = child;
    slot.heard = false;
    slot.leases = [];
    Object.assign(slot.info, {
      pid: child.pid ?? 0,
      state: 'starting',
      startedAtMs: Date.now(),
      lastHeartbeatMs: Date.now(),
      tasks: [],
      rendersDone: 0,
      rendersFailed: 0,
      browserPid: 0,
      browserMemoryBytes: 0,
      browserProfileDir: '',
      browserReady: false,
      browserLaunchFailures: 0,
      nextBrowserLaunchMs: undefined,
      nextStartMs: undefined,
    });
    child.on('message', (message: DaemonMessage) => {
      // A killed daemon's last heartbeats can arrive after its successor
      // started; they must not overwrite the successor's state. Its
      // task-finished messages still count.
      if (slot.child !== child && message.type === 'heartbeat') return;
      this.onMessage(slot, message);
    });
    child.on('exit', (code, signal) => this.onExit(slot, child, code, signal));
    this.logger.info('daemon started', {
      daemon: slot.info.id,
      pid: child.pid,
    });
    this.emit('change');
  }

  private onMessage(slot: Slot, message: DaemonMessage): void {
    const info = slot.info;
    if (message.type === 'heartbeat') {
      slot.heard = true;
      slot.leases = message.leases;
      Object.assign(info, {
        state: message.state,
        tasks: message.tasks,
        rendersDone: message.rendersDone,
        rendersFailed: message.rendersFailed,
        browserPid: message.browserPid,
        browserProfileDir: message.browserProfileDir,
        browserMemoryBytes: message.browserMemoryBytes,
        browserReady: message.browserReady,
        browserLaunchFailures: message.browserLaunchFailures,
        nextBrowserLaunchMs: message.nextBrowserLaunchMs,
        lastHeartbeatMs: Date.now(),
        ...(message.lastError ? { lastError: message.lastError } : {}),
      });
      if (Date.now() - info.startedAtMs > HEALTHY_RUN_MS) info.crashStreak = 0;
      this.noteReadiness();
    } else if (message.type === 'task-finished') {
      this.emit('task-finished', {
        ...message,
        daemon: info.id,
      } satisfies TaskFinishedMessage & {
        daemon: string;
      });
    } else if (message.type === 'browser-restart') {
      this.emit('browser-restart', { id: info.id, reason: message.reason });
    }
    this.emit('change');
  }

  private onExit(
    slot: Slot,
    child: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    if (slot.child !== child) return;
    // Ready until this moment: the pool may have been ready just now.
    this.noteReadiness();
    slot.child = undefined;
    const why = signal ? `killed by ${signal}` : `exited with code ${code}`;
    slot.info.lastExit = why;
    const orphans = this.takeLeases(slot, why);
    void this.killTree(slot, child.pid).then(orphans);
    if (this.draining) {
      slot.info.state = 'stopped';
      this.logger.info('daemon stopped', {
        daemon: slot.info.id,
        code,
        signal,
      });
      this.emit('change');
      return;
    }
    slot.info.lastError = `daemon ${why}`;
    this.logger.warn('daemon exited; restarting it', {
      daemon: slot.info.id,
      code,
      signal,
    });
    this.scheduleRestart(slot, 'exit');
  }

  private scheduleRestart(slot: Slot, reason: DaemonRestartReason): void {
    const info = slot.info;
    info.restarts++;
    info.crashStreak++;
    const delayMs = Math.min(
      MAX_RESTART_BACKOFF_MS,
      500 * 2 ** (info.crashStreak - 1),
    );
    info.state = 'backoff';
    info.browserReady = false;
    info.tasks = [];
    info.nextStartMs = Date.now() + delayMs;
    this.logger.warn('daemon restart scheduled', {
      daemon: info.id,
      reason,
      crash_streak: info.crashStreak,
      delay_ms: delayMs,
    });
    if (info.crashStreak > 2) {
      this.logger.error('daemon keeps dying; backing off', {
        daemon: info.id,
        crash_streak: info.crashStreak,
        delay_ms: delayMs,
      });
    }
    this.emit('daemon-restart', { id: info.id, reason });
    this.emit('change');
    slot.timer = setTimeout(() => {
      if (!this.draining) this.spawn(slot);
    }, delayMs);
  }

  /** Restarts daemons that went silent or whose render is stuck. */
  private watch(): void {
    this.noteReadiness();
    const now = Date.now();
    const stuckAfterMs = this.config.timeoutSeconds * 2_000 + 10_000;
    for (const slot of this.slots) {
      if (!slot.child) continue;
      const info = slot.info;
      const silentMs = now - info.lastHeartbeatMs;
      const limitMs = slot.heard
        ? this.config.heartbeatTimeoutMs
        : Math.max(this.config.heartbeatTimeoutMs, FIRST_HEARTBEAT_TIMEOUT_MS);
      if (silentMs > limitMs) {
        info.lastError = `no heartbeat for ${now - info.lastHeartbeatMs} ms`;
        this.logger.warn('daemon missed its heartbeats; restarting it', {
          daemon: info.id,
        });
        this.kill(slot, 'heartbeat');
      } else if (info.tasks.some((task) => now - task.sinceMs > stuckAfterMs)) {
        info.lastError = `render ran more than ${stuckAfterMs} ms`;
        this.logger.warn('daemon render is stuck; restarting it', {
          daemon: info.id,
        });
        this.kill(slot, 'stuck');
      }
    }
  }

  private kill(slot: Slot, reason: DaemonRestartReason): void {
    this.noteReadiness();
    const child = slot.child;
    slot.child = undefined;
    const orphans = this.takeLeases(slot, `restarted: ${reason}`);
    if (child) void this.killTree(slot, child.pid).then(orphans);
    clearTimeout(slot.timer);
    if (reason === 'manual') {
      slot.info.restarts++;
      this.emit('daemon-restart', { id: slot.info.id, reason });
      slot.timer = setTimeout(() => this.spawn(slot), 100);
    } else {
      this.scheduleRestart(slot, reason);
    }
  }

  /**
   * Takes the leases a dying daemon holds, before its slot is reset; the
   * returned function hands them on as an `orphaned` event, to be called
   * once the daemon's processes are gone and nothing can still use them.
   * While draining there is none: the daemons give back their own leases,
   * and the queue is about to close.
   */
  private takeLeases(slot: Slot, why: string): () => void {
    const views = new Map(slot.info.tasks.map((t) => [t.taskId, t.view]));
    const leases = slot.leases.map((lease) => ({
      ...lease,
      view: views.get(lease.taskId) || 'unknown',
    }));
    slot.leases = [];
    return () => {
      if (leases.length === 0 || this.draining) return;
      this.emit('orphaned', {
        daemon: slot.info.id,
        why,
        leases,
      } satisfies OrphanedLeases);
    };
  }

  /**
   * Kills a daemon's process group, its browser's process group (puppeteer
   * starts Chromium in a group of its own, which outlives a killed daemon),
   * and any descendant of either.
   */
  private async killTree(slot: Slot, pid = slot.child?.pid): Promise<void> {
    if (!pid) return;
    // Read before any await: a restarted daemon overwrites them.
    const browserPid = isChromium(slot.info.browserPid, this.logger)
      ? slot.info.browserPid
      : 0;
    const profileDir = slot.info.browserProfileDir;
    const roots = browserPid ? [pid, browserPid] : [pid];
    const targets: number[] = [];
    for (const root of roots)
      targets.push(-root, root, ...(await processTree(root)));
    if (profileDir) targets.push(...processesUsingProfile(profileDir));
    for (const target of targets) this.sigkill(slot, target);
    const pids = targets.filter((target) => target > 0 && target !== pid);
    const deadline = Date.now() + KILL_CHECK_MS;
    while (
      this.survivors(pids, profileDir).length > 0 &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    this.checkGone(slot, pids, profileDir);
  }

  private survivors(pids: number[], profileDir: string): number[] {
    const users = profileDir ? processesUsingProfile(profileDir) : [];
    return [...new Set([...pids, ...users])].filter((pid) =>
      isLive(pid, this.logger),
    );
  }

  private sigkill(slot: Slot, target: number): void {
    try {
      process.kill(target, 'SIGKILL');
    } catch (error) {
      this.logger.debug('process already gone', {
        daemon: slot.info.id,
        pid: target,
        error: String(error),
      });
    }
  }

  /**
   * Logs an error for every killed process still alive (zombies aside:
   * they hold no memory and their parent or init reaps them), and removes
   * the browser's profile folder once nothing uses it.
   */
  private checkGone(slot: Slot, pids: number[], profileDir: string): void {
    const survivors = this.survivors(pids, profileDir);
    if (survivors.length > 0) {
      this.logger.error('processes of a killed daemon survived SIGKILL', {
        daemon: slot.info.id,
        pids: survivors,
        commands: survivors.map((pid) => commandOf(pid, this.logger)),
      });
      return;
    }
    if (!profileDir) return;
    try {
      removeProfile(profileDir);
    } catch (error) {
      this.logger.error('could not remove the profile of a killed browser', {
        daemon: slot.info.id,
        profile: profileDir,
        error: String(error),
      });
    }
  }

  private waitForExit(slot: Slot): Promise<void> {
    const child = slot.child;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => child.once('exit', () => resolve()));
  }
}

/** The start of a process's command line, for logs. */
function commandOf(pid: number, logger: Logger): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const cmdline = fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .replace(/\0/g, ' ');
    return `${stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)} ${cmdline.slice(0, 160)}`;
  } catch (error) {
    // Gone since the check: nothing to describe.
    logger.debug('survivor gone before it could be described', {
      pid,
      error: String(error),
    });
    return '(gone)';
  }
}

/** Whether a process exists and is not a zombie (Linux /proc). */
function isLive(pid: number, logger: Logger): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the parenthesised command name.
    return !/\)\s+[ZX]/.test(stat);
  } catch (error) {
    // No such process: it is gone.
    logger.debug('killed process is gone', { pid, error: String(error) });
    return false;
  }
}

/** Whether a process id still belongs to a Chromium process. */
function isChromium(pid: number, logger: Logger): boolean {
  if (!pid) return false;
  try {
    return /chrom/i.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch (error) {
    // No such process any more: nothing to kill.
    logger.debug('browser process already gone', {
      pid,
      error: String(error),
    });
    return false;
  }
}

function blankInfo(id: string): DaemonInfo {
  return {
    id,
    pid: 0,
    state: 'starting',
    startedAtMs: Date.now(),
    lastHeartbeatMs: Date.now(),
    tasks: [],
    rendersDone: 0,
    rendersFailed: 0,
    browserPid: 0,
    browserProfileDir: '',
    browserMemoryBytes: 0,
    browserReady: false,
    browserLaunchFailures: 0,
    restarts: 0,
    crashStreak: 0,
  };
}
