import type { Page } from 'puppeteer-core';
import { TemplateError } from '../errors';

/**
 * Waits for the load event, web fonts and images, bounded by `timeoutMs`:
 * a font that never arrives leaves a warning and the fallback font, not a
 * hang. Resolves false when the time ran out.
 */
export async function waitForAssets(
  page: Page,
  timeoutMs: number,
  warnings: string[],
): Promise<boolean> {
  const ready = await page.evaluate(async (timeoutMs: number) => {
    const images = Array.from(document.images)
      .filter((img) => !img.complete)
      .map(
        (img) =>
          new Promise((resolve) => {
            img.addEventListener('load', resolve, { once: true });
            img.addEventListener('error', resolve, { once: true });
          }),
      );
    const loaded = new Promise((resolve) => {
      if (document.readyState === 'complete') resolve(true);
      else window.addEventListener('load', resolve, { once: true });
    });
    const all = Promise.all([loaded, document.fonts.ready, ...images]).then(
      () => true,
    );
    const late = new Promise<boolean>((resolve) =>
      setTimeout(() => resolve(false), timeoutMs),
    );
    return Promise.race([all, late]);
  }, timeoutMs);
  if (!ready) {
    warnings.push(
      `web fonts or images did not load within ${timeoutMs / 1000} s; ` +
        'printed with what had arrived (fallback fonts)',
    );
  }
  return ready;
}

/**
 * Refuses a template whose @page margins leave no room for the header
 * and footer: Chromium would drop them without a word.
 */
export async function checkFrameMargins(
  page: Page,
  minMm: number,
): Promise<void> {
  const tooSmall = await page.evaluate((minMm: number) => {
    const toMm = (value: string): number | null => {
      const m = /^(-?[\d.]+)(mm|cm|in|pt|px)?$/.exec(value.trim());
      if (!m) return null;
      const n = Number(m[1]);
      const unit = m[2] ?? 'px';
      const perUnit: Record<string, number> = {
        mm: 1,
        cm: 10,
        in: 25.4,
        pt: 25.4 / 72,
        px: 25.4 / 96,
      };
      return n * (perUnit[unit] ?? 1);
    };
    const found: string[] = [];
    const rulesOf = (sheet: CSSStyleSheet): CSSRule[] => {
      try {
        return Array.from(sheet.cssRules);
      } catch {
        // A sheet from another origin cannot be read; it was refused anyway.
        return [];
      }
    };
    for (const sheet of Array.from(document.styleSheets)) {
      for (const rule of rulesOf(sheet)) {
        if (!(rule instanceof CSSPageRule)) continue;
        for (const side of ['top', 'bottom'] as const) {
          const value = rule.style.getPropertyValue(`margin-${side}`);
          const mm = value ? toMm(value) : null;
          if (mm !== null && mm < minMm - 0.01) found.push(`${side} ${value}`);
        }
      }
    }
    return found;
  }, minMm);
  if (tooSmall.length > 0) {
    throw new TemplateError(
      `page margin ${tooSmall.join(', ')} is smaller than the ${minMm}mm ` +
        'the header and footer need; set @page margin-top and margin-bottom to at least that',
    );
  }
}
