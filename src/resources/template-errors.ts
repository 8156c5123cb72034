import fs from 'node:fs';
import path from 'node:path';
import { TemplateError } from '../errors';

/** Names Nunjucks provides itself; never "undefined" in a template. */
const BUILT_IN = new Set([
  'range',
  'cycler',
  'joiner',
  'loop',
  'caller',
  'super',
  'true',
  'false',
  'none',
]);

const LOCATION = /\(([^()\n]+)\)(?: \[Line (\d+)(?:, Column (\d+))?\])?/g;

/**
 * Rewrites a Nunjucks error into words a template author can act on: the
 * template file (relative to the resources root), the line, and for an
 * undefined value the expression that was undefined. Nunjucks' own line
 * numbers are unreliable inside blocks and for failed calls, so the line is
 * found in the source where it can be.
 */
export function describeTemplateError(
  error: unknown,
  root: string,
  fallbackName: string,
  context?: object,
): TemplateError {
  if (error instanceof TemplateError) return error;
  if (error instanceof Error && error.cause instanceof TemplateError)
    return error.cause;
  const raw = error instanceof Error ? error.message : String(error);

  // Nested templates give one "(path) [Line, Column]" per level: the last
  // one is where the error is.
  const places = [...raw.matchAll(LOCATION)].filter(
    (m) => m[1] !== 'unknown path',
  );
  const place = places[places.length - 1];
  const file = place?.[1] ?? fallbackName;
  const name = path.isAbsolute(file) ? path.relative(root, file) : file;
  let line = place?.[2] ? Number(place[2]) : undefined;
  const source = readSource(path.resolve(root, name));
  let reason = (raw.split('\n').pop() ?? raw)
    .replace(/^\s*(Error: )?/, '')
    .trim();

  if (
    /attempted to output null or undefined value/.test(reason) &&
    source &&
    context
  ) {
    const found = firstUndefined(source, context);
    if (found) {
      reason = `"${found.expression}" is undefined`;
      line = found.line;
    }
  }
  const called = /Unable to call `([^`]+)`/.exec(reason)?.[1];
  if (called && source)
    line = lineOf(source, new RegExp(`\\b${escape(called)}\\s*\\(`)) ?? line;

  const where = line === undefined ? '' : ` line ${line}`;
  return new TemplateError(`template ${name}${where}: ${reason}`);
}

/**
 * The first output expression of a template whose variable path does not
 * resolve in the context, skipping names the template sets itself (loop
 * variables, `set`, macro parameters) and Nunjucks' built-ins.
 */
export function firstUndefined(
  source: string,
  context: object,
): { expression: string; line: number } | undefined {
  const local = localNames(source);
  const lines = source.split('\n');
  for (const [i, text] of lines.entries()) {
    for (const output of text.matchAll(/\{\{-?\s*(.*?)\s*-?\}\}/g)) {
      const variable = /^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*/.exec(
        output[1] ?? '',
      )?.[0];
      if (!variable) continue;
      const parts = variable.split('.');
      if (local.has(parts[0] ?? '') || BUILT_IN.has(parts[0] ?? '')) continue;
      let value: unknown = context;
      for (const [k, part] of parts.entries()) {
        if (value === null || value === undefined || !(part in Object(value))) {
          return { expression: parts.slice(0, k + 1).join('.'), line: i + 1 };
        }
        value = (value as Record<string, unknown>)[part];
      }
      if (value === null || value === undefined)
        return { expression: variable, line: i + 1 };
    }
  }
  return undefined;
}

function localNames(source: string): Set<string> {
  const names = new Set<string>();
  const tags =
    /\{%-?\s*(?:for\s+([\w\s,]+?)\s+in\b|set\s+([\w\s,]+?)\s*(?:=|%)|macro\s+\w+\s*\(([^)]*)\)|import\s+\S+\s+as\s+(\w+)|from\s+\S+\s+import\s+([\w\s,]+))/g;
  for (const match of source.matchAll(tags)) {
    for (const group of match.slice(1)) {
      for (const name of (group ?? '').split(/[\s,=]+/))
        if (/^\w+$/.test(name)) names.add(name);
    }
  }
  return names;
}

function lineOf(source: string, pattern: RegExp): number | undefined {
  const index = source.split('\n').findIndex((text) => pattern.test(text));
  return index === -1 ? undefined : index + 1;
}

function readSource(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    // The path came from Nunjucks itself; unreadable means it was removed
    // meanwhile, and the message without a line is all we can give.
    return undefined;
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
