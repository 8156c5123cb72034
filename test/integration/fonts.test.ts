import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Renderer } from '../../src/render/renderer';
import { pageTexts, pdfFonts } from '../support/pdf';
import { STATIC_DIR, makeResourceRoot } from '../support/resources';
import { testRenderer } from '../support/renderer';

/** An installed font the fallback never picks, standing in for a web font. */
const PROBE_SOURCE =
  '/usr/share/fonts/truetype/noto/NotoSerifDisplay-Italic.ttf';

describe('B01: web fonts are loaded before printing, without hanging pooled pages', function () {
  this.timeout(120_000);
  let staticDir: string;
  let renderer: Renderer;
  let job: ReturnType<typeof testRenderer>['job'];
  const postscriptName = execFileSync(
    'fc-scan',
    ['--format', '%{postscriptname}', PROBE_SOURCE],
    {
      encoding: 'utf8',
    },
  );

  before(async () => {
    // Each font file is a named pipe, written by another process 1.5 s
    // after the renderer opens it: a font that arrives late, for every
    // render alike. The "never" pipe is not written until the test is over.
    staticDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-static-'));
    fs.mkdirSync(path.join(staticDir, 'fonts'));
    const root = makeResourceRoot({
      probe: {
        manifest: {
          options: {
            n: { label: 'n', values: [1, 2, 3, 4, 5, 6, 7, 8], default: 1 },
            font: { label: 'font', values: ['late', 'never'], default: 'late' },
          },
        },
        template:
          '<style>@font-face { font-family: "RFProbe"; src: url("{{ static_url("fonts/" + font + "-" + n + ".ttf") }}") format("truetype"); }' +
          ' p { font-family: "RFProbe", serif; font-size: 18pt; }</style>' +
          '<section class="page"><p>Glyph probe QXJ {{ n }}</p></section>',
      },
    });
    ({ renderer, job } = testRenderer(root, {
      staticDirs: [staticDir, STATIC_DIR],
      assetTimeoutMs: 4_000,
      timeoutMs: 30_000,
      pages: 2,
    }));
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
    // Release any reader still blocked on a pipe, then remove the folder.
    for (const name of fs.readdirSync(path.join(staticDir, 'fonts'))) {
      const fd = fs.openSync(
        path.join(staticDir, 'fonts', name),
        fs.constants.O_RDWR | fs.constants.O_NONBLOCK,
      );
      fs.closeSync(fd);
    }
    fs.rmSync(staticDir, { recursive: true, force: true });
  });

  function pipe(name: string, delaySeconds: number | undefined): void {
    const file = path.join(staticDir, 'fonts', name);
    execFileSync('mkfifo', [file]);
    if (delaySeconds === undefined) return;
    spawn(
      'sh',
      // Opening the pipe for writing waits for its reader.
      [
        '-c',
        `exec 3> "${file}"; sleep ${delaySeconds}; cat "${PROBE_SOURCE}" >&3`,
      ],
      {
        stdio: 'ignore',
      },
    ).unref();
  }

  it('embeds a late web font in all of 8 renders started at once', async () => {
    for (let n = 1; n <= 8; n++) pipe(`late-${n}.ttf`, 1.5);
    const started = Date.now();
    const outputs = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        renderer.render(job('probe', { n: i + 1, font: 'late' })),
      ),
    );
    // Every render waited for its font: none can be done in under 1.5 s.
    expect(Date.now() - started)
      .to.be.above(1_500)
      .and.below(20_000);
    outputs.forEach((output, i) => {
      expect(
        pdfFonts(output.pdf).some((font) => font.endsWith(postscriptName)),
      ).to.equal(true);
      expect(pageTexts(output.pdf)[0]).to.contain(`Glyph probe QXJ ${i + 1}`);
      expect(output.warnings).to.deep.equal([]);
    });
  });

  it('prints with the fallback font and a warning when the font never arrives', async () => {
    pipe('never-1.ttf', undefined);
    const started = Date.now();
    const output = await renderer.render(job('probe', { n: 1, font: 'never' }));
    expect(Date.now() - started).to.be.below(4_000 + 5_000);
    expect(
      pdfFonts(output.pdf).some((font) => font.endsWith(postscriptName)),
    ).to.equal(false);
    expect(pageTexts(output.pdf)[0]).to.contain('Glyph probe QXJ 1');
    expect(output.warnings.join('\n')).to.match(
      /web fonts or images did not load within 4 s/,
    );
  });
});
