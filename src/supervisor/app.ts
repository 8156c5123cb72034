import { createHash, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Koa from 'koa';
import Router from '@koa/router';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { TaskQueue } from '../queue/queue';
import type { DaemonPool } from './daemon-pool';

/** What the supervisor's web app serves from. */
export interface AppParts {
  config: Config;
  pool: DaemonPool;
  queue: TaskQueue;
  logger: Logger;
  /** Starts a drain of the whole supervisor. */
  drain: () => void;
}

/**
 * The supervisor's Koa app: health checks, status API, the files of the
 * embedded default, and drain.
 */
export function createApp(parts: AppParts): Koa {
  const app = new Koa();
  const router = new Router();

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/_ah/health', (ctx) => {
    ctx.body = 'ok';
  });
  router.get('/readyz', (ctx) => {
    const readiness = parts.pool.readiness();
    ctx.status = readiness.ready ? 200 : 503;
    ctx.body = readiness;
  });
  router.get('/api/status', async (ctx) => {
    ctx.body = {
      daemons: parts.pool.list(),
      queue: parts.queue.description,
      queueDepth: parts.queue.depth ? await parts.queue.depth('task') : null,
    };
  });
  router.post('/api/drain', (ctx) => {
    if (!authorised(ctx, parts.config)) return;
    parts.drain();
    ctx.status = 202;
    ctx.body = { status: 'draining' };
  });
  router.get('/files/:path(.*)', (ctx) => serveFile(ctx, parts.config.outputDir));

  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/**
 * Checks the admin token of a request that changes something. Without a
 * configured token only requests from loopback are allowed.
 */
export function authorised(ctx: Koa.Context, config: Config): boolean {
  const token = config.adminToken;
  if (token === undefined) {
    if (isLoopback(ctx.request.ip)) return true;
    ctx.status = 403;
    ctx.body = { error: 'set RENDER_ADMIN_TOKEN to allow this from other addresses' };
    return false;
  }
  const given = /^Bearer (.+)$/.exec(ctx.get('authorization'))?.[1] ?? '';
  if (sameSecret(given, token)) return true;
  ctx.status = 401;
  ctx.body = { error: 'a valid admin token is needed' };
  return false;
}

/** Compares two secrets in time that does not depend on where they differ. */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}

function serveFile(ctx: Koa.Context, dir: string): void {
  const rel = String(ctx.params['path'] ?? '');
  const full = path.resolve(dir, rel);
  const inside = path.relative(dir, full);
  if (inside === '' || inside.startsWith('..') || path.isAbsolute(inside) || !fs.existsSync(full)) {
    ctx.status = 404;
    ctx.body = 'not found';
    return;
  }
  ctx.type = full.endsWith('.pdf') ? 'application/pdf' : 'application/octet-stream';
  ctx.set('Content-Disposition', `inline; filename*=UTF-8''${encodeURIComponent(path.basename(full))}`);
  ctx.body = fs.createReadStream(full);
}
