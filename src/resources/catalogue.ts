import fs from 'node:fs';
import path from 'node:path';
import type nunjucks from 'nunjucks';
import { TemplateError, errorMessage } from '../errors';
import { MANIFEST_FILE, loadManifest } from './manifest';
import type { Manifest } from './manifest';
import { createTemplateEnv, describeTemplateError } from './template-env';

/** Folder of the shared layout inside the resources root. */
export const LAYOUT_DIR = '_layout';

/** What {@link Catalogue.load} takes. */
export interface CatalogueLoadOptions {
  /** Re-read templates on every render (preview); default false. */
  watch?: boolean;
  /**
   * Leave out a view whose manifest or template is broken and keep its
   * error in {@link Catalogue.problems}, instead of throwing (preview);
   * default false. A broken shared layout still throws: every view needs it.
   */
  tolerant?: boolean;
}

/**
 * Every resource view of a resources root, with its checked manifest, and
 * the Nunjucks environment that fills their templates.
 */
export class Catalogue {
  readonly root: string;
  readonly env: nunjucks.Environment;
  /**
   * Views left out by a tolerant load, each with its error (naming the
   * file and, for a template, the line). Empty otherwise.
   */
  readonly problems: ReadonlyMap<string, string>;
  private readonly manifests: Map<string, Manifest>;

  private constructor(
    root: string,
    env: nunjucks.Environment,
    manifests: Manifest[],
    problems: Map<string, string>,
  ) {
    this.root = root;
    this.env = env;
    this.manifests = new Map(manifests.map((m) => [m.view, m]));
    this.problems = problems;
  }

  /**
   * Loads and checks every view under `root`: each manifest is validated and
   * each template compiled, so a broken resource stops start-up with a
   * message naming its file instead of failing tasks one by one (or, with
   * `tolerant`, is listed in {@link Catalogue.problems}).
   */
  static load(root: string, options: CatalogueLoadOptions = {}): Catalogue {
    const absolute = path.resolve(root);
    if (!fs.existsSync(absolute)) {
      throw new TemplateError(`resources folder ${absolute} does not exist`);
    }
    const env = createTemplateEnv({ root: absolute, watch: options.watch });
    const manifests: Manifest[] = [];
    const problems = new Map<string, string>();
    for (const view of listViews(absolute)) {
      try {
        const manifest = loadManifest(absolute, view);
        compile(env, absolute, manifest.templateName);
        manifests.push(manifest);
      } catch (error) {
        if (!options.tolerant) throw error;
        problems.set(view, errorMessage(error));
      }
    }
    compile(env, absolute, `${LAYOUT_DIR}/header.njk`);
    compile(env, absolute, `${LAYOUT_DIR}/footer.njk`);
    return new Catalogue(absolute, env, manifests, problems);
  }

  /** The manifest of a view, or undefined when there is no such view. */
  get(view: string): Manifest | undefined {
    return this.manifests.get(view);
  }

  /** All manifests, sorted by view name. */
  list(): Manifest[] {
    return [...this.manifests.values()].sort((a, b) =>
      a.view.localeCompare(b.view),
    );
  }
}

/** View folders: those holding a manifest, not starting with `_` or `.`. */
function listViews(root: string): string[] {
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !/^[_.]/.test(entry.name))
    .filter((entry) =>
      fs.existsSync(path.join(root, entry.name, MANIFEST_FILE)),
    )
    .map((entry) => entry.name)
    .sort();
}

function compile(env: nunjucks.Environment, root: string, name: string): void {
  try {
    env.getTemplate(name, true);
  } catch (error) {
    throw describeTemplateError(error, root, name);
  }
}
