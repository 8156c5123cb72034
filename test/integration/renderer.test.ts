import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { PNG } from 'pngjs';
import { RenderTimeoutError, TemplateError } from '../../src/errors';
import type { Renderer } from '../../src/render/renderer';
import type { RenderJob } from '../../src/resources/task';
import {
  PAPER_PT,
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
    });
    ({ renderer, job } = testRenderer(root));
    ({ renderer: hurried } = testRenderer(root, { timeoutMs: 4_000 }));
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
    await hurried.stop();
    leak.close();
  });

  it('prints A4 and Letter at their exact sizes', async () => {
    const a4 = pdfFacts((await renderer.render(job('plain'))).pdf);
    expect(a4.widthPt).to.be.closeTo(PAPER_PT.a4.width, 1);
    expect(a4.heightPt).to.be.closeTo(PAPER_PT.a4.height, 1);
    const letter = pdfFacts(
      (await renderer.render(job('plain', { paper_size: 'letter' }))).pdf,
    );
    expect(letter.widthPt).to.be.closeTo(PAPER_PT.letter.width, 1);
    expect(letter.heightPt).to.be.closeTo(PAPER_PT.letter.height, 1);
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
