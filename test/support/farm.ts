import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { CloudTasksQueue } from '../../src/queue/cloud-tasks-queue';
import { startFakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { FakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { TaskQueue } from '../../src/queue/queue';
import { SqliteQueue } from '../../src/queue/sqlite-queue';

/** The queue backends a farm can run on in tests. */
export type Backend = 'sqlite' | 'cloud-tasks';

/** The project's command-line entry. */
export const CLI = path.resolve(
  __dirname,
  '..',
  '..',
  '..',
  'bin',
  'render-farm.js',
);

/** A result message as read back off the queue. */
export type Result = Record<string, unknown> & {
  task_id: string;
  success: boolean;
};

/** A `render-farm start` child process on a temporary queue. */
export interface Farm {
  port: number;
  process: ChildProcess;
  dir: string;
  /** A client of the farm's queue, of the same backend. */
  queue: TaskQueue;
  /** The local Cloud Tasks service, on that backend. */
  fake?: FakeCloudTasks;
  /** Every log line the farm wrote, parsed. */
  logs: Record<string, unknown>[];
  /** Puts a raw payload tagged `task`; returns its id. */
  enqueue(payload: unknown, id?: string): Promise<string>;
  /** Takes results off the queue until `count` arrived or `timeoutMs` passed. */
  results(count: number, timeoutMs: number): Promise<Result[]>;
  /** The supervisor's status API. */
  status(): Promise<{
    daemons: {
      id: string;
      pid: number;
      tasks: { taskId: string; attempt: number }[];
    }[];
  }>;
  /** Waits until every daemon has a process. */
  daemonsUp(): Promise<void>;
  /** Waits until a daemon holds the task; returns that daemon. */
  holderOf(taskId: string): Promise<{
    id: string;
    pid: number;
    tasks: { taskId: string; attempt: number }[];
  }>;
  /** SIGTERM, and wait for the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `render-farm start` as a user would, with the given settings on
 * top of a temporary queue, output folder and a free port.
 */
export async function startFarm(
  env: Record<string, string> = {},
  backend: Backend = 'sqlite',
): Promise<Farm> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-e2e-'));
  const queueFile = path.join(dir, 'queue.db');
  const fake =
    backend === 'cloud-tasks'
      ? await startFakeCloudTasks({ port: 0 })
      : undefined;
  const queuePath = `projects/test/locations/here/queues/q-${randomUUID()}`;
  const queueEnv: Record<string, string> = fake
    ? {
        RENDER_QUEUE: `cloud-tasks:${queuePath}`,
        RENDER_CLOUD_TASKS_ENDPOINT: fake.address,
        // Google clients must never look for the cloud metadata server here.
        METADATA_SERVER_DETECTION: 'none',
      }
    : { RENDER_QUEUE: `sqlite:${queueFile}` };
  const child = spawn('node', [CLI, 'start'], {
    env: {
      ...process.env,
      ...queueEnv,
      RENDER_OUTPUT_DIR: path.join(dir, 'output'),
      RENDER_PID_FILE: path.join(dir, 'supervisor.pid'),
      RENDER_PORT: '0',
      RENDER_POLL_MS: '100',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      const serving = /serving on http:\/\/[^:]+:(\d+)\//.exec(
        chunk.toString('utf8'),
      );
      if (serving) resolve(Number(serving[1]));
    });
    let buffered = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        const entry = parseLine(line);
        logs.push(entry);
      }
    });
    child.once('exit', (code) =>
      reject(
        new Error(
          `farm exited with ${code}: ${JSON.stringify(logs.slice(-5))}`,
        ),
      ),
    );
  });
  const queue: TaskQueue = fake
    ? new CloudTasksQueue(queuePath, { emulatorEndpoint: fake.address })
    : new SqliteQueue(queueFile);
  const base = `http://127.0.0.1:${port}`;
  const status: Farm['status'] = async () =>
    (await fetch(`${base}/api/status`)).json() as never;

  return {
    port,
    process: child,
    dir,
    queue,
    ...(fake ? { fake } : {}),
    logs,
    enqueue: (payload, id) =>
      queue.put(
        typeof payload === 'string' || Buffer.isBuffer(payload)
          ? payload
          : JSON.stringify(payload),
        'task',
        id ? { id } : {},
      ),
    results: (count, timeoutMs) => takeResults(queue, count, timeoutMs),
    status,
    daemonsUp: async () => {
      await waitFor(
        async () =>
          (await status()).daemons.every((d) => d.pid > 0) ? true : undefined,
        30_000,
      );
    },
    holderOf: (taskId) =>
      waitFor(async () => {
        const { daemons } = await status();
        return daemons.find((d) => d.tasks.some((t) => t.taskId === taskId));
      }, 30_000),
    stop: async () => {
      if (child.exitCode !== null) {
        await queue.close();
        await fake?.stop();
        return child.exitCode;
      }
      const exited = new Promise<number | null>((resolve) =>
        child.once('exit', (code) => resolve(code)),
      );
      child.kill('SIGTERM');
      const code = await exited;
      await queue.close();
      await fake?.stop();
      return code;
    },
  };
}

/**
 * Waits until no task is left on a queue, every one acknowledged: a daemon
 * acknowledges a task just after it publishes the result, so the result
 * can be taken a moment before.
 */
export async function waitTasksAcknowledged(
  queue: TaskQueue,
  timeoutMs = 5_000,
): Promise<void> {
  let depth: number | undefined;
  try {
    await waitFor(async () => {
      depth = await queue.depth?.('task');
      return depth === 0 ? true : undefined;
    }, timeoutMs);
  } catch {
    throw new Error(
      `${depth} task(s) still on the queue after ${timeoutMs} ms`,
    );
  }
}

/** Takes results off a queue until `count` came or `timeoutMs` passed. */
export async function takeResults(
  queue: TaskQueue,
  count: number,
  timeoutMs: number,
): Promise<Result[]> {
  const results: Result[] = [];
  const deadline = Date.now() + timeoutMs;
  while (results.length < count && Date.now() < deadline) {
    const leased = await queue.lease({
      tag: 'result',
      max: 50,
      leaseSeconds: 60,
    });
    for (const task of leased) {
      results.push(JSON.parse(task.payload.toString('utf8')) as Result);
      await queue.acknowledge(task);
    }
    if (leased.length === 0)
      await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return results;
}

function parseLine(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    // Not every line is ours (Chromium writes plain text to stderr).
    return { message: line };
  }
}

/** Waits until `check` returns a value (not undefined), polling. */
export async function waitFor<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what = 'condition',
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
