import fs from 'node:fs';
import { expect } from 'chai';
import type { Renderer } from '../../src/render/renderer';
import type { Catalogue } from '../../src/resources/catalogue';
import type { OptionValue } from '../../src/resources/manifest';
import {
  catalogueRenderer,
  loadCatalogue,
  optionCombinations,
  renderCatalogueJob,
} from '../support/catalogue-render';
import {
  PAPER_PT,
  pageTexts,
  pdfFacts,
  pdfFonts,
  tempPdf,
} from '../support/pdf';

/**
 * Every resource of resource-templates/, every combination of its options,
 * printed in a real Chromium. Header text is given to every other
 * combination, staggered so that both paper sizes of each resource are
 * printed with and without it (all combinations twice would double the
 * 222 renders the suite already makes). Page counts
 * (documented in docs/authoring.md):
 *
 * | view                    | pages                                          |
 * | ----------------------- | ---------------------------------------------- |
 * | arrows, barcode-checksum-poster, binary-to-alphabet, grid, job-badges,      |
 * | left-right-cards, modulo-clock, piano-keys, sorting-network,                |
 * | train-stations          | 1                                              |
 * | binary-cards            | 8, 16 with black_back                          |
 * | binary-cards-small      | bits / 4, doubled with black_back              |
 * | binary-windows          | bits / 4                                       |
 * | parity-cards            | 2 (fronts, then the back colour)               |
 * | searching-cards         | ceil(cards / 4), +1 with help_sheet            |
 * | sorting-network-cards   | 3                                              |
 * | treasure-hunt           | 1, +1 with instructions                        |
 */
const HEADER = 'Room Tahi — Ngā mihi';

type Options = Record<string, OptionValue>;

/** Pages of one copy of a view with the given options. */
function expectedPages(view: string, o: Options): number {
  const bits = Number(o['number_bits']);
  switch (view) {
    case 'binary-cards':
      return o['black_back'] ? 16 : 8;
    case 'binary-cards-small':
      return (bits / 4) * (o['black_back'] ? 2 : 1);
    case 'binary-windows':
      return bits / 4;
    case 'parity-cards':
      return 2;
    case 'searching-cards':
      return (
        Math.ceil(Number(o['number_cards']) / 4) + (o['help_sheet'] ? 1 : 0)
      );
    case 'sorting-network-cards':
      return 3;
    case 'treasure-hunt':
      return o['instructions'] ? 2 : 1;
    default:
      return 1;
  }
}

/** A rendered PDF's facts, with each page's text minus the page frame. */
interface Printed {
  pages: number;
  widthPt: number;
  heightPt: number;
  /** Whole text of each page, frame included. */
  texts: string[];
  /** Text of each page without header, footer, resource name and url. */
  bodies: string[];
}

function read(
  pdf: Buffer,
  frame: { name: string; url: string; header: string },
): Printed {
  const file = tempPdf(pdf);
  try {
    const facts = pdfFacts(file);
    const texts = pageTexts(file);
    const bodies = texts.map((text) => {
      let body = text
        .split(frame.url)
        .join(' ')
        .replace(/Page \d+ of \d+/g, ' ');
      if (frame.header) body = body.split(frame.header).join(' ');
      return body.split(frame.name).join(' ');
    });
    return { ...facts, texts, bodies };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** Whole numbers in a text, in reading order. */
function numbersIn(text: string): number[] {
  return [...text.matchAll(/\b\d+\b/g)].map((m) => Number(m[0]));
}

function expectDistinctInRange(
  values: number[],
  count: number,
  min: number,
  max: number,
): void {
  expect(values, `numbers ${values.join(' ')}`).to.have.length(count);
  expect(
    new Set(values).size,
    `distinct numbers in ${values.join(' ')}`,
  ).to.equal(count);
  for (const value of values) expect(value).to.be.within(min, max);
}

const RANGES: Record<string, Record<string, [number, number]>> = {
  'sorting-network': { easy: [1, 9], medium: [10, 99], hard: [100, 999] },
  'treasure-hunt': { easy: [0, 99], medium: [0, 999], hard: [0, 9999] },
};

/** Facts each resource must show, beyond the page frame. */
const CONTENT: Record<string, (o: Options, p: Printed) => void> = {
  arrows: (_o, p) => {
    for (const word of ['Forward', 'Turn left', 'Turn right'])
      expect(p.bodies[0]).to.include(word);
  },
  'barcode-checksum-poster': (o, p) => {
    const length = Number(o['barcode_length']);
    expect(p.bodies[0]).to.include(`A ${length}-digit barcode`);
    expect(p.bodies[0]).to.include(`other ${length - 1} digits`);
    expect(p.bodies[0]?.match(/×3/g)).to.have.length(
      Math.floor((length - 1) / 2) + ((length - 1) % 2),
    );
  },
  'binary-cards': (o, p) => {
    const shown = p.bodies.flatMap(numbersIn);
    expect(shown).to.deep.equal(
      o['display_numbers'] ? [128, 64, 32, 16, 8, 4, 2, 1] : [],
    );
  },
  'binary-cards-small': (o, p) => {
    const bits = Number(o['number_bits']);
    const values = Array.from({ length: bits }, (_, i) => 2 ** i);
    const shown = p.bodies.flatMap(numbersIn).sort((a, b) => a - b);
    expect(shown).to.deep.equal(o['dot_counts'] ? values : []);
    if (o['black_back']) {
      for (let page = 1; page < p.pages; page += 2)
        expect(p.bodies[page]?.trim()).to.equal('');
    }
  },
  'binary-to-alphabet': (o, p) => {
    const body = p.bodies[0] ?? '';
    for (let n = 0; n <= 26; n++)
      expect(body).to.match(new RegExp(`\\b${n}\\b`));
    if (o['worksheet_version'] === 'teacher') {
      expect(body).to.match(/\b26\s+1\s+1\s+0\s+1\s+0\s+Z\b/);
      expect(body).to.match(/\b1\s+0\s+0\s+0\s+0\s+1\s+A\b/);
    } else {
      expect(body).not.to.match(/\b[A-Z]\b/);
      expect(body).not.to.include('space');
    }
  },
  'binary-windows': (o, p) => {
    const bits = Number(o['number_bits']);
    const counts = p.bodies.flatMap((body) =>
      numbersIn(body).filter((n) => n > 1),
    );
    const expected = Array.from({ length: bits }, (_, i) => 2 ** i).filter(
      (n) => n > 1,
    );
    expect(counts.sort((a, b) => a - b)).to.deep.equal(
      o['dot_counts'] ? expected : [],
    );
    const digits = p.bodies.join(' ').match(/\b[01]\b/g) ?? [];
    if (o['value_type'] === 'binary')
      expect(digits.length).to.be.at.least(bits * 2);
  },
  grid: (_o, p) => {
    expect(p.bodies[0]).to.match(/A\s+B\s+C\s+D\s+E\s+F\s+G\s+H\s+I\s+J/);
    expect(numbersIn(p.bodies[0] ?? '')).to.deep.equal(
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
  },
  'job-badges': (_o, p) => {
    for (const job of [
      'Programmer',
      'Bot',
      'Tester',
      'Debugger',
      'Recorder',
      'Checker',
    ]) {
      expect(p.bodies[0]).to.include(job);
    }
  },
  'left-right-cards': (_o, p) => {
    expect(p.bodies[0]?.match(/LEFT/g)).to.have.length(2);
    expect(p.bodies[0]?.match(/RIGHT/g)).to.have.length(2);
  },
  'modulo-clock': (o, p) => {
    const n = Number(o['modulo_number']);
    const labels = numbersIn(p.bodies[0] ?? '').filter((v) => v !== n);
    expect(labels.sort((a, b) => a - b)).to.deep.equal(
      n === 1 ? [] : [...Array(n).keys()],
    );
  },
  'parity-cards': (o, p) => {
    expect(p.bodies[0]).to.include(`next page, ${String(o['back_colour'])}`);
    expect(p.bodies[1]?.trim()).to.equal('');
  },
  'piano-keys': (o, p) => {
    expect(p.bodies[0]?.match(/\bC\b/g)?.length).to.be.at.least(4);
    // The title is the resource name, so look in the whole text.
    const text = p.texts[0] ?? '';
    if (o['highlight'] === false) expect(text).not.to.include('Piano Keys:');
    else expect(text).to.include(`Piano Keys: ${String(o['highlight'])}`);
  },
  'searching-cards': (o, p) => {
    const count = Number(o['number_cards']);
    const cardPages = Math.ceil(count / 4);
    const cards = p.bodies
      .slice(0, cardPages)
      .flatMap((body) => numbersIn(body.replace(/Card \d+/g, ' ')));
    const max = o['max_number'];
    if (max === 'blank') expect(cards).to.deep.equal([]);
    else if (max === 'cards')
      expect([...cards].sort((a, b) => a - b)).to.deep.equal(
        Array.from({ length: count }, (_, i) => i + 1),
      );
    else expectDistinctInRange(cards, count, 1, Number(max));
    const labels = p.bodies
      .slice(0, cardPages)
      .join(' ')
      .match(/Card \d+/g);
    expect(labels).to.have.length(count);
    if (o['help_sheet']) {
      const helper = p.bodies[cardPages] ?? '';
      expect(helper).to.include('Helper sheet');
      if (max === 'blank') {
        // Only the list's own numbering is printed.
        const numbering = numbersIn(helper).sort((a, b) => a - b);
        expect(numbering).to.deep.equal(
          Array.from({ length: count }, (_, i) => i + 1),
        );
        return;
      }
      const listed = [...helper.matchAll(/(\d+)\.\s+(\d+)?/g)]
        .sort((a, b) => Number(a[1]) - Number(b[1]))
        .map((m) => (m[2] === undefined ? undefined : Number(m[2])));
      const sorted = [...cards].sort((a, b) => a - b);
      expect(listed).to.deep.equal(sorted);
    }
  },
  'sorting-network': (o, p) => {
    const between = /Start([\s\S]*)Finish/.exec(p.bodies[0] ?? '')?.[1] ?? '';
    const values = numbersIn(between);
    const range = RANGES['sorting-network']?.[String(o['prefilled_values'])];
    if (!range) expect(values).to.deep.equal([]);
    else expectDistinctInRange(values, 6, range[0], range[1]);
  },
  'sorting-network-cards': (o, p) => {
    const text = p.bodies.join('\n');
    const expected: Record<string, string[]> = {
      fractions: ['½', '⅓', '¼', '⅔', '¾', '⅛'],
      maori_numbers: ['tahi', 'rua', 'toru', 'whā', 'rima', 'ono'],
      maori_colours: [
        'whero',
        'kākāriki',
        'kōwhai',
        'kahurangi',
        'mangu',
        'mā',
      ],
      words: ['apple', 'banana', 'cherry', 'grape', 'lemon', 'orange'],
      riding_hood: [
        'basket',
        'forest',
        'meets the wolf',
        'Grandma’s house',
        'Grandma’s bed',
        'woodcutter',
      ],
      butterfly: [
        'egg',
        'tiny caterpillar',
        'eats and grows',
        'chrysalis',
        'comes out',
        'flies away',
      ],
    };
    const type = String(o['type']);
    for (const word of expected[type] ?? []) expect(text).to.include(word);
    if (type === 'small_numbers')
      expectDistinctInRange(numbersIn(text), 6, 1, 10);
    if (type === 'large_numbers')
      expectDistinctInRange(numbersIn(text), 6, 1000, 9999);
    if (type === 'letters') {
      const letters = text.match(/\b[A-Z]\b/g) ?? [];
      expect(new Set(letters).size, letters.join(' ')).to.equal(6);
    }
    for (const body of p.bodies) expect(body.trim()).not.to.equal('');
  },
  'train-stations': (_o, p) => {
    for (const name of ['Apple', 'Castle', 'Harbour'])
      expect(p.bodies[0]).to.include(name);
  },
  'treasure-hunt': (o, p) => {
    const map = p.bodies[0] ?? '';
    for (const letter of 'ABCDEFGHIJKLMOPQRSTUVWXYZ') {
      expect(map).to.match(new RegExp(`\\b${letter}\\b`));
    }
    const values = numbersIn(map);
    const range = RANGES['treasure-hunt']?.[String(o['prefilled_values'])];
    if (!range) expect(values).to.deep.equal([]);
    else {
      expectDistinctInRange(values, 26, range[0], range[1]);
      // Read row by row (6, then 5 a row); odd rows run right to left.
      const rows = [
        values.slice(0, 6),
        values.slice(6, 11),
        values.slice(11, 16),
        values.slice(16, 21),
        values.slice(21),
      ];
      const pathOrder = rows.flatMap((row, i) =>
        i % 2 === 1 ? [...row].reverse() : row,
      );
      const ascending = [...pathOrder].sort((a, b) => a - b);
      if (o['number_order'] === 'sorted')
        expect(pathOrder).to.deep.equal(ascending);
      else expect(pathOrder).not.to.deep.equal(ascending);
    }
    if (o['instructions']) expect(p.bodies[1]).to.include('how to play');
  },
};

function label(o: Options): string {
  return Object.entries(o)
    .map(([name, value]) => `${name}=${String(value)}`)
    .join(' ');
}

describe('resource catalogue', function () {
  this.timeout(240_000);
  const catalogue: Catalogue = loadCatalogue();
  let renderer: Renderer;

  before(async () => {
    renderer = catalogueRenderer(catalogue, 2);
    await renderer.start();
  });

  after(async () => {
    await renderer.stop();
  });

  it('has content checks for every view', () => {
    expect(catalogue.list().map((m) => m.view)).to.have.members(
      Object.keys(CONTENT),
    );
  });

  describe('copies and seeds', () => {
    const frame = (view: string, name: string) => ({
      name,
      url: urlOf(view),
      header: '',
    });

    async function print(
      view: string,
      options: Options,
      copies: number,
      taskId?: string,
    ) {
      const out = await renderCatalogueJob(renderer, catalogue, {
        view,
        options,
        copies,
        taskId,
      });
      return read(out.pdf, frame(view, catalogue.get(view)?.title ?? view));
    }

    function networkNumbers(body: string | undefined): number[] {
      return numbersIn(/Start([\s\S]*)Finish/.exec(body ?? '')?.[1] ?? '');
    }

    it('fills each of three differing copies with its own numbers', async () => {
      const p = await print(
        'sorting-network',
        { prefilled_values: 'medium' },
        3,
      );
      expect(p.pages).to.equal(3);
      const sets = p.bodies.map((body) => networkNumbers(body).join(' '));
      sets.forEach((set) =>
        expectDistinctInRange(set.split(' ').map(Number), 6, 10, 99),
      );
      expect(new Set(sets).size, sets.join(' | ')).to.equal(3);
    });

    it('repeats the same pages for copies that are the same', async () => {
      const p = await print(
        'sorting-network-cards',
        { type: 'small_numbers' },
        3,
      );
      expect(p.pages).to.equal(9);
      for (let page = 0; page < 3; page++) {
        expect(p.texts[page + 3]).to.equal(p.texts[page]);
        expect(p.texts[page + 6]).to.equal(p.texts[page]);
      }
    });

    it('gives differing copies of large numbers, and only of them', async () => {
      const p = await print(
        'sorting-network-cards',
        { type: 'large_numbers' },
        2,
      );
      expect(p.pages).to.equal(6);
      const first = p.bodies.slice(0, 3).flatMap(numbersIn);
      const second = p.bodies.slice(3).flatMap(numbersIn);
      expectDistinctInRange(first, 6, 1000, 9999);
      expect(second).not.to.deep.equal(first);
    });

    it('prints the same numbers for the same task id, and others for another', async () => {
      const options = {
        number_cards: '15',
        max_number: '999',
        help_sheet: false,
      };
      const a = await print('searching-cards', options, 1, 'task-a');
      const again = await print('searching-cards', options, 1, 'task-a');
      const b = await print('searching-cards', options, 1, 'task-b');
      expect(again.texts).to.deep.equal(a.texts);
      expect(b.bodies.flatMap(numbersIn)).not.to.deep.equal(
        a.bodies.flatMap(numbersIn),
      );
    });
  });

  describe('non-Latin text', () => {
    it('prints Māori macrons and fraction glyphs', async () => {
      for (const type of ['maori_numbers', 'maori_colours', 'fractions']) {
        const out = await renderCatalogueJob(renderer, catalogue, {
          view: 'sorting-network-cards',
          options: { type },
        });
        const text = read(out.pdf, frame0('sorting-network-cards')).bodies.join(
          '\n',
        );
        if (type === 'maori_numbers') expect(text).to.include('whā');
        if (type === 'maori_colours')
          expect(text).to.include('kākāriki').and.to.include('kōwhai');
        if (type === 'fractions')
          for (const glyph of '½⅓¼⅔¾⅛') expect(text).to.include(glyph);
      }
    });

    it('prints header text in Chinese, Arabic and emoji with Noto fonts', async () => {
      const header = 'Kia ora 你好世界 مرحبا 🎉';
      const out = await renderCatalogueJob(renderer, catalogue, {
        view: 'arrows',
        headerText: header,
      });
      const file = tempPdf(out.pdf);
      try {
        const text = pageTexts(file)[0] ?? '';
        expect(text).to.include('你好世界');
        // pdftotext may give Arabic in visual order or as presentation forms.
        expect(text).to.match(/[\u0600-\u06ff\ufb50-\ufdff\ufe70-\ufeff]{4,}/);
        expect(text).to.include('🎉');
        // Chromium's PDF backend (Skia) embeds the CFF outlines of Noto Sans
        // CJK (an OpenType .ttc) and the colour emoji as unnamed Type 3
        // fonts, so pdffonts shows them as "[none]"; that the text above is
        // found proves they carry a ToUnicode map. The Arabic font keeps its
        // name.
        const fonts = pdfFonts(file);
        expect(
          fonts.some((font) => /NotoSansArabic/.test(font)),
          fonts.join(', '),
        ).to.equal(true);
        expect(fonts, 'Type 3 fonts for CJK and emoji').to.include('[none]');
      } finally {
        fs.rmSync(file, { force: true });
      }
    });
  });

  for (const manifest of catalogue.list()) {
    describe(manifest.view, () => {
      // Pattern no, yes, yes, no, ...: with paper_size the last option, a4
      // and letter each get both.
      const cases = optionCombinations(manifest).map((options, i) => ({
        options,
        headerText: (i + Math.floor(i / 2)) % 2 === 1 ? HEADER : '',
      }));
      const printed = new Map<number, Printed>();

      before(async () => {
        // Two at a time, one per page of the renderer: a render's deadline
        // starts when it is asked for, so a long queue would time out.
        await inPool(2, cases, async (c, i) => {
          const out = await renderCatalogueJob(renderer, catalogue, {
            view: manifest.view,
            options: c.options,
            headerText: c.headerText,
          });
          expect(out.warnings, 'render warnings').to.deep.equal([]);
          printed.set(
            i,
            read(out.pdf, {
              name: manifest.title,
              url: urlOf(manifest.view),
              header: c.headerText,
            }),
          );
        });
      });

      cases.forEach((c, i) => {
        const title = `prints ${label(c.options)}${c.headerText ? ' with header text' : ''}`;
        it(title, () => {
          const p = printed.get(i);
          if (!p) throw new Error('not rendered');
          const paper = PAPER_PT[c.options['paper_size'] as 'a4' | 'letter'];
          expect(p.pages, 'page count').to.equal(
            expectedPages(manifest.view, c.options),
          );
          expect(p.widthPt).to.be.closeTo(paper.width, 1);
          expect(p.heightPt).to.be.closeTo(paper.height, 1);
          p.texts.forEach((text, page) => {
            expect(text, `footer of page ${page + 1}`).to.include(
              manifest.title,
            );
            expect(text, `footer of page ${page + 1}`).to.include(
              urlOf(manifest.view),
            );
            if (c.headerText)
              expect(text, `header of page ${page + 1}`).to.include(
                c.headerText,
              );
          });
          CONTENT[manifest.view]?.(c.options, p);
        });
      });
    });
  }
});

/** Runs `work` over the items with at most `size` of them in flight. */
async function inPool<T>(
  size: number,
  items: T[],
  work: (item: T, index: number) => Promise<void>,
) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: size }, worker));
}

function frame0(view: string) {
  return { name: view, url: urlOf(view), header: '' };
}

function urlOf(view: string): string {
  return `https://example.org/resources/${view}`;
}
