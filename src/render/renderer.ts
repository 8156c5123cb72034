import fs from 'node:fs';
import path from 'node:path';
import type { BrowserContext, Page } from 'puppeteer-core';
import { ConnectionClosedError, ProtocolError } from 'puppeteer-core';
import {
  BrowserCrashedError,
  DocumentTooLargeError,
  RenderFarmError,
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
import type { PrintedPart } from './pdf-pages';
import {
  joinPdfs,
  lastPageMayBeEmpty,
  pagePaint,
  repeatPdf,
} from './pdf-pages';
import { fitPageRules, waitForAssets } from './page-checks';
import { DOCUMENT_URL, RequestRouter } from './request-router';

/** Paper sizes in millimetres; the task's `paper_size` always wins over CSS. */
export const PAPER_MM: Record<string, { width: number; height: number }> = {
  a4: { width: 210, height: 297 },
  letter: { width: 215.9, height: 279.4 },
};

/** Smallest top and bottom page margin that holds the header and footer. */
export const MIN_FRAME_MARGIN_MM = 12;

/** The paper of a task's `paper_size`, in millimetres (A4 when unknown). */
export function paperOf(paperSize: unknown): { width: number; height: number } {
  return PAPER_MM[String(paperSize)] ?? { width: 210, height: 297 };
}

/** A page holding nothing: printed to learn what the header and footer paint. */
const FRAME_ONLY_HTML =
  '<!DOCTYPE html><html><head></head><body></body></html>';

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
  /**
   * How often the browser is probed while renders run, in milliseconds
   * (between renders the daemon probes it through {@link Renderer.ping});
   * default 5,000.
   */
  probeIntervalMs?: number;
  /** How long one probe may take, in milliseconds; default 2,000. */
  probeTimeoutMs?: number;
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
  /**
   * False from the moment the browser disconnected or failed a probe until
   * a new one has started; also false when there is no browser.
   */
  healthy: boolean;
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
  private healthy = false;
  private watchTimer: NodeJS.Timeout | undefined;
  private probing: Promise<boolean> | undefined;

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
   * Called when the browser's health changes: false the moment it
   * disconnects or fails a probe, true when a new one has started.
   */
  onHealthChange: (healthy: boolean) => void = () => undefined;

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
      const parts: PrintedPart[] = [];
      const prints = job.copiesDiffer ? job.copies : 1;
      const frame: FrameReference = {};
      for (let copy = 1; copy <= prints; copy++) {
        signal?.throwIfAborted();
        const html = this.fillDocument(job, copy);
        parts.push(
          await this.printWithDeadline(
            job,
            html,
            warnings,
            started,
            frame,
            signal,
          ),
        );
      }
      const paper = paperOf(job.options['paper_size']);
      const options = {
        title: job.filename.replace(/\.pdf$/i, ''),
        paperPt: {
          width: (paper.width * 72) / 25.4,
          height: (paper.height * 72) / 25.4,
        },
      };
      const joined = job.copiesDiffer
        ? await joinPdfs(parts, options)
        : await repeatPdf(parts[0] as PrintedPart, job.copies, options);
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
      // Not of a dead browser: listing its tree is slow, and the heartbeat
      // that says it died must not wait for it.
      memoryBytes:
        handle?.browser.connected && this.healthy
          ? await this.memoryOf(handle)
          : 0,
      restarts: { ...this.restarts },
      healthy: this.healthy && handle !== undefined,
    };
  }

  /**
   * A cheap protocol round trip to the browser (CDP Browser.getVersion,
   * which the browser process answers even while a page's renderer is
   * busy). A browser that does not answer within `timeoutMs` is reported
   * unhealthy at once (onHealthChange) and replaced if it has not answered
   * within `probeIntervalMs` more; one that has crashed is replaced at
   * once. Replacing fails the renders in it as browser crashes (passing,
   * so they are retried). Resolves false when it had to, or when there is
   * no browser at all (start() must launch one). While renders run, the
   * renderer also probes by itself (see watchWhileRendering).
   */
  async ping(timeoutMs = 2_000): Promise<boolean> {
    // One probe at a time: the watcher's and the daemon's would otherwise
    // replace one frozen browser twice.
    this.probing ??= this.probe(
      timeoutMs,
      0,
      this.options.probeIntervalMs ?? 5_000,
    ).finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  /**
   * One probe: `retries` more round trips after a miss. With `graceMs`, a
   * browser that missed them is reported unhealthy at once but killed only
   * if it does not answer within `graceMs` more (healthy again if it does):
   * a render in a browser that is merely slow on a loaded machine is not
   * worth killing, a frozen one is.
   */
  private async probe(
    timeoutMs: number,
    retries: number,
    graceMs = 0,
  ): Promise<boolean> {
    const handle = this.handle;
    if (!handle) return false;
    if (!handle.browser.connected) {
      this.logger.warn('browser is gone; replacing it', { pid: handle.pid });
      this.setHealthy(handle, false);
      await this.replace('crash', handle);
      return false;
    }
    let failure: unknown;
    for (let attempt = 0; attempt <= retries; attempt++) {
      try {
        await withTimeout(
          handle.browser.version(),
          timeoutMs,
          'browser did not answer',
        );
        return true;
      } catch (error) {
        failure = error;
        if (this.handle !== handle) return false;
      }
    }
    this.setHealthy(handle, false);
    if (graceMs > 0) {
      try {
        await withTimeout(
          handle.browser.version(),
          graceMs,
          'browser did not answer',
        );
        this.logger.warn('browser answered its health check late', {
          pid: handle.pid,
          renders_running: this.active,
          late_ms: timeoutMs * (retries + 1),
        });
        this.setHealthy(handle, true);
        return true;
      } catch (error) {
        failure = error;
        if (this.handle !== handle) return false;
      }
    }
    this.logger.warn('browser failed its health check; replacing it', {
      pid: handle.pid,
      renders_running: this.active,
      error: errorMessage(failure),
    });
    await this.replace('unresponsive', handle);
    return false;
  }

  /**
   * Probes the browser while renders run: the daemon probes only between
   * renders, and a frozen browser would otherwise hold every render until
   * its deadline. Every half `probeIntervalMs`; a browser that misses two
   * round trips in a row (a loaded machine may delay one) is reported
   * unhealthy then, within one interval and two timeouts, and killed when
   * it has not answered a probe interval later.
   */
  private watchWhileRendering(): void {
    if (this.watchTimer) return;
    const everyMs = (this.options.probeIntervalMs ?? 5_000) / 2;
    const timeoutMs = this.options.probeTimeoutMs ?? 2_000;
    this.watchTimer = setInterval(() => {
      if (this.active === 0 || !this.handle) return;
      this.probing ??= this.probe(timeoutMs, 1, everyMs * 2).finally(() => {
        this.probing = undefined;
      });
    }, everyMs);
  }

  private stopWatching(): void {
    clearInterval(this.watchTimer);
    this.watchTimer = undefined;
  }

  private setHealthy(
    handle: BrowserHandle | undefined,
    healthy: boolean,
  ): void {
    if (handle !== this.handle || this.healthy === healthy) return;
    this.healthy = healthy;
    this.onHealthChange(healthy);
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
      await this.replace(reason, handle);
    }
  }

  private async memoryOf(handle: BrowserHandle): Promise<number> {
    const bytes = await treeMemoryBytes(handle.pid, this.logger);
    this.lastMemory = { pid: handle.pid, bytes };
    return bytes;
  }

  /** Closes the browser and removes its profile. */
  async stop(): Promise<void> {
    this.stopWatching();
    const handle = this.handle;
    this.setHealthy(handle, false);
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
   * Prints one HTML document under the render's deadline, which also
   * covers starting the browser and creating the render's context. At the
   * deadline the page's context is torn down; a browser that does not let
   * go of it is replaced.
   */
  private async printWithDeadline(
    job: RenderJob,
    html: string,
    warnings: string[],
    startedMs: number,
    frame: FrameReference,
    signal?: AbortSignal,
  ): Promise<PrintedPart> {
    const remainingMs = this.options.timeoutMs - (Date.now() - startedMs);
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
    deadline.catch(() => undefined);
    let handle: BrowserHandle | undefined;
    let onDisconnect: (() => void) | undefined;
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    let contextStarted: Promise<BrowserContext> | undefined;
    let context: BrowserContext | undefined;
    this.watchWhileRendering();
    try {
      handle = await Promise.race([this.browser(), deadline, aborted]);
      handle.renders++;
      const browser = handle.browser;
      const crashed = new Promise<never>((_, reject) => {
        onDisconnect = () =>
          reject(
            new BrowserCrashedError(
              'browser crashed or was closed during the render',
            ),
          );
        browser.once('disconnected', onDisconnect);
      });
      crashed.catch(() => undefined);
      contextStarted = browser.createBrowserContext();
      context = await Promise.race([
        contextStarted,
        deadline,
        crashed,
        aborted,
      ]);
      return await Promise.race([
        this.printInContext(context, job, html, warnings, frame),
        deadline,
        crashed,
        aborted,
      ]);
    } catch (caught) {
      let error = asRenderError(caught);
      // The page's target closed because the whole browser went: say so.
      if (
        error instanceof BrowserCrashedError &&
        !(caught instanceof RenderFarmError) &&
        handle &&
        !handle.browser.connected
      ) {
        error = new BrowserCrashedError(
          'browser crashed or was closed during the render',
          { cause: caught },
        );
      }
      if (
        error instanceof RenderTimeoutError ||
        error instanceof BrowserCrashedError
      ) {
        await this.afterFailure(error, handle);
      }
      throw error;
    } finally {
      clearTimeout(timer);
      if (this.active <= 1) this.stopWatching();
      // One listener a render would pile up on a long-lived browser.
      if (handle && onDisconnect)
        handle.browser.off('disconnected', onDisconnect);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      // Closing the context closes its page and frees the renderer process;
      // without it every failed render would leave a tab behind.
      if (handle && context) await this.closeContext(context, handle);
      else if (handle && contextStarted) this.closeLate(contextStarted, handle);
    }
  }

  /** Closes a context that arrives after its render gave up on it. */
  private closeLate(
    started: Promise<BrowserContext>,
    handle: BrowserHandle,
  ): void {
    started.then(
      (context) => this.closeContext(context, handle),
      (error: unknown) =>
        this.logger.debug('browser context of a failed render never opened', {
          pid: handle.pid,
          error: errorMessage(error),
        }),
    );
  }

  private async printInContext(
    context: BrowserContext,
    job: RenderJob,
    html: string,
    warnings: string[],
    frame: FrameReference,
  ): Promise<PrintedPart> {
    const page = await context.newPage();
    let crash: BrowserCrashedError | undefined;
    const crashed = new Promise<never>((_, reject) => {
      page.once('error', (error) => {
        crash = new BrowserCrashedError(`renderer crashed: ${error.message}`);
        reject(crash);
      });
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
    const steps = async (): Promise<PrintedPart> => {
      await router.attach(page);
      await this.load(page);
      if (!(await waitForAssets(page, this.options.assetTimeoutMs, warnings)))
        await router.giveUp();
      await fitPageRules(
        page,
        paperOf(job.options['paper_size']),
        MIN_FRAME_MARGIN_MM,
        this.logger,
      );
      const pdf = await this.print(page, job);
      if (!(await lastPageMayBeEmpty(pdf))) return { pdf };
      // Only a page with the header and footer alone shows what they
      // paint; printed once a render, and only when a last page has
      // nothing tagged on it.
      if (frame.paintOps === undefined) {
        router.serve(FRAME_ONLY_HTML);
        await this.load(page);
        const [only] = await pagePaint(await this.print(page, job));
        frame.paintOps = only?.paintOps ?? 0;
      }
      return { pdf, framePaintOps: frame.paintOps };
    };
    try {
      return await Promise.race([steps(), crashed]);
    } catch (error) {
      // A crashed renderer closes its target, and the call waiting on it
      // may fail before the crash event arrives: give the event a moment,
      // it says what happened.
      if (!(error instanceof RenderFarmError) && isClosedTarget(error)) {
        await Promise.race([
          crashed.catch(() => undefined),
          new Promise((resolve) => setTimeout(resolve, 1_000)),
        ]);
        if (crash) throw crash;
      }
      throw error;
    }
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
    const paper = paperOf(job.options['paper_size']);
    const { header, footer } = this.frameTemplates(job);
    const pdf = await page.pdf({
      // In inches: puppeteer turns millimetres into pixels at 3.78 a
      // millimetre (not 96 / 25.4), which made Letter 612.96 pt wide.
      width: `${paper.width / 25.4}in`,
      height: `${paper.height / 25.4}in`,
      printBackground: true,
      preferCSSPageSize: false,
      // Tagged, so that pdf-pages can tell the body's marks from the
      // header and footer when it trims empty trailing pages.
      tagged: true,
      displayHeaderFooter: true,
      headerTemplate: header,
      footerTemplate: footer,
      // Margins of the template's @page rule win over these defaults; its
      // size never does (fitPageRules).
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
      await this.replace('unresponsive', handle);
    }
  }

  private async afterFailure(
    error: Error,
    handle: BrowserHandle | undefined,
  ): Promise<void> {
    if (!handle || handle !== this.handle) return;
    if (error instanceof BrowserCrashedError && !handle.browser.connected) {
      await this.replace('crash', handle);
    } else if (error instanceof RenderTimeoutError) {
      this.logger.warn('render timed out; its page is being torn down', {
        pid: handle.pid,
      });
    }
  }

  /** The live browser, started (or restarted) when needed. */
  private async browser(): Promise<BrowserHandle> {
    if (this.handle?.browser.connected) return this.handle;
    if (this.handle) await this.replace('crash', this.handle);
    this.starting ??= launchBrowser(
      this.options.chromiumPath,
      this.options.timeoutMs + 10_000,
    )
      .then((handle) => {
        this.handle = handle;
        handle.browser.once('disconnected', () => {
          if (this.handle === handle) {
            // Said at once (the heartbeat goes out now); the browser is
            // replaced by the next probe or render.
            this.logger.warn('browser disconnected', { pid: handle.pid });
            this.setHealthy(handle, false);
          }
        });
        this.logger.info('browser started', { pid: handle.pid });
        this.healthy = false;
        this.setHealthy(handle, true);
        this.onLaunch(handle.pid);
        return handle;
      })
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  /**
   * Retires the browser and counts the restart. With `expected`, only if
   * that browser is still the current one: two failures noticing one dead
   * browser replace it once.
   */
  private async replace(
    reason: BrowserRestartReason,
    expected?: BrowserHandle,
  ): Promise<void> {
    const old = this.handle;
    if (expected && old !== expected) return;
    this.setHealthy(old, false);
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

/** Whether an error says the page, its session or the browser went away. */
function isClosedTarget(error: unknown): boolean {
  return (
    error instanceof ConnectionClosedError ||
    (error instanceof Error && error.name === 'TargetCloseError') ||
    /Target closed|Session closed|Connection closed|browser has disconnected/i.test(
      errorMessage(error),
    )
  );
}

/** What the header and footer alone paint, learnt once a render. */
interface FrameReference {
  paintOps?: number;
}

/**
 * The error a failed render is reported with. Puppeteer's own errors for a
 * page or browser that went away mid-call (a target or session closed, a
 * protocol call that failed) become a passing {@link BrowserCrashedError}
 * in plain words; the farm's own errors pass through.
 */
export function asRenderError(error: unknown): unknown {
  if (error instanceof RenderFarmError) return error;
  const message = errorMessage(error);
  if (isClosedTarget(error)) {
    return new BrowserCrashedError(
      'the browser closed the page during the render (it crashed or was stopped)',
      { cause: error },
    );
  }
  if (error instanceof ProtocolError || /^Protocol error\b/.test(message)) {
    return new BrowserCrashedError(
      `the browser failed a step of the render: ${message.replace(/^Protocol error \(([^)]*)\): /, '$1: ')}`,
      { cause: error },
    );
  }
  return error;
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}
