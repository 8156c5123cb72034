import { PDFDocument } from '@cantoo/pdf-lib';

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
 * stay collated (A, B, A, B). A list of one PDF repeated `copies` times is
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
    const pages = await out.copyPages(source, source.getPageIndices());
    for (const page of pages) out.addPage(page);
  }
  out.setProducer('render-farm');
  out.setCreator('render-farm');
  const bytes = await out.save();
  return { pdf: Buffer.from(bytes), pages: out.getPageCount() };
}

/**
 * One PDF repeated `copies` times, collated. Known limit: each copy's pages
 * are copied with their own fonts and images, so the file grows with the
 * copies; sharing the objects would need page-tree surgery pdf-lib lacks.
 */
export function repeatPdf(pdf: Uint8Array, copies: number): Promise<PdfResult> {
  return joinPdfs(Array.from({ length: copies }, () => pdf));
}
