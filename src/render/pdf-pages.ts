import {
  PDFArray,
  PDFDocument,
  PDFName,
  PDFRawStream,
  decodePDFRawStream,
} from '@cantoo/pdf-lib';
import type { PDFPage } from '@cantoo/pdf-lib';
import { TemplateError } from '../errors';

/** A PDF with its page count. */
export interface PdfResult {
  pdf: Buffer;
  pages: number;
}

/** One print of a document, as {@link joinPdfs} takes it. */
export interface PrintedPart {
  pdf: Uint8Array;
  /**
   * Painting operators of a page that shows only the header and footer
   * (see {@link pagePaint}); undefined when no page of this part can be
   * empty, so nothing is trimmed.
   */
  framePaintOps?: number | undefined;
}

/** What {@link joinPdfs} does besides joining. */
export interface JoinOptions {
  /** The document's Title metadata (the file name without `.pdf`). */
  title?: string;
  /**
   * The paper in points. Every page is cropped to exactly this size (see
   * {@link fitToPaper}); a page more than {@link PAPER_TOLERANCE_PT} off is
   * an error. Undefined leaves the pages as printed.
   */
  paperPt?: { width: number; height: number };
}

/**
 * How far, in points, a printed page may be off the paper. Chromium sizes
 * its PDF pages on a grid of 0.96 pt (1.28 CSS px): A4 prints as 595.92 ×
 * 841.92 pt instead of 595.28 × 841.89 pt.
 */
export const PAPER_TOLERANCE_PT = 2;

/** The number of pages of a PDF. */
export async function countPages(pdf: Uint8Array): Promise<number> {
  const doc = await PDFDocument.load(pdf, { updateMetadata: false });
  return doc.getPageCount();
}

/**
 * What the page content streams of a PDF paint: for each page, whether it
 * holds a marked-content sequence of the document's body (a tagged text or
 * image), and how many painting operators it has (fills, strokes, shadings,
 * XObjects, inline images). Text operators are not counted: the body's text
 * is always tagged, the header's and footer's never.
 */
export async function pagePaint(
  pdf: Uint8Array,
): Promise<{ tagged: boolean; paintOps: number }[]> {
  const doc = await PDFDocument.load(pdf, { updateMetadata: false });
  return doc.getPages().map(paintOf);
}

/**
 * Whether the last page of a PDF might hold nothing of the body: it has no
 * tagged content, so only counting its painting operators against a page
 * with the header and footer alone can tell.
 */
export async function lastPageMayBeEmpty(pdf: Uint8Array): Promise<boolean> {
  const paint = await pagePaint(pdf);
  const last = paint[paint.length - 1];
  return paint.length > 1 && last !== undefined && !last.tagged;
}

/**
 * Joins PDFs into one, in order, each part's pages kept together: copies
 * stay collated (A, B, A, B). Empty pages at the end of a part (Chromium
 * prints one after a forced break on the last element) are left out, so
 * they are not multiplied by the copies; a part keeps at least one page. A
 * list of one PDF repeated `copies` times is how identical copies are made
 * without printing them again.
 */
export async function joinPdfs(
  parts: readonly PrintedPart[],
  options: JoinOptions = {},
): Promise<PdfResult> {
  if (parts[0] === undefined)
    throw new RangeError('joinPdfs needs at least one PDF');
  // Even one part is copied into a new document: Chromium stamps the time
  // into its PDFs, and a repeated task must give the same bytes.
  const out = await PDFDocument.create({ updateMetadata: false });
  const loaded = new Map<Uint8Array, { doc: PDFDocument; kept: number[] }>();
  for (const part of parts) {
    let source = loaded.get(part.pdf);
    if (!source) {
      const doc = await PDFDocument.load(part.pdf, { updateMetadata: false });
      source = { doc, kept: keptPages(doc, part.framePaintOps) };
      loaded.set(part.pdf, source);
    }
    const pages = await out.copyPages(source.doc, source.kept);
    for (const page of pages) {
      if (options.paperPt) fitToPaper(page, options.paperPt, out);
      out.addPage(page);
    }
  }
  out.setProducer('render-farm');
  out.setCreator('render-farm');
  if (options.title !== undefined)
    out.setTitle(options.title, { showInWindowTitleBar: true });
  const bytes = await out.save();
  return { pdf: Buffer.from(bytes), pages: out.getPageCount() };
}

/**
 * One PDF repeated `copies` times, collated. Known limit: each copy's pages
 * are copied with their own fonts and images, so the file grows with the
 * copies; sharing the objects would need page-tree surgery pdf-lib lacks.
 */
export function repeatPdf(
  part: PrintedPart,
  copies: number,
  options: JoinOptions = {},
): Promise<PdfResult> {
  return joinPdfs(
    Array.from({ length: copies }, () => part),
    options,
  );
}

/**
 * Crops a page to the paper's exact size, keeping its top-left corner
 * where it is: Chromium's page is up to 0.96 pt wider and taller than the
 * paper (see {@link PAPER_TOLERANCE_PT}), and what is cut off is the edge
 * of the right and bottom margins. A page further off (a template that got
 * round the paper size) is refused.
 */
function fitToPaper(
  page: PDFPage,
  paper: { width: number; height: number },
  doc: PDFDocument,
): void {
  const box = page.getMediaBox();
  if (
    Math.abs(box.width - paper.width) > PAPER_TOLERANCE_PT ||
    Math.abs(box.height - paper.height) > PAPER_TOLERANCE_PT
  ) {
    throw new TemplateError(
      `page ${doc.getPageCount() + 1} printed at ${box.width.toFixed(2)} × ` +
        `${box.height.toFixed(2)} pt, expected the paper's ` +
        `${paper.width.toFixed(2)} × ${paper.height.toFixed(2)} pt`,
    );
  }
  const top = box.y + box.height;
  page.setMediaBox(box.x, top - paper.height, paper.width, paper.height);
}

/** The indices of a document's pages without its trailing empty ones. */
function keptPages(doc: PDFDocument, framePaintOps?: number): number[] {
  const indices = doc.getPageIndices();
  if (framePaintOps === undefined) return indices;
  if (!doc.catalog.has(PDFName.of('StructTreeRoot'))) return indices;
  while (
    indices.length > 1 &&
    isEmptyPage(doc.getPage(indices.length - 1), framePaintOps)
  )
    indices.pop();
  return indices;
}

/**
 * Whether a page has nothing of the document's body on it. Chromium prints
 * tagged PDFs: the body's text and images sit in marked-content sequences,
 * the header's and footer's do not. The body's other marks (SVG shapes,
 * borders, backgrounds) are not tagged either, but the header and footer
 * paint the same on every page: a page is empty when it has no tagged
 * content and no more painting operators than a page holding only the
 * header and footer (`framePaintOps`). An untagged PDF is never trimmed.
 */
function isEmptyPage(page: PDFPage, framePaintOps: number): boolean {
  const paint = paintOf(page);
  return !paint.tagged && paint.paintOps <= framePaintOps;
}

function paintOf(page: PDFPage): { tagged: boolean; paintOps: number } {
  const node = page.node;
  // A link or form field is the body's.
  if (node.lookup(PDFName.of('Annots')))
    return { tagged: true, paintOps: Infinity };
  const contents = node.Contents();
  if (!contents) return { tagged: false, paintOps: 0 };
  const streams =
    contents instanceof PDFArray
      ? contents.asArray().map((ref) => node.context.lookup(ref))
      : [contents];
  const total = { tagged: false, paintOps: 0 };
  for (const stream of streams) {
    // A stream pdf-lib cannot decode: assume it holds the body.
    if (!(stream instanceof PDFRawStream))
      return { tagged: true, paintOps: Infinity };
    const one = scanContent(decodePDFRawStream(stream).decode());
    total.tagged ||= one.tagged;
    total.paintOps += one.paintOps;
  }
  return total;
}

/** Operators that put marks on the page (PDF 32000-1, 8.5.3, 8.7.4.2, 8.8). */
const PAINT_OPERATORS = new Set([
  'f',
  'F',
  'f*',
  'B',
  'B*',
  'b',
  'b*',
  'S',
  's',
  'sh',
  'Do',
  'BI',
]);

const WHITESPACE = new Set([0x00, 0x09, 0x0a, 0x0c, 0x0d, 0x20]);
const DELIMITERS = new Set([...'()<>[]{}/%'].map((c) => c.charCodeAt(0)));

/**
 * Scans a content stream: counts its painting operators and notices a
 * marked-content sequence (BDC, BMC) other than an /Artifact. Strings,
 * dictionaries and inline image data are skipped, so their bytes are never
 * taken for operators.
 */
export function scanContent(bytes: Uint8Array): {
  tagged: boolean;
  paintOps: number;
} {
  let tagged = false;
  let paintOps = 0;
  // The first operand of the operator being read, if it was a name.
  let firstName: string | undefined;
  let operands = 0;
  let i = 0;
  const n = bytes.length;
  const at = (k: number) => bytes[k] ?? 0;
  while (i < n) {
    const c = at(i);
    if (WHITESPACE.has(c)) {
      i++;
    } else if (c === 0x25 /* % */) {
      while (i < n && at(i) !== 0x0a && at(i) !== 0x0d) i++;
    } else if (c === 0x28 /* ( */) {
      i = skipLiteralString(bytes, i);
      operands++;
    } else if (c === 0x3c /* < */ && at(i + 1) === 0x3c) {
      i = skipDictionary(bytes, i);
      operands++;
    } else if (c === 0x3c) {
      while (i < n && at(i) !== 0x3e) i++;
      i++;
      operands++;
    } else if (c === 0x2f /* / */) {
      const start = ++i;
      while (i < n && !WHITESPACE.has(at(i)) && !DELIMITERS.has(at(i))) i++;
      if (operands === 0)
        firstName = Buffer.from(bytes.subarray(start, i)).toString('latin1');
      operands++;
    } else if (DELIMITERS.has(c)) {
      // [ ] { } and a stray >: array brackets are not operands themselves.
      i++;
    } else {
      const start = i;
      while (i < n && !WHITESPACE.has(at(i)) && !DELIMITERS.has(at(i))) i++;
      const word = Buffer.from(bytes.subarray(start, i)).toString('latin1');
      if (/^[+-]?(\d+\.?\d*|\.\d+)$/.test(word)) {
        operands++;
        continue;
      }
      if (PAINT_OPERATORS.has(word)) paintOps++;
      if ((word === 'BDC' || word === 'BMC') && firstName !== 'Artifact')
        tagged = true;
      if (word === 'ID') i = skipInlineImage(bytes, i);
      operands = 0;
      firstName = undefined;
    }
  }
  return { tagged, paintOps };
}

function skipLiteralString(bytes: Uint8Array, from: number): number {
  let depth = 0;
  let i = from;
  while (i < bytes.length) {
    const c = bytes[i];
    if (c === 0x5c /* \ */) i += 2;
    else {
      if (c === 0x28) depth++;
      else if (c === 0x29 && --depth === 0) return i + 1;
      i++;
    }
  }
  return i;
}

function skipDictionary(bytes: Uint8Array, from: number): number {
  let depth = 0;
  let i = from;
  while (i < bytes.length) {
    const c = bytes[i];
    if (c === 0x28) {
      i = skipLiteralString(bytes, i);
    } else if (c === 0x3c && bytes[i + 1] === 0x3c) {
      depth++;
      i += 2;
    } else if (c === 0x3e && bytes[i + 1] === 0x3e) {
      i += 2;
      if (--depth === 0) return i;
    } else i++;
  }
  return i;
}

/** From just after `ID` to just after the `EI` that ends the image data. */
function skipInlineImage(bytes: Uint8Array, from: number): number {
  for (let i = from + 1; i + 1 < bytes.length; i++) {
    if (
      bytes[i] === 0x45 &&
      bytes[i + 1] === 0x49 &&
      WHITESPACE.has(bytes[i - 1] ?? 0) &&
      (i + 2 >= bytes.length || WHITESPACE.has(bytes[i + 2] ?? 0))
    )
      return i + 2;
  }
  return bytes.length;
}
