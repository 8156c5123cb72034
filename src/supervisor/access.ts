import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type Koa from 'koa';
import type { Config } from '../config';

/** Header the dashboard sends its CSRF token in. */
export const CSRF_HEADER = 'x-csrf-token';

/**
 * A random token made once per supervisor process. The dashboard page
 * embeds it and sends it back on every POST; a page of another site can
 * neither read it nor guess it.
 */
export function newCsrfToken(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * Checks the admin token of a request that changes something. Without a
 * configured token only requests from loopback are allowed. Sets a 401 or
 * 403 answer and returns false when the request is refused.
 */
export function authorised(ctx: Koa.Context, config: Config): boolean {
  const token = config.adminToken;
  if (token === undefined) {
    if (isLoopback(ctx.request.ip)) return true;
    refuse(
      ctx,
      403,
      'set RENDER_ADMIN_TOKEN to allow this from other addresses',
    );
    return false;
  }
  if (sameSecret(bearerToken(ctx), token)) return true;
  refuse(
    ctx,
    401,
    'a valid admin token is needed (Authorization: Bearer TOKEN)',
  );
  return false;
}

/**
 * Refuses cross-site requests from browsers. A request that carries
 * browser headers (Origin or Sec-Fetch-Site) must come from this
 * supervisor's own origin and carry the dashboard's CSRF token. Scripts
 * (no such headers, e.g. curl or the shutdown script) are not a CSRF
 * vector and pass; {@link authorised} still applies to them.
 *
 * Without an admin token the Host header must also name a loopback
 * address, so a page reached by DNS rebinding cannot act either.
 */
export function sameOrigin(
  ctx: Koa.Context,
  config: Config,
  csrfToken: string,
): boolean {
  if (config.adminToken === undefined && !isLoopbackHost(ctx.host)) {
    refuse(ctx, 403, `host "${ctx.host}" is not a loopback address`);
    return false;
  }
  const origin = ctx.get('origin');
  const site = ctx.get('sec-fetch-site');
  if (origin === '' && site === '') return true;
  if (origin !== '' && origin !== ctx.origin) {
    refuse(ctx, 403, `cross-origin request from ${origin} refused`);
    return false;
  }
  if (site !== '' && site !== 'same-origin' && site !== 'none') {
    refuse(ctx, 403, `cross-site request (Sec-Fetch-Site: ${site}) refused`);
    return false;
  }
  if (!sameSecret(ctx.get(CSRF_HEADER), csrfToken)) {
    refuse(
      ctx,
      403,
      `missing or wrong ${CSRF_HEADER} header; reload the dashboard`,
    );
    return false;
  }
  return true;
}

/** Whether an address (as Koa reports it) is a loopback address. */
export function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}

function isLoopbackHost(host: string): boolean {
  const name = host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  return name === 'localhost' || isLoopback(name);
}

function bearerToken(ctx: Koa.Context): string {
  return /^Bearer (.+)$/.exec(ctx.get('authorization'))?.[1] ?? '';
}

/** Compares two secrets in time that does not depend on where they differ. */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function refuse(ctx: Koa.Context, status: number, error: string): void {
  ctx.status = status;
  ctx.body = { error };
}
