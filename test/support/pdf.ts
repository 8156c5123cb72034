import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Facts about a PDF, read with poppler's own tools. */
export interface PdfFacts {
  pages: number;
  /** Size of the first page, in points. */
  widthPt: number;
  heightPt: number;
  /** The Title metadata; empty when there is none. */
  title: string;
}

/** A4 and Letter in points (the PDF's pages are cropped to exactly these). */
export const PAPER_PT = {
  a4: { width: 595.28, height: 841.89 },
  letter: { width: 612, height: 792 },
} as const;

/** Writes a PDF buffer to a temporary file and returns its path. */
export function tempPdf(pdf: Buffer, name = 'doc.pdf'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-test-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, pdf);
  return file;
}

function fileOf(pdf: Buffer | string): string {
  return typeof pdf === 'string' ? pdf : tempPdf(pdf);
}

/** Page count, page size and title, from `pdfinfo`. */
export function pdfFacts(pdf: Buffer | string): PdfFacts {
  const info = execFileSync('pdfinfo', [fileOf(pdf)], { encoding: 'utf8' });
  const pages = Number(/^Pages:\s+(\d+)/m.exec(info)?.[1]);
  const size = /^Page size:\s+([\d.]+) x ([\d.]+) pts/m.exec(info);
  const title = /^Title:\s+(.*)$/m.exec(info)?.[1] ?? '';
  return {
    pages,
    widthPt: Number(size?.[1]),
    heightPt: Number(size?.[2]),
    title,
  };
}

/** The text of every page, from `pdftotext`, in page order. */
export function pageTexts(pdf: Buffer | string): string[] {
  const text = execFileSync('pdftotext', ['-layout', fileOf(pdf), '-'], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const pages = text.split('\f');
  if (pages[pages.length - 1]?.trim() === '') pages.pop();
  return pages;
}

/** The fonts embedded in a PDF, from `pdffonts` (one name a line). */
export function pdfFonts(pdf: Buffer | string): string[] {
  const out = execFileSync('pdffonts', [fileOf(pdf)], { encoding: 'utf8' });
  return out
    .split('\n')
    .slice(2)
    .map((line) => line.split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/** A word's bounding boxes on each page, from `pdftotext -bbox`. */
export function wordBoxes(
  pdf: Buffer | string,
  word: string,
): ({ page: number } & Box)[] {
  return placedWords(fileOf(pdf))
    .filter((placed) => placed.word === word)
    .map(({ page, xMin, yMin, xMax, yMax }) => ({
      page,
      xMin,
      yMin,
      xMax,
      yMax,
    }));
}

/** A rectangle on a page, in PDF points from the top left corner. */
export interface Box {
  xMin: number;
  yMin: number;
  xMax: number;
  yMax: number;
}

/** A word printed on a page, with its box in points. */
export interface PlacedWord extends Box {
  /** Page number, from 1. */
  page: number;
  word: string;
}

/** Every word of a PDF file with its box, from one `pdftotext -bbox`. */
export function placedWords(file: string): PlacedWord[] {
  const html = execFileSync('pdftotext', ['-bbox', file, '-'], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const words: PlacedWord[] = [];
  let page = 0;
  for (const line of html.split('\n')) {
    if (line.includes('<page ')) page++;
    const m =
      /<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*)<\/word>/.exec(
        line,
      );
    if (m) {
      words.push({
        page,
        word: unescapeHtml(m[5] ?? ''),
        xMin: Number(m[1]),
        yMin: Number(m[2]),
        xMax: Number(m[3]),
        yMax: Number(m[4]),
      });
    }
  }
  return words;
}

function unescapeHtml(text: string): string {
  return text
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&amp;', '&');
}

/**
 * Rasterises pages of a PDF with `pdftoppm -png` at `dpi` dots per inch,
 * from the first page to `lastPage` (default: all). Returns the PNG files'
 * bytes in page order.
 */
export function rasterisePdf(
  pdf: Buffer | string,
  dpi: number,
  lastPage?: number,
): Buffer[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'render-farm-png-'));
  try {
    const last = lastPage === undefined ? [] : ['-l', String(lastPage)];
    execFileSync('pdftoppm', [
      '-png',
      '-r',
      String(dpi),
      ...last,
      fileOf(pdf),
      path.join(dir, 'page'),
    ]);
    // pdftoppm pads page numbers to the width of the page count: page-1 or page-01.
    return fs
      .readdirSync(dir)
      .filter((name) => name.endsWith('.png'))
      .sort((a, b) => pageNumber(a) - pageNumber(b))
      .map((name) => fs.readFileSync(path.join(dir, name)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function pageNumber(file: string): number {
  return Number(/-(\d+)\.png$/.exec(file)?.[1] ?? 0);
}

/** Every page's size in points, from `pdfinfo -f 1 -l N`. */
export function pageSizes(
  pdf: Buffer | string,
): { widthPt: number; heightPt: number }[] {
  const info = execFileSync('pdfinfo', ['-f', '1', '-l', '9999', fileOf(pdf)], {
    encoding: 'utf8',
  });
  return [
    ...info.matchAll(/^Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts/gm),
  ].map((m) => ({ widthPt: Number(m[1]), heightPt: Number(m[2]) }));
}
