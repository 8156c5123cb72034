import fs from 'node:fs';
import path from 'node:path';
import Koa from 'koa';
import Router from '@koa/router';
import type { Config } from '../config';
import { InvalidTaskError, errorMessage } from '../errors';
import type { Logger } from '../logger';
import { TASK_TAG } from '../daemon/result';
import type { TaskQueue } from '../queue/queue';
import type { Catalogue } from '../resources/catalogue';
import { checkTask, decodePayload } from '../resources/task';
import { authorised, newCsrfToken, sameOrigin } from './access';
import type { DaemonPool } from './daemon-pool';
import { dashboardHtml, formResources } from './dashboard';
import type { DashboardStatus } from './dashboard';
import { LiveFeed } from './live-feed';
import { SupervisorMetrics } from './metrics';
import { QueueDepth } from './queue-depth';

export { authorised } from './access';

/** Folder of the dashboard's script and stylesheet (`static/dashboard`). */
export const DASHBOARD_DIR = path.resolve(
  __dirname,
  '..',
  '..',
  '..',
  'static',
  'dashboard',
);

/** What the supervisor's web app serves from. */
export interface AppParts {
  config: Config;
  pool: DaemonPool;
  queue: TaskQueue;
  /** The resources the enqueue form offers and POST /api/tasks checks. */
  catalogue: Catalogue;
  logger: Logger;
  /** Starts a drain of the whole supervisor. */
  drain: () => void;
}

/** The app with the parts the supervisor also needs. */
export interface SupervisorApp {
  app: Koa;
  metrics: SupervisorMetrics;
  feed: LiveFeed;
}

/**
 * The supervisor's Koa app: health checks, metrics, status API, dashboard
 * with live events, enqueue, restart and drain actions, and the files of
 * the embedded default. Health checks read only what the pool already
 * knows: they are fast and never start work.
 */
export function createApp(parts: AppParts): SupervisorApp {
  const { config, pool, queue } = parts;
  const app = new Koa();
  app.on('error', (error: NodeJS.ErrnoException, ctx?: Koa.Context) => {
    const fields = {
      path: ctx?.path,
      code: error.code,
      error: errorMessage(error),
    };
    if (clientWentAway(error, ctx)) {
      parts.logger.debug('client went away', fields);
    } else {
      parts.logger.error('request failed', fields);
    }
  });
  const router = new Router();
  const csrfToken = newCsrfToken();
  const depth = new QueueDepth(queue, TASK_TAG, parts.logger);
  const metrics = new SupervisorMetrics(pool, depth);
  const status = () => statusOf(parts, depth);
  const feed = new LiveFeed(pool, status, parts.logger);
  const resources = formResources(parts.catalogue.list());
  const unhealthyAfterMs = config.unhealthyAfterSeconds * 1000;

  // Liveness: 503 once no daemon has been ready for unhealthyAfterMs (a
  // browser that can never start), so that the orchestrator replaces the
  // container; readiness (/readyz) says at once whether work is taken.
  router.get('/healthz', (ctx) => {
    const health = pool.health(unhealthyAfterMs);
    ctx.status = health.healthy ? 200 : 503;
    ctx.body = { status: health.healthy ? 'ok' : 'unhealthy', ...health };
  });
  router.get('/_ah/health', (ctx) => {
    const health = pool.health(unhealthyAfterMs);
    ctx.status = health.healthy ? 200 : 503;
    ctx.body = health.healthy ? 'ok' : `unhealthy: ${health.reason}`;
  });
  router.get('/readyz', (ctx) => {
    const readiness = pool.readiness();
    ctx.status = readiness.ready ? 200 : 503;
    ctx.body = readiness;
  });
  router.get('/metrics', async (ctx) => {
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.text();
  });
  router.get('/api/status', async (ctx) => {
    ctx.body = { ...(await status()), results: feed.recent() };
  });
  router.get('/api/events', async (ctx) => {
    const first = await status();
    ctx.respond = false;
    feed.subscribe(ctx.res, first);
  });
  router.get('/', async (ctx) => {
    ctx.type = 'text/html; charset=utf-8';
    ctx.set('cache-control', 'no-store');
    ctx.set(
      'content-security-policy',
      "default-src 'self'; frame-ancestors 'none'",
    );
    ctx.body = dashboardHtml({
      status: await status(),
      results: feed.recent(),
      resources,
      csrfToken,
      tokenRequired: config.adminToken !== undefined,
    });
  });
  router.get('/dashboard/:file', (ctx) => serveDashboardFile(ctx));

  const allowed = (ctx: Koa.Context) =>
    sameOrigin(ctx, config, csrfToken) && authorised(ctx, config);
  router.post('/api/tasks', async (ctx) => {
    if (!allowed(ctx)) return;
    await enqueueTask(ctx, parts);
  });
  router.post('/api/daemons/:id/restart', (ctx) => {
    if (!allowed(ctx)) return;
    const id = String(ctx.params['id']);
    if (!pool.restart(id, 'manual')) {
      ctx.status = 404;
      ctx.body = { error: `no daemon ${id}` };
      return;
    }
    parts.logger.info('daemon restart requested', {
      daemon: id,
      from: ctx.request.ip,
    });
    ctx.status = 202;
    ctx.body = { status: 'restarting', daemon: id };
  });
  router.post('/api/drain', (ctx) => {
    if (!allowed(ctx)) return;
    parts.logger.info('drain requested', { from: ctx.request.ip });
    parts.drain();
    ctx.status = 202;
    ctx.body = { status: 'draining' };
  });
  // path-to-regexp v8 syntax: a named wildcard, its value one string a segment.
  router.get('/files/*path', (ctx) => serveFile(ctx, config.outputDir));

  app.use(router.routes());
  app.use(router.allowedMethods());
  return { app, metrics, feed };
}

async function statusOf(
  parts: AppParts,
  depth: QueueDepth,
): Promise<DashboardStatus> {
  const queueDepth = await depth.read();
  // Read after the wait for the queue, so that the daemons are current.
  const readiness = parts.pool.readiness();
  return {
    ...readiness,
    daemons: parts.pool.list(),
    queue: parts.queue.description,
    queueDepth,
    nowMs: Date.now(),
  };
}

/** Error codes of a client that closed its connection mid-answer. */
const GONE_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * Whether a request failed only because its client went away (a dashboard
 * or preview closing its event stream, a reload mid-download): routine.
 */
function clientWentAway(
  error: NodeJS.ErrnoException,
  ctx: Koa.Context | undefined,
): boolean {
  if (error.code && GONE_CODES.has(error.code)) return true;
  return ctx?.req.destroyed === true && ctx.req.readableAborted === true;
}

/**
 * Puts a task from the dashboard or a script on the queue. The JSON body
 * is checked as a daemon would check it, so bad input gets a 400 naming
 * the field instead of a failure result later.
 */
async function enqueueTask(ctx: Koa.Context, parts: AppParts): Promise<void> {
  if (!ctx.is('application/json')) {
    ctx.status = 415;
    ctx.body = { error: 'send the task as application/json' };
    return;
  }
  try {
    const body = await readBody(ctx, parts.config.maxTaskBytes);
    const task = decodePayload(body, parts.config.maxTaskBytes);
    checkTask(task, 'check', parts.catalogue, parts.config);
    const id = await parts.queue.put(JSON.stringify(task), TASK_TAG);
    parts.logger.info('task enqueued', {
      task_id: id,
      resource_view: task['resource_view'],
    });
    ctx.status = 202;
    ctx.body = { task_id: id };
  } catch (error) {
    if (!(error instanceof InvalidTaskError)) throw error;
    ctx.status = 400;
    ctx.body = { error: errorMessage(error) };
  }
}

/** The request body, refused past `limitBytes`. */
async function readBody(ctx: Koa.Context, limitBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) {
      throw new InvalidTaskError(
        `task payload is larger than the limit of ${limitBytes} bytes`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const DASHBOARD_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

function serveDashboardFile(ctx: Koa.Context): void {
  const name = String(ctx.params['file'] ?? '');
  const type = DASHBOARD_TYPES[path.extname(name)];
  const full = path.join(DASHBOARD_DIR, name);
  if (!type || !/^[\w.-]+$/.test(name) || !fs.existsSync(full)) {
    ctx.status = 404;
    ctx.body = 'not found';
    return;
  }
  ctx.type = type;
  ctx.set('cache-control', 'no-cache');
  ctx.body = fs.createReadStream(full);
}

function serveFile(ctx: Koa.Context, dir: string): void {
  const param: unknown = ctx.params['path'];
  const rel = Array.isArray(param) ? param.join('/') : String(param ?? '');
  const full = path.resolve(dir, rel);
  const inside = path.relative(dir, full);
  const ok =
    inside !== '' && !inside.startsWith('..') && !path.isAbsolute(inside);
  if (!ok || !fs.existsSync(full) || !fs.statSync(full).isFile()) {
    ctx.status = 404;
    ctx.body = 'not found';
    return;
  }
  ctx.type = full.endsWith('.pdf')
    ? 'application/pdf'
    : 'application/octet-stream';
  ctx.set(
    'Content-Disposition',
    `inline; filename*=UTF-8''${encodeURIComponent(path.basename(full))}`,
  );
  ctx.set('x-content-type-options', 'nosniff');
  ctx.body = fs.createReadStream(full);
}
