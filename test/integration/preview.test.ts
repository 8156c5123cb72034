import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { pageTexts, pdfFacts } from '../support/pdf';
import { CLI } from '../support/farm';
import { makeResourceRoot } from '../support/resources';

describe('render-farm preview', function () {
  this.timeout(90_000);
  let child: ChildProcess;
  let base: string;
  let root: string;

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
      },
    });
    child = spawn('node', [CLI, 'preview', '--port', '0'], {
      env: {
        ...process.env,
        RENDER_RESOURCES_DIR: root,
        RENDER_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    base = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        const url = /preview on (\S+)/.exec(chunk.toString('utf8'))?.[1];
        if (url) resolve(url);
      });
      child.once('exit', (code) =>
        reject(new Error(`preview exited with ${code}`)),
      );
    });
  });

  after(() => {
    child.kill('SIGTERM');
  });

  it('lists every resource with its options as choices', async () => {
    const html = await (await fetch(base)).text();
    expect(html).to.contain('<h2>Note <small>note</small></h2>');
    expect(html).to.match(
      /<select name="tone"><option value="calm" selected>calm<\/option><option value="loud">loud/,
    );
    expect(html).to.contain('<select name="paper_size">');
  });

  it('serves a resource as HTML and as the printed PDF', async () => {
    const html = await (await fetch(`${base}note.html?tone=loud`)).text();
    expect(html).to.contain('NOTE loud first');
    const response = await fetch(
      `${base}note.pdf?tone=loud&copies=2&paper_size=letter`,
    );
    expect(response.headers.get('content-type')).to.equal('application/pdf');
    const pdf = Buffer.from(await response.arrayBuffer());
    expect(pdfFacts(pdf).pages).to.equal(2);
    expect(pdfFacts(pdf).widthPt).to.be.closeTo(612, 1);
    expect(pageTexts(pdf)[1]).to.contain('NOTE loud first');
  });

  it('shows a clear error for a bad option', async () => {
    const response = await fetch(`${base}note.html?tone=mumbled`);
    expect(response.status).to.equal(422);
    expect(await response.text()).to.contain(
      'option tone: got &#34;mumbled&#34;, expected &#34;calm&#34; or &#34;loud&#34;',
    );
  });

  it('tells open pages to reload when a template changes, and shows template errors', async () => {
    const controller = new AbortController();
    const events = await fetch(`${base}events`, { signal: controller.signal });
    const reader = events.body?.getReader();
    const read = async () =>
      new TextDecoder().decode((await reader?.read())?.value);
    expect(await read()).to.match(/event: hello/);

    const template = path.join(root, 'note', 'template.njk');
    fs.writeFileSync(
      template,
      fs.readFileSync(template, 'utf8').replace('first', 'second'),
    );
    expect(await read()).to.match(/event: reload/);
    expect(await (await fetch(`${base}note.html`)).text()).to.contain(
      'NOTE calm second',
    );

    fs.writeFileSync(
      template,
      '{% extends "_layout/base.njk" %}{% block content %}{{ tone }{% endblock %}',
    );
    expect(await read()).to.match(/event: reload/);
    const broken = await fetch(`${base}note.html`);
    expect(broken.status).to.equal(422);
    expect(await broken.text()).to.match(/note\/template\.njk/);
    await reader?.cancel();
    controller.abort();
  });
});
