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

  checkChromium(config.chromiumPath);
  // Before anything is opened: a second supervisor on this data folder
  // stops here instead of taking over the first one's pid file.
  claimPidFile(config.pidFile, logger);
  let queue: TaskQueue;
  const server = http.createServer();
  try {
    queue = await openQueue(config.queue, {
      cloudTasksEndpoint: config.cloudTasksEndpoint,
    });
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
  } catch (error) {
    removePidFile(config.pidFile, logger);
    throw error;
  }
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

/**
 * The command line of a render-farm supervisor: `render-farm start` (the
 * `bin/render-farm.js` entry or the npm link to it) or `cli.js start`.
 */
const SUPERVISOR_COMMAND = /(^|[/ ])(render-farm(\.js)?|cli\.js) start( |$)/;

/**
 * Writes this process's id for scripts/shutdown-script.sh. Refuses (a
 * ConfigError) when the file names another live render-farm supervisor:
 * two farms on one data folder would share the queue file and output, and
 * the second would take the first one's pid file away. A file naming a
 * dead process, or one that is not a render-farm, is stale and replaced.
 */
function claimPidFile(file: string, logger: Logger): void {
  const old = readPid(file, logger);
  if (old && old !== process.pid && isAlive(old, logger)) {
    const command = commandLine(old, logger);
    if (SUPERVISOR_COMMAND.test(command)) {
      throw new ConfigError(
        `RENDER_PID_FILE: ${file} names pid ${old}, a render-farm ` +
          'supervisor that is still running; stop it first, or give this ' +
          'one its own RENDER_PID_FILE (and queue and output folder)',
      );
    }
    logger.warn(
      'pid file names a live process that is not a render-farm; replacing it',
      {
        file,
        pid: old,
        command: command.slice(0, 160),
      },
    );
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${process.pid}\n`);
}

/** Removes the pid file if it still names this process. */
function removePidFile(file: string, logger: Logger): void {
  const named = readPid(file, logger);
  if (named !== process.pid) {
    if (named !== undefined) {
      logger.warn('pid file names another process now; left in place', {
        file,
        pid: named,
      });
    }
    return;
  }
  try {
    fs.rmSync(file, { force: true });
  } catch (error) {
    logger.warn('could not remove the pid file', {
      file,
      error: errorMessage(error),
    });
  }
}

function readPid(file: string, logger: Logger): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // No pid file: nothing names a previous supervisor.
    if (code === 'ENOENT') {
      logger.debug('no pid file', { file });
    } else {
      logger.warn('cannot read the pid file', {
        file,
        error: errorMessage(error),
      });
    }
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Whether a process exists and is not a zombie. */
function isAlive(pid: number, logger: Logger): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: alive but not ours; ESRCH: no such process.
    const code = (error as NodeJS.ErrnoException).code;
    logger.debug('pid file process checked', { pid, code });
    return code === 'EPERM';
  }
  try {
    return !/\)\s+[ZX]/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch (error) {
    logger.debug('no /proc entry for the pid file process', {
      pid,
      error: errorMessage(error),
    });
    return true;
  }
}

/** A process's command line, arguments joined by spaces; empty if unknown. */
function commandLine(pid: number, logger: Logger): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch (error) {
    logger.debug('cannot read the command line of the pid file process', {
      pid,
      error: errorMessage(error),
    });
    return '';
  }
}

/** Stops start-up when the browser the daemons need cannot be run. */
function checkChromium(chromiumPath: string): void {
  try {
    fs.accessSync(chromiumPath, fs.constants.X_OK);
  } catch (error) {
    throw new ConfigError(
      `CHROMIUM_PATH: got "${chromiumPath}", expected an executable ` +
        `Chromium (apt-get install chromium); ${errorMessage(error)}`,
      { cause: error },
    );
  }
}
