import fs from 'node:fs';
import { expect } from 'chai';
import path from 'node:path';
import type { Renderer } from '../../src/render/renderer';
import type { Catalogue } from '../../src/resources/catalogue';
import { PAPER_SIZE } from '../../src/resources/manifest';
import type { Manifest, OptionValue } from '../../src/resources/manifest';
import {
  catalogueJob,
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
import {
  colourAt,
  contentBox,
  hexColour,
  isDark,
  isSaturated,
  mmToPt,
  near,
  placedWords,
  rasterPages,
  shareOfPixels,
} from '../support/visuals';
import type { PlacedWord, Raster, Rgb } from '../support/visuals';

/**
 * Every resource of resource-templates/, every combination of its options,
 * printed in a real Chromium, with its file name, page count, paper, page
 * frame and the facts that tell each option value apart (text, word
 * positions, colours of the rasterised pages). Each combination is printed
 * once: header text goes on one of its two paper sizes, so every
 * combination of a resource's own options is printed both with and without
 * it (see `headerCases`). Printing every combination both ways was
 * measured on a busy 2-core machine: 9 min 17 s for this file (222 s of
 * CPU) against 6 min 15 s (118 s) printing each once, too much for a suite
 * that must stay well under 15 minutes. Page counts
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
  /** The PDF, in a temporary folder removed after the view's tests. */
  file: string;
  paper: 'a4' | 'letter';
  /** The job's file name. */
  filename: string;
  pages: number;
  widthPt: number;
  heightPt: number;
  /** Whole text of each page, frame included. */
  texts: string[];
  /** Text of each page without header, footer, resource name and url. */
  bodies: string[];
}

/** The facts of a PDF written to `file`; see {@link Printed}. */
function readFile(
  file: string,
  frame: { name: string; url: string; header: string },
): Omit<Printed, 'file' | 'paper' | 'filename'> {
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
}

/** The facts of a PDF read from a temporary file that is then removed. */
function read(
  pdf: Buffer,
  frame: { name: string; url: string; header: string },
): Omit<Printed, 'file' | 'paper' | 'filename'> {
  const file = tempPdf(pdf);
  try {
    return readFile(file, frame);
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
}

/** Share of dark pixels of each page inside its content box. */
function darkShares(p: Printed, dpi = 10): number[] {
  return rasterPages(p.file, dpi).map((page) =>
    shareOfPixels(page, isDark, contentBox(p.paper, 3)),
  );
}

/** Back pages are solid black; the other pages are mostly light. */
function expectBlackBacks(p: Printed, isBack: (page: number) => boolean) {
  darkShares(p).forEach((share, i) => {
    if (isBack(i + 1))
      expect(share, `dark share of back page ${i + 1}`).to.be.above(0.97);
    else expect(share, `dark share of page ${i + 1}`).to.be.below(0.5);
  });
}

/** Single-letter words of page `page` whose box is at least `minPt` tall. */
function letterBoxes(
  words: PlacedWord[],
  page: number,
  letter: string,
  minPt = 0,
): PlacedWord[] {
  return words.filter(
    (w) => w.page === page && w.word === letter && w.yMax - w.yMin >= minPt,
  );
}

const isBulbYellow = ([r, g, b]: Rgb) =>
  r > 200 && g > 170 && g < 235 && b < 90;
const isRed = ([r, g, b]: Rgb) => r > 150 && g < 100 && b < 100;
const isLitKey = ([r, , b]: Rgb) => b - r > 50;

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
    // With a black back, every card is followed by a solid black page.
    expectBlackBacks(p, (page) => o['black_back'] === true && page % 2 === 0);
  },
  'binary-cards-small': (o, p) => {
    const bits = Number(o['number_bits']);
    const values = Array.from({ length: bits }, (_, i) => 2 ** i);
    const shown = p.bodies.flatMap(numbersIn);
    // Sheets and the cards on them run from the largest value down.
    expect(shown).to.deep.equal(o['dot_counts'] ? values.reverse() : []);
    if (o['black_back']) {
      for (let page = 1; page < p.pages; page += 2)
        expect(p.bodies[page]?.trim()).to.equal('');
    }
    expectBlackBacks(p, (page) => o['black_back'] === true && page % 2 === 0);
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
    // Binary windows print a 1 and a 0 each; lightbulbs print no digit
    // (the only other lone 0 or 1 is the dot count of the 1 window).
    const digits = p.bodies.join(' ').match(/\b[01]\b/g) ?? [];
    const counted = o['dot_counts'] ? 1 : 0;
    const bulbs = rasterPages(p.file, 20).map((page) =>
      shareOfPixels(page, isBulbYellow, contentBox(p.paper, 1)),
    );
    if (o['value_type'] === 'binary') {
      expect(digits).to.have.length(bits * 2 + counted);
      bulbs.forEach((share) => expect(share, 'bulb yellow').to.equal(0));
    } else {
      expect(digits).to.have.length(counted);
      bulbs.forEach((share) => expect(share, 'bulb yellow').to.be.above(0.005));
    }
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
    const colour = hexColour(PARITY_BACKS[String(o['back_colour'])] ?? '');
    const [front, back] = rasterPages(p.file, 10) as [Raster, Raster];
    const box = contentBox(p.paper, 3);
    expect(shareOfPixels(front, isDark, box), 'dark on the fronts').to.be.below(
      0.2,
    );
    expect(
      shareOfPixels(front, isSaturated, box),
      'colour on the fronts',
    ).to.equal(0);
    expect(
      shareOfPixels(back, (rgb) => near(rgb, colour), box),
      `back page in ${String(o['back_colour'])}`,
    ).to.be.above(0.99);
  },
  'piano-keys': (o, p) => {
    expect(p.bodies[0]?.match(/\bC\b/g)?.length).to.be.at.least(4);
    // The title is the resource name, so look in the whole text.
    const text = p.texts[0] ?? '';
    if (o['highlight'] === false) expect(text).not.to.include('Piano Keys:');
    else expect(text).to.include(`Piano Keys: ${String(o['highlight'])}`);
    // Just above each key's name: shaded for the highlighted note only.
    const words = placedWords(p.file);
    const [page] = rasterPages(p.file, 30) as [Raster];
    const top = contentBox(p.paper).yMin + mmToPt(30);
    for (const note of 'CDEFGAB') {
      const names = letterBoxes(words, 1, note).filter((w) => w.yMin > top);
      expect(names, `key names ${note}`).to.have.length(4);
      for (const name of names) {
        const above = colourAt(
          page,
          (name.xMin + name.xMax) / 2,
          name.yMin - 6,
        );
        expect(
          isLitKey(above),
          `key ${note} shaded: ${above.join(',')}`,
        ).to.equal(o['highlight'] === note);
      }
    }
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
  'train-stations': (o, p) => {
    for (const name of ['Apple', 'Castle', 'Harbour'])
      expect(p.bodies[0]).to.include(name);
    // The station signs: the tallest box of each letter A to H.
    const words = placedWords(p.file);
    const signs = [...'ABCDEFGH'].map((letter) => {
      const boxes = letterBoxes(words, 1, letter);
      expect(boxes.length, `signs ${letter}`).to.be.at.least(1);
      const sign = boxes.reduce((a, b) =>
        b.yMax - b.yMin > a.yMax - a.yMin ? b : a,
      );
      return { x: (sign.xMin + sign.xMax) / 2, y: (sign.yMin + sign.yMax) / 2 };
    });
    const cx = signs.reduce((sum, s) => sum + s.x, 0) / signs.length;
    const cy = signs.reduce((sum, s) => sum + s.y, 0) / signs.length;
    const radii = signs.map((s) => Math.hypot(s.x - cx, s.y - cy));
    const ratio = Math.max(...radii) / Math.min(...radii);
    // Circular: the signs are on one circle; twisted: on a figure of eight.
    if (o['tracks'] === 'circular') expect(ratio, 'radii').to.be.below(1.05);
    else expect(ratio, 'radii').to.be.above(1.5);
    // Either map fills the page: its signs span half its height or more.
    const box = contentBox(p.paper);
    const ys = signs.map((s) => s.y);
    expect(
      (Math.max(...ys) - Math.min(...ys)) / (box.yMax - box.yMin),
      'height spanned by the stations',
    ).to.be.above(0.5);
  },
  'treasure-hunt': (o, p) => {
    const map = p.bodies[0] ?? '';
    const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
    for (const letter of letters) {
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
    const [picture] = rasterPages(p.file, 50, 1) as [Raster];
    const colour = shareOfPixels(picture, isSaturated, contentBox(p.paper, 1));
    if (o['art'] === 'bw') {
      expect(colour, 'colour pixels in black and white').to.equal(0);
    } else {
      expect(colour, 'colour pixels in full colour').to.be.above(0.5);
      // The red path runs clear of every treasure's letter.
      const words = placedWords(p.file);
      for (const letter of letters) {
        const labels = letterBoxes(words, 1, letter, 14);
        expect(labels, `label ${letter}`).to.have.length(1);
        for (const label of labels)
          expect(
            shareOfPixels(picture, isRed, label),
            `red on ${letter}`,
          ).to.equal(0);
      }
    }
  },
};

/** The back colours of parity-cards/template.njk. */
const PARITY_BACKS: Record<string, string> = {
  black: '#111111',
  blue: '#1f5fbf',
  green: '#2b8a3e',
  purple: '#6a3fa0',
  red: '#c62828',
};

/** "with X" or "without X". */
function withOrWithout(value: OptionValue | undefined, what: string): string {
  return `${value ? 'with' : 'without'} ${what}`;
}

/**
 * The subtitle of each view's file name, paper size left out, written out
 * here from the resource's options rather than read from its manifest.
 */
const SUBTITLE: Record<string, (o: Options) => string[]> = {
  arrows: () => [],
  'barcode-checksum-poster': (o) => [`${String(o['barcode_length'])} digits`],
  'binary-cards': (o) => [
    withOrWithout(o['display_numbers'], 'numbers'),
    withOrWithout(o['black_back'], 'black back'),
  ],
  'binary-cards-small': (o) => [
    `${String(o['number_bits'])} bits`,
    withOrWithout(o['dot_counts'], 'dot counts'),
    withOrWithout(o['black_back'], 'black back'),
  ],
  'binary-to-alphabet': (o) => [String(o['worksheet_version'])],
  'binary-windows': (o) => [
    `${String(o['number_bits'])} bits`,
    String(o['value_type']),
    withOrWithout(o['dot_counts'], 'dot counts'),
  ],
  grid: () => [],
  'job-badges': () => [],
  'left-right-cards': () => [],
  'modulo-clock': (o) => [
    o['modulo_number'] === '1' ? 'blank' : String(o['modulo_number']),
  ],
  'parity-cards': (o) => [`${String(o['back_colour'])} back`],
  'piano-keys': (o) => [
    o['highlight'] === false
      ? 'no highlight'
      : `${String(o['highlight'])} highlight`,
  ],
  'searching-cards': (o) => {
    const max = String(o['max_number']);
    return [
      `${String(o['number_cards'])} cards`,
      max === 'cards'
        ? '1 to number of cards'
        : max === 'blank'
          ? 'blank'
          : `1 to ${max}`,
      withOrWithout(o['help_sheet'], 'helper sheet'),
    ];
  },
  'sorting-network': (o) => {
    const range = RANGES['sorting-network']?.[String(o['prefilled_values'])];
    return [range ? `${range[0]} to ${range[1]}` : 'blank'];
  },
  'sorting-network-cards': (o) => {
    const stories: Record<string, string> = {
      riding_hood: 'little red riding hood',
      butterfly: 'butterfly life cycle',
    };
    const type = String(o['type']);
    return [stories[type] ?? type.replace('_', ' ')];
  },
  'train-stations': (o) => [`${String(o['tracks'])} tracks`],
  'treasure-hunt': (o) => {
    const range = RANGES['treasure-hunt']?.[String(o['prefilled_values'])];
    return [
      String(o['number_order']),
      range ? `${range[0]} to ${range[1]}` : 'blank',
      o['art'] === 'bw' ? 'black and white' : 'full colour',
      withOrWithout(o['instructions'], 'instructions'),
    ];
  },
};

/** One combination of a view's options, and the header text it gets. */
interface Case {
  options: Options;
  headerText: string;
}

/**
 * Every combination of a manifest's options, each once. Header text goes
 * on one paper size of each combination of the resource's own options (a4
 * and letter in turn from one combination to the next), so each of those
 * is printed both with and without it, on both papers across the view.
 */
function headerCases(manifest: Manifest): Case[] {
  const own = new Map<string, number>();
  return optionCombinations(manifest).map((options) => {
    const key = ownKey(options);
    if (!own.has(key)) own.set(key, own.size);
    const paper = PAPER_SIZE.values.indexOf(options['paper_size'] ?? '');
    const withHeader = ((own.get(key) ?? 0) + paper) % 2 === 1;
    return { options, headerText: withHeader ? HEADER : '' };
  });
}

/** A combination's own options (all but the paper size), as a key. */
function ownKey(options: Options): string {
  return JSON.stringify(
    Object.entries(options).filter(([name]) => name !== 'paper_size'),
  );
}

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

  it('has content and file name checks for every view', () => {
    const views = catalogue.list().map((m) => m.view);
    expect(views).to.have.members(Object.keys(CONTENT));
    expect(views).to.have.members(Object.keys(SUBTITLE));
  });

  describe('file names', () => {
    const examples: [string, Options, string][] = [
      ['barcode-checksum-poster', { barcode_length: '12' }, '12 digits - a4'],
      [
        'binary-cards',
        { display_numbers: true, black_back: false },
        'with numbers - without black back - a4',
      ],
      [
        'binary-cards-small',
        { number_bits: '8', dot_counts: true, black_back: false },
        '8 bits - with dot counts - without black back - a4',
      ],
      ['binary-to-alphabet', { worksheet_version: 'teacher' }, 'teacher - a4'],
      [
        'binary-windows',
        { number_bits: '8', value_type: 'lightbulb', dot_counts: true },
        '8 bits - lightbulb - with dot counts - a4',
      ],
      ['modulo-clock', { modulo_number: '1' }, 'blank - a4'],
      ['modulo-clock', { modulo_number: '10' }, '10 - a4'],
      ['parity-cards', { back_colour: 'red' }, 'red back - a4'],
      ['piano-keys', { highlight: false }, 'no highlight - a4'],
      ['piano-keys', { highlight: 'E' }, 'E highlight - a4'],
      [
        'searching-cards',
        { number_cards: '15', max_number: '99', help_sheet: true },
        '15 cards - 1 to 99 - with helper sheet - a4',
      ],
      ['sorting-network', { prefilled_values: 'blank' }, 'blank - a4'],
      ['sorting-network', { prefilled_values: 'medium' }, '10 to 99 - a4'],
      [
        'sorting-network-cards',
        { type: 'large_numbers' },
        'large numbers - a4',
      ],
      ['train-stations', { tracks: 'circular' }, 'circular tracks - a4'],
      [
        'treasure-hunt',
        {
          number_order: 'sorted',
          prefilled_values: 'easy',
          art: 'colour',
          instructions: true,
        },
        'sorted - 0 to 99 - full colour - with instructions - a4',
      ],
      ['arrows', {}, 'a4'],
      ['grid', {}, 'a4'],
      ['job-badges', {}, 'a4'],
      ['left-right-cards', {}, 'a4'],
    ];
    for (const [view, options, subtitle] of examples) {
      it(`names ${view} ${label(options)} "${subtitle}"`, () => {
        const title = catalogue.get(view)?.title;
        const job = catalogueJob(catalogue, {
          view,
          options: { ...options, paper_size: 'a4' },
        });
        expect(job.filename).to.equal(`${title} (${subtitle}).pdf`);
      });
    }

    it('names the file after the resource_name the task gives', () => {
      const job = catalogueJob(catalogue, {
        view: 'binary-cards',
        resourceName: 'Kāri Rua',
        options: { display_numbers: false, black_back: true },
      });
      expect(job.filename).to.equal(
        'Kāri Rua (without numbers - with black back - a4).pdf',
      );
    });
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

    it('prints Chinese, Arabic and emoji in the header and the footer with Noto fonts', async () => {
      const header = 'Kia ora 你好世界 مرحبا 🎉';
      const name = 'Arrows 你好 مرحبا 🎉';
      const out = await renderCatalogueJob(renderer, catalogue, {
        view: 'arrows',
        headerText: header,
        resourceName: name,
      });
      const file = tempPdf(out.pdf);
      try {
        const lines = (pageTexts(file)[0] ?? '').split('\n');
        const top = lines.find((line) => line.includes('Kia ora')) ?? '';
        const foot = lines.find((line) => line.includes('Arrows')) ?? '';
        for (const [where, line, han] of [
          ['header', top, '你好世界'],
          ['footer', foot, '你好'],
        ] as const) {
          expect(line, where).to.include(han);
          // pdftotext may give Arabic in visual order or as presentation forms.
          expect(line, where).to.match(
            /[\u0600-\u06ff\ufb50-\ufdff\ufe70-\ufeff]{4,}/,
          );
          expect(line, where).to.include('🎉');
        }
        // Chromium's PDF backend (Skia) embeds the CFF outlines of Noto Sans
        // CJK (an OpenType .ttc) and the colour emoji as unnamed Type 3
        // fonts, so pdffonts shows them as "[none]"; that the text above is
        // found proves they carry a ToUnicode map. The Arabic fonts keep
        // their names: regular in the header, bold in the footer's name.
        const fonts = pdfFonts(file);
        for (const arabic of ['NotoSansArabic-Regular', 'NotoSansArabic-Bold'])
          expect(
            fonts.some((font) => font.endsWith(`+${arabic}`)),
            `${arabic} in ${fonts.join(', ')}`,
          ).to.equal(true);
        expect(fonts, 'Type 3 fonts for CJK and emoji').to.include('[none]');
        // Noto Color Emoji draws the emoji in colour, a fallback font in
        // black: both emoji, top and bottom, are colourful.
        const [page] = rasterPages(file, 150, 1) as [Raster];
        const emoji = placedWords(file).filter((w) => w.word === '🎉');
        expect(emoji, 'emoji in header and footer').to.have.length(2);
        for (const box of emoji)
          expect(
            shareOfPixels(page, isSaturated, box),
            `colour of the emoji at y ${box.yMin.toFixed(0)}`,
          ).to.be.above(0.05);
      } finally {
        fs.rmSync(path.dirname(file), { recursive: true, force: true });
      }
    });
  });

  for (const manifest of catalogue.list()) {
    describe(manifest.view, () => {
      const cases = headerCases(manifest);
      const printed = new Map<number, Printed>();

      before(async () => {
        // Two at a time, one per page of the renderer: a render's deadline
        // starts when it is asked for, so a long queue would time out.
        await inPool(2, cases, async (c, i) => {
          const job = catalogueJob(catalogue, {
            view: manifest.view,
            options: c.options,
            headerText: c.headerText,
          });
          const out = await renderer.render(job);
          expect(out.warnings, 'render warnings').to.deep.equal([]);
          const file = tempPdf(out.pdf);
          printed.set(i, {
            file,
            paper: c.options['paper_size'] as 'a4' | 'letter',
            filename: job.filename,
            ...readFile(file, {
              name: manifest.title,
              url: urlOf(manifest.view),
              header: c.headerText,
            }),
          });
        });
      });

      after(() => {
        for (const p of printed.values())
          fs.rmSync(path.dirname(p.file), { recursive: true, force: true });
      });

      it('prints each combination of its own options with and without header text', () => {
        const seen = new Map<string, Set<boolean>>();
        for (const c of cases) {
          const key = ownKey(c.options);
          seen.set(key, (seen.get(key) ?? new Set()).add(c.headerText !== ''));
        }
        for (const [key, headers] of seen)
          expect([...headers].sort(), key).to.deep.equal([false, true]);
      });

      cases.forEach((c, i) => {
        const title = `prints ${label(c.options)}${c.headerText ? ' with header text' : ''}`;
        it(title, () => {
          const p = printed.get(i);
          if (!p) throw new Error('not rendered');
          const paper = PAPER_PT[p.paper];
          const subtitle = [
            ...(SUBTITLE[manifest.view]?.(c.options) ?? []),
            p.paper,
          ];
          expect(p.filename, 'file name').to.equal(
            `${manifest.title} (${subtitle.join(' - ')}).pdf`,
          );
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
            else
              expect(text, `no header on page ${page + 1}`).not.to.include(
                HEADER,
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
