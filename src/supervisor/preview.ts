import { PassThrough } from 'node:stream';
import Router from '@koa/router';
import type Koa from 'koa';
import chokidar from 'chokidar';
import { rendererOptions } from '../daemon/main';
import type { Config } from '../config';
import { errorMessage } from '../errors';
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
 * (fast, in the browser) or as the real PDF, reloaded in the browser when a
 * template, stylesheet, manifest or static file changes. A broken resource
 * shows its error instead of stopping the preview.
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
    router.get('/:view.html', (ctx) => this.html(ctx, prefix));
    router.get('/:view.pdf', (ctx) => this.pdf(ctx));
    return router.routes();
  }

  private reload(): void {
    this.version++;
    try {
      this.catalogue = Catalogue.load(this.config.resourcesDir, {
        watch: true,
      });
      this.loadError = undefined;
      const old = this.renderer;
      this.renderer = undefined;
      void old?.stop();
    } catch (error) {
      this.loadError = errorMessage(error);
      this.logger.warn('resources do not load', { error: this.loadError });
    }
  }

  private jobOf(ctx: Koa.Context): RenderJob | undefined {
    const catalogue = this.catalogue;
    if (this.loadError || !catalogue) {
      this.errorPage(ctx, this.loadError ?? 'resources not loaded');
      return undefined;
    }
    const view = String(ctx.params['view']);
    const manifest = catalogue.get(view);
    const query = ctx.query as Record<string, string>;
    const task: Record<string, unknown> = {
      kind: TASK_KIND,
      resource_slug: view,
      resource_name: manifest?.title ?? view,
      resource_view: view,
      url: `https://example.org/resources/${view}`,
      header_text: query['header_text'] ?? '',
      copies: Number(query['copies'] ?? 1),
    };
    for (const [name, spec] of Object.entries(manifest?.options ?? {})) {
      task[name] = query[name] ?? spec.default;
    }
    try {
      return checkTask(
        task,
        query['task_id'] ?? 'preview',
        catalogue,
        this.config,
      );
    } catch (error) {
      this.errorPage(ctx, errorMessage(error));
      return undefined;
    }
  }

  private html(ctx: Koa.Context, prefix: string): void {
    const job = this.jobOf(ctx);
    if (!job) return;
    try {
      const html = this.rendererFor().fillDocument(job, 1);
      ctx.type = 'html';
      // The document asks for /static/...; in the browser those come from
      // the preview's own static route.
      ctx.body = html
        .replaceAll('"/static/', `"${prefix}/static/`)
        .replace('</body>', `${reloadScript(prefix, this.version)}</body>`);
    } catch (error) {
      this.errorPage(ctx, errorMessage(error));
    }
  }

  private async pdf(ctx: Koa.Context): Promise<void> {
    const job = this.jobOf(ctx);
    if (!job) return;
    try {
      const output = await this.rendererFor().render(job);
      ctx.type = 'application/pdf';
      ctx.set(
        'Content-Disposition',
        `inline; filename*=UTF-8''${encodeURIComponent(job.filename)}`,
      );
      for (const warning of output.warnings)
        ctx.append('X-Render-Warning', warning.slice(0, 200));
      ctx.body = output.pdf;
    } catch (error) {
      this.errorPage(ctx, errorMessage(error));
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

  private events(ctx: Koa.Context): void {
    ctx.request.socket.setTimeout(0);
    ctx.status = 200;
    ctx.type = 'text/event-stream';
    ctx.set('Cache-Control', 'no-cache');
    const stream = new PassThrough();
    const send = (version: string) =>
      stream.write(`event: reload\ndata: ${version}\n\n`);
    this.clients.add(send);
    stream.write(`event: hello\ndata: ${this.version}\n\n`);
    ctx.req.on('close', () => {
      this.clients.delete(send);
      stream.end();
    });
    ctx.body = stream;
  }

  private errorPage(ctx: Koa.Context, message: string): void {
    ctx.status = 422;
    ctx.type = 'html';
    ctx.body = page(
      'Preview error',
      `<h1>This resource cannot be rendered</h1><pre class="error">${escapeHtml(message)}</pre>` +
        '<p>Fix the file and save: this page reloads by itself.</p>' +
        reloadScript(ctx.path.replace(/\/[^/]*$/, ''), this.version),
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
    const items = this.catalogue
      .list()
      .map((m) => resourceForm(m, prefix))
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
    `<button type="submit" formaction="${action}.pdf">PDF</button></form>`
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
