import fs from 'node:fs';
import path from 'node:path';
import { TemplateError } from '../errors';
import { partLogger } from '../logger';

const templateLogger = partLogger('template');

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

/**
 * Nunjucks' "(path) [Line N, Column M]" marks, one a line, each at the
 * start of its line (after "Template render error: "): a parenthesis inside
 * the error's own text, like "(reading 'join')", is no path.
 */
const LOCATION =
  /^\s*(?:Template render error: )?\(([^()\n]+)\)(?: \[Line (\d+)(?:, Column (\d+))?\])?\s*$/gm;

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
  let name = path.isAbsolute(file) ? path.relative(root, file) : file;
  let line = place?.[2] ? Number(place[2]) : undefined;
  let source = readSource(path.resolve(root, name));
  let reason = (raw.split('\n').pop() ?? raw)
    .replace(/^\s*(Error: )?/, '')
    .trim();

  // A top-level name that is nowhere (see UndefinedNameError): Nunjucks
  // knows no line for it, so it is looked for in the template's tags.
  const missing = /^"([A-Za-z_$][\w$]*)" is undefined$/.exec(reason)?.[1];
  if (missing) {
    const pattern = new RegExp(`(?<![.\\w$])${escape(missing)}(?![\\w$])`);
    let found = source ? lineInTags(source, pattern) : undefined;
    if (found === undefined && name !== fallbackName) {
      // Reported in the layout it extends, but written in the resource's
      // own template (a block).
      const own = readSource(path.resolve(root, fallbackName));
      found = own ? lineInTags(own, pattern) : undefined;
      if (found !== undefined) [name, source] = [fallbackName, own];
    }
    // Nunjucks names the extending template for an error in the layout it
    // extends: follow its extends, a few levels at most.
    for (let depth = 0; found === undefined && source && depth < 5; depth++) {
      const parent = /\{%-?\s*extends\s+["']([^"']+)["']/.exec(source)?.[1];
      if (!parent) break;
      const parentName = parent.startsWith('.')
        ? path.join(path.dirname(name), parent)
        : parent;
      source = readSource(path.resolve(root, parentName));
      found = source ? lineInTags(source, pattern) : undefined;
      if (found !== undefined) name = parentName;
    }
    line = found;
  }
  // A TypeError inside a filter or call: the property it read is the
  // filter's or method's name more often than not.
  const read = /\(reading '([^']+)'\)/.exec(reason)?.[1];
  if (read && source) {
    const word = escape(read);
    line =
      lineInTags(source, new RegExp(`\\|\\s*${word}\\b`)) ??
      lineInTags(source, new RegExp(`\\.${word}\\b`)) ??
      lineInTags(source, new RegExp(`\\b${word}\\s*\\(`)) ??
      line;
  }

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

/**
 * The line of the first match of `pattern` inside a `{{ }}` or `{% %}` tag
 * of a template, outside string literals; undefined when there is none.
 */
export function lineInTags(
  source: string,
  pattern: RegExp,
): number | undefined {
  for (const tag of source.matchAll(/\{([{%])[\s\S]*?[}%]\}/g)) {
    // Strings blanked out, same length, so offsets still hold.
    const code = tag[0].replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, (s) =>
      ' '.repeat(s.length),
    );
    const at = pattern.exec(code);
    if (at) {
      const offset = (tag.index ?? 0) + at.index;
      return source.slice(0, offset).split('\n').length;
    }
  }
  return undefined;
}

function lineOf(source: string, pattern: RegExp): number | undefined {
  const index = source.split('\n').findIndex((text) => pattern.test(text));
  return index === -1 ? undefined : index + 1;
}

function readSource(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    // The path came from Nunjucks itself; unreadable means it was removed
    // meanwhile, and the message without a line is all we can give.
    templateLogger.debug('template source not readable for the error line', {
      file,
      error: error instanceof Error ? error.message : String(error),
    });
    return undefined;
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
