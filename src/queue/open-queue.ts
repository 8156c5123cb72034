import { ConfigError } from '../errors';
import type { TaskQueue } from './queue';
import { SqliteQueue } from './sqlite-queue';

/** Settings some backends need besides the spec. */
export interface OpenQueueOptions {
  /**
   * `host:port` of a Cloud Tasks emulator (`Config.cloudTasksEndpoint`),
   * reached without TLS or Google credentials. Default: the real service.
   */
  cloudTasksEndpoint?: string;
}

/**
 * Opens the queue a spec names: `sqlite:FILE` for the embedded default,
 * `cloud-tasks:projects/P/locations/L/queues/Q` for Google Cloud Tasks.
 */
export async function openQueue(
  spec: string,
  options: OpenQueueOptions = {},
): Promise<TaskQueue> {
  if (spec.startsWith('sqlite:'))
    return new SqliteQueue(spec.slice('sqlite:'.length));
  if (spec.startsWith('cloud-tasks:')) {
    // Loaded on demand: the Google client is large and the embedded default
    // does not need it.
    const { CloudTasksQueue } = await import('./cloud-tasks-queue.js');
    const queue = new CloudTasksQueue(spec.slice('cloud-tasks:'.length), {
      emulatorEndpoint: options.cloudTasksEndpoint,
    });
    await queue.checkCredentials();
    return queue;
  }
  throw new ConfigError(
    `RENDER_QUEUE: got "${spec}", expected sqlite:FILE or cloud-tasks:projects/P/locations/L/queues/Q`,
  );
}
