import type { Config } from '../config';
import { loadConfig } from '../config';
import { errorMessage } from '../errors';
import { partLogger, setLogLevel } from '../logger';
import { openQueue } from '../queue/open-queue';
import { Renderer } from '../render/renderer';
import { Catalogue } from '../resources/catalogue';
import { DocumentStore } from '../storage/storage';
import { Daemon } from './daemon';
import type { DaemonMessage, SupervisorMessage } from './messages';

/** The renderer settings that come from the configuration. */
export function rendererOptions(config: Config) {
  return {
    chromiumPath: config.chromiumPath,
    staticDirs: config.staticDirs,
    timeoutMs: config.timeoutSeconds * 1000,
    assetTimeoutMs: config.assetTimeoutSeconds * 1000,
    pages: config.pagesPerDaemon,
    browserMaxRenders: config.browserMaxRenders,
    browserMaxAgeMs: config.browserMaxAgeSeconds * 1000,
    browserMaxMemoryBytes: config.browserMaxMemoryMb * 1024 * 1024,
    probeIntervalMs: config.browserProbeMs,
    probeTimeoutMs: config.browserProbeTimeoutMs,
  };
}

/**
 * Runs one daemon in this process until SIGTERM, SIGINT or a `drain`
 * message: then it finishes or gives back its work and exits 0.
 */
export async function runDaemon(): Promise<void> {
  const config = loadConfig();
  setLogLevel(config.logLevel);
  const logger = partLogger('daemon', { daemon: config.daemonId });
  const queue = await openQueue(config.queue, {
    cloudTasksEndpoint: config.cloudTasksEndpoint,
  });
  const catalogue = Catalogue.load(config.resourcesDir);
  const renderer = new Renderer(
    rendererOptions(config),
    catalogue,
    partLogger('render'),
  );
  const store = new DocumentStore(config.outputDir, config.publicUrl);
  const report = (message: DaemonMessage) => {
    if (process.connected) process.send?.(message);
  };
  const daemon = new Daemon({
    config,
    queue,
    catalogue,
    renderer,
    store,
    logger,
    report,
  });

  let stopping: Promise<void> | undefined;
  const stop = (why: string) => {
    stopping ??= (async () => {
      logger.info('daemon stopping', { reason: why });
      await daemon.stop(config.drainGraceSeconds * 1000);
      await queue.close();
      logger.info('daemon stopped');
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('message', (message: SupervisorMessage) => {
    if (message.type === 'drain') stop('drain');
  });
  process.on('disconnect', () => stop('supervisor gone'));

  await daemon.start();
  logger.info('daemon started', { queue: queue.description });
}

if (require.main === module) {
  runDaemon().catch((error: unknown) => {
    partLogger('daemon').error('daemon failed to start', {
      error: errorMessage(error),
    });
    process.exit(1);
  });
}
