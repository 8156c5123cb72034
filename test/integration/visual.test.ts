import fs from 'node:fs';
import { expect } from 'chai';
import type { Renderer } from '../../src/render/renderer';
import { catalogueRenderer, loadCatalogue } from '../support/catalogue-render';
import {
  APPROVE_COMMAND,
  VISUAL_PAGES,
  VISUAL_TOLERANCE,
  approvedPath,
  compareImages,
  renderVisual,
} from '../support/visuals';

/**
 * Each resource's default PDF (A4, first two pages at 30 dpi) against the
 * approved images in test/approved/. After an intended change, look at the
 * new images and approve them with scripts/approve-visuals.ts.
 */
describe('resource visuals', function () {
  this.timeout(120_000);
  const catalogue = loadCatalogue();
  let renderer: Renderer;

  before(async () => {
    renderer = catalogueRenderer(catalogue, 2);
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
  });

  for (const manifest of catalogue.list()) {
    it(`draws ${manifest.view} as approved`, async () => {
      const pngs = await renderVisual(renderer, catalogue, manifest.view);
      expect(pngs.length).to.be.within(1, VISUAL_PAGES);
      pngs.forEach((png, i) => {
        const file = approvedPath(manifest.view, i + 1);
        if (!fs.existsSync(file)) {
          throw new Error(
            `no approved image ${file}; look at the rendering and approve it with: ${APPROVE_COMMAND}`,
          );
        }
        const diff = compareImages(png, fs.readFileSync(file));
        expect(
          diff.sameSize,
          `${file}: page size changed; approve with: ${APPROVE_COMMAND}`,
        ).to.equal(true);
        expect(
          diff.share,
          `${file}: ${(diff.share * 100).toFixed(2)}% of pixels differ; if intended, approve with: ${APPROVE_COMMAND}`,
        ).to.be.at.most(VISUAL_TOLERANCE);
      });
    });
  }
});
