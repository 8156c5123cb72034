import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors';

/**
 * The farm's settings. This is the only module that reads `process.env`;
 * every other part receives a {@link Config}. The embedded default needs no
 * variable at all.
 */
export interface Config {
  /** Queue spec: `sqlite:FILE` or `cloud-tasks:projects/P/locations/L/queues/Q`. */
  queue: string;
  /**
   * `host:port` of a local Cloud Tasks emulator, reached without TLS or
   * Google credentials. Default: none, the real service.
   */
  cloudTasksEndpoint?: string;
  /** Daemons the supervisor forks. Default: one per usable core. */
  daemons: number;
  /** Concurrent renders inside one daemon (pages of its browser). Default 1. */
  pagesPerDaemon: number;
  /** Address the supervisor binds. Default 127.0.0.1. */
  host: string;
  /** Port of the supervisor. Default 8080; 0 picks a free one. */
  port: number;
  /** Directory where linked documents are stored. Default `data/output`. */
  outputDir: string;
  /** Base URL links are built from. Default: the supervisor's `/files/`. */
  publicUrl: string;
  /** Folder of resource views. Default `resource-templates`. */
  resourcesDir: string;
  /** Folders searched in order for static files. Default `static`. */
  staticDirs: string[];
  /** Largest result message, in bytes, sent inline. Default 1_000_000. */
  inlineLimitBytes: number;
  /** Largest task payload accepted, in bytes. Default 1_000_000. */
  maxTaskBytes: number;
  /** Lease taken on a task, in seconds; renewed while it renders. Default 120. */
  leaseSeconds: number;
  /** Deadline of one render, in seconds. Default 60. */
  timeoutSeconds: number;
  /** Longest wait for web fonts and images, in seconds. Default 5. */
  assetTimeoutSeconds: number;
  /** Attempts before a passing failure becomes a failure result. Default 3. */
  maxAttempts: number;
  /** Largest `copies` a task may ask for. Default 50. */
  maxCopies: number;
  /** Token needed by actions that change anything. Default: none. */
  adminToken: string | undefined;
  /** Chromium executable. Default `/usr/bin/chromium`. */
  chromiumPath: string;
  /** Heartbeat interval of a daemon, in milliseconds. Default 2_000. */
  heartbeatMs: number;
  /** Silence after which a daemon is restarted, in ms. Default 20_000. */
  heartbeatTimeoutMs: number;
  /** Browser replaced after this many renders. Default 200. */
  browserMaxRenders: number;
  /** Browser replaced after this age, in seconds. Default 3_600. */
  browserMaxAgeSeconds: number;
  /** Browser replaced above this resident memory, in MiB. Default 1_024. */
  browserMaxMemoryMb: number;
  /** Time a draining supervisor gives renders to finish, in s. Default 25. */
  drainGraceSeconds: number;
  /**
   * Time without any ready daemon after which `/healthz` answers 503, so
   * that an orchestrator replaces the machine, in seconds. Default 300.
   */
  unhealthyAfterSeconds: number;
  /** Idle wait between empty leases, in milliseconds. Default 500. */
  pollMs: number;
  /**
   * Interval of the browser health probe (a CDP round trip) while a daemon
   * is idle, in milliseconds. Default 5_000.
   */
  browserProbeMs: number;
  /** Time the browser has to answer the probe, in milliseconds. Default 2_000. */
  browserProbeTimeoutMs: number;
  /**
   * File the supervisor writes its process id to, removed when it exits.
   * Default `data/supervisor.pid`.
   */
  pidFile: string;
  /** Log level: error, warn, info or debug. Default info. */
  logLevel: string;
  /** Name of this daemon among its supervisor's, set by the supervisor. */
  daemonId: string;
}

const cores = Math.max(1, os.availableParallelism());

/** A variable that is unset, empty or only spaces: it takes its default. */
function blank(raw: string | undefined): raw is undefined {
  return raw === undefined || raw.trim() === '';
}

function int(name: string, fallback: number, min: number, max: number) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (blank(raw)) return fallback;
      // Digits only: Number() would also take 1e1, 0x2 and 0b1.
      const value = /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (!Number.isInteger(value) || value < min || value > max) {
        ctx.addIssue({
          code: 'custom',
          message: `${name}: got "${raw}", expected a whole number from ${min} to ${max}`,
        });
        return z.NEVER;
      }
      return value;
    });
}

function text(fallback: string) {
  return z
    .string()
    .optional()
    .transform((raw) => (blank(raw) ? fallback : raw));
}

function checked(
  fallback: string,
  ok: (value: string) => boolean,
  message: (value: string) => string,
) {
  return text(fallback).transform((value, ctx) => {
    if (ok(value)) return value;
    ctx.addIssue({ code: 'custom', message: message(value) });
    return z.NEVER;
  });
}

const queueSpec = checked(
  'sqlite:data/queue.db',
  (spec) =>
    /^sqlite:.+/.test(spec) ||
    /^cloud-tasks:projects\/[^/]+\/locations\/[^/]+\/queues\/[^/]+$/.test(spec),
  (spec) =>
    `RENDER_QUEUE: got "${spec}", expected sqlite:FILE or ` +
    'cloud-tasks:projects/P/locations/L/queues/Q',
);

const logLevel = checked(
  '',
  (value) => ['', 'error', 'warn', 'info', 'debug'].includes(value),
  (value) =>
    `RENDER_LOG_LEVEL: got "${value}", expected error, warn, info or debug`,
);

const cloudTasksEndpoint = checked(
  '',
  (value) =>
    value === '' || /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(value),
  (value) => `RENDER_CLOUD_TASKS_ENDPOINT: got "${value}", expected host:port`,
);

const schema = z.object({
  RENDER_QUEUE: queueSpec,
  RENDER_CLOUD_TASKS_ENDPOINT: cloudTasksEndpoint,
  RENDER_DAEMONS: int('RENDER_DAEMONS', cores, 1, 64),
  RENDER_PAGES_PER_DAEMON: int('RENDER_PAGES_PER_DAEMON', 1, 1, 16),
  RENDER_HOST: text('127.0.0.1'),
  RENDER_PORT: int('RENDER_PORT', 8080, 0, 65_535),
  RENDER_OUTPUT_DIR: text('data/output'),
  RENDER_PUBLIC_URL: text(''),
  RENDER_RESOURCES_DIR: text('resource-templates'),
  RENDER_STATIC_DIRS: text('static'),
  RENDER_INLINE_LIMIT_BYTES: int(
    'RENDER_INLINE_LIMIT_BYTES',
    1_000_000,
    0,
    100_000_000,
  ),
  RENDER_MAX_TASK_BYTES: int(
    'RENDER_MAX_TASK_BYTES',
    1_000_000,
    100,
    100_000_000,
  ),
  RENDER_LEASE_SECONDS: int('RENDER_LEASE_SECONDS', 120, 5, 86_400),
  RENDER_TIMEOUT_SECONDS: int('RENDER_TIMEOUT_SECONDS', 60, 1, 3_600),
  RENDER_ASSET_TIMEOUT_SECONDS: int('RENDER_ASSET_TIMEOUT_SECONDS', 5, 1, 600),
  RENDER_MAX_ATTEMPTS: int('RENDER_MAX_ATTEMPTS', 3, 1, 100),
  RENDER_MAX_COPIES: int('RENDER_MAX_COPIES', 50, 1, 10_000),
  RENDER_ADMIN_TOKEN: text(''),
  CHROMIUM_PATH: text('/usr/bin/chromium'),
  RENDER_HEARTBEAT_MS: int('RENDER_HEARTBEAT_MS', 2_000, 50, 600_000),
  RENDER_HEARTBEAT_TIMEOUT_MS: int(
    'RENDER_HEARTBEAT_TIMEOUT_MS',
    20_000,
    200,
    3_600_000,
  ),
  RENDER_BROWSER_MAX_RENDERS: int(
    'RENDER_BROWSER_MAX_RENDERS',
    200,
    1,
    1_000_000,
  ),
  RENDER_BROWSER_MAX_AGE_SECONDS: int(
    'RENDER_BROWSER_MAX_AGE_SECONDS',
    3_600,
    10,
    604_800,
  ),
  RENDER_BROWSER_MAX_MEMORY_MB: int(
    'RENDER_BROWSER_MAX_MEMORY_MB',
    1_024,
    64,
    65_536,
  ),
  RENDER_DRAIN_GRACE_SECONDS: int('RENDER_DRAIN_GRACE_SECONDS', 25, 0, 3_600),
  RENDER_UNHEALTHY_AFTER_SECONDS: int(
    'RENDER_UNHEALTHY_AFTER_SECONDS',
    300,
    5,
    86_400,
  ),
  RENDER_POLL_MS: int('RENDER_POLL_MS', 500, 10, 60_000),
  RENDER_BROWSER_PROBE_MS: int('RENDER_BROWSER_PROBE_MS', 5_000, 100, 600_000),
  RENDER_BROWSER_PROBE_TIMEOUT_MS: int(
    'RENDER_BROWSER_PROBE_TIMEOUT_MS',
    2_000,
    50,
    60_000,
  ),
  RENDER_PID_FILE: text('data/supervisor.pid'),
  RENDER_LOG_LEVEL: logLevel,
  RENDER_DAEMON_ID: text('0'),
});

/** What {@link loadConfig} takes besides the environment. */
export interface LoadOptions {
  /**
   * Log level when `RENDER_LOG_LEVEL` is unset: `info` (the default) for
   * the supervisor and daemons; commands that print their own output ask
   * for `warn`.
   */
  defaultLogLevel?: string;
}

/**
 * Reads and checks the settings from an environment. A variable that is
 * empty or only spaces counts as unset. Throws a {@link ConfigError} naming
 * every bad variable and what it accepts.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  options: LoadOptions = {},
): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => issue.message);
    throw new ConfigError(`bad configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  if (e.RENDER_LEASE_SECONDS <= e.RENDER_TIMEOUT_SECONDS) {
    throw new ConfigError(
      `RENDER_LEASE_SECONDS: got ${e.RENDER_LEASE_SECONDS}, expected more ` +
        `than RENDER_TIMEOUT_SECONDS (${e.RENDER_TIMEOUT_SECONDS})`,
    );
  }
  if (e.RENDER_ASSET_TIMEOUT_SECONDS >= e.RENDER_TIMEOUT_SECONDS) {
    // The wait for fonts and images must end before the render's deadline,
    // or a font that never arrives fails the render instead of printing
    // with a fallback.
    throw new ConfigError(
      `RENDER_ASSET_TIMEOUT_SECONDS: got ${e.RENDER_ASSET_TIMEOUT_SECONDS}, ` +
        `expected less than RENDER_TIMEOUT_SECONDS (${e.RENDER_TIMEOUT_SECONDS})`,
    );
  }
  if (e.RENDER_HEARTBEAT_MS >= e.RENDER_HEARTBEAT_TIMEOUT_MS) {
    throw new ConfigError(
      `RENDER_HEARTBEAT_MS: got ${e.RENDER_HEARTBEAT_MS}, expected less ` +
        `than RENDER_HEARTBEAT_TIMEOUT_MS (${e.RENDER_HEARTBEAT_TIMEOUT_MS})`,
    );
  }
  const publicUrl =
    e.RENDER_PUBLIC_URL === ''
      ? `http://${urlHost(e.RENDER_HOST)}:${e.RENDER_PORT}/files/`
      : e.RENDER_PUBLIC_URL;
  if (!/^https?:\/\/.+/.test(publicUrl)) {
    throw new ConfigError(
      `RENDER_PUBLIC_URL: got "${publicUrl}", expected an http(s) URL`,
    );
  }
  return {
    queue: e.RENDER_QUEUE,
    cloudTasksEndpoint:
      e.RENDER_CLOUD_TASKS_ENDPOINT === ''
        ? undefined
        : e.RENDER_CLOUD_TASKS_ENDPOINT,
    daemons: e.RENDER_DAEMONS,
    pagesPerDaemon: e.RENDER_PAGES_PER_DAEMON,
    host: e.RENDER_HOST,
    port: e.RENDER_PORT,
    outputDir: path.resolve(e.RENDER_OUTPUT_DIR),
    publicUrl: publicUrl.endsWith('/') ? publicUrl : `${publicUrl}/`,
    resourcesDir: path.resolve(e.RENDER_RESOURCES_DIR),
    staticDirs: e.RENDER_STATIC_DIRS.split(':')
      .filter((dir) => dir !== '')
      .map((dir) => path.resolve(dir)),
    inlineLimitBytes: e.RENDER_INLINE_LIMIT_BYTES,
    maxTaskBytes: e.RENDER_MAX_TASK_BYTES,
    leaseSeconds: e.RENDER_LEASE_SECONDS,
    timeoutSeconds: e.RENDER_TIMEOUT_SECONDS,
    assetTimeoutSeconds: e.RENDER_ASSET_TIMEOUT_SECONDS,
    maxAttempts: e.RENDER_MAX_ATTEMPTS,
    maxCopies: e.RENDER_MAX_COPIES,
    adminToken: e.RENDER_ADMIN_TOKEN === '' ? undefined : e.RENDER_ADMIN_TOKEN,
    chromiumPath: e.CHROMIUM_PATH,
    heartbeatMs: e.RENDER_HEARTBEAT_MS,
    heartbeatTimeoutMs: e.RENDER_HEARTBEAT_TIMEOUT_MS,
    browserMaxRenders: e.RENDER_BROWSER_MAX_RENDERS,
    browserMaxAgeSeconds: e.RENDER_BROWSER_MAX_AGE_SECONDS,
    browserMaxMemoryMb: e.RENDER_BROWSER_MAX_MEMORY_MB,
    drainGraceSeconds: e.RENDER_DRAIN_GRACE_SECONDS,
    unhealthyAfterSeconds: e.RENDER_UNHEALTHY_AFTER_SECONDS,
    pollMs: e.RENDER_POLL_MS,
    browserProbeMs: e.RENDER_BROWSER_PROBE_MS,
    browserProbeTimeoutMs: e.RENDER_BROWSER_PROBE_TIMEOUT_MS,
    pidFile: path.resolve(e.RENDER_PID_FILE),
    logLevel: e.RENDER_LOG_LEVEL || (options.defaultLogLevel ?? 'info'),
    daemonId: e.RENDER_DAEMON_ID,
  };
}

/** The settings as they may be logged: secrets replaced. */
export function describeConfig(config: Config): Record<string, unknown> {
  return { ...config, adminToken: config.adminToken ? '(set)' : '(none)' };
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}
