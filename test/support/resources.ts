import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The project's real resources root. */
export const RESOURCES_DIR = path.resolve(
  __dirname,
  '..',
  '..',
  '..',
  'resource-templates',
);

/** The project's static folder. */
export const STATIC_DIR = path.resolve(__dirname, '..', '..', '..', 'static');

/** One resource view written by a test. */
export interface FixtureView {
  manifest?: Record<string, unknown>;
  /** The template body; wrapped in the base layout unless `raw`. */
  template: string;
  style?: string;
  /** Write the template as given, without extending the base layout. */
  raw?: boolean;
  /** Extra files of the view folder, by relative path. */
  files?: Record<string, string>;
}

/**
 * A temporary resources root holding the real shared layout and the given
 * views, for tests that need templates of their own.
 */
export function makeResourceRoot(views: Record<string, FixtureView>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-resources-'));
  fs.cpSync(path.join(RESOURCES_DIR, '_layout'), path.join(root, '_layout'), {
    recursive: true,
  });
  for (const [view, spec] of Object.entries(views)) {
    const dir = path.join(root, view);
    fs.mkdirSync(dir, { recursive: true });
    const manifest = { title: view, ...(spec.manifest ?? {}) };
    fs.writeFileSync(
      path.join(dir, 'manifest.json'),
      JSON.stringify(manifest, null, 2),
    );
    const body = spec.raw
      ? spec.template
      : `{% extends "_layout/base.njk" %}{% block content %}${spec.template}{% endblock %}`;
    fs.writeFileSync(path.join(dir, 'template.njk'), body);
    fs.writeFileSync(path.join(dir, 'style.css'), spec.style ?? '');
    for (const [name, text] of Object.entries(spec.files ?? {})) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), text);
    }
  }
  return root;
}

/** A render task for a view, with the contract's required fields filled. */
export function taskFor(
  view: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    kind: 'task#render',
    resource_slug: view,
    resource_name: view,
    resource_view: view,
    url: `https://example.org/resources/${view}`,
    header_text: '',
    copies: 1,
    paper_size: 'a4',
    ...extra,
  };
}
