// A worker process of the queue contract test: opens the queue named on
// its command line, waits for "go" so that every worker starts at once,
// leases tasks tagged `task` one at a time until none is left, and sends
// back the ids it was given.
process.env.METADATA_SERVER_DETECTION = 'none';

import { openQueue } from '../../src/queue/open-queue';

/** What the worker sends its parent. */
export type WorkerMessage =
  { type: 'ready' } | { type: 'done'; seen: string[] };

async function main(): Promise<void> {
  const [spec, endpoint] = process.argv.slice(2);
  if (spec === undefined)
    throw new Error('usage: lease-worker SPEC [HOST:PORT]');
  const queue = await openQueue(spec, {
    ...(endpoint ? { cloudTasksEndpoint: endpoint } : {}),
  });
  const go = new Promise<void>((resolve) => process.once('message', resolve));
  process.send?.({ type: 'ready' } satisfies WorkerMessage);
  await go;
  const seen: string[] = [];
  for (;;) {
    const batch = await queue.lease({ tag: 'task', max: 1, leaseSeconds: 60 });
    if (batch.length === 0) break;
    seen.push(...batch.map((task) => task.id));
  }
  await queue.close();
  process.send?.({ type: 'done', seen } satisfies WorkerMessage, () =>
    process.disconnect(),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`lease worker failed: ${String(error)}\n`);
  process.exit(1);
});
