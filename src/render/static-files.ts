import fs from 'node:fs/promises';
import path from 'node:path';

/** Content types of the files a resource may load. */
const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ttf': 'font/ttf',
  '.otf': 'font/otf',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.html': 'text/html; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/** A static file found for a request. */
export interface StaticFile {
  body: Buffer;
  contentType: string;
}

/**
 * Looks a file up in the static folders, in order (the local `static/`
 * first, then for example a mounted bucket). Only plain relative paths that
 * stay inside a folder are served; anything else is not found.
 */
export async function readStatic(
  dirs: readonly string[],
  relativePath: string,
): Promise<StaticFile | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(relativePath);
  } catch {
    // A malformed %-escape names no file.
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  for (const dir of dirs) {
    const full = path.resolve(dir, decoded);
    const rel = path.relative(dir, full);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel))
      return undefined;
    try {
      const body = await fs.readFile(full);
      const contentType =
        TYPES[path.extname(full).toLowerCase()] ?? 'application/octet-stream';
      return { body, contentType };
    } catch {
      // Not in this folder: try the next one.
    }
  }
  return undefined;
}
