import { Renderer } from '../../src/render/renderer';
import type { RendererOptions } from '../../src/render/renderer';
import { partLogger } from '../../src/logger';
import { Catalogue } from '../../src/resources/catalogue';
import { checkTask } from '../../src/resources/task';
import type { RenderJob } from '../../src/resources/task';
import { STATIC_DIR, taskFor } from './resources';

/** Renderer settings for tests: short deadlines, the system Chromium. */
export function testRendererOptions(
  overrides: Partial<RendererOptions> = {},
): RendererOptions {
  return {
    chromiumPath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
    staticDirs: [STATIC_DIR],
    timeoutMs: 20_000,
    assetTimeoutMs: 3_000,
    pages: 2,
    browserMaxRenders: 1_000,
    browserMaxAgeMs: 3_600_000,
    browserMaxMemoryBytes: 8 * 1024 ** 3,
    ...overrides,
  };
}

/** A renderer over a resources root, with a job builder for its views. */
export function testRenderer(
  root: string,
  overrides: Partial<RendererOptions> = {},
) {
  const catalogue = Catalogue.load(root);
  const renderer = new Renderer(
    testRendererOptions(overrides),
    catalogue,
    partLogger('test-render'),
  );
  const job = (
    view: string,
    extra: Record<string, unknown> = {},
    taskId = 'test-task',
  ): RenderJob =>
    checkTask(taskFor(view, extra), taskId, catalogue, {
      maxCopies: 50,
      maxTaskBytes: 1_000_000,
    });
  return { renderer, catalogue, job };
}
