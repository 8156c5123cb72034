import fs from 'node:fs';
import path from 'node:path';
import nunjucks from 'nunjucks';
import { TemplateError } from '../errors';

/**
 * A loader that serves templates from one root folder only. A name that is
 * absolute or climbs out of the root (`../../etc/passwd`, also through a
 * relative include) is refused with a {@link TemplateError}.
 */
class RootLoader extends nunjucks.Loader implements nunjucks.ILoader {
  constructor(
    private readonly root: string,
    private readonly noCache: boolean,
  ) {
    super();
  }

  getSource(name: string): nunjucks.LoaderSource {
    const full = resolveInside(this.root, name);
    let src: string;
    try {
      src = fs.readFileSync(full, 'utf8');
    } catch (error) {
      throw new TemplateError(`template not found: ${name}`, { cause: error });
    }
    return { src, path: full, noCache: this.noCache };
  }
}

/**
 * The absolute path of a template inside `root`. Throws when the name points
 * outside it. Names arrive either relative to the root or, for relative
 * includes, already resolved to an absolute path by Nunjucks.
 */
export function resolveInside(root: string, name: string): string {
  if (name.includes('\0')) throw outside(name);
  const full = path.resolve(root, name);
  const rel = path.relative(root, full);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) throw outside(name);
  if (path.isAbsolute(name) && !name.startsWith(root + path.sep)) throw outside(name);
  return full;
}

function outside(name: string): TemplateError {
  return new TemplateError(`template not found: ${name} is outside the template root`);
}

/** What {@link createTemplateEnv} takes. */
export interface TemplateEnvOptions {
  /** Folder that holds the resource views and `_layout/`. */
  root: string;
  /** Re-read templates on every render (preview); default false. */
  watch?: boolean;
}

/**
 * The Nunjucks environment of the farm: autoescaping on, undefined values
 * printed as errors, templates only from the root.
 */
export function createTemplateEnv(options: TemplateEnvOptions): nunjucks.Environment {
  const loader = new RootLoader(path.resolve(options.root), options.watch ?? false);
  return new nunjucks.Environment(loader, {
    autoescape: true,
    throwOnUndefined: true,
    trimBlocks: true,
    lstripBlocks: true,
  });
}

/**
 * Fills a template. Any error is turned into a {@link TemplateError} whose
 * message names the template file, the line and, for an undefined value,
 * the expression that was undefined.
 */
export function renderTemplate(
  env: nunjucks.Environment,
  root: string,
  name: string,
  context: object,
): string {
  try {
    return env.render(name, context);
  } catch (error) {
    if (error instanceof TemplateError) throw error;
    throw describeTemplateError(error, root, name);
  }
}

const LOCATION = /^\(([^)]*)\)(?: \[Line (\d+)(?:, Column (\d+))?\])?/;

/** Rewrites a Nunjucks error into words a template author can act on. */
export function describeTemplateError(
  error: unknown,
  root: string,
  fallbackName: string,
): TemplateError {
  const raw = error instanceof Error ? error.message : String(error);
  const cause = error instanceof Error && error.cause instanceof TemplateError ? error.cause : null;
  if (cause) return cause;

  const firstLine = raw.split('\n')[0] ?? '';
  const match = LOCATION.exec(firstLine.replace(/^Template render error: /, ''));
  const file = match?.[1] && match[1] !== 'unknown path' ? match[1] : fallbackName;
  const name = path.isAbsolute(file) ? path.relative(root, file) : file;
  let line = match?.[2] ? Number(match[2]) : undefined;
  let column = match?.[3] ? Number(match[3]) : undefined;
  const detail = raw
    .split('\n')
    .slice(1)
    .join(' ')
    .replace(/^\s*(Error: )?/, '')
    .trim();

  let reason = detail || firstLine;
  const called = /Unable to call `([^`]+)`/.exec(reason)?.[1];
  if (called) {
    // Nunjucks counts lines from 0 for failed calls (from 1 elsewhere, and
    // leaves line 0 out): find the call in the source instead.
    line = lineOfCall(path.resolve(root, name), called, line ?? 0) ?? line;
    column = undefined;
  }
  if (/attempted to output null or undefined value/.test(reason) && line !== undefined) {
    const expression = expressionAt(path.resolve(root, name), line, column);
    if (expression) reason = `"${expression}" is undefined`;
  }
  if (/Template render error|unknown path/.test(reason) && line === undefined) reason = raw;
  const where = line === undefined ? '' : ` line ${line}${column ? ` column ${column}` : ''}`;
  return new TemplateError(`template ${name}${where}: ${reason}`);
}

/** The `{{ ... }}` expression at (or just before) a column of a file line. */
function expressionAt(file: string, line: number, column?: number): string | undefined {
  let source: string;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch {
    // The template path came from Nunjucks itself; unreadable now means it
    // was removed meanwhile, and the plain message is all we can give.
    return undefined;
  }
  const text = source.split('\n')[line - 1];
  if (text === undefined) return undefined;
  const outputs = [...text.matchAll(/\{\{-?\s*(.*?)\s*-?\}\}/g)];
  if (outputs.length === 0) return undefined;
  const at = column ?? 0;
  const found =
    outputs.find((m) => m.index <= at && at <= m.index + m[0].length) ??
    outputs.filter((m) => m.index <= at).pop() ??
    outputs[0];
  return found?.[1]?.split('|')[0]?.trim();
}

/** The 1-based line, at or after `fromLine0` (0-based), that calls `name`. */
function lineOfCall(file: string, name: string, fromLine0: number): number | undefined {
  let lines: string[];
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n');
  } catch {
    // As in expressionAt: the file went away; keep the reported line.
    return undefined;
  }
  const call = new RegExp(`\\b${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*\\(`);
  for (let i = Math.max(0, fromLine0); i < lines.length; i++) {
    if (call.test(lines[i] ?? '')) return i + 1;
  }
  return undefined;
}
