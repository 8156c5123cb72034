import fs from 'node:fs';
import path from 'node:path';
import pixelmatch from 'pixelmatch';
import { PNG } from 'pngjs';
import type { Renderer } from '../../src/render/renderer';
import type { Catalogue } from '../../src/resources/catalogue';
import { renderCatalogueJob } from './catalogue-render';
import { rasterisePdf } from './pdf';

/** Folder of the approved images, in the source tree (not dist/). */
export const APPROVED_DIR = path.resolve(
  __dirname,
  '..',
  '..',
  '..',
  'test',
  'approved',
);

/** Resolution of the compared images, in dots per inch. */
export const VISUAL_DPI = 30;

/** Pages of each resource that are compared. */
export const VISUAL_PAGES = 2;

/** Largest share of differing pixels that still passes: 0.5%. */
export const VISUAL_TOLERANCE = 0.005;

/** The command that rewrites the approved images. */
export const APPROVE_COMMAND =
  'npx tsc -p . && node dist/scripts/approve-visuals.js';

/** `test/approved/<view>-<n>.png`, n counting pages from 1. */
export function approvedPath(view: string, page: number): string {
  return path.join(APPROVED_DIR, `${view}-${page}.png`);
}

/**
 * The first pages of a view's default PDF (default options, A4, no header
 * text, a fixed task id so the random numbers never change), as PNGs.
 */
export async function renderVisual(
  renderer: Renderer,
  catalogue: Catalogue,
  view: string,
): Promise<Buffer[]> {
  const out = await renderCatalogueJob(renderer, catalogue, {
    view,
    options: { paper_size: 'a4' },
    taskId: 'visual-regression',
  });
  return rasterisePdf(out.pdf, VISUAL_DPI, VISUAL_PAGES);
}

/** How far a rendered PNG is from an approved one. */
export interface VisualDiff {
  sameSize: boolean;
  /** Differing pixels over all pixels, 0 to 1. */
  share: number;
}

/** Compares two PNGs with pixelmatch (its default colour threshold). */
export function compareImages(actual: Buffer, approved: Buffer): VisualDiff {
  const a = PNG.sync.read(actual);
  const b = PNG.sync.read(approved);
  if (a.width !== b.width || a.height !== b.height)
    return { sameSize: false, share: 1 };
  const differing = pixelmatch(a.data, b.data, null, a.width, a.height, {
    threshold: 0.1,
  });
  return { sameSize: true, share: differing / (a.width * a.height) };
}

/** Writes the approved images of a view, removing stale pages. */
export function writeApproved(view: string, pngs: Buffer[]): void {
  fs.mkdirSync(APPROVED_DIR, { recursive: true });
  for (const name of fs.readdirSync(APPROVED_DIR)) {
    if (new RegExp(`^${view}-\\d+\\.png$`).test(name))
      fs.rmSync(path.join(APPROVED_DIR, name));
  }
  pngs.forEach((png, i) => fs.writeFileSync(approvedPath(view, i + 1), png));
}
