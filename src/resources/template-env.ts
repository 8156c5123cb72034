import fs from 'node:fs';
import path from 'node:path';
import nunjucks from 'nunjucks';
import { TemplateError } from '../errors';
import { describeTemplateError } from './template-errors';

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
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel))
    throw outside(name);
  if (path.isAbsolute(name) && !name.startsWith(root + path.sep))
    throw outside(name);
  return full;
}

function outside(name: string): TemplateError {
  return new TemplateError(
    `template not found: ${name} is outside the template root`,
  );
}

/** What {@link createTemplateEnv} takes. */
export interface TemplateEnvOptions {
  /** Folder that holds the resource views and `_layout/`. */
  root: string;
  /** Re-read templates on every render (preview); default false. */
  watch?: boolean;
}

/**
 * The Nunjucks environment of the farm: autoescaping on, an undefined
 * top-level name an error wherever it is used and an undefined value an
 * error when printed, templates only from the root.
 */
export function createTemplateEnv(
  options: TemplateEnvOptions,
): nunjucks.Environment {
  const loader = new RootLoader(
    path.resolve(options.root),
    options.watch ?? false,
  );
  const env = new nunjucks.Environment(loader, {
    autoescape: true,
    throwOnUndefined: true,
    trimBlocks: true,
    lstripBlocks: true,
  });
  // Not in the type definitions, but a documented part of Environment.
  const withGlobals = env as unknown as { globals: Record<string, unknown> };
  withGlobals.globals = strictGlobals(withGlobals.globals);
  return env;
}

/**
 * Thrown when a template looks up a name that is neither in its context
 * nor a global; {@link describeTemplateError} adds the file and line.
 */
export class UndefinedNameError extends Error {
  constructor(readonly undefinedName: string) {
    super(`"${undefinedName}" is undefined`);
  }
}

/**
 * Wraps an environment's globals so that every lookup of an undefined
 * top-level name throws. Nunjucks looks a name up in the template's frame
 * (loop variables, `set`, macro arguments) first, then takes it from the
 * globals when `name in globals` and the context does not have it, else
 * from the context. Claiming every name and throwing for the ones that are
 * no real global makes a misspelt name an error wherever it is used (in
 * `~`, arithmetic, filters, `for`, `if`), not only when it is printed with
 * `{{ }}` (throwOnUndefined). The price: `is defined` and `default` cannot
 * test a top-level name either; they still work on attributes
 * (`order.total is defined`).
 */
function strictGlobals(
  globals: Record<string, unknown>,
): Record<string, unknown> {
  return new Proxy(globals, {
    has: (target, name) => typeof name === 'string' || name in target,
    get: (target, name, receiver) => {
      if (typeof name !== 'string' || name in target)
        return Reflect.get(target, name, receiver) as unknown;
      // A macro asks for `caller` to learn whether it was {% call %}ed.
      if (name === 'caller') return undefined;
      throw new UndefinedNameError(name);
    },
  });
}

export { describeTemplateError } from './template-errors';

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
    throw describeTemplateError(error, root, name, context);
  }
}
