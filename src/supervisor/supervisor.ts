import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import { describeConfig } from '../config';
import { ConfigError, errorMessage } from '../errors';
import { partLogger } from '../logger';
import type { Logger } from '../logger';
import { openQueue } from '../queue/open-queue';
import { settleOrphans } from './orphans';
import type { TaskQueue } from '../queue/queue';
import { Catalogue } from '../resources/catalogue';
import { createApp } from './app';
import { PREVIEW_PATH, Preview } from './preview';
import { DaemonPool } from './daemon-pool';
import type { OrphanedLeases } from './daemon-pool';
import type { SupervisorMetrics } from './metrics';

/** A running supervisor. */
export interface RunningSupervisor {
  /** The port the web app listens on. */
  port: number;
  pool: DaemonPool;
  /** Prometheus metrics of this supervisor. */
  metrics: SupervisorMetrics;
  /** Drains the daemons and closes the server; resolves when all is done. */
  drain(): Promise<void>;
}

/** How a supervisor is started. */
export interface SupervisorOptions {
  /** Script the daemons run; the compiled daemon entry by default. */
  daemonScript?: string;
  /** Drain on SIGTERM and SIGINT, then exit the process. Default true. */
  handleSignals?: boolean;
  /**
   * Environment of the daemons, which read their settings from it; must
   * match `config`. Default: this process's environment.
   */
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts the supervisor: checks every resource (a broken one stops start-up
 * here), writes the pid file, forks the daemons and serves the web app.
 * SIGTERM or SIGINT drain it.
 */
export async function startSupervisor(
  config: Config,
  options: SupervisorOptions = {},
): Promise<RunningSupervisor> {
  const logger = partLogger('supervisor');
  logger.info('starting', { config: describeConfig(config) });
  const catalogue = Catalogue.load(config.resourcesDir);
  logger.info('resources checked', {
    views: catalogue.list().map((m) => m.view),
  });

  const queue: TaskQueue = await openQueue(config.queue, {
    cloudTasksEndpoint: config.cloudTasksEndpoint,
  });
  checkChromium(config.chromiumPath);
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new ConfigError(
          `RENDER_HOST and RENDER_PORT: cannot listen on ` +
            `${config.host}:${config.port} (${error.code ?? error.message})`,
        ),
      ),
    );
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const env = daemonEnv(config, options.env ?? process.env, port);
  const pool = new DaemonPool(config, logger, options.daemonScript, env);
  pool.on('orphaned', (orphans: OrphanedLeases) => {
    void settleOrphans(orphans, queue, config, logger, (finished) =>
      pool.emit('task-finished', finished),
    );
  });
  let draining: Promise<void> | undefined;

  const drain = () => {
    draining ??= (async () => {
      logger.info('draining', { grace_seconds: config.drainGraceSeconds });
      await pool.drain(config.drainGraceSeconds * 1000 + 5_000);
      feed.close();
      const closed = new Promise<void>((resolve) =>
        server.close(() => resolve()),
      );
      server.closeAllConnections();
      await closed;
      await queue.close();
      await preview.close();
      removePidFile(config.pidFile, logger);
      logger.info('drained');
    })();
    return draining;
  };

  const { app, metrics, feed } = createApp({
    config,
    pool,
    queue,
    catalogue,
    logger,
    drain: () => void drain().then(exitIfOwned),
  });
  // The authors' preview: its browser starts on the first PDF asked for.
  const preview = new Preview(config, partLogger('preview'));
  preview.watch();
  app.use(preview.routes(PREVIEW_PATH));
  server.on('request', app.callback());
  writePidFile(config.pidFile, logger);
  pool.start();
  logger.info('listening', { host: config.host, port });

  const handleSignals = options.handleSignals ?? true;
  function exitIfOwned() {
    if (handleSignals) process.exit(0);
  }
  if (handleSignals) {
    process.once('exit', () => removePidFile(config.pidFile, logger));
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => void drain().then(exitIfOwned));
    }
  }
  return { port, pool, metrics, drain };
}

/**
 * The daemons' environment. With port 0 and no RENDER_PUBLIC_URL, links
 * must name the port the supervisor really got.
 */
function daemonEnv(
  config: Config,
  env: NodeJS.ProcessEnv,
  port: number,
): NodeJS.ProcessEnv {
  if (config.port !== 0 || new URL(config.publicUrl).port !== '0') return env;
  const url = new URL(config.publicUrl);
  url.port = String(port);
  return { ...env, RENDER_PUBLIC_URL: url.toString() };
}

/** Writes this process's id for scripts/shutdown-script.sh. */
function writePidFile(file: string, logger: Logger): void {
  const old = readPid(file);
  if (old && old !== process.pid && isAlive(old)) {
    logger.warn('pid file names another live process; overwriting it', {
      file,
      pid: old,
    });
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${process.pid}\n`);
}

/** Removes the pid file if it still names this process. */
function removePidFile(file: string, logger: Logger): void {
  if (readPid(file) !== process.pid) return;
  try {
    fs.rmSync(file, { force: true });
  } catch (error) {
    logger.warn('could not remove the pid file', {
      file,
      error: errorMessage(error),
    });
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    // No pid file yet: nothing names a previous supervisor.
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive but not ours; ESRCH: no such process.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stops start-up when the browser the daemons need cannot be run. */
function checkChromium(chromiumPath: string): void {
  try {
    fs.accessSync(chromiumPath, fs.constants.X_OK);
  } catch {
    throw new ConfigError(
      `CHROMIUM_PATH: got "${chromiumPath}", expected an executable ` +
        'Chromium (apt-get install chromium)',
    );
  }
}
