import fs from 'node:fs';
import { expect } from 'chai';
import type { Renderer } from '../../src/render/renderer';
import { catalogueRenderer, loadCatalogue } from '../support/catalogue-render';
import {
  APPROVE_COMMAND,
  VISUAL_PAGES,
  VISUAL_TOLERANCE,
  approvedFiles,
  approvedPath,
  caseOfFile,
  compareImages,
  renderVisual,
  visualCases,
} from '../support/visuals';

/**
 * Each resource's default PDF (A4, first two pages at 30 dpi), and each
 * option value that changes its look (black backs, back colours, pictures,
 * highlights, ...: see `VARIANTS` in test/support/visuals.ts), against the
 * approved images in test/approved/. After an intended change, look at the
 * new images and approve them with scripts/approve-visuals.ts.
 */
describe('resource visuals', function () {
  this.timeout(120_000);
  const catalogue = loadCatalogue();
  const cases = visualCases(catalogue);
  let renderer: Renderer;

  before(async () => {
    renderer = catalogueRenderer(catalogue, 2);
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
  });

  it('keeps no approved image that no case draws', () => {
    const names = new Set(cases.map((c) => c.name));
    const stale = approvedFiles().filter(
      (f) => !names.has(caseOfFile(f) ?? ''),
    );
    expect(
      stale,
      `remove them, or approve with: ${APPROVE_COMMAND}`,
    ).to.deep.equal([]);
  });

  for (const visual of cases) {
    it(`draws ${visual.name} as approved`, async () => {
      const pages = await renderVisual(renderer, catalogue, visual);
      expect(pages.length).to.be.within(
        1,
        visual.pages?.length ?? VISUAL_PAGES,
      );
      for (const { page, png } of pages) {
        const file = approvedPath(visual.name, page);
        if (!fs.existsSync(file)) {
          throw new Error(
            `no approved image ${file}; look at the rendering and approve it with: ${APPROVE_COMMAND} ${visual.name}`,
          );
        }
        const diff = compareImages(png, fs.readFileSync(file));
        expect(
          diff.sameSize,
          `${file}: page size changed; approve with: ${APPROVE_COMMAND} ${visual.name}`,
        ).to.equal(true);
        expect(
          diff.share,
          `${file}: ${(diff.share * 100).toFixed(2)}% of pixels differ; if intended, approve with: ${APPROVE_COMMAND} ${visual.name}`,
        ).to.be.at.most(VISUAL_TOLERANCE);
      }
    });
  }
});
