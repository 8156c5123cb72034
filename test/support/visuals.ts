import fs from 'node:fs';
import path from 'node:path';
import pixelmatch from 'pixelmatch';
import { PNG } from 'pngjs';
import type { Renderer } from '../../src/render/renderer';
import type { Catalogue } from '../../src/resources/catalogue';
import type { OptionValue } from '../../src/resources/manifest';
import { renderCatalogueJob } from './catalogue-render';
import { rasterisePdf } from './pdf';
import type { Box } from './pdf';

export { placedWords } from './pdf';
export type { Box, PlacedWord } from './pdf';

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

/** Pages of a resource's default PDF that are compared. */
export const VISUAL_PAGES = 2;

/** Largest share of differing pixels that still passes: 0.5%. */
export const VISUAL_TOLERANCE = 0.005;

/** The command that rewrites the approved images. */
export const APPROVE_COMMAND =
  'npx tsc -p . && node dist/scripts/approve-visuals.js';

/** One approved rendering: a view with some options, and its pages. */
export interface VisualCase {
  /**
   * Stem of the image files: the view for its defaults, else the view and
   * the options, `parity-cards.back_colour-red`.
   */
  name: string;
  view: string;
  /** Options over the defaults; A4 always. */
  options: Record<string, OptionValue>;
  /**
   * Pages compared, from 1. Undefined for the defaults: the first
   * {@link VISUAL_PAGES}, as many as the PDF has.
   */
  pages?: number[];
}

/**
 * Option values that change how a resource looks, beyond its defaults,
 * with the pages that show the change (a black back is page 2).
 */
const VARIANTS: Omit<VisualCase, 'name'>[] = [
  { view: 'binary-cards', options: { black_back: true }, pages: [2] },
  {
    view: 'binary-cards-small',
    options: { number_bits: '12', black_back: true },
    pages: [1, 2],
  },
  { view: 'binary-to-alphabet', options: { worksheet_version: 'teacher' } },
  { view: 'binary-windows', options: { value_type: 'lightbulb' } },
  { view: 'modulo-clock', options: { modulo_number: '10' } },
  ...['blue', 'green', 'purple', 'red'].map((colour) => ({
    view: 'parity-cards',
    options: { back_colour: colour },
    pages: [2],
  })),
  { view: 'piano-keys', options: { highlight: 'E' } },
  { view: 'sorting-network', options: { prefilled_values: 'medium' } },
  ...['riding_hood', 'butterfly'].map((type) => ({
    view: 'sorting-network-cards',
    options: { type },
    pages: [1, 2, 3],
  })),
  { view: 'sorting-network-cards', options: { type: 'maori_colours' } },
  { view: 'train-stations', options: { tracks: 'twisted' } },
  { view: 'treasure-hunt', options: { art: 'bw' }, pages: [1] },
];

/** Every approved rendering: each view's defaults, then the variants. */
export function visualCases(catalogue: Catalogue): VisualCase[] {
  const defaults = catalogue
    .list()
    .map((m): VisualCase => ({ name: m.view, view: m.view, options: {} }));
  const variants = VARIANTS.map((v): VisualCase => ({
    ...v,
    name: [
      v.view,
      ...Object.entries(v.options).map(([k, value]) => `${k}-${value}`),
    ].join('.'),
  }));
  return [...defaults, ...variants];
}

/** `test/approved/<case name>-<n>.png`, n counting pages from 1. */
export function approvedPath(name: string, page: number): string {
  return path.join(APPROVED_DIR, `${name}-${page}.png`);
}

/**
 * The compared pages of a case's PDF (A4, no header text, a fixed task id
 * so the random numbers never change), as PNGs at {@link VISUAL_DPI}, with
 * their page numbers.
 */
export async function renderVisual(
  renderer: Renderer,
  catalogue: Catalogue,
  visual: VisualCase,
): Promise<{ page: number; png: Buffer }[]> {
  const out = await renderCatalogueJob(renderer, catalogue, {
    view: visual.view,
    options: { ...visual.options, paper_size: 'a4' },
    taskId: 'visual-regression',
  });
  const last = visual.pages ? Math.max(...visual.pages) : VISUAL_PAGES;
  const pngs = rasterisePdf(out.pdf, VISUAL_DPI, last);
  const pages = visual.pages ?? pngs.map((_, i) => i + 1);
  return pages.map((page) => {
    const png = pngs[page - 1];
    if (!png)
      throw new Error(`${visual.name}: the PDF has no page ${page} to compare`);
    return { page, png };
  });
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

/** Writes the approved images of a case, removing its stale pages. */
export function writeApproved(
  name: string,
  pages: { page: number; png: Buffer }[],
): string[] {
  fs.mkdirSync(APPROVED_DIR, { recursive: true });
  for (const file of approvedFiles()) {
    if (caseOfFile(file) === name) fs.rmSync(path.join(APPROVED_DIR, file));
  }
  return pages.map(({ page, png }) => {
    const file = approvedPath(name, page);
    fs.writeFileSync(file, png);
    return file;
  });
}

/** The PNG files of the approved folder. */
export function approvedFiles(): string[] {
  if (!fs.existsSync(APPROVED_DIR)) return [];
  return fs.readdirSync(APPROVED_DIR).filter((f) => f.endsWith('.png'));
}

/** The case name of an approved file name: `x.y-2.png` is case `x.y`. */
export function caseOfFile(file: string): string | undefined {
  return /^(.+)-\d+\.png$/.exec(file)?.[1];
}

/** An RGB colour, each channel 0 to 255. */
export type Rgb = [number, number, number];

/** One rasterised page: its RGBA pixels and the resolution they were made at. */
export interface Raster {
  width: number;
  height: number;
  /** Dots per inch of the rasterisation. */
  dpi: number;
  data: Buffer;
}

/**
 * Rasterises pages of a PDF (a file or its bytes) with `pdftoppm` at `dpi`
 * dots per inch, up to `lastPage` (default: all), and decodes them.
 */
export function rasterPages(
  pdf: Buffer | string,
  dpi: number,
  lastPage?: number,
): Raster[] {
  return rasterisePdf(pdf, dpi, lastPage).map((png) => {
    const image = PNG.sync.read(png);
    return {
      width: image.width,
      height: image.height,
      dpi,
      data: image.data,
    };
  });
}

/** The colour of the pixel under a point given in PDF points. */
export function colourAt(raster: Raster, xPt: number, yPt: number): Rgb {
  const x = clamp(Math.floor((xPt * raster.dpi) / 72), raster.width);
  const y = clamp(Math.floor((yPt * raster.dpi) / 72), raster.height);
  const i = (y * raster.width + x) * 4;
  return [
    raster.data[i] ?? 0,
    raster.data[i + 1] ?? 0,
    raster.data[i + 2] ?? 0,
  ];
}

/**
 * How many pixels inside `box` (points; default the whole page) pass
 * `test`, and how many there are.
 */
export function countPixels(
  raster: Raster,
  test: (rgb: Rgb) => boolean,
  box?: Box,
): { matching: number; total: number } {
  const scale = raster.dpi / 72;
  const x0 = box ? clamp(Math.ceil(box.xMin * scale), raster.width) : 0;
  const y0 = box ? clamp(Math.ceil(box.yMin * scale), raster.height) : 0;
  const x1 = box
    ? clamp(Math.floor(box.xMax * scale), raster.width)
    : raster.width - 1;
  const y1 = box
    ? clamp(Math.floor(box.yMax * scale), raster.height)
    : raster.height - 1;
  let matching = 0;
  let total = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const i = (y * raster.width + x) * 4;
      total++;
      const rgb: Rgb = [
        raster.data[i] ?? 0,
        raster.data[i + 1] ?? 0,
        raster.data[i + 2] ?? 0,
      ];
      if (test(rgb)) matching++;
    }
  }
  return { matching, total };
}

/** Share (0 to 1) of the pixels inside `box` that pass `test`. */
export function shareOfPixels(
  raster: Raster,
  test: (rgb: Rgb) => boolean,
  box?: Box,
): number {
  const { matching, total } = countPixels(raster, test, box);
  return total === 0 ? 0 : matching / total;
}

/** Millimetres to points. */
export function mmToPt(mm: number): number {
  return (mm * 72) / 25.4;
}

/** Size of `.page` in millimetres (`--page-width`, `--page-height`). */
const PAGE_MM = {
  a4: { width: 186, height: 262 },
  letter: { width: 191.9, height: 244.4 },
} as const;

/**
 * The content box of a page: where resource-templates/_layout/base.css puts
 * a `.page` (12 mm from the left, 16 mm from the top, 186 x 262 mm on A4,
 * 191.9 x 244.4 mm on Letter), shrunk on every side by `insetMm` (default
 * 0). The header and footer are outside it.
 */
export function contentBox(paper: 'a4' | 'letter', insetMm = 0): Box {
  const size = PAGE_MM[paper];
  return {
    xMin: mmToPt(12 + insetMm),
    yMin: mmToPt(16 + insetMm),
    xMax: mmToPt(12 + size.width - insetMm),
    yMax: mmToPt(16 + size.height - insetMm),
  };
}

/** A colour far from grey: its channels spread by more than 40. */
export function isSaturated([r, g, b]: Rgb): boolean {
  return Math.max(r, g, b) - Math.min(r, g, b) > 40;
}

/** A colour close to black (every channel below 70). */
export function isDark([r, g, b]: Rgb): boolean {
  return Math.max(r, g, b) < 70;
}

/** Whether two colours differ by at most `tolerance` in every channel. */
export function near(a: Rgb, b: Rgb, tolerance = 12): boolean {
  return a.every((v, i) => Math.abs(v - (b[i] ?? 0)) <= tolerance);
}

/** `#rrggbb` as an RGB triple. */
export function hexColour(hex: string): Rgb {
  const n = Number.parseInt(hex.replace(/^#/, ''), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function clamp(value: number, size: number): number {
  return Math.min(Math.max(value, 0), size - 1);
}
