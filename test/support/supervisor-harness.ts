// A real supervisor with real daemons and Chromium on a temporary SQLite
// queue and output folder, on port 0, started in this process; and the
// probes the supervisor tests use: results read straight from the queue
// file, /readyz polled over time, Chromium processes and profiles on disk.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { loadConfig } from '../../src/config';
import type { Config } from '../../src/config';
import { Writable } from 'node:stream';
import winston from 'winston';
import { rootLogger, setLogLevel } from '../../src/logger';
import { PROFILE_PREFIX } from '../../src/render/browser';
import type { DaemonInfo } from '../../src/supervisor/daemon-pool';
import { startSupervisor } from '../../src/supervisor/supervisor';
import type { RunningSupervisor } from '../../src/supervisor/supervisor';

/** The project root (tests run from dist/test/...). */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..', '..');

/**
 * The resources root of these tests: the views smoke, slow and heap-hog of
 * test/fixtures/supervisor-resources, on the project's real shared layout,
 * copied together into a temporary folder.
 */
export const FIXTURE_RESOURCES = fixtureResources();

function fixtureResources(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-fixtures-'));
  const views = path.join(
    PROJECT_ROOT,
    'test',
    'fixtures',
    'supervisor-resources',
  );
  fs.cpSync(views, root, { recursive: true });
  const layout = path.join(PROJECT_ROOT, 'resource-templates', '_layout');
  fs.cpSync(layout, path.join(root, '_layout'), { recursive: true });
  return root;
}

/** Settings that keep the tests fast: seconds, not minutes. */
export const FAST_ENV: Record<string, string> = {
  RENDER_DAEMONS: '1',
  RENDER_HEARTBEAT_MS: '250',
  RENDER_HEARTBEAT_TIMEOUT_MS: '2000',
  RENDER_TIMEOUT_SECONDS: '8',
  RENDER_LEASE_SECONDS: '9',
  RENDER_POLL_MS: '100',
  RENDER_BROWSER_PROBE_MS: '1000',
  RENDER_BROWSER_PROBE_TIMEOUT_MS: '800',
  RENDER_DRAIN_GRACE_SECONDS: '3',
  RENDER_MAX_ATTEMPTS: '3',
  RENDER_LOG_LEVEL: 'error',
};

/** A result message as read from the queue. */
export interface QueueResult {
  kind: string;
  success: boolean;
  task_id: string;
  url?: string;
  document?: string | null;
  filename?: string | null;
  pages?: number;
  error?: string;
}

/** One sample of /readyz. */
export interface ReadySample {
  /** When the request was sent, epoch ms. */
  sentMs: number;
  /** When the answer arrived, epoch ms. */
  atMs: number;
  status: number;
}

/** A change of the pool's readiness, seen in this process. */
export interface ReadyChange {
  /** When it was seen, epoch ms (at most 25 ms late). */
  atMs: number;
  ready: boolean;
}

/** A running supervisor under test and its probes. */
export class SupervisorHarness {
  readonly baseUrl: string;
  /** Profile folders of every browser the daemons reported. */
  readonly profilesSeen = new Set<string>();
  /** /readyz over time while sampling runs. */
  readonly readySamples: ReadySample[] = [];
  /** The pool's own readiness changes while sampling runs. */
  readonly readyChanges: ReadyChange[] = [];
  private readonly db: Database.Database | undefined;
  private readonly watcher: NodeJS.Timeout;
  private sampler: NodeJS.Timeout | undefined;
  private poolWatcher: NodeJS.Timeout | undefined;
  private readonly onChange = () => this.recordReadiness();

  private constructor(
    readonly dir: string,
    readonly config: Config,
    readonly env: NodeJS.ProcessEnv,
    readonly supervisor: RunningSupervisor,
  ) {
    this.baseUrl = `http://127.0.0.1:${supervisor.port}`;
    // Results are read straight from an SQLite queue; other backends have
    // their own probes.
    this.db = config.queue.startsWith('sqlite:')
      ? new Database(config.queue.slice('sqlite:'.length), {
          readonly: true,
          fileMustExist: true,
        })
      : undefined;
    this.watcher = setInterval(() => this.recordProfiles(), 100);
  }

  /**
   * Starts a supervisor with {@link FAST_ENV}, the fixture resources and a
   * temporary queue, output folder and pid file; `env` overrides.
   */
  static async start(
    env: Record<string, string> = {},
    options: { daemonScript?: string } = {},
  ): Promise<SupervisorHarness> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-supervisor-test-'));
    const full: NodeJS.ProcessEnv = {
      ...withoutRenderVars(process.env),
      RENDER_QUEUE: `sqlite:${path.join(dir, 'queue.db')}`,
      RENDER_OUTPUT_DIR: path.join(dir, 'output'),
      RENDER_RESOURCES_DIR: FIXTURE_RESOURCES,
      RENDER_STATIC_DIRS: path.join(PROJECT_ROOT, 'static'),
      RENDER_PID_FILE: path.join(dir, 'supervisor.pid'),
      RENDER_HOST: '127.0.0.1',
      RENDER_PORT: '0',
      ...FAST_ENV,
      ...env,
    };
    const config = loadConfig(full);
    if (recorders === 0) setLogLevel(config.logLevel);
    const supervisor = await startSupervisor(config, {
      handleSignals: false,
      env: full,
      ...(options.daemonScript ? { daemonScript: options.daemonScript } : {}),
    });
    return new SupervisorHarness(dir, config, full, supervisor);
  }

  /** What the supervisor knows of its daemons now. */
  daemons(): DaemonInfo[] {
    return this.supervisor.pool.list();
  }

  /** The first daemon's state (most tests run one). */
  daemon(id = '1'): DaemonInfo {
    const found = this.daemons().find((d) => d.id === id);
    assert.ok(found, `no daemon ${id}`);
    return found;
  }

  /** Waits until every daemon has a browser and takes work. */
  async waitReady(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      () => this.supervisor.pool.readyIds().length === this.config.daemons,
      timeoutMs,
      'every daemon ready',
    );
  }

  /** Puts a task for a fixture view straight on the queue; returns its id. */
  async enqueue(
    view: string,
    options: Record<string, unknown> = {},
  ): Promise<string> {
    const token = this.config.adminToken;
    const auth: Record<string, string> = token
      ? { authorization: `Bearer ${token}` }
      : {};
    const response = await this.post(
      '/api/tasks',
      taskFor(view, options),
      auth,
    );
    const body = (await response.json()) as {
      task_id?: string;
      error?: string;
    };
    assert.equal(response.status, 202, `enqueue refused: ${body.error}`);
    return String(body.task_id);
  }

  /** Every result message on the queue (read without taking them). */
  results(): QueueResult[] {
    const rows = this.sqlite()
      .prepare("SELECT payload FROM tasks WHERE tag = 'result' ORDER BY seq")
      .all() as { payload: Buffer }[];
    return rows.map(
      (row) => JSON.parse(row.payload.toString('utf8')) as QueueResult,
    );
  }

  /** The results of one task. */
  resultsOf(taskId: string): QueueResult[] {
    return this.results().filter((r) => r.task_id === taskId);
  }

  /** Waits for the first result of a task and returns it. */
  async waitForResult(
    taskId: string,
    timeoutMs = 30_000,
  ): Promise<QueueResult> {
    await waitFor(
      () => this.resultsOf(taskId).length > 0,
      timeoutMs,
      `result of ${taskId}`,
    );
    return this.resultsOf(taskId)[0] as QueueResult;
  }

  /** Deliveries of a task still on the queue, or undefined once acked. */
  attemptsOf(taskId: string): number | undefined {
    const row = this.sqlite()
      .prepare('SELECT attempts FROM tasks WHERE id = ?')
      .get(taskId) as { attempts: number } | undefined;
    return row?.attempts;
  }

  /** When a task's lease ends, epoch ms (0: given back), or undefined once acked. */
  leaseUntilOf(taskId: string): number | undefined {
    const row = this.sqlite()
      .prepare('SELECT lease_until_ms FROM tasks WHERE id = ?')
      .get(taskId) as { lease_until_ms: number } | undefined;
    return row?.lease_until_ms;
  }

  /** A GET on the supervisor. */
  get(
    pathname: string,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    return fetch(this.baseUrl + pathname, { headers });
  }

  /** A POST of JSON on the supervisor, as a script would send it. */
  post(
    pathname: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    return fetch(this.baseUrl + pathname, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  }

  /**
   * Polls /readyz every `everyMs` into {@link readySamples}, and records
   * the pool's own readiness changes into {@link readyChanges}.
   */
  startSampling(everyMs = 200): void {
    this.readySamples.length = 0;
    this.readyChanges.length = 0;
    this.recordReadiness();
    this.supervisor.pool.on('change', this.onChange);
    // Readiness also lapses with time (a heartbeat too old), without an event.
    this.poolWatcher = setInterval(this.onChange, 25);
    const sample = () => {
      const sentMs = Date.now();
      this.get('/readyz').then(
        (response) =>
          this.readySamples.push({
            sentMs,
            atMs: Date.now(),
            status: response.status,
          }),
        (error: unknown) => assert.fail(`readyz failed: ${String(error)}`),
      );
    };
    sample();
    this.sampler = setInterval(sample, everyMs);
  }

  /** Samples whose request was sent between two times, epoch ms. */
  samplesSentBetween(fromMs: number, toMs: number): ReadySample[] {
    return this.readySamples.filter(
      (s) => s.sentMs > fromMs && s.sentMs < toMs,
    );
  }

  /** Stops polling /readyz. */
  stopSampling(): void {
    clearInterval(this.sampler);
    clearInterval(this.poolWatcher);
    this.supervisor.pool.off('change', this.onChange);
  }

  /** The first readiness change to `ready` at or after `fromMs`. */
  changeTo(ready: boolean, fromMs: number): ReadyChange | undefined {
    return this.readyChanges.find((c) => c.ready === ready && c.atMs >= fromMs);
  }

  private recordReadiness(): void {
    const ready = this.supervisor.pool.readyIds().length > 0;
    const last = this.readyChanges[this.readyChanges.length - 1];
    if (last?.ready !== ready)
      this.readyChanges.push({ atMs: Date.now(), ready });
  }

  private sqlite(): Database.Database {
    assert.ok(
      this.db,
      `results are read from SQLite, not ${this.config.queue}`,
    );
    return this.db;
  }

  /**
   * Live processes using a profile folder the daemons reported, other than
   * the live browsers' own, and such folders still on disk.
   */
  leftovers(): { processes: string[]; profiles: string[] } {
    const live = new Set(
      this.daemons()
        .map((d) => d.browserProfileDir)
        .filter(Boolean),
    );
    const stale = [...this.profilesSeen].filter((dir) => !live.has(dir));
    const processes = psLines().filter(
      (line) =>
        !/^\s*\d+\s+\d+\s+Z/.test(line) &&
        stale.some((dir) => line.includes(dir)),
    );
    return { processes, profiles: stale.filter((dir) => fs.existsSync(dir)) };
  }

  /** Waits until no process or folder of a dead browser is left. */
  async waitNoLeftovers(timeoutMs = 10_000): Promise<void> {
    await waitFor(
      () => {
        const left = this.leftovers();
        return left.processes.length === 0 && left.profiles.length === 0;
      },
      timeoutMs,
      () => `no leftovers, still ${JSON.stringify(this.leftovers())}`,
    );
  }

  /** Drains the supervisor and removes its temporary files. */
  async stop(): Promise<void> {
    clearInterval(this.watcher);
    this.stopSampling();
    await this.supervisor.drain();
    this.recordProfiles();
    this.db?.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private recordProfiles(): void {
    for (const d of this.daemons()) {
      if (d.browserProfileDir) this.profilesSeen.add(d.browserProfileDir);
    }
  }
}

/** Log recorders running: harnesses then leave the log level alone. */
let recorders = 0;

/** Log lines of this process (the supervisor's), recorded at every level. */
export interface LogRecorder {
  lines: Record<string, unknown>[];
  /** Stops recording and puts the level back. */
  stop(): void;
}

/**
 * Records every log line of this process from now on, debug included,
 * while the console keeps printing only what it printed before.
 */
export function recordLogs(
  consoleLevel = FAST_ENV['RENDER_LOG_LEVEL'] ?? 'error',
): LogRecorder {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    objectMode: true,
    write(entry: Record<string, unknown>, _encoding, done) {
      lines.push({ ...entry });
      done();
    },
  });
  const transport = new winston.transports.Stream({ stream: sink });
  const level = rootLogger.level;
  const consoles = rootLogger.transports.filter(
    (t) => t instanceof winston.transports.Console,
  );
  for (const console of consoles) console.level = consoleLevel;
  rootLogger.add(transport);
  rootLogger.level = 'debug';
  recorders++;
  return {
    lines,
    stop() {
      recorders--;
      rootLogger.remove(transport);
      rootLogger.level = level;
      for (const console of consoles) console.level = undefined;
    },
  };
}

/** A valid task for a fixture view. */
export function taskFor(
  view: string,
  options: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    kind: 'task#render',
    resource_slug: view,
    resource_name: view.toUpperCase(),
    resource_view: view,
    url: 'https://example.org/test',
    header_text: '',
    copies: 1,
    paper_size: 'a4',
    ...(view === 'slow' ? { wait_ms: 0 } : {}),
    ...options,
  };
}

/** Polls `check` every 100 ms until true; fails after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string | (() => string),
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) {
      assert.fail(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      );
    }
    await sleep(100);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `ps` lines: pid, ppid, stat, args; every process of the machine. */
export function psLines(): string[] {
  return execFileSync('ps', ['-eo', 'pid=,ppid=,stat=,args='], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter((line) => line.trim() !== '');
}

/** Zombie processes whose command is Chromium's (`ps` shows `[chromium] <defunct>`). */
export function chromiumZombies(): string[] {
  return execFileSync('ps', ['-eo', 'pid=,ppid=,stat=,comm='], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter((line) => /^\s*\d+\s+\d+\s+Z\S*\s+.*chrom/i.test(line));
}

/** Children of a process whose command line has `--type=renderer`. */
export function rendererPids(browserPid: number): number[] {
  return psLines()
    .filter((line) => line.includes('--type=renderer'))
    .map((line) => Number(line.trim().split(/\s+/)[0]))
    .filter((pid) => isDescendant(pid, browserPid));
}

/**
 * The renderer of a browser that burns the most CPU over `windowMs`: the
 * one running a busy script. Renderers in `older` (started before the
 * render) are not candidates.
 */
export async function busiestRenderer(
  browserPid: number,
  windowMs = 1_500,
  minTicks = 30,
  older: ReadonlySet<number> = new Set(),
): Promise<number | undefined> {
  const before = new Map(
    rendererPids(browserPid)
      .filter((pid) => !older.has(pid))
      .map((pid) => [pid, cpuTicks(pid)]),
  );
  await sleep(windowMs);
  let best: number | undefined;
  let bestDelta = 0;
  for (const [pid, ticks] of before) {
    const delta = cpuTicks(pid) - ticks;
    if (delta > bestDelta) [best, bestDelta] = [pid, delta];
  }
  return bestDelta >= minTicks ? best : undefined;
}

function cpuTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    // Gone: it burns nothing.
    return 0;
  }
}

function isDescendant(pid: number, ancestor: number): boolean {
  let current = pid;
  for (let i = 0; i < 10 && current > 1; i++) {
    if (current === ancestor) return true;
    try {
      const stat = fs.readFileSync(`/proc/${current}/stat`, 'utf8');
      current = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      // The process is gone: it descends from nothing now.
      return false;
    }
  }
  return false;
}

/** Temporary profile folders of all render-farm browsers on the machine. */
export function profileDirs(): string[] {
  return fs
    .readdirSync(os.tmpdir())
    .filter((name) => name.startsWith(PROFILE_PREFIX))
    .map((name) => path.join(os.tmpdir(), name));
}

function withoutRenderVars(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(env).filter(
      ([name]) => !name.startsWith('RENDER_') && name !== 'CHROMIUM_PATH',
    ),
  );
}

/**
 * A minimal strict parser of the Prometheus text format: every sample line
 * must be `name{labels} value`; HELP and TYPE lines must name a metric.
 */
export function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      assert.match(
        line,
        /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/,
        `bad comment: ${line}`,
      );
      continue;
    }
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/.exec(
        line,
      );
    assert.ok(m, `bad sample line: ${line}`);
    const value = Number(m[3] === '+Inf' ? Infinity : m[3]);
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `bad value: ${line}`);
    samples.set(`${m[1]}${normaliseLabels(m[2] ?? '')}`, value);
  }
  return samples;
}

/** Labels sorted by name, so lookups do not depend on their order. */
function normaliseLabels(labels: string): string {
  if (labels === '') return '';
  const pairs =
    labels.slice(1, -1).match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ??
    [];
  return `{${pairs.sort().join(',')}}`;
}

/** A sample of parsed metrics, 0 when absent; labels in any order. */
export function metric(
  samples: Map<string, number>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const keys = Object.keys(labels).sort();
  const key =
    keys.length === 0
      ? name
      : `${name}{${keys.map((k) => `${k}="${labels[k]}"`).join(',')}}`;
  return samples.get(key) ?? 0;
}
