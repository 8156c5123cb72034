import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { LeaseLostError } from '../errors';
import { checkQueueId, checkTaskId } from './queue';
import type { LeaseRequest, LeasedTask, PutOptions, TaskQueue } from './queue';

interface TaskRow {
  id: string;
  tag: string;
  payload: Buffer;
  attempts: number;
  enqueued_ms: number;
  lease_until_ms: number;
  lease_token: string | null;
}

/** How long answered task ids are remembered for de-duplication, in ms. */
const ANSWER_MEMORY_MS = 7 * 24 * 3_600_000;

/** Wait for another process's write lock before failing, in ms. */
const BUSY_TIMEOUT_MS = 10_000;

/**
 * The embedded queue: one SQLite file in WAL mode, shared by every daemon
 * process of a machine. Leasing is a single write transaction, so two
 * processes never hold the same task at once; an expired lease makes the
 * task available again, and `attempts` counts deliveries in the file itself.
 */
export class SqliteQueue implements TaskQueue {
  readonly description: string;
  private readonly db: Database.Database;

  constructor(file: string) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.description = `sqlite:${file}`;
    this.db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        tag TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_ms INTEGER NOT NULL,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT
      );
      CREATE INDEX IF NOT EXISTS tasks_by_tag ON tasks (tag, lease_until_ms, seq);
      CREATE TABLE IF NOT EXISTS answered (
        id TEXT PRIMARY KEY,
        at_ms INTEGER NOT NULL
      );
    `);
    this.db
      .prepare('DELETE FROM answered WHERE at_ms < ?')
      .run(Date.now() - ANSWER_MEMORY_MS);
  }

  async put(
    payload: Buffer | string,
    tag: string,
    options: PutOptions = {},
  ): Promise<string> {
    const id = options.id ?? randomUUID();
    if (options.id !== undefined) checkTaskId(options.id);
    this.insert(payload, tag, id);
    return id;
  }

  async putIfNew(
    payload: Buffer | string,
    tag: string,
    id: string,
  ): Promise<boolean> {
    checkQueueId(id);
    return this.insert(payload, tag, id);
  }

  /** Inserts a task unless its id is known; true when it was inserted. */
  private insert(payload: Buffer | string, tag: string, id: string): boolean {
    const insert = this.db.transaction(() => {
      const known = this.db
        .prepare(
          'SELECT 1 FROM tasks WHERE id = ? UNION ALL SELECT 1 FROM answered WHERE id = ?',
        )
        .get(id, id);
      if (known) return false;
      this.db
        .prepare(
          `INSERT INTO tasks (id, seq, tag, payload, enqueued_ms)
           VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), ?, ?, ?)`,
        )
        .run(id, tag, Buffer.from(payload), Date.now());
      return true;
    });
    return insert.immediate();
  }

  async wasAnswered(taskId: string): Promise<boolean> {
    const row = this.db
      .prepare('SELECT 1 FROM answered WHERE id = ?')
      .get(taskId);
    return row !== undefined;
  }

  async recordAnswer(taskId: string): Promise<void> {
    this.db
      .prepare('INSERT OR IGNORE INTO answered (id, at_ms) VALUES (?, ?)')
      .run(taskId, Date.now());
  }

  async lease(request: LeaseRequest): Promise<LeasedTask[]> {
    const take = this.db.transaction(() => {
      const now = Date.now();
      const until = now + request.leaseSeconds * 1000;
      const rows = this.db
        .prepare(
          `SELECT * FROM tasks WHERE tag = ? AND lease_until_ms <= ?
           ORDER BY seq LIMIT ?`,
        )
        .all(request.tag, now, request.max) as TaskRow[];
      const update = this.db.prepare(
        `UPDATE tasks SET lease_until_ms = ?, lease_token = ?,
           attempts = attempts + 1 WHERE id = ?`,
      );
      return rows.map((row) => {
        const token = randomUUID();
        update.run(until, token, row.id);
        return toLeased({
          ...row,
          attempts: row.attempts + 1,
          lease_until_ms: until,
          lease_token: token,
        });
      });
    });
    // IMMEDIATE takes the write lock before reading, so two processes
    // cannot select the same available rows.
    return take.immediate();
  }

  async acknowledge(task: LeasedTask): Promise<void> {
    const result = this.db
      .prepare('DELETE FROM tasks WHERE id = ? AND lease_token = ?')
      .run(task.id, task.leaseToken);
    if (result.changes === 0) throw lost(task);
  }

  async renew(task: LeasedTask, leaseSeconds: number): Promise<LeasedTask> {
    const now = Date.now();
    const until = now + leaseSeconds * 1000;
    const result = this.db
      .prepare(
        `UPDATE tasks SET lease_until_ms = ?
         WHERE id = ? AND lease_token = ? AND lease_until_ms > ?`,
      )
      .run(until, task.id, task.leaseToken, now);
    if (result.changes === 0) throw lost(task);
    return { ...task, leaseExpiresAt: new Date(until) };
  }

  async cancelLease(task: LeasedTask): Promise<void> {
    const result = this.db
      .prepare(
        `UPDATE tasks SET lease_until_ms = 0, lease_token = NULL
         WHERE id = ? AND lease_token = ?`,
      )
      .run(task.id, task.leaseToken);
    if (result.changes === 0) throw lost(task);
  }

  async depth(tag: string): Promise<number> {
    const row = this.db
      .prepare('SELECT COUNT(*) AS n FROM tasks WHERE tag = ?')
      .get(tag) as { n: number };
    return row.n;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

function toLeased(row: TaskRow): LeasedTask {
  return {
    id: row.id,
    tag: row.tag,
    payload: Buffer.from(row.payload),
    attempts: row.attempts,
    enqueuedAt: new Date(row.enqueued_ms),
    leaseExpiresAt: new Date(row.lease_until_ms),
    leaseToken: row.lease_token ?? '',
  };
}

function lost(task: LeasedTask): LeaseLostError {
  return new LeaseLostError(
    `lease on task ${task.id} was lost (expired or taken by another worker)`,
  );
}
