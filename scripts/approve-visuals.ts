/**
 * Re-renders every resource's default PDF (or only the views named on the
 * command line) and rewrites its approved images in test/approved/, which
 * the visual regression test compares against. Look at the images before
 * committing them.
 *
 *   npx tsc -p . && node dist/scripts/approve-visuals.js [view ...]
 */
import {
  catalogueRenderer,
  loadCatalogue,
} from '../test/support/catalogue-render';
import {
  approvedPath,
  renderVisual,
  writeApproved,
} from '../test/support/visuals';

async function main(views: string[]): Promise<void> {
  const catalogue = loadCatalogue();
  const unknown = views.filter((view) => !catalogue.get(view));
  if (unknown.length > 0)
    throw new Error(`unknown resource view: ${unknown.join(', ')}`);
  const chosen = views.length > 0 ? views : catalogue.list().map((m) => m.view);
  const renderer = catalogueRenderer(catalogue, 2);
  try {
    for (const view of chosen) {
      const pngs = await renderVisual(renderer, catalogue, view);
      writeApproved(view, pngs);
      process.stdout.write(
        `${pngs.map((_, i) => approvedPath(view, i + 1)).join('\n')}\n`,
      );
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
