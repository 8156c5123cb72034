import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { PNG } from 'pngjs';
import puppeteer from 'puppeteer-core';
import {
  BrowserCrashedError,
  RenderTimeoutError,
  TemplateError,
} from '../../src/errors';
import { CHROMIUM_ARGS } from '../../src/render/browser';
import type { Renderer } from '../../src/render/renderer';
import { asRenderError } from '../../src/render/renderer';
import type { RenderJob } from '../../src/resources/task';
import {
  PAPER_PT,
  pageSizes,
  pageTexts,
  pdfFacts,
  tempPdf,
  wordBoxes,
} from '../support/pdf';
import { CLI } from '../support/farm';
import { makeResourceRoot } from '../support/resources';
import { testRenderer } from '../support/renderer';

const SECRET = 'RF-SECRET-7f3a';

describe('Renderer (real Chromium)', function () {
  this.timeout(60_000);
  let renderer: Renderer;
  let hurried: Renderer;
  let job: (
    view: string,
    extra?: Record<string, unknown>,
    taskId?: string,
  ) => RenderJob;
  let leak: http.Server;
  let leakHits = 0;
  let secretFile: string;
  let resourceRoot: string;

  before(async () => {
    leak = http.createServer((_req, res) => {
      leakHits++;
      res.end('x');
    });
    await new Promise<void>((resolve) => leak.listen(0, '127.0.0.1', resolve));
    const leakUrl = `http://127.0.0.1:${(leak.address() as AddressInfo).port}/leak`;
    secretFile = path.join(
      fs.mkdtempSync(path.join(os.tmpdir(), 'rf-secret-')),
      'rf-secret.txt',
    );
    fs.writeFileSync(secretFile, SECRET);

    const root = makeResourceRoot({
      plain: {
        template:
          '<section class="page"><p>PLAIN BODY {{ random.int(1, 1000000) }}</p></section>',
      },
      seeded: {
        manifest: { copies_differ: true },
        template:
          '<section class="page"><p>NUMBER {{ random.int(1, 1000000) }}</p></section>',
      },
      'three-sections': {
        template:
          '<section class="page">ONE</section><section class="page">TWO</section>' +
          '<section class="page">THREE</section>',
      },
      'zero-margin': {
        template: '<section>ZERO</section>',
        style: '@page { margin: 0 }',
      },
      'full-sheet': {
        template:
          '<section class="page" style="border: 2mm solid #000; break-after: page">COPY-MARK</section>',
      },
      // A forced break after the last element makes Chromium print an
      // empty last page.
      'trailing-break': {
        template:
          '<section class="page">TRAIL-MARK</section><div style="break-before: page"></div>',
      },
      'two-pages': {
        template:
          '<section class="page">PAGE-A</section><section class="page">PAGE-B</section>',
      },
      margins: {
        template: '<p>LEFTEDGE text</p>',
        style: '@page { margin: 20mm 25mm; }',
      },
      'css-a4': {
        template: '<p>SIZED</p>',
        style: '@page { size: A4; }',
      },
      'file-refs': {
        template: `<iframe src="file://${secretFile}"></iframe><img src="file:///etc/hostname"><p>FILE REFS</p>`,
      },
      'outside-ref': {
        template:
          `<img src="${leakUrl}"><link rel="stylesheet" href="${leakUrl}.css">` +
          `<p style="font-family: LeakFont, serif">OUTSIDE</p>`,
        style: `@font-face { font-family: LeakFont; src: url("${leakUrl}.ttf"); }`,
      },
      busy: { template: '<script>for (;;) {}</script><p>never</p>' },
      // B03: last pages that draw but hold no text or image.
      'last-svg': {
        template:
          '<section class="page">FIRST-PAGE</section><section class="page">' +
          '<svg width="80" height="80"><rect width="60" height="60" fill="#c62828"/></svg></section>',
      },
      'last-border': {
        template:
          '<section class="page">FIRST-PAGE</section><section class="page">' +
          '<div style="width: 40mm; height: 40mm; border: 1mm solid #000"></div></section>',
      },
      'last-background': {
        template:
          '<section class="page">FIRST-PAGE</section><section class="page">' +
          '<div style="width: 40mm; height: 40mm; background: #1e6fd9"></div></section>',
      },
      // B02: ways round the margin check.
      'margin-in-media': {
        template: '<p>BODY</p>',
        style: '@media print { @page { margin: 0 } }',
      },
      'margin-in-supports': {
        template: '<p>BODY</p>',
        style: '@supports (display: grid) { @page { margin: 2mm 12mm } }',
      },
      'margin-in-layer': {
        template: '<p>BODY</p>',
        style: '@layer frame { @page :first { margin-bottom: 3mm } }',
      },
      'margin-em': {
        template: '<p>BODY</p>',
        style: '@page { margin: 1em 12mm }',
      },
      'margin-percent': {
        template: '<p>BODY</p>',
        style: '@page { margin: 2% 12mm }',
      },
      'margin-calc': {
        template: '<p>BODY</p>',
        style: '@page { margin: 16mm 12mm calc(1% + 2mm) }',
      },
      'margin-var': {
        template: '<p>BODY</p>',
        style: ':root { --edge: 4mm } @page { margin: var(--edge) 12mm }',
      },
      'margin-import': {
        template: '<p>BODY</p>',
        style: '@import url("data:text/css,@page{margin:0}");',
      },
      // Margins that look small but resolve to 12 mm or more.
      'margin-em-ok': {
        template: '<p style="margin: 0">EMBODY text</p>',
        style: 'html { font-size: 20px } @page { margin: 3em 12mm }',
      },
      'margin-percent-ok': {
        template: '<p>BODY</p>',
        style: '@page { margin: 5% 12mm calc(2% + 8mm) }',
      },
      // B05: orientation and size in CSS, everywhere it can be written.
      'size-landscape': {
        template: '<p>SIZED</p>',
        style: '@page { size: landscape }',
      },
      'size-a4-landscape': {
        template: '<p>SIZED</p>',
        style: '@page { size: A4 landscape }',
      },
      'size-a5-landscape': {
        template: '<p>SIZED</p>',
        style: '@page { size: A5 landscape }',
      },
      'size-hidden': {
        template:
          '<p class="wide">SIZED</p><section class="page">TWO</section>',
        style:
          '@media print { @page :first { size: landscape !important } } ' +
          '@page wide { size: A3 landscape } .wide { page: wide }',
      },
    });
    resourceRoot = root;
    ({ renderer, job } = testRenderer(root));
    ({ renderer: hurried } = testRenderer(root, { timeoutMs: 4_000 }));
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
    await hurried.stop();
    leak.close();
  });

  it('B05: prints A4 and Letter at their exact sizes', async () => {
    // Exact to pdfinfo's two decimals: Chromium's own A4 page (595.92 ×
    // 841.92 pt) is cropped to the paper when the pages are assembled.
    const a4 = pdfFacts((await renderer.render(job('plain'))).pdf);
    expect(a4.widthPt).to.be.closeTo(PAPER_PT.a4.width, 0.01);
    expect(a4.heightPt).to.be.closeTo(PAPER_PT.a4.height, 0.01);
    const letter = pdfFacts(
      (await renderer.render(job('plain', { paper_size: 'letter' }))).pdf,
    );
    expect(letter.widthPt).to.be.closeTo(PAPER_PT.letter.width, 0.01);
    expect(letter.heightPt).to.be.closeTo(PAPER_PT.letter.height, 0.01);
  });

  it('B05: paper_size wins over any @page size or orientation, portrait on every page', async () => {
    for (const view of [
      'size-landscape',
      'size-a4-landscape',
      'size-a5-landscape',
      'size-hidden',
    ]) {
      for (const paper of ['a4', 'letter'] as const) {
        const output = await renderer.render(job(view, { paper_size: paper }));
        const sizes = pageSizes(output.pdf);
        expect(sizes.length, view).to.equal(output.pages);
        for (const size of sizes) {
          expect(size.widthPt, `${view} ${paper}`).to.be.closeTo(
            PAPER_PT[paper].width,
            0.01,
          );
          expect(size.heightPt, `${view} ${paper}`).to.be.closeTo(
            PAPER_PT[paper].height,
            0.01,
          );
        }
      }
    }
  });

  it('sets the PDF title to the file name without .pdf', async () => {
    const output = await renderer.render(
      job('plain', { resource_name: 'Binary Cards' }),
    );
    expect(pdfFacts(output.pdf).title).to.equal('Binary Cards (a4)');
  });

  it('prints the header text, resource name and url on every page', async () => {
    const output = await renderer.render(
      job('three-sections', {
        header_text: 'Room 12 Māori',
        resource_name: 'Three Sections',
      }),
    );
    const pages = pageTexts(output.pdf);
    expect(pages).to.have.length(3);
    pages.forEach((text, i) => {
      expect(text).to.contain('Room 12 Māori');
      expect(text).to.contain('Three Sections');
      expect(text).to.contain('https://example.org/resources/three-sections');
      expect(text).to.contain(['ONE', 'TWO', 'THREE'][i]);
    });
  });

  it('B02: footer page numbers are right and legible, with the logo on every page', async () => {
    const output = await renderer.render(job('three-sections'));
    const file = tempPdf(output.pdf);
    pageTexts(file).forEach((text, i) =>
      expect(text).to.match(new RegExp(`Page ${i + 1} of 3`)),
    );
    const boxes = wordBoxes(file, 'Page');
    expect(boxes).to.have.length(3);
    for (const box of boxes) expect(box.yMax - box.yMin).to.be.at.least(8);

    execFileSync('pdftoppm', [
      '-png',
      '-r',
      '50',
      file,
      path.join(path.dirname(file), 'p'),
    ]);
    const images = fs
      .readdirSync(path.dirname(file))
      .filter((f) => f.endsWith('.png'))
      .sort();
    expect(images).to.have.length(3);
    for (const image of images) {
      const png = PNG.sync.read(
        fs.readFileSync(path.join(path.dirname(file), image)),
      );
      const footerTop = Math.floor(png.height * (1 - 18 / 297));
      expect(countColour(png, footerTop, 0x00, 0xa0, 0xff)).to.be.at.least(100);
    }
  });

  it('B02: refuses a page margin with no room for the header and footer', async () => {
    let error: unknown;
    try {
      await renderer.render(job('zero-margin'));
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(TemplateError);
    expect((error as Error).message).to.match(
      /page margin top 0px.*header and footer/,
    );
  });

  it('B02: an @page margin too small is refused wherever and however it is written', async () => {
    const cases: Record<string, RegExp> = {
      'margin-in-media': /top 0px = 0\.0mm \(@page in @media print\)/,
      'margin-in-supports': /top 2mm = 2\.0mm \(@page in @supports/,
      'margin-in-layer': /bottom 3mm = 3\.0mm \(@page :first in @layer frame\)/,
      'margin-em': /top 1em = 4\.2mm/,
      'margin-percent': /top 2% = 5\.9mm/,
      'margin-calc': /bottom calc\(1% \+ [\d.]+px\) = 5\.0mm/,
      'margin-var': /top of margin: var\(--edge\) 12mm = 4\.0mm/,
      'margin-import': /top 0px = 0\.0mm \(@page in @import "data:text\/css/,
    };
    for (const [view, detail] of Object.entries(cases)) {
      let error: unknown;
      try {
        await renderer.render(job(view));
      } catch (caught) {
        error = caught;
      }
      expect(error, view).to.be.instanceOf(TemplateError);
      const message = (error as Error).message;
      expect(message, view).to.match(detail);
      expect(message, view).to.match(
        /smaller than the 12mm the header and footer need/,
      );
    }
  });

  it('B02: margins in em and % that resolve to 12 mm or more print, the header above the body', async () => {
    const output = await renderer.render(
      job('margin-em-ok', { header_text: 'HEADWORD' }),
    );
    const file = tempPdf(output.pdf);
    const [head] = wordBoxes(file, 'HEADWORD');
    const [body] = wordBoxes(file, 'EMBODY');
    expect(head, 'header word printed').not.to.equal(undefined);
    expect(body, 'body word printed').not.to.equal(undefined);
    // 3em of 20px is 15.9 mm (45 pt) from the top edge.
    expect(body?.yMin).to.be.closeTo(45, 4);
    expect(head?.yMax).to.be.below(body?.yMin ?? 0);
    const ok = await renderer.render(job('margin-percent-ok'));
    expect(pageTexts(ok.pdf)[0]).to.contain('BODY');
  });

  it('B03: a last page holding only an SVG shape, a border or a coloured box is kept', async () => {
    for (const view of ['last-svg', 'last-border', 'last-background']) {
      const output = await renderer.render(job(view, { copies: 2 }));
      expect(output.pages, view).to.equal(4);
      expect(pdfFacts(output.pdf).pages, view).to.equal(4);
      const texts = pageTexts(output.pdf);
      expect(texts[0], view).to.contain('FIRST-PAGE');
      expect(texts[1], view).to.match(/Page 2 of 2/);
      expect(texts[2], view).to.contain('FIRST-PAGE');
    }
  });

  it('B03: a page that exactly fills the sheet gives one page a copy, no blank pages', async () => {
    const output = await renderer.render(job('full-sheet', { copies: 3 }));
    const pages = pageTexts(output.pdf);
    expect(output.pages).to.equal(3);
    expect(pdfFacts(output.pdf).pages).to.equal(3);
    for (const text of pages) expect(text).to.contain('COPY-MARK');
  });

  it('B03: an empty page after the last element is trimmed before copies are made', async () => {
    const output = await renderer.render(job('trailing-break', { copies: 3 }));
    expect(output.pages).to.equal(3);
    expect(pdfFacts(output.pdf).pages).to.equal(3);
    for (const text of pageTexts(output.pdf))
      expect(text).to.contain('TRAIL-MARK');
  });

  it('B03: copies of a two-page resource are collated A, B, A, B', async () => {
    const output = await renderer.render(job('two-pages', { copies: 2 }));
    const marks = pageTexts(output.pdf).map(
      (text) => /PAGE-[AB]/.exec(text)?.[0],
    );
    expect(marks).to.deep.equal(['PAGE-A', 'PAGE-B', 'PAGE-A', 'PAGE-B']);
  });

  it('repeats identical copies with the same numbers, and seeds differing copies apart', async () => {
    const same = pageTexts(
      (await renderer.render(job('plain', { copies: 3 }))).pdf,
    );
    const sameNumbers = same.map((text) => /PLAIN BODY (\d+)/.exec(text)?.[1]);
    expect(new Set(sameNumbers).size).to.equal(1);

    const differ = pageTexts(
      (await renderer.render(job('seeded', { copies: 3 }, 'task-a'))).pdf,
    );
    const numbers = differ.map((text) => /NUMBER (\d+)/.exec(text)?.[1]);
    expect(new Set(numbers).size).to.equal(3);

    const again = pageTexts(
      (await renderer.render(job('seeded', { copies: 3 }, 'task-a'))).pdf,
    );
    expect(again.map((text) => /NUMBER (\d+)/.exec(text)?.[1])).to.deep.equal(
      numbers,
    );
    const other = pageTexts(
      (await renderer.render(job('seeded', { copies: 1 }, 'task-b'))).pdf,
    );
    expect(/NUMBER (\d+)/.exec(other[0] ?? '')?.[1]).not.to.equal(numbers[0]);
  });

  it('B05: the task paper size wins over an @page size in the template', async () => {
    for (let run = 0; run < 3; run++) {
      const facts = pdfFacts(
        (await renderer.render(job('css-a4', { paper_size: 'letter' }))).pdf,
      );
      expect(facts.widthPt).to.be.closeTo(612, 1);
      expect(facts.heightPt).to.be.closeTo(792, 1);
    }
  });

  it('B15(e): file: URLs are refused and reported, and nothing of the file is printed', async () => {
    const output = await renderer.render(job('file-refs'));
    const text = pageTexts(output.pdf).join('\n');
    expect(text).to.contain('FILE REFS');
    expect(text).not.to.contain(SECRET);
    expect(output.warnings.join('\n')).to.match(
      /refused request to file:\/\/\/etc\/hostname/,
    );
    expect(JSON.stringify(output.warnings)).not.to.contain(SECRET);
  });

  it('refuses and reports requests to any outside address, fetching nothing', async () => {
    leakHits = 0;
    const output = await renderer.render(job('outside-ref'));
    expect(pageTexts(output.pdf).join('')).to.contain('OUTSIDE');
    expect(leakHits).to.equal(0);
    const warnings = output.warnings.join('\n');
    for (const suffix of ['', '\\.css', '\\.ttf'])
      expect(warnings).to.match(
        new RegExp(
          `refused request to http://127\\.0\\.0\\.1:\\d+/leak${suffix}\\b`,
        ),
      );
  });

  it('B08: a browser killed mid-render fails the render as a passing crash, in plain words', async () => {
    const { renderer: own } = testRenderer(resourceRoot);
    try {
      await own.start();
      const rendering = own.render(job('busy'));
      rendering.catch(() => undefined);
      // The busy script has the page loaded and spinning by then.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      process.kill((await own.status()).pid, 'SIGKILL');
      let error: unknown;
      try {
        await rendering;
      } catch (caught) {
        error = caught;
      }
      expect(error).to.be.instanceOf(BrowserCrashedError);
      expect((error as Error).message).not.to.match(
        /Protocol error|Target closed|Session closed/,
      );
    } finally {
      await own.stop();
    }

    // Puppeteer's own error for a call on a page that went away.
    const browser = await puppeteer.launch({
      executablePath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
    });
    try {
      const page = await browser.newPage();
      const outcome = page
        .evaluate(() => new Promise((resolve) => setTimeout(resolve, 30_000)))
        .then(
          () => undefined,
          (caught: unknown) => caught,
        );
      await page.close();
      const raw = await outcome;
      expect(String(raw)).to.match(/closed/i);
      const mapped = asRenderError(raw);
      expect(mapped).to.be.instanceOf(BrowserCrashedError);
      expect((mapped as Error).message).to.equal(
        'the browser closed the page during the render (it crashed or was stopped)',
      );
    } finally {
      await browser.close();
    }
  });

  it('counts opening the browser context against the deadline (a frozen browser)', async () => {
    const { renderer: own } = testRenderer(resourceRoot, {
      timeoutMs: 3_000,
    });
    let pid = 0;
    try {
      await own.start();
      pid = (await own.status()).pid;
      process.kill(pid, 'SIGSTOP');
      const started = Date.now();
      let error: unknown;
      try {
        await own.render(job('plain'));
      } catch (caught) {
        error = caught;
      }
      // Not the protocol timeout of T + 10 s.
      expect(error).to.be.instanceOf(RenderTimeoutError);
      expect(Date.now() - started).to.be.below(9_000);
    } finally {
      if (pid) process.kill(pid, 'SIGCONT');
      await own.stop();
    }
  });

  it('tears a hung render down at the deadline, then renders the next task', async () => {
    const started = Date.now();
    let error: unknown;
    try {
      await hurried.render(job('busy'));
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(RenderTimeoutError);
    expect((error as Error).message).to.equal(
      'render time limit of 4 s exceeded',
    );
    expect(Date.now() - started).to.be.below(15_000);
    const next = await hurried.render(job('plain'));
    expect(pageTexts(next.pdf)[0]).to.contain('PLAIN BODY');
  });
});

describe('B05: page size and margins do not depend on the host locale', function () {
  this.timeout(60_000);
  const root = makeResourceRoot({
    margins: {
      template: '<p>LEFTEDGE text</p>',
      style: '@page { margin: 20mm 25mm; }',
    },
  });

  for (const lang of ['en_US.UTF-8', 'de_DE.UTF-8']) {
    it(`prints A4 with the text 25 mm from the left edge under LANG=${lang}`, () => {
      const out = path.join(
        fs.mkdtempSync(path.join(os.tmpdir(), 'rf-b05-')),
        'out.pdf',
      );
      execFileSync('node', [CLI, 'render', 'margins', '--out', out], {
        env: {
          ...process.env,
          LANG: lang,
          LC_ALL: lang,
          RENDER_RESOURCES_DIR: root,
          RENDER_LOG_LEVEL: 'warn',
        },
      });
      const facts = pdfFacts(out);
      expect(facts.widthPt).to.be.closeTo(PAPER_PT.a4.width, 1);
      expect(facts.heightPt).to.be.closeTo(PAPER_PT.a4.height, 1);
      const [box] = wordBoxes(out, 'LEFTEDGE');
      expect(box?.xMin).to.be.closeTo(70.9, 2);
    });
  }
});

/** Pixels below row `fromY` within ±8 of a colour. */
function countColour(
  png: PNG,
  fromY: number,
  r: number,
  g: number,
  b: number,
): number {
  let count = 0;
  for (let y = fromY; y < png.height; y++) {
    for (let x = 0; x < png.width; x++) {
      const i = (y * png.width + x) * 4;
      const near = (v: number | undefined, want: number) =>
        Math.abs((v ?? 0) - want) <= 8;
      if (
        near(png.data[i], r) &&
        near(png.data[i + 1], g) &&
        near(png.data[i + 2], b)
      )
        count++;
    }
  }
  return count;
}
