import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../../src/config';
import { Daemon } from '../../src/daemon/daemon';
import type { DaemonMessage } from '../../src/daemon/messages';
import { LeaseLostError } from '../../src/errors';
import { partLogger } from '../../src/logger';
import type { LeasedTask, TaskQueue } from '../../src/queue/queue';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { DocumentStore } from '../../src/storage/storage';
import { makeResourceRoot, taskFor } from '../support/resources';
import { testRenderer } from '../support/renderer';

/**
 * The real SQLite queue with one injected fault: the first acknowledgement
 * is lost after the lease was taken back, as when a worker stalls past its
 * lease between publishing a result and acknowledging it.
 */
class LosingFirstAck implements TaskQueue {
  private lost = false;
  constructor(readonly inner: SqliteQueue) {}
  get description() {
    return this.inner.description;
  }
  put(...args: Parameters<SqliteQueue['put']>) {
    return this.inner.put(...args);
  }
  lease(...args: Parameters<SqliteQueue['lease']>) {
    return this.inner.lease(...args);
  }
  renew(...args: Parameters<SqliteQueue['renew']>) {
    return this.inner.renew(...args);
  }
  cancelLease(task: LeasedTask) {
    return this.inner.cancelLease(task);
  }
  wasAnswered(taskId: string) {
    return this.inner.wasAnswered(taskId);
  }
  recordAnswer(taskId: string) {
    return this.inner.recordAnswer(taskId);
  }
  depth(tag: string) {
    return this.inner.depth(tag);
  }
  close() {
    return this.inner.close();
  }
  async acknowledge(task: LeasedTask): Promise<void> {
    if (this.lost) return this.inner.acknowledge(task);
    this.lost = true;
    await this.inner.cancelLease(task);
    throw new LeaseLostError(`injected: acknowledgement of ${task.id} lost`);
  }
}

describe('Daemon (in process, real queue and browser)', function () {
  this.timeout(120_000);
  const root = makeResourceRoot({
    numbers: {
      manifest: { copies_differ: true },
      template:
        '<section class="page"><p>NUMBERS {{ random.sample(1, 999, 6) | join(" ") }}</p></section>',
    },
  });

  it('B17(c): a task delivered again after a lost acknowledgement gives the same document, flagged duplicate', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-daemon-'));
    const inner = new SqliteQueue(path.join(dir, 'queue.db'));
    const queue = new LosingFirstAck(inner);
    const config = loadConfig({ RENDER_POLL_MS: '50', RENDER_DAEMONS: '1' });
    const { renderer, catalogue } = testRenderer(root);
    const store = new DocumentStore(
      path.join(dir, 'output'),
      'http://127.0.0.1/files/',
    );
    const events: DaemonMessage[] = [];
    const daemon = new Daemon({
      config,
      queue,
      catalogue,
      renderer,
      store,
      logger: partLogger('test-daemon'),
      report: (message) => events.push(message),
    });
    const id = await inner.put(
      JSON.stringify(taskFor('numbers', { copies: 2 })),
      'task',
      { id: 'T3' },
    );
    await daemon.start();
    try {
      const results: Record<string, unknown>[] = [];
      const deadline = Date.now() + 60_000;
      while (results.length < 2 && Date.now() < deadline) {
        for (const r of await inner.lease({
          tag: 'result',
          max: 5,
          leaseSeconds: 30,
        })) {
          results.push(
            JSON.parse(r.payload.toString('utf8')) as Record<string, unknown>,
          );
          await inner.acknowledge(r);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(results).to.have.length(2);
      expect(results.map((r) => r['task_id'])).to.deep.equal([id, id]);
      expect(results.filter((r) => r['duplicate'] !== true)).to.have.length(1);
      expect(results[1]?.['duplicate']).to.equal(true);
      for (const r of results) {
        expect(r['kind']).to.equal('result#document');
        expect(String(r['document']).length).to.be.greaterThan(1000);
      }
      const hashes = results.map((r) =>
        createHash('sha256')
          .update(Buffer.from(String(r['document']), 'base64'))
          .digest('hex'),
      );
      expect(hashes[0]).to.equal(hashes[1]);
      expect(await inner.depth('task')).to.equal(0);
    } finally {
      await daemon.stop(5_000);
      await inner.close();
    }
  });
});
