import {
  PDFArray,
  PDFDocument,
  PDFName,
  PDFRawStream,
  decodePDFRawStream,
} from '@cantoo/pdf-lib';
import type { PDFPage } from '@cantoo/pdf-lib';

/** A PDF with its page count. */
export interface PdfResult {
  pdf: Buffer;
  pages: number;
}

/** The number of pages of a PDF. */
export async function countPages(pdf: Uint8Array): Promise<number> {
  const doc = await PDFDocument.load(pdf, { updateMetadata: false });
  return doc.getPageCount();
}

/**
 * Joins PDFs into one, in order, each part's pages kept together: copies
 * stay collated (A, B, A, B). Empty pages at the end of a part (Chromium
 * prints one after a forced break on the last element) are left out, so
 * they are not multiplied by the copies; a part keeps at least one page. A list of one PDF repeated `copies` times is
 * how identical copies are made without printing them again.
 */
export async function joinPdfs(
  parts: readonly Uint8Array[],
): Promise<PdfResult> {
  const first = parts[0];
  if (first === undefined)
    throw new RangeError('joinPdfs needs at least one PDF');
  // Even one part is copied into a new document: Chromium stamps the time
  // into its PDFs, and a repeated task must give the same bytes.
  const out = await PDFDocument.create({ updateMetadata: false });
  const loaded = new Map<Uint8Array, PDFDocument>();
  for (const part of parts) {
    let source = loaded.get(part);
    if (!source) {
      source = await PDFDocument.load(part, { updateMetadata: false });
      loaded.set(part, source);
    }
    const pages = await out.copyPages(source, keptPages(source));
    for (const page of pages) out.addPage(page);
  }
  out.setProducer('render-farm');
  out.setCreator('render-farm');
  const bytes = await out.save();
  return { pdf: Buffer.from(bytes), pages: out.getPageCount() };
}

/** The indices of a document's pages without its trailing empty ones. */
function keptPages(doc: PDFDocument): number[] {
  const indices = doc.getPageIndices();
  if (!doc.catalog.has(PDFName.of('StructTreeRoot'))) return indices;
  while (indices.length > 1 && isEmptyPage(doc.getPage(indices.length - 1)))
    indices.pop();
  return indices;
}

/**
 * Whether a page has nothing of the document's body on it. Chromium prints
 * tagged PDFs: everything the body draws (text, borders, backgrounds,
 * images) sits in marked-content sequences, while the header and footer
 * that every page gets do not. So a page without a marked-content operator
 * shows only the header and footer. An untagged PDF is never trimmed.
 */
function isEmptyPage(page: PDFPage): boolean {
  const node = page.node;
  if (node.lookup(PDFName.of('Annots'))) return false;
  const contents = node.Contents();
  if (!contents) return true;
  const streams =
    contents instanceof PDFArray
      ? contents.asArray().map((ref) => node.context.lookup(ref))
      : [contents];
  for (const stream of streams) {
    if (!(stream instanceof PDFRawStream)) return false;
    const text = Buffer.from(decodePDFRawStream(stream).decode()).toString(
      'latin1',
    );
    if (/\b(BDC|BMC)\b/.test(text)) return false;
  }
  return true;
}

/**
 * One PDF repeated `copies` times, collated. Known limit: each copy's pages
 * are copied with their own fonts and images, so the file grows with the
 * copies; sharing the objects would need page-tree surgery pdf-lib lacks.
 */
export function repeatPdf(pdf: Uint8Array, copies: number): Promise<PdfResult> {
  return joinPdfs(Array.from({ length: copies }, () => pdf));
}
