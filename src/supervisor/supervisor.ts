import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import { describeConfig } from '../config';
import { partLogger } from '../logger';
import { openQueue } from '../queue/open-queue';
import type { TaskQueue } from '../queue/queue';
import { Catalogue } from '../resources/catalogue';
import { createApp } from './app';
import { DaemonPool } from './daemon-pool';

/** A running supervisor. */
export interface RunningSupervisor {
  /** The port the web app listens on. */
  port: number;
  pool: DaemonPool;
  /** Drains the daemons and closes the server; resolves when all is done. */
  drain(): Promise<void>;
}

/**
 * Starts the supervisor: checks every resource (a broken one stops start-up
 * here), forks the daemons and serves the web app. SIGTERM or SIGINT drain it.
 */
export async function startSupervisor(
  config: Config,
  options: { daemonScript?: string; handleSignals?: boolean } = {},
): Promise<RunningSupervisor> {
  const logger = partLogger('supervisor');
  logger.info('starting', { config: describeConfig(config) });
  const catalogue = Catalogue.load(config.resourcesDir);
  logger.info('resources checked', { views: catalogue.list().map((m) => m.view) });

  const queue: TaskQueue = await openQueue(config.queue);
  const pool = new DaemonPool(config, logger, options.daemonScript);
  let draining: Promise<void> | undefined;
  const server = http.createServer();

  const drain = () => {
    draining ??= (async () => {
      logger.info('draining', { grace_seconds: config.drainGraceSeconds });
      await pool.drain(config.drainGraceSeconds * 1000 + 5_000);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await queue.close();
      logger.info('drained');
    })();
    return draining;
  };

  const app = createApp({ config, pool, queue, logger, drain: () => void drain().then(exitIfOwned) });
  server.on('request', app.callback());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  pool.start();
  logger.info('listening', { host: config.host, port });

  const handleSignals = options.handleSignals ?? true;
  function exitIfOwned() {
    if (handleSignals) process.exit(0);
  }
  if (handleSignals) {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => void drain().then(exitIfOwned));
    }
  }
  return { port, pool, drain };
}
