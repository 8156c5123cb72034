import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import puppeteer from 'puppeteer-core';
import type { Browser, HTTPRequest } from 'puppeteer-core';
import { CHROMIUM_ARGS } from '../../src/render/browser';
import { pageTexts, pdfFacts } from '../support/pdf';
import { CLI } from '../support/farm';
import { makeResourceRoot } from '../support/resources';

/** Longest wait for a reload event or a log line, in milliseconds. */
const WAIT_MS = 30_000;

/** The preview's reload events, read as they arrive. */
class EventReader {
  private text = '';
  private readonly controller = new AbortController();
  private reader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  static async open(url: string): Promise<EventReader> {
    const events = new EventReader();
    const response = await fetch(url, { signal: events.controller.signal });
    expect(response.headers.get('content-type')).to.match(
      /^text\/event-stream/,
    );
    events.reader = response.body?.getReader();
    return events;
  }

  /** Waits for the next event named `name`, and returns its data. */
  async next(name: string): Promise<string> {
    const deadline = Date.now() + WAIT_MS;
    const decoder = new TextDecoder();
    for (;;) {
      const match = new RegExp(`event: ${name}\\ndata: (\\S*)\\n\\n`).exec(
        this.text,
      );
      if (match) {
        this.text = this.text.slice(match.index + match[0].length);
        return match[1] ?? '';
      }
      if (Date.now() > deadline)
        throw new Error(`no "${name}" event; got ${JSON.stringify(this.text)}`);
      const chunk = await Promise.race([
        this.reader?.read(),
        new Promise<undefined>((resolve) =>
          setTimeout(() => resolve(undefined), 1_000),
        ),
      ]);
      if (chunk?.done) throw new Error(`events ended before "${name}"`);
      if (chunk?.value) this.text += decoder.decode(chunk.value);
    }
  }

  async close(): Promise<void> {
    await this.reader?.cancel().catch(() => undefined);
    this.controller.abort();
  }
}

describe('render-farm preview', function () {
  this.timeout(120_000);
  let child: ChildProcess;
  let base: string;
  let root: string;
  let stderr = '';

  const file = (...parts: string[]) => path.join(root, ...parts);
  const edit = (name: string, change: (text: string) => string) =>
    fs.writeFileSync(file(name), change(fs.readFileSync(file(name), 'utf8')));

  before(async () => {
    root = makeResourceRoot({
      note: {
        manifest: {
          title: 'Note',
          options: {
            tone: { label: 'Tone', values: ['calm', 'loud'], default: 'calm' },
          },
        },
        template:
          '<section class="page"><p class="note">NOTE {{ tone }} first</p></section>',
        style: '.note { color: rgb(1, 2, 3); }',
      },
      other: {
        manifest: { title: 'Other resource' },
        template: '<section class="page"><p>OTHER page</p></section>',
      },
    });
    child = spawn('node', [CLI, 'preview', '--port', '0'], {
      env: {
        ...process.env,
        RENDER_RESOURCES_DIR: root,
        RENDER_LOG_LEVEL: 'debug',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    base = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        const url = /preview on (\S+)/.exec(chunk.toString('utf8'))?.[1];
        if (url) resolve(url);
      });
      child.once('exit', (code) =>
        reject(new Error(`preview exited with ${code}: ${stderr}`)),
      );
    });
  });

  after(() => {
    child.kill('SIGTERM');
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** Waits until the preview has announced no change for a second. */
  async function settled(): Promise<void> {
    const announced = () => stderr.split('resource changed; reloading').length;
    let seen = announced();
    let quietSince = Date.now();
    while (Date.now() - quietSince < 1_000) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (announced() !== seen) [seen, quietSince] = [announced(), Date.now()];
    }
  }

  async function waitForLog(pattern: RegExp): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!pattern.test(stderr)) {
      if (Date.now() > deadline)
        throw new Error(`no log line ${pattern}: ${stderr.slice(-2000)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  it('lists every resource with its options as choices', async () => {
    const html = await (await fetch(base)).text();
    expect(html).to.contain('<h2>Note <small>note</small></h2>');
    expect(html).to.match(
      /<select name="tone"><option value="calm" selected>calm<\/option><option value="loud">loud/,
    );
    expect(html).to.contain('<select name="paper_size">');
    expect(html).to.contain('formaction="/preview/note.pdf.html"');
  });

  it('serves a resource as HTML, as the printed PDF and as a page showing the PDF', async () => {
    const html = await (await fetch(`${base}note.html?tone=loud`)).text();
    expect(html).to.contain('NOTE loud first');
    const query = 'tone=loud&copies=2&paper_size=letter';
    const response = await fetch(`${base}note.pdf?${query}`);
    expect(response.headers.get('content-type')).to.equal('application/pdf');
    const pdf = Buffer.from(await response.arrayBuffer());
    expect(pdfFacts(pdf).pages).to.equal(2);
    expect(pdfFacts(pdf).widthPt).to.be.closeTo(612, 1);
    expect(pageTexts(pdf)[1]).to.contain('NOTE loud first');

    const holder = await fetch(`${base}note.pdf.html?${query}`);
    expect(holder.status).to.equal(200);
    expect(holder.headers.get('content-type')).to.match(/^text\/html/);
    const page = await holder.text();
    expect(page).to.contain(
      `<iframe class="printed" src="/preview/note.pdf?${query.replaceAll('&', '&#38;')}"`,
    );
    expect(page).to.contain("new EventSource('/preview/events')");
  });

  it('answers a bad option or copies with 400 naming the field', async () => {
    const cases: [string, string][] = [
      [
        'note.html?tone=mumbled',
        'option tone: got &#34;mumbled&#34;, expected &#34;calm&#34; or &#34;loud&#34;',
      ],
      [
        'note.html?copies=0',
        'field copies: got 0, expected a whole number from 1 to 50',
      ],
      [
        'note.pdf?copies=two',
        'field copies: got &#34;two&#34;, expected a whole number from 1 to 50',
      ],
      [
        'note.pdf.html?paper_size=a3',
        'option paper_size: got &#34;a3&#34;, expected &#34;a4&#34; or &#34;letter&#34;',
      ],
    ];
    for (const [url, error] of cases) {
      const response = await fetch(`${base}${url}`);
      expect(response.status, url).to.equal(400);
      const text = await response.text();
      expect(text, url).to.contain(error);
      expect(text, url).not.to.contain('Fix the file');
    }
    const unknown = await fetch(`${base}nothing.html`);
    expect(unknown.status).to.equal(404);
    expect(await unknown.text()).to.contain(
      'no resource view &#34;nothing&#34;',
    );
  });

  it('tells open pages to reload when a template, stylesheet or manifest changes', async () => {
    const events = await EventReader.open(`${base}events`);
    try {
      let version = Number(await events.next('hello'));

      edit('note/template.njk', (text) => text.replace('first', 'second'));
      expect(Number(await events.next('reload'))).to.be.above(version++);
      expect(await (await fetch(`${base}note.html`)).text()).to.contain(
        'NOTE calm second',
      );

      edit('note/style.css', (text) => text.replace('1, 2, 3', '4, 5, 6'));
      expect(Number(await events.next('reload'))).to.be.above(version++);
      const html = await (await fetch(`${base}note.html`)).text();
      expect(html).to.contain('rgb(4, 5, 6)').and.not.to.contain('1, 2, 3');

      edit('note/manifest.json', (text) => {
        const manifest = JSON.parse(text) as {
          title: string;
          options: { tone: { values: string[] } };
        };
        manifest.title = 'Note, renamed';
        manifest.options.tone.values.push('quiet');
        return JSON.stringify(manifest, null, 2);
      });
      expect(Number(await events.next('reload'))).to.be.above(version++);
      const index = await (await fetch(base)).text();
      expect(index).to.contain('<h2>Note, renamed <small>note</small></h2>');
      expect(index).to.contain('<option value="quiet">quiet</option>');
      expect(
        await (await fetch(`${base}note.html?tone=quiet`)).text(),
      ).to.contain('NOTE quiet second');
    } finally {
      await events.close();
    }
  });

  it('shows a broken template on its own entry and page and keeps the others working', async () => {
    const events = await EventReader.open(`${base}events`);
    const template = file('note', 'template.njk');
    const good = fs.readFileSync(template, 'utf8');
    try {
      await events.next('hello');
      fs.writeFileSync(
        template,
        '{% extends "_layout/base.njk" %}\n{% block content %}\n{{ tone }\n{% endblock %}',
      );
      await events.next('reload');

      const index = await fetch(base);
      expect(index.status).to.equal(200);
      const html = await index.text();
      expect(html).not.to.contain('Resources do not load');
      expect(html).to.contain('<h2>Other resource <small>other</small></h2>');
      const entry =
        /<section class="resource broken" id="broken-note">[\s\S]*?<\/section>/.exec(
          html,
        )?.[0];
      expect(entry, 'the broken entry').to.match(/note\/template\.njk line \d/);

      const broken = await fetch(`${base}note.html`);
      expect(broken.status).to.equal(422);
      const page = await broken.text();
      expect(page).to.match(/note\/template\.njk line \d/);
      expect(page).to.contain('Fix the file and save');

      const other = await fetch(`${base}other.html`);
      expect(other.status).to.equal(200);
      expect(await other.text()).to.contain('OTHER page');
      const printed = await fetch(`${base}other.pdf`);
      expect(printed.status).to.equal(200);
      expect(pageTexts(Buffer.from(await printed.arrayBuffer()))[0]).to.contain(
        'OTHER page',
      );
    } finally {
      fs.writeFileSync(template, good);
      await events.next('reload');
      await events.close();
    }
    expect((await fetch(`${base}note.html`)).status).to.equal(200);
  });

  it('logs a client leaving the reload events at debug, without a stack trace', async () => {
    const events = await EventReader.open(`${base}events`);
    await events.next('hello');
    const before = stderr.length;
    await events.close();
    await waitForLog(/preview events client went away/);
    // Anything the close might print has had its turn once another request
    // has been answered.
    expect((await fetch(base)).status).to.equal(200);
    const since = stderr.slice(before);
    expect(since).not.to.contain('ERR_STREAM_PREMATURE_CLOSE');
    expect(since).not.to.match(/\n\s+at /);
  });

  describe('in a browser', () => {
    let browser: Browser;

    before(async () => {
      browser = await puppeteer.launch({
        executablePath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
        headless: true,
        args: CHROMIUM_ARGS,
      });
    });

    after(async () => {
      await browser?.close();
    });

    for (const [kind, url, fetched] of [
      ['HTML page', 'note.html?tone=loud', /\/note\.html\?tone=loud$/],
      ['PDF page', 'note.pdf.html?tone=loud', /\/note\.pdf\?tone=loud$/],
    ] as const) {
      it(`reloads the ${kind} by itself when a file changes`, async () => {
        // An earlier test's edit announced while this page loads would
        // reload it once more than this edit does.
        await settled();
        const page = await browser.newPage();
        try {
          const requests: string[] = [];
          page.on('request', (request: HTTPRequest) => {
            requests.push(request.url());
          });
          const connected = page.waitForResponse(
            (response) => response.url().endsWith('/events'),
            { timeout: WAIT_MS },
          );
          await page.goto(`${base}${url}`, { waitUntil: 'load' });
          await connected;
          // Marks this load; a reload forgets it.
          await page.evaluate(() => {
            (window as unknown as { mark: number }).mark = 1;
          });
          const loads = requests.filter((u) => fetched.test(u)).length;
          expect(loads, `requests for ${fetched}`).to.equal(1);

          const reloaded = page.waitForNavigation({
            timeout: WAIT_MS,
            waitUntil: 'load',
          });
          edit('note/style.css', (text) => `${text}\n/* ${kind} */`);
          await reloaded;
          expect(
            await page.evaluate(
              () => (window as unknown as { mark?: number }).mark,
            ),
          ).to.equal(undefined);
          await waitUntil(
            () => requests.filter((u) => fetched.test(u)).length >= 2,
            `the reloaded page to fetch ${fetched} again`,
          );
        } finally {
          await page.close();
        }
      });
    }
  });
});

async function waitUntil(test: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
