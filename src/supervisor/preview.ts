import Router from '@koa/router';
import type Koa from 'koa';
import chokidar from 'chokidar';
import { rendererOptions } from '../daemon/main';
import type { Config } from '../config';
import { InvalidTaskError, TemplateError, errorMessage } from '../errors';
import type { Logger } from '../logger';
import { Renderer } from '../render/renderer';
import { readStatic } from '../render/static-files';
import { Catalogue } from '../resources/catalogue';
import type { Manifest } from '../resources/manifest';
import { TASK_KIND, checkTask } from '../resources/task';
import type { RenderJob } from '../resources/task';
import { escapeHtml } from './dashboard';

/** Where the preview is served, in the CLI and in the supervisor. */
export const PREVIEW_PATH = '/preview';

/** How long file changes are gathered before one reload, in ms. */
const SETTLE_MS = 150;

/**
 * The content authors' preview: every resource with every option, as HTML
 * (fast, in the browser) or as the real PDF (in a page of its own that
 * holds it), reloaded in the browser when a template, stylesheet, manifest
 * or static file changes. A broken resource shows its error, on its entry
 * of the index and on its pages, while the others keep working.
 *
 * Routes, under the prefix: `/` the index, `/<view>.html` the filled
 * template, `/<view>.pdf` the printed PDF, `/<view>.pdf.html` a page
 * showing that PDF, `/events` the reload events, `/static/...` the static
 * files. Options come from the query (`?copies=2&paper_size=letter`); a bad
 * one is answered 400 naming the field.
 */
export class Preview {
  private catalogue: Catalogue | undefined;
  private loadError: string | undefined;
  private renderer: Renderer | undefined;
  private readonly clients = new Set<(event: string) => void>();
  private watcher: chokidar.FSWatcher | undefined;
  private settle: NodeJS.Timeout | undefined;
  private version = 0;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
  ) {
    this.reload();
  }

  /** Starts watching the resources and static folders. */
  watch(): void {
    this.watcher = chokidar.watch(
      [this.config.resourcesDir, ...this.config.staticDirs],
      {
        ignoreInitial: true,
      },
    );
    this.watcher.on('all', (event, file) => {
      clearTimeout(this.settle);
      this.settle = setTimeout(() => {
        this.logger.info('resource changed; reloading', { event, file });
        this.reload();
        for (const send of this.clients) send(String(this.version));
      }, SETTLE_MS);
    });
    this.watcher.on('error', (error) =>
      this.logger.warn('file watching failed', { error: errorMessage(error) }),
    );
  }

  /** Stops watching and closes the preview's browser. */
  async close(): Promise<void> {
    clearTimeout(this.settle);
    await this.watcher?.close();
    await this.renderer?.stop();
  }

  /** The routes, under `prefix` (`/preview`). */
  routes(prefix: string): ReturnType<Router['routes']> {
    const router = new Router({ prefix });
    router.get('/', (ctx) => {
      ctx.type = 'html';
      ctx.body = this.indexPage(prefix);
    });
    router.get('/events', (ctx) => this.events(ctx));
    router.get('/static/*file', async (ctx) => {
      const file = await readStatic(
        this.config.staticDirs,
        String(ctx.params['file']),
      );
      if (!file) return;
      ctx.type = file.contentType;
      ctx.body = file.body;
    });
    router.get('/:view.pdf.html', (ctx) => this.pdfPage(ctx, prefix));
    router.get('/:view.html', (ctx) => this.html(ctx, prefix));
    router.get('/:view.pdf', (ctx) => this.pdf(ctx, prefix));
    return router.routes();
  }

  private reload(): void {
    this.version++;
    try {
      this.catalogue = Catalogue.load(this.config.resourcesDir, {
        watch: true,
        tolerant: true,
      });
      this.loadError = undefined;
      for (const [view, error] of this.catalogue.problems)
        this.logger.warn('resource does not load', { view, error });
      const old = this.renderer;
      this.renderer = undefined;
      void old?.stop();
    } catch (error) {
      // Known limit: only a broken shared part (the _layout/ folder, the
      // folder itself) gets here, and it takes every resource's page down
      // with one error page, since every template extends the layout.
      this.loadError = errorMessage(error);
      this.logger.warn('resources do not load', { error: this.loadError });
    }
  }

  /**
   * The checked job of a request, or undefined after answering it with the
   * reason: the resources or this view do not load (422, fix the file), no
   * such view (404), or a bad value in the query (400, naming the field).
   */
  private jobOf(ctx: Koa.Context, prefix: string): RenderJob | undefined {
    const catalogue = this.catalogue;
    if (this.loadError || !catalogue) {
      this.errorPage(ctx, prefix, this.loadError ?? 'resources not loaded');
      return undefined;
    }
    const view = String(ctx.params['view']);
    const problem = catalogue.problems.get(view);
    if (problem !== undefined) {
      this.errorPage(ctx, prefix, problem);
      return undefined;
    }
    const manifest = catalogue.get(view);
    if (!manifest) {
      this.requestErrorPage(
        ctx,
        prefix,
        404,
        `no resource view ${JSON.stringify(view)}`,
      );
      return undefined;
    }
    const query = ctx.query as Record<string, string | string[]>;
    const one = (name: string): string | undefined => {
      const value = query[name];
      return Array.isArray(value) ? value[value.length - 1] : value;
    };
    const copies = one('copies') ?? '1';
    const task: Record<string, unknown> = {
      kind: TASK_KIND,
      resource_slug: view,
      resource_name: manifest.title,
      resource_view: view,
      url: `https://example.org/resources/${view}`,
      header_text: one('header_text') ?? '',
      // Digits become a number; anything else is passed on as text so that
      // the error quotes what was given.
      copies: /^\d{1,9}$/.test(copies) ? Number(copies) : copies,
    };
    for (const [name, spec] of Object.entries(manifest.options)) {
      task[name] = one(name) ?? spec.default;
    }
    try {
      return checkTask(
        task,
        one('task_id') ?? 'preview',
        catalogue,
        this.config,
      );
    } catch (error) {
      this.failure(ctx, prefix, error);
      return undefined;
    }
  }

  private html(ctx: Koa.Context, prefix: string): void {
    const job = this.jobOf(ctx, prefix);
    if (!job) return;
    try {
      const html = this.rendererFor().fillDocument(job, 1);
      ctx.type = 'html';
      ctx.set('Cache-Control', 'no-store');
      // The document asks for /static/...; in the browser those come from
      // the preview's own static route.
      ctx.body = html
        .replaceAll('"/static/', `"${prefix}/static/`)
        .replace('</body>', `${reloadScript(prefix, this.version)}</body>`);
    } catch (error) {
      this.failure(ctx, prefix, error);
    }
  }

  private async pdf(ctx: Koa.Context, prefix: string): Promise<void> {
    const job = this.jobOf(ctx, prefix);
    if (!job) return;
    try {
      const output = await this.rendererFor().render(job);
      ctx.type = 'application/pdf';
      ctx.set('Cache-Control', 'no-store');
      ctx.set(
        'Content-Disposition',
        `inline; filename*=UTF-8''${encodeURIComponent(job.filename)}`,
      );
      for (const warning of output.warnings)
        ctx.append('X-Render-Warning', warning.slice(0, 200));
      ctx.body = output.pdf;
    } catch (error) {
      this.failure(ctx, prefix, error);
    }
  }

  /**
   * A page holding the PDF of the same query in a frame, with the reload
   * script: a PDF cannot carry one itself, so this page reloads when a
   * file changes and the frame fetches the new PDF.
   */
  private pdfPage(ctx: Koa.Context, prefix: string): void {
    const job = this.jobOf(ctx, prefix);
    if (!job) return;
    const view = encodeURIComponent(job.manifest.view);
    const query = ctx.querystring ? `?${ctx.querystring}` : '';
    const src = `${prefix}/${view}.pdf${query}`;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body =
      `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">` +
      `<title>${escapeHtml(job.filename)}</title>` +
      '<style>html,body{margin:0;height:100%;overflow:hidden}' +
      'iframe{display:block;border:0;width:100%;height:100%}</style>' +
      `</head><body><iframe class="printed" src="${escapeHtml(src)}" title="${escapeHtml(job.filename)}"></iframe>` +
      `${reloadScript(prefix, this.version)}</body></html>`;
  }

  /** Answers a failed request with the page its error calls for. */
  private failure(ctx: Koa.Context, prefix: string, error: unknown): void {
    const message = errorMessage(error);
    if (error instanceof InvalidTaskError) {
      this.requestErrorPage(ctx, prefix, 400, message);
    } else if (error instanceof TemplateError) {
      this.errorPage(ctx, prefix, message);
    } else {
      this.logger.warn('preview render failed', { error: message });
      this.errorPage(ctx, prefix, message, 500);
    }
  }

  private rendererFor(): Renderer {
    const catalogue = this.catalogue as Catalogue;
    this.renderer ??= new Renderer(
      rendererOptions(this.config),
      catalogue,
      this.logger,
      true,
    );
    return this.renderer;
  }

  /**
   * The reload events, written straight to the response: a client closing
   * the stream is how it ends, not an error, so no stream pipeline is left
   * to fail with ERR_STREAM_PREMATURE_CLOSE.
   */
  private events(ctx: Koa.Context): void {
    ctx.request.socket.setTimeout(0);
    ctx.respond = false;
    const res = ctx.res;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
    const send = (version: string) =>
      res.write(`event: reload\ndata: ${version}\n\n`);
    this.clients.add(send);
    res.write(`event: hello\ndata: ${this.version}\n\n`);
    res.on('close', () => {
      this.clients.delete(send);
      this.logger.debug('preview events client went away', {
        clients: this.clients.size,
      });
    });
    res.on('error', (error) =>
      this.logger.debug('preview events stream failed', {
        error: errorMessage(error),
      }),
    );
  }

  /** A resource that cannot be rendered until a file is fixed: 422. */
  private errorPage(
    ctx: Koa.Context,
    prefix: string,
    message: string,
    status = 422,
  ): void {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = page(
      'Preview error',
      `<h1>This resource cannot be rendered</h1><pre class="error">${escapeHtml(message)}</pre>` +
        '<p>Fix the file and save: this page reloads by itself.</p>' +
        `<p><a href="${prefix}/">All resources</a></p>` +
        reloadScript(prefix, this.version),
    );
  }

  /** A request the preview cannot answer as asked: 400 or 404. */
  private requestErrorPage(
    ctx: Koa.Context,
    prefix: string,
    status: number,
    message: string,
  ): void {
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = page(
      'Preview: bad request',
      `<h1>These options cannot be printed</h1><pre class="error">${escapeHtml(message)}</pre>` +
        `<p>Change the value in the address, or pick the options again from <a href="${prefix}/">all resources</a>.</p>` +
        reloadScript(prefix, this.version),
    );
  }

  private indexPage(prefix: string): string {
    if (this.loadError || !this.catalogue) {
      return page(
        'Preview',
        `<h1>Resources do not load</h1><pre class="error">${escapeHtml(this.loadError ?? '')}</pre>` +
          reloadScript(prefix, this.version),
      );
    }
    const entries: [string, string][] = [
      ...this.catalogue
        .list()
        .map((m): [string, string] => [m.view, resourceForm(m, prefix)]),
      ...[...this.catalogue.problems].map(([view, error]): [string, string] => [
        view,
        brokenEntry(view, error),
      ]),
    ];
    const items = entries
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([, html]) => html)
      .join('\n');
    return page(
      'Resource preview',
      `<h1>Resource preview</h1><p>Pick options, then open the HTML (fast) or the PDF ` +
        `(exactly as printed, with header and footer). Pages reload when a file changes.</p>` +
        items +
        reloadScript(prefix, this.version),
    );
  }
}

function resourceForm(m: Manifest, prefix: string): string {
  const selects = Object.entries(m.options)
    .map(([name, spec]) => {
      const options = spec.values
        .map((value) => {
          const label = spec.labels?.[String(value)] ?? String(value);
          const selected = value === spec.default ? ' selected' : '';
          return `<option value="${escapeHtml(String(value))}"${selected}>${escapeHtml(label)}</option>`;
        })
        .join('');
      return `<label>${escapeHtml(spec.label)} <select name="${name}">${options}</select></label>`;
    })
    .join(' ');
  const action = `${prefix}/${encodeURIComponent(m.view)}`;
  return (
    `<form class="resource" method="get" action="${action}.html" target="_blank">` +
    `<h2>${escapeHtml(m.title)} <small>${escapeHtml(m.view)}</small></h2>` +
    `<p>${escapeHtml(m.description)}</p>${selects} ` +
    `<label>Copies <input name="copies" type="number" min="1" value="1" size="3"></label> ` +
    `<label>Header text <input name="header_text" value=""></label> ` +
    `<button type="submit">HTML</button> ` +
    `<button type="submit" formaction="${action}.pdf.html">PDF</button></form>`
  );
}

/** The index entry of a view that does not load: its error instead of a form. */
function brokenEntry(view: string, error: string): string {
  return (
    `<section class="resource broken" id="broken-${escapeHtml(view)}">` +
    `<h2>${escapeHtml(view)} <small>does not load</small></h2>` +
    `<pre class="error">${escapeHtml(error)}</pre>` +
    '<p>Fix the file and save: this page reloads by itself.</p></section>'
  );
}

/** A small script that reloads the page when the preview says so. */
function reloadScript(prefix: string, version: number): string {
  return (
    `<script>(function () { var v = '${version}';` +
    ` var s = new EventSource('${prefix}/events');` +
    ` s.addEventListener('reload', function (e) { if (e.data !== v) location.reload(); });` +
    ` s.addEventListener('hello', function (e) { if (e.data !== v) location.reload(); }); })();</script>`
  );
}

function page(title: string, body: string): string {
  return (
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><style>` +
    'body{font-family:sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem}' +
    '.resource{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}' +
    'label{display:inline-block;margin:.25rem 1rem .25rem 0}' +
    '.error{background:#fee;border:1px solid #c00;padding:1rem;white-space:pre-wrap}' +
    `</style></head><body>${body}</body></html>`
  );
}
