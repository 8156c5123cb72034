import type { ServerResponse } from 'node:http';
import type { TaskFinishedMessage } from '../daemon/messages';
import type { Logger } from '../logger';
import type { DaemonPool } from './daemon-pool';

/** Task-finished events kept for the dashboard. */
export const RECENT_RESULTS = 50;

/** Shortest gap between two status events sent to the dashboards, in ms. */
const STATUS_EVERY_MS = 250;

/** Comment line that keeps idle event streams open through proxies, in ms. */
const KEEPALIVE_EVERY_MS = 15_000;

/** A finished task as the dashboard shows it. */
export type RecentResult = TaskFinishedMessage & {
  daemon: string;
  /** When the supervisor heard of it, epoch ms. */
  atMs: number;
};

/**
 * The supervisor's memory of recent results (the last
 * {@link RECENT_RESULTS}) and its server-sent event streams: a `status`
 * event (whatever `snapshot` returns) after any change of a daemon, at most
 * every 250 ms, and a `result` event for each finished task.
 */
export class LiveFeed {
  private readonly results: RecentResult[] = [];
  private readonly clients = new Set<ServerResponse>();
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly keepalive: NodeJS.Timeout;

  constructor(
    pool: DaemonPool,
    private readonly snapshot: () => Promise<unknown>,
    private readonly logger: Logger,
  ) {
    pool.on(
      'task-finished',
      (message: TaskFinishedMessage & { daemon: string }) =>
        this.addResult({ ...message, atMs: Date.now() }),
    );
    pool.on('change', () => this.scheduleStatus());
    this.keepalive = setInterval(
      () => this.broadcast(': keepalive\n\n'),
      KEEPALIVE_EVERY_MS,
    );
    this.keepalive.unref();
  }

  /** Recent results, newest first. */
  recent(): RecentResult[] {
    return [...this.results];
  }

  /** Turns a response into an event stream until the client goes away. */
  subscribe(res: ServerResponse, first: unknown): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(event('status', first));
    this.clients.add(res);
    res.on('close', () => this.clients.delete(res));
  }

  /** Ends every stream (drain). */
  close(): void {
    clearInterval(this.keepalive);
    clearTimeout(this.statusTimer);
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  private addResult(result: RecentResult): void {
    this.results.unshift(result);
    this.results.length = Math.min(this.results.length, RECENT_RESULTS);
    this.broadcast(event('result', result));
  }

  private scheduleStatus(): void {
    if (this.statusTimer || this.clients.size === 0) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.snapshot().then(
        (status) => this.broadcast(event('status', status)),
        (error: unknown) =>
          this.logger.debug(
            'status snapshot failed; dashboards miss one update',
            {
              error: String(error),
            },
          ),
      );
    }, STATUS_EVERY_MS);
  }

  private broadcast(text: string): void {
    for (const res of this.clients) res.write(text);
  }
}

function event(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}
