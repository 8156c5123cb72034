/**
 * Messages a daemon process sends its supervisor over the IPC channel, and
 * the ones it receives.
 */

/** What a daemon is doing. */
export type DaemonState = 'starting' | 'idle' | 'rendering' | 'draining';

/** The task a daemon is rendering. */
export interface CurrentTask {
  taskId: string;
  /** Which delivery of the task this is, counted by the queue. */
  attempt: number;
  view: string;
  /** When the render started, epoch ms. */
  sinceMs: number;
}

/**
 * A lease a daemon holds, so that its supervisor can settle the task should
 * the daemon die with it: give it back, or answer its last attempt.
 */
export interface HeldLease {
  taskId: string;
  /** Deliveries so far, counted by the queue. */
  attempts: number;
  leaseToken: string;
}

/**
 * Sent every heartbeat interval, at once when the state changes, and when a
 * lease is taken or renewed.
 */
export interface HeartbeatMessage {
  type: 'heartbeat';
  state: DaemonState;
  tasks: CurrentTask[];
  leases: HeldLease[];
  rendersDone: number;
  rendersFailed: number;
  browserPid: number;
  /** Temporary profile folder of the browser, so a supervisor that kills
   * this daemon can remove it; empty when there is no browser. */
  browserProfileDir: string;
  browserMemoryBytes: number;
  /** Whether the browser answered its last health check. */
  browserReady: boolean;
  /** Failed browser launches in a row (0 once one starts). */
  browserLaunchFailures: number;
  /** When the next browser launch is tried, epoch ms; set while backing off. */
  nextBrowserLaunchMs?: number;
  lastError?: string;
}

/** Sent once a task is answered (or given back). */
export interface TaskFinishedMessage {
  type: 'task-finished';
  taskId: string;
  view: string;
  outcome: 'success' | 'failure' | 'retry';
  durationMs: number;
  queueWaitMs: number;
  pages: number;
  bytes: number;
  /** The link of a stored document. */
  url?: string;
  filename?: string;
  error?: string;
}

/**
 * Sent when the daemon replaced its browser (reason `crash`,
 * `unresponsive`, `memory`, `age`, `renders`, `timeout`), or when a launch
 * failed and will be tried again (`launch-failed`).
 */
export interface BrowserRestartMessage {
  type: 'browser-restart';
  reason: string;
}

/** Every message a daemon sends. */
export type DaemonMessage =
  HeartbeatMessage | TaskFinishedMessage | BrowserRestartMessage;

/** Every message a supervisor sends a daemon. */
export type SupervisorMessage = { type: 'drain' };
