import type { Config } from '../config';
import { errorMessage } from '../errors';
import type { Logger } from '../logger';
import type { TaskFinishedMessage } from '../daemon/messages';
import { TASK_TAG, failureResult, publishAnswer } from '../daemon/result';
import type { LeasedTask, TaskQueue } from '../queue/queue';
import type { OrphanedLeases } from './daemon-pool';

/** How long the supervisor holds a last attempt while it answers it. */
const ANSWER_LEASE_SECONDS = 60;

/**
 * Settles the tasks a daemon held when it died, once its processes are
 * gone. A task with attempts left is given back at once, instead of
 * waiting for its lease to run out. A task on its last attempt is answered
 * here with a failure result and acknowledged, so that a task that kills
 * its daemon every time is delivered exactly as many times as the attempt
 * limit allows. A lease that is no longer ours (the daemon renewed it after
 * its last heartbeat, or it ran out) is left to the queue: the task is
 * delivered again and the daemon that takes it decides.
 *
 * Reports each settled task like a daemon would, for the metrics and the
 * dashboard.
 */
export async function settleOrphans(
  orphans: OrphanedLeases,
  queue: TaskQueue,
  config: Config,
  logger: Logger,
  report: (finished: TaskFinishedMessage & { daemon: string }) => void,
): Promise<void> {
  for (const held of orphans.leases) {
    const log = logger.child({
      daemon: orphans.daemon,
      task_id: held.taskId,
      attempt: held.attempts,
    });
    const task: LeasedTask = {
      id: held.taskId,
      payload: Buffer.alloc(0),
      tag: TASK_TAG,
      attempts: held.attempts,
      enqueuedAt: new Date(0),
      leaseExpiresAt: new Date(0),
      leaseToken: held.leaseToken,
    };
    const finished = {
      type: 'task-finished' as const,
      daemon: orphans.daemon,
      taskId: held.taskId,
      view: held.view,
      durationMs: 0,
      queueWaitMs: 0,
      pages: 0,
      bytes: 0,
    };
    try {
      if (held.attempts < config.maxAttempts) {
        await queue.cancelLease(task);
        log.warn('gave back the task of a dead daemon', { why: orphans.why });
        report({
          ...finished,
          outcome: 'retry',
          error: `daemon died (${orphans.why})`,
        });
        continue;
      }
      const mine = await queue.renew(task, ANSWER_LEASE_SECONDS);
      const error =
        `gave up after ${held.attempts} attempts: the daemon rendering ` +
        `the last one died (${orphans.why})`;
      await publishAnswer(queue, mine, failureResult(held.taskId, error), log);
      log.error('task failed', { resource_view: held.view, error });
      report({ ...finished, outcome: 'failure', error });
    } catch (error) {
      log.warn(
        'could not settle the task of a dead daemon; its lease runs out ' +
          'and it is delivered again',
        { error: errorMessage(error) },
      );
    }
  }
}
