import type { HTTPRequest, Page } from 'puppeteer-core';
import { readStatic } from './static-files';

/**
 * The origin documents are loaded from. Nothing is fetched from it: the
 * router answers every request itself, so the page has a proper origin
 * (not `file:`) and relative `/static/...` URLs resolve.
 */
export const DOCUMENT_ORIGIN = 'https://render-farm.invalid';

/** The URL the filled template is served at. */
export const DOCUMENT_URL = `${DOCUMENT_ORIGIN}/document.html`;

const STATIC_PREFIX = `${DOCUMENT_ORIGIN}/static/`;

/**
 * Answers the requests of one page: the document itself, files from the
 * static folders, and a refusal (with a warning) for everything else, so a
 * render never fetches anything from the network or the local disk.
 */
export class RequestRouter {
  private readonly pending = new Set<HTTPRequest>();
  private html = '';

  constructor(
    private readonly staticDirs: readonly string[],
    private readonly warnings: string[],
    private readonly onError: (url: string, error: unknown) => void,
  ) {}

  /** Starts answering the page's requests. */
  async attach(page: Page): Promise<void> {
    // Chromium itself blocks file: URLs from our https origin before any
    // request event; its console message is the only trace, so report it.
    page.on('console', (message) => {
      const local = /^Not allowed to load local resource: (\S+)/.exec(
        message.text(),
      );
      if (local?.[1]) this.refused(local[1]);
    });
    await page.setRequestInterception(true);
    page.on('request', (request) => {
      this.answer(request).catch((error: unknown) =>
        this.onError(request.url(), error),
      );
    });
  }

  /** Sets the HTML served at {@link DOCUMENT_URL} for the next load. */
  serve(html: string): void {
    this.html = html;
  }

  /**
   * Fails every static file still being read (a slow disk or bucket), so
   * the page can print with what has arrived; Chromium would otherwise
   * wait for them before printing.
   */
  async giveUp(): Promise<void> {
    const late = [...this.pending];
    this.pending.clear();
    for (const request of late) {
      this.warnings.push(
        `gave up waiting for ${request.url().slice(DOCUMENT_ORIGIN.length)}`,
      );
      await request.abort('timedout');
    }
  }

  private async answer(request: HTTPRequest): Promise<void> {
    const url = request.url();
    if (url.startsWith('data:')) return request.continue();
    if (url === DOCUMENT_URL) {
      return request.respond({
        status: 200,
        contentType: 'text/html; charset=utf-8',
        body: this.html,
      });
    }
    if (url.startsWith(STATIC_PREFIX)) return this.answerStatic(request, url);
    if (url === `${DOCUMENT_ORIGIN}/favicon.ico`)
      return request.abort('blockedbyclient');
    this.refused(url);
    return request.abort('blockedbyclient');
  }

  private async answerStatic(request: HTTPRequest, url: string): Promise<void> {
    this.pending.add(request);
    const relative = url.slice(STATIC_PREFIX.length).split(/[?#]/)[0] ?? '';
    const file = await readStatic(this.staticDirs, relative);
    // Already failed by giveUp(): the page has moved on without it.
    if (!this.pending.delete(request)) return;
    if (file) {
      return request.respond({
        status: 200,
        contentType: file.contentType,
        body: file.body,
      });
    }
    this.warnings.push(`static file not found: /static/${relative}`);
    return request.respond({
      status: 404,
      contentType: 'text/plain',
      body: 'not found',
    });
  }

  private refused(url: string): void {
    const shown = url.length > 120 ? `${url.slice(0, 117)}...` : url;
    this.warnings.push(
      `refused request to ${shown}: only /static/ files may be loaded`,
    );
  }
}
