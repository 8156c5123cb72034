import type { Page } from 'puppeteer-core';
import { TemplateError } from '../errors';
import type { Logger } from '../logger';

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
 * Makes the template's @page rules safe to print, wherever they are (top
 * level, inside @media, @supports, @layer or any other grouping rule, in an
 * @import-ed or a constructed stylesheet, for every page selector):
 *
 * - every `size` and `page-orientation` is removed, and a last rule sets
 *   `size: auto !important` (the paper the page is printed on), so the
 *   task's `paper_size` always decides, in size and orientation. (A size
 *   in millimetres there would do too, but Chromium then centres the
 *   210 mm page on its 210.2 mm wide A4 sheet, 1 px off.)
 * - every `margin-top` and `margin-bottom` must be at least `minMm`, or the
 *   template is refused: the header and footer are printed in those
 *   margins, and Chromium would print them over the body or drop them.
 *
 * Margins are resolved as Chromium resolves them in the page context: em
 * and rem against the root element's font size (or the rule's own
 * `font-size`), percentages and vh against the paper's height, vw against
 * its width, and calc() and var() as anywhere else. Every rule is checked,
 * even one whose media query does not match the print: the check errs on
 * the side of refusing. Known limit: a rule that a script of the page adds
 * after this check (it runs once the page has loaded) is not seen; a size
 * it sets is still caught when the pages are assembled (pdf-pages refuses
 * a page off the paper), a margin is not.
 */
export async function fitPageRules(
  page: Page,
  paperMm: { width: number; height: number },
  minMm: number,
  logger: Logger,
): Promise<void> {
  const found = await page.evaluate(
    (args: { widthMm: number; heightMm: number; minMm: number }) => {
      const tooSmall: string[] = [];
      const unchecked: string[] = [];
      const unreadable: string[] = [];
      const pageRules: { rule: CSSPageRule; where: string }[] = [];
      const visitRules = (rules: CSSRuleList, where: string): void => {
        for (const rule of Array.from(rules)) {
          if (rule instanceof CSSPageRule) pageRules.push({ rule, where });
          else if (rule instanceof CSSImportRule) {
            if (rule.styleSheet)
              visitSheet(rule.styleSheet, `@import "${rule.href}"`);
          } else if ('cssRules' in rule) {
            const text = rule.cssText;
            const head = text.slice(0, text.indexOf('{')).trim();
            visitRules(
              (rule as CSSGroupingRule).cssRules,
              where ? `${where} ${head}` : head,
            );
          }
        }
      };
      const visitSheet = (sheet: CSSStyleSheet, where: string): void => {
        let rules: CSSRuleList;
        try {
          rules = sheet.cssRules;
        } catch (error) {
          unreadable.push(`${sheet.href ?? 'a stylesheet'}: ${String(error)}`);
          return;
        }
        visitRules(rules, where);
      };
      for (const sheet of Array.from(document.styleSheets))
        visitSheet(sheet, '');
      for (const sheet of document.adoptedStyleSheets)
        visitSheet(sheet, 'a constructed stylesheet');

      // Lengths are resolved on a probe the size of the paper, under the
      // root element (its font size and custom properties).
      const paper = document.createElement('div');
      paper.style.cssText =
        `position: absolute; left: 0; top: 0; visibility: hidden; ` +
        `width: ${args.widthMm}mm; height: ${args.heightMm}mm; padding: 0; border: 0`;
      const probe = document.createElement('div');
      paper.appendChild(probe);
      document.documentElement.appendChild(paper);
      const viewportUnits = (value: string): string =>
        value.replace(
          /(-?(?:\d+\.?\d*|\.\d+))[sld]?(vh|vw|vmin|vmax|vb|vi)\b/g,
          (_, number: string, unit: string) => {
            const h = args.heightMm;
            const w = args.widthMm;
            const per: Record<string, number> = {
              vh: h,
              vb: h,
              vw: w,
              vi: w,
              vmin: Math.min(w, h),
              vmax: Math.max(w, h),
            };
            return `${(Number(number) * (per[unit] ?? h)) / 100}mm`;
          },
        );
      // top, like a page margin, takes its percentages from the height.
      const resolveMm = (
        fontSize: string,
        value: string,
        side: 'top' | 'bottom',
        shorthand: boolean,
      ): number => {
        probe.style.cssText = 'position: absolute; left: 0';
        if (fontSize) probe.style.fontSize = fontSize;
        if (shorthand) probe.style.setProperty('inset', viewportUnits(value));
        else probe.style.setProperty('top', viewportUnits(value));
        const computed = getComputedStyle(probe)[shorthand ? side : 'top'];
        const px = /^(-?[\d.]+(?:e-?\d+)?)px$/.exec(computed)?.[1];
        return px === undefined ? NaN : (Number(px) * 25.4) / 96;
      };
      try {
        for (const { rule, where } of pageRules) {
          rule.style.removeProperty('size');
          rule.style.removeProperty('page-orientation');
          const selector = rule.selectorText ? ` ${rule.selectorText}` : '';
          const place = `@page${selector}${where ? ` in ${where}` : ''}`;
          for (const side of ['top', 'bottom'] as const) {
            let value = rule.style.getPropertyValue(`margin-${side}`);
            let shorthand = false;
            if (!value && rule.style.getPropertyValue('margin')) {
              value = rule.style.getPropertyValue('margin');
              shorthand = true;
            }
            if (!value) {
              // A shorthand with var() leaves its longhands empty and
              // itself readable only through cssText.
              const m = /(?:^|;)\s*margin\s*:\s*([^;]+)/.exec(
                rule.style.cssText,
              );
              if (!m?.[1]) continue;
              value = m[1].trim();
              shorthand = true;
            }
            const mm = resolveMm(
              rule.style.getPropertyValue('font-size'),
              value,
              side,
              shorthand,
            );
            const shown = shorthand
              ? `${side} of margin: ${value}`
              : `${side} ${value}`;
            if (Number.isNaN(mm)) unchecked.push(`${shown} (${place})`);
            else if (mm < args.minMm - 0.01)
              tooSmall.push(`${shown} = ${mm.toFixed(1)}mm (${place})`);
          }
        }
      } finally {
        paper.remove();
      }
      const paperRule = document.createElement('style');
      paperRule.textContent =
        `@page { size: auto !important; ` +
        'page-orientation: upright !important; }';
      document.documentElement.appendChild(paperRule);
      return { tooSmall, unchecked, unreadable };
    },
    { widthMm: paperMm.width, heightMm: paperMm.height, minMm },
  );
  for (const sheet of found.unreadable) {
    // Only /static/ files and data: URLs load at all, and both are readable;
    // a sheet that is not was refused, so none of its rules apply.
    logger.debug('stylesheet not readable; its @page rules not checked', {
      sheet,
    });
  }
  if (found.tooSmall.length > 0) {
    throw new TemplateError(
      `page margin ${found.tooSmall.join(', ')} is smaller than the ${minMm}mm ` +
        'the header and footer need; set @page margin-top and margin-bottom to at least that',
    );
  }
  if (found.unchecked.length > 0) {
    throw new TemplateError(
      `page margin ${found.unchecked.join(', ')} is not a length the renderer ` +
        `can check; give @page margin-top and margin-bottom as lengths of at least ${minMm}mm`,
    );
  }
}
