import client from 'prom-client';
import type { TaskFinishedMessage } from '../daemon/messages';
import type { DaemonPool } from './daemon-pool';
import type { QueueDepth } from './queue-depth';

/** Buckets of render time, in seconds: a one-page card up to a timeout. */
const RENDER_SECONDS_BUCKETS = [0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120];

/** Buckets of queue wait, in seconds: from at once to a backlog of hours. */
const QUEUE_WAIT_SECONDS_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3_600];

/**
 * The supervisor's Prometheus metrics, in a registry of its own (so tests
 * and several supervisors in one process do not share counters). Fed from
 * the daemons' IPC messages through the {@link DaemonPool}'s events; the
 * gauges are read from the pool when scraped.
 */
export class SupervisorMetrics {
  /** The registry `/metrics` serves. */
  readonly registry = new client.Registry();

  private readonly tasks = new client.Counter({
    name: 'render_tasks_total',
    help: 'Tasks answered, by resource view and outcome (success, failure, retry).',
    labelNames: ['view', 'outcome'] as const,
    registers: [this.registry],
  });

  private readonly retries = new client.Counter({
    name: 'render_retries_total',
    help: 'Tasks given back to the queue for another attempt, by resource view.',
    labelNames: ['view'] as const,
    registers: [this.registry],
  });

  private readonly renderSeconds = new client.Histogram({
    name: 'render_duration_seconds',
    help: 'Time from lease to answer of a task, by resource view and outcome.',
    labelNames: ['view', 'outcome'] as const,
    buckets: RENDER_SECONDS_BUCKETS,
    registers: [this.registry],
  });

  private readonly queueWaitSeconds = new client.Histogram({
    name: 'render_queue_wait_seconds',
    help: 'Time from enqueue to the lease of the attempt that answered a task.',
    labelNames: ['view'] as const,
    buckets: QUEUE_WAIT_SECONDS_BUCKETS,
    registers: [this.registry],
  });

  private readonly pages = new client.Counter({
    name: 'render_pages_total',
    help: 'PDF pages produced by successful tasks, by resource view.',
    labelNames: ['view'] as const,
    registers: [this.registry],
  });

  private readonly bytes = new client.Counter({
    name: 'render_bytes_total',
    help: 'PDF bytes produced by successful tasks, by resource view.',
    labelNames: ['view'] as const,
    registers: [this.registry],
  });

  private readonly daemonRestarts = new client.Counter({
    name: 'render_daemon_restarts_total',
    help: 'Daemons restarted, by reason (exit, heartbeat, stuck, manual).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  private readonly browserRestarts = new client.Counter({
    name: 'render_browser_restarts_total',
    help:
      'Browsers replaced inside daemons, by reason (crash, unresponsive, ' +
      'memory, age, renders, timeout), and failed launches (launch-failed).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(pool: DaemonPool, depth: QueueDepth) {
    this.addGauges(pool, depth);
    pool.on('task-finished', (message: TaskFinishedMessage) =>
      this.onTask(message),
    );
    pool.on('daemon-restart', (event: { reason: string }) =>
      this.daemonRestarts.inc({ reason: event.reason }),
    );
    pool.on('browser-restart', (event: { reason: string }) =>
      this.browserRestarts.inc({ reason: event.reason }),
    );
  }

  /** The metrics in the Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  private onTask(message: TaskFinishedMessage): void {
    const view = message.view;
    this.tasks.inc({ view, outcome: message.outcome });
    this.renderSeconds.observe(
      { view, outcome: message.outcome },
      message.durationMs / 1000,
    );
    if (message.outcome === 'retry') {
      this.retries.inc({ view });
      return;
    }
    this.queueWaitSeconds.observe({ view }, message.queueWaitMs / 1000);
    if (message.outcome === 'success') {
      this.pages.inc({ view }, message.pages);
      this.bytes.inc({ view }, message.bytes);
    }
  }

  private addGauges(pool: DaemonPool, depth: QueueDepth): void {
    new client.Gauge({
      name: 'render_browser_memory_bytes',
      help: 'Resident memory of each daemon’s browser and its processes.',
      labelNames: ['daemon'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const d of pool.list())
          this.set({ daemon: d.id }, d.browserMemoryBytes);
      },
    });
    new client.Gauge({
      name: 'render_leases_held',
      help: 'Queue leases each daemon holds right now, as its last heartbeat said.',
      labelNames: ['daemon'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [daemon, leases] of pool.leaseCounts())
          this.set({ daemon }, leases);
      },
    });
    new client.Gauge({
      name: 'render_daemons_ready',
      help: 'Daemons with a live browser that take work.',
      registers: [this.registry],
      collect() {
        this.set(pool.readyIds().length);
      },
    });
    new client.Gauge({
      name: 'render_queue_depth',
      help:
        'Tasks waiting or leased on the queue (-1 when the backend cannot ' +
        'tell, refuses or does not answer).',
      registers: [this.registry],
      async collect() {
        this.set((await depth.read()) ?? -1);
      },
    });
  }
}
