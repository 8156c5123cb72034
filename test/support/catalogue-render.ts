import winston from 'winston';
import { loadConfig } from '../../src/config';
import { Renderer } from '../../src/render/renderer';
import type { RenderOutput } from '../../src/render/renderer';
import { Catalogue } from '../../src/resources/catalogue';
import type { Manifest, OptionValue } from '../../src/resources/manifest';
import { checkTask } from '../../src/resources/task';
import type { RenderJob } from '../../src/resources/task';
import { RESOURCES_DIR, STATIC_DIR, taskFor } from './resources';

/** The real catalogue of `resource-templates/`. */
export function loadCatalogue(): Catalogue {
  return Catalogue.load(RESOURCES_DIR);
}

/**
 * A renderer over the real catalogue and `static/`, logging nothing, with
 * `pages` concurrent renders (2 suits a 2-core machine).
 */
export function catalogueRenderer(catalogue: Catalogue, pages = 2): Renderer {
  return new Renderer(
    {
      chromiumPath: loadConfig().chromiumPath,
      staticDirs: [STATIC_DIR],
      timeoutMs: 60_000,
      assetTimeoutMs: 5_000,
      pages,
      browserMaxRenders: 10_000,
      browserMaxAgeMs: 3_600_000,
      browserMaxMemoryBytes: 4 * 1024 ** 3,
    },
    catalogue,
    winston.createLogger({ silent: true }),
  );
}

/** What a catalogue test asks of one render. */
export interface CatalogueJob {
  view: string;
  options?: Record<string, OptionValue>;
  headerText?: string;
  /** The task's `resource_name`; default the manifest title. */
  resourceName?: string;
  copies?: number;
  taskId?: string;
}

/** Every declared option at its default, `paper_size` included. */
export function defaultOptions(
  manifest: Manifest,
): Record<string, OptionValue> {
  return Object.fromEntries(
    Object.entries(manifest.options).map(([name, spec]) => [
      name,
      spec.default,
    ]),
  );
}

/** A checked job for a view: defaults, overridden by the given options. */
export function catalogueJob(
  catalogue: Catalogue,
  job: CatalogueJob,
): RenderJob {
  const manifest = catalogue.get(job.view);
  if (!manifest) throw new Error(`no resource view ${job.view}`);
  const task = taskFor(job.view, {
    resource_name: job.resourceName ?? manifest.title,
    header_text: job.headerText ?? '',
    copies: job.copies ?? 1,
    ...defaultOptions(manifest),
    ...job.options,
  });
  return checkTask(task, job.taskId ?? `test-${job.view}`, catalogue, {
    maxCopies: 50,
    maxTaskBytes: 1_000_000,
  });
}

/** Renders a job of the real catalogue. */
export function renderCatalogueJob(
  renderer: Renderer,
  catalogue: Catalogue,
  job: CatalogueJob,
): Promise<RenderOutput> {
  return renderer.render(catalogueJob(catalogue, job));
}

/** Every combination of a manifest's option values, in declaration order. */
export function optionCombinations(
  manifest: Manifest,
): Record<string, OptionValue>[] {
  let combos: Record<string, OptionValue>[] = [{}];
  for (const [name, spec] of Object.entries(manifest.options)) {
    combos = combos.flatMap((combo) =>
      spec.values.map((value) => ({ ...combo, [name]: value })),
    );
  }
  return combos;
}
