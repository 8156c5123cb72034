import fs from 'node:fs';
import path from 'node:path';
import type { BrowserContext, Page } from 'puppeteer-core';
import {
  BrowserCrashedError,
  DocumentTooLargeError,
  RenderTimeoutError,
  errorMessage,
} from '../errors';
import type { Logger } from '../logger';
import type { Catalogue } from '../resources/catalogue';
import { LAYOUT_DIR } from '../resources/catalogue';
import { SeededRandom } from '../resources/random';
import { renderTemplate } from '../resources/template-env';
import type { RenderJob } from '../resources/task';
import type { BrowserHandle } from './browser';
import { launchBrowser, retireBrowser, treeMemoryBytes } from './browser';
import { joinPdfs, repeatPdf } from './pdf-pages';
import { checkFrameMargins, waitForAssets } from './page-checks';
import { DOCUMENT_URL, RequestRouter } from './request-router';

/** Paper sizes in millimetres; the task's `paper_size` always wins over CSS. */
export const PAPER_MM: Record<string, { width: number; height: number }> = {
  a4: { width: 210, height: 297 },
  letter: { width: 215.9, height: 279.4 },
};

/** Smallest top and bottom page margin that holds the header and footer. */
export const MIN_FRAME_MARGIN_MM = 12;

/** What the renderer needs from the configuration. */
export interface RendererOptions {
  chromiumPath: string;
  staticDirs: string[];
  /** Deadline of one render, in milliseconds. */
  timeoutMs: number;
  /** Longest wait for web fonts and images, in milliseconds. */
  assetTimeoutMs: number;
  /** Concurrent renders (pages) in the browser. */
  pages: number;
  /** Browser replaced after this many renders. */
  browserMaxRenders: number;
  /** Browser replaced after this age, in milliseconds. */
  browserMaxAgeMs: number;
  /** Browser replaced above this resident memory, in bytes. */
  browserMaxMemoryBytes: number;
  /** Largest PDF produced, in pages. */
  maxPages?: number;
}

/** A finished render. */
export interface RenderOutput {
  pdf: Buffer;
  pages: number;
  /** Things that went wrong without failing the render (fonts, refusals). */
  warnings: string[];
  durationMs: number;
}

/** Why the browser was replaced; also a metric label. */
export type BrowserRestartReason =
  'crash' | 'unresponsive' | 'memory' | 'age' | 'renders' | 'timeout';

/** The state of the renderer's browser, for heartbeats. */
export interface BrowserStatus {
  pid: number;
  /** Temporary profile folder of the browser; empty when there is none. */
  profileDir: string;
  renders: number;
  ageMs: number;
  memoryBytes: number;
  restarts: Partial<Record<BrowserRestartReason, number>>;
}

/**
 * Renders jobs to PDF in one warm Chromium. Each render gets a fresh
 * browser context (no cookies, cache or storage shared between tasks) and
 * a deadline; a browser that crashes, hangs, grows too big or too old is
 * replaced between renders.
 */
export class Renderer {
  private handle: BrowserHandle | undefined;
  private starting: Promise<BrowserHandle> | undefined;
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly restarts: Partial<Record<BrowserRestartReason, number>> = {};
  private readonly cssCache = new Map<string, string>();
  /** The browser tree's memory as last measured, for {@link recycleDue}. */
  private lastMemory = { pid: 0, bytes: 0 };
  private logoDataUrl: string | undefined;

  constructor(
    private readonly options: RendererOptions,
    private readonly catalogue: Catalogue,
    private readonly logger: Logger,
    /** Re-read stylesheets on every render (preview). */
    private readonly watch = false,
  ) {}

  /** Starts the browser now rather than on the first render. */
  async start(): Promise<void> {
    await this.browser();
  }

  /** Called when the browser is replaced, with the reason. */
  onRestart: (reason: BrowserRestartReason) => void = () => undefined;

  /** Called when a browser has started, with its process id. */
  onLaunch: (pid: number) => void = () => undefined;

  /**
   * Renders a job: fills the template, prints it, and repeats or re-renders
   * it for its copies. Throws a PermanentError for a bad template and a
   * TransientError for a crash or a timeout. Once `signal` aborts, the
   * render stops at once (its page is closed) and throws the abort reason.
   */
  async render(job: RenderJob, signal?: AbortSignal): Promise<RenderOutput> {
    signal?.throwIfAborted();
    await this.acquireSlot();
    // The deadline counts from here: time spent waiting for a free page is
    // not the render's fault.
    const started = Date.now();
    try {
      const warnings: string[] = [];
      const parts: Buffer[] = [];
      const prints = job.copiesDiffer ? job.copies : 1;
      for (let copy = 1; copy <= prints; copy++) {
        signal?.throwIfAborted();
        const html = this.fillDocument(job, copy);
        parts.push(
          await this.printWithDeadline(job, html, warnings, started, signal),
        );
      }
      const joined = job.copiesDiffer
        ? await joinPdfs(parts)
        : await repeatPdf(parts[0] as Buffer, job.copies);
      this.checkSize(joined.pages);
      return {
        ...joined,
        warnings: unique(warnings),
        durationMs: Date.now() - started,
      };
    } finally {
      this.releaseSlot();
    }
  }

  /** The state of the browser, for heartbeats and the dashboard. */
  async status(): Promise<BrowserStatus> {
    const handle = this.handle;
    return {
      pid: handle?.pid ?? 0,
      profileDir: handle?.profileDir ?? '',
      renders: handle?.renders ?? 0,
      ageMs: handle ? Date.now() - handle.launchedAtMs : 0,
      memoryBytes: handle ? await this.memoryOf(handle) : 0,
      restarts: { ...this.restarts },
    };
  }

  /**
   * A cheap protocol round trip to the browser. Replaces a browser that has
   * crashed or does not answer within `timeoutMs`; resolves false when it
   * had to, or when there is no browser at all (start() must launch one).
   * While renders run it trusts them instead (their deadline watches them).
   */
  async ping(timeoutMs = 2_000): Promise<boolean> {
    const handle = this.handle;
    if (!handle) return false;
    if (this.active > 0) return true;
    if (!handle.browser.connected) {
      this.logger.warn('browser is gone; replacing it', { pid: handle.pid });
      await this.replace('crash');
      return false;
    }
    try {
      await withTimeout(
        handle.browser.version(),
        timeoutMs,
        'browser did not answer',
      );
      return true;
    } catch (error) {
      this.logger.warn('browser failed its health check; replacing it', {
        pid: handle.pid,
        error: errorMessage(error),
      });
      await this.replace('unresponsive');
      return false;
    }
  }

  /** Whether a connected browser runs now; asks the browser nothing. */
  get running(): boolean {
    return this.handle?.browser.connected ?? false;
  }

  /**
   * Whether the browser is due for replacement by its renders, its age or
   * the memory last measured; asks the browser nothing. A daemon stops
   * leasing while it is, so that the renders in hand end and
   * {@link recycleIfDue} can run.
   */
  recycleDue(): boolean {
    const handle = this.handle;
    if (!handle) return false;
    const o = this.options;
    return (
      handle.renders >= o.browserMaxRenders ||
      Date.now() - handle.launchedAtMs >= o.browserMaxAgeMs ||
      // Not a browser that has rendered nothing yet: one born too big for
      // the limit would otherwise keep the daemon from ever leasing.
      (handle.renders > 0 &&
        this.lastMemory.pid === handle.pid &&
        this.lastMemory.bytes >= o.browserMaxMemoryBytes)
    );
  }

  /** Replaces the browser between renders when it is too old, big or used. */
  async recycleIfDue(): Promise<void> {
    const handle = this.handle;
    if (!handle || this.active > 0) return;
    const o = this.options;
    let reason: BrowserRestartReason | undefined;
    if (handle.renders >= o.browserMaxRenders) reason = 'renders';
    else if (Date.now() - handle.launchedAtMs >= o.browserMaxAgeMs)
      reason = 'age';
    else if ((await this.memoryOf(handle)) >= o.browserMaxMemoryBytes)
      reason = 'memory';
    if (reason) {
      this.logger.info('recycling browser', {
        pid: handle.pid,
        reason,
        renders: handle.renders,
      });
      await this.replace(reason);
    }
  }

  private async memoryOf(handle: BrowserHandle): Promise<number> {
    const bytes = await treeMemoryBytes(handle.pid);
    this.lastMemory = { pid: handle.pid, bytes };
    return bytes;
  }

  /** Closes the browser and removes its profile. */
  async stop(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await retireBrowser(handle, this.logger);
  }

  /** Fills the resource's template for one copy into a whole HTML page. */
  fillDocument(job: RenderJob, copy: number): string {
    return renderTemplate(
      this.catalogue.env,
      this.catalogue.root,
      job.manifest.templateName,
      {
        ...this.templateContext(job, copy),
        layout_css: this.css(
          path.join(this.catalogue.root, LAYOUT_DIR, 'base.css'),
        ),
        resource_css: this.css(job.manifest.stylesheetPath),
      },
    );
  }

  private templateContext(
    job: RenderJob,
    copy: number,
  ): Record<string, unknown> {
    return {
      ...job.options,
      resource_name: job.resourceName,
      resource_slug: job.resourceSlug,
      resource_view: job.manifest.view,
      url: job.url,
      header_text: job.headerText,
      copy,
      copies: job.copies,
      task_id: job.taskId,
      random: new SeededRandom(`${job.taskId}:${job.copiesDiffer ? copy : 1}`),
      static_url: (file: string) => `/static/${file}`,
    };
  }

  private frameTemplates(job: RenderJob): { header: string; footer: string } {
    const context = {
      ...this.templateContext(job, 1),
      logo_data_url: this.logo(),
    };
    const fill = (name: string) =>
      renderTemplate(
        this.catalogue.env,
        this.catalogue.root,
        `${LAYOUT_DIR}/${name}`,
        context,
      );
    return { header: fill('header.njk'), footer: fill('footer.njk') };
  }

  /**
   * Prints one HTML document under the render's deadline. At the deadline
   * the page's context is torn down; a browser that does not let go of it is
   * replaced.
   */
  private async printWithDeadline(
    job: RenderJob,
    html: string,
    warnings: string[],
    startedMs: number,
    signal?: AbortSignal,
  ): Promise<Buffer> {
    const handle = await this.browser();
    handle.renders++;
    const remainingMs = this.options.timeoutMs - (Date.now() - startedMs);
    const context = await handle.browser.createBrowserContext();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new RenderTimeoutError(
              `render time limit of ${this.options.timeoutMs / 1000} s exceeded`,
            ),
          ),
        Math.max(remainingMs, 1),
      );
    });
    let onDisconnect: (() => void) | undefined;
    const crashed = new Promise<never>((_, reject) => {
      onDisconnect = () =>
        reject(
          new BrowserCrashedError(
            'browser crashed or was closed during the render',
          ),
        );
      handle.browser.once('disconnected', onDisconnect);
    });
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([
        this.printInContext(context, job, html, warnings),
        deadline,
        crashed,
        aborted,
      ]);
    } catch (error) {
      if (
        error instanceof RenderTimeoutError ||
        error instanceof BrowserCrashedError
      ) {
        await this.afterFailure(error);
      }
      throw error;
    } finally {
      clearTimeout(timer);
      // One listener a render would pile up on a long-lived browser.
      if (onDisconnect) handle.browser.off('disconnected', onDisconnect);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      // Closing the context closes its page and frees the renderer process;
      // without it every failed render would leave a tab behind.
      await this.closeContext(context, handle);
    }
  }

  private async printInContext(
    context: BrowserContext,
    job: RenderJob,
    html: string,
    warnings: string[],
  ): Promise<Buffer> {
    const page = await context.newPage();
    const crashed = new Promise<never>((_, reject) => {
      page.once('error', (error) =>
        reject(new BrowserCrashedError(`renderer crashed: ${error.message}`)),
      );
    });
    crashed.catch(() => undefined);
    const router = new RequestRouter(
      this.options.staticDirs,
      warnings,
      (url, error) =>
        this.logger.debug('request answer failed', {
          url,
          error: errorMessage(error),
        }),
    );
    router.serve(html);
    const steps = async () => {
      await router.attach(page);
      await this.load(page);
      if (!(await waitForAssets(page, this.options.assetTimeoutMs, warnings)))
        await router.giveUp();
      await checkFrameMargins(page, MIN_FRAME_MARGIN_MM);
      return this.print(page, job);
    };
    return Promise.race([steps(), crashed]);
  }

  private async load(page: Page): Promise<void> {
    // Not 'load': a font or image that never arrives would hold the load
    // event for ever. waitUntilReady waits for them, bounded.
    await page.goto(DOCUMENT_URL, {
      waitUntil: 'domcontentloaded',
      timeout: 0,
    });
  }

  private async print(page: Page, job: RenderJob): Promise<Buffer> {
    const paper = PAPER_MM[String(job.options['paper_size'])] ?? PAPER_MM['a4'];
    const { header, footer } = this.frameTemplates(job);
    const pdf = await page.pdf({
      width: `${paper?.width}mm`,
      height: `${paper?.height}mm`,
      printBackground: true,
      preferCSSPageSize: false,
      // Tagged, so that pdf-pages can tell the body's marks from the
      // header and footer when it trims empty trailing pages.
      tagged: true,
      displayHeaderFooter: true,
      headerTemplate: header,
      footerTemplate: footer,
      // Margins of the template's @page rule win over these defaults.
      margin: { top: '16mm', bottom: '18mm', left: '12mm', right: '12mm' },
      timeout: 0,
    });
    return Buffer.from(pdf);
  }

  private checkSize(pages: number): void {
    const max = this.options.maxPages;
    if (max !== undefined && pages > max) {
      throw new DocumentTooLargeError(
        `document too large: ${pages} pages, the limit is ${max}`,
      );
    }
  }

  private async closeContext(
    context: BrowserContext,
    handle: BrowserHandle,
  ): Promise<void> {
    try {
      await withTimeout(
        context.close(),
        5_000,
        'browser context did not close',
      );
    } catch (error) {
      if (this.handle !== handle || !handle.browser.connected) {
        // The browser died with the render and is (being) replaced already;
        // its contexts went with it.
        this.logger.debug('context of a dead browser not closed', {
          pid: handle.pid,
          error: errorMessage(error),
        });
        return;
      }
      this.logger.warn('browser context did not close; replacing the browser', {
        error: errorMessage(error),
      });
      await this.replace('unresponsive');
    }
  }

  private async afterFailure(error: Error): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    if (error instanceof BrowserCrashedError && !handle.browser.connected) {
      await this.replace('crash');
    } else if (error instanceof RenderTimeoutError) {
      this.logger.warn('render timed out; its page is being torn down', {
        pid: handle.pid,
      });
    }
  }

  /** The live browser, started (or restarted) when needed. */
  private async browser(): Promise<BrowserHandle> {
    if (this.handle?.browser.connected) return this.handle;
    if (this.handle) await this.replace('crash');
    this.starting ??= launchBrowser(
      this.options.chromiumPath,
      this.options.timeoutMs + 10_000,
    )
      .then((handle) => {
        this.handle = handle;
        handle.browser.once('disconnected', () => {
          if (this.handle === handle) {
            this.logger.warn('browser disconnected', { pid: handle.pid });
          }
        });
        this.logger.info('browser started', { pid: handle.pid });
        this.onLaunch(handle.pid);
        return handle;
      })
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  private async replace(reason: BrowserRestartReason): Promise<void> {
    const old = this.handle;
    this.handle = undefined;
    this.restarts[reason] = (this.restarts[reason] ?? 0) + 1;
    this.onRestart(reason);
    if (old) await retireBrowser(old, this.logger);
  }

  private css(file: string): string {
    const cached = this.watch ? undefined : this.cssCache.get(file);
    if (cached !== undefined) return cached;
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    this.cssCache.set(file, text);
    return text;
  }

  private logo(): string {
    if (this.logoDataUrl) return this.logoDataUrl;
    for (const dir of this.options.staticDirs) {
      const file = path.join(dir, 'img', 'logo.svg');
      if (fs.existsSync(file)) {
        const base64 = fs.readFileSync(file).toString('base64');
        this.logoDataUrl = `data:image/svg+xml;base64,${base64}`;
        return this.logoDataUrl;
      }
    }
    this.logoDataUrl = 'data:image/svg+xml;base64,';
    return this.logoDataUrl;
  }

  private async acquireSlot(): Promise<void> {
    if (this.active < this.options.pages) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
  }

  private releaseSlot(): void {
    this.active--;
    this.waiting.shift()?.();
  }
}

function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  message: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${message} within ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}
