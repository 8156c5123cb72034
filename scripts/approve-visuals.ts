/**
 * Re-renders the approved images of the visual regression test
 * (test/integration/visual.test.ts) and rewrites them in test/approved/:
 * every case, or those named on the command line. A name is a case
 * (`parity-cards.back_colour-red`) or a view, which stands for its
 * defaults and all its variants. Look at the images before committing them.
 *
 *   npx tsc -p . && node dist/scripts/approve-visuals.js [name ...]
 */
import {
  catalogueRenderer,
  loadCatalogue,
} from '../test/support/catalogue-render';
import {
  renderVisual,
  visualCases,
  writeApproved,
} from '../test/support/visuals';

async function main(names: string[]): Promise<void> {
  const catalogue = loadCatalogue();
  const cases = visualCases(catalogue);
  const unknown = names.filter(
    (name) => !cases.some((c) => c.name === name || c.view === name),
  );
  if (unknown.length > 0) {
    throw new Error(
      `unknown view or visual case: ${unknown.join(', ')}; known cases: ${cases.map((c) => c.name).join(', ')}`,
    );
  }
  const chosen =
    names.length > 0
      ? cases.filter((c) => names.includes(c.name) || names.includes(c.view))
      : cases;
  const renderer = catalogueRenderer(catalogue, 2);
  try {
    for (const visual of chosen) {
      const pages = await renderVisual(renderer, catalogue, visual);
      const files = writeApproved(visual.name, pages);
      process.stdout.write(`${files.join('\n')}\n`);
    }
  } finally {
    await renderer.stop();
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(
    `${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exitCode = 1;
});
