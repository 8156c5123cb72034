import { expect } from 'chai';
import { InvalidTaskError } from '../../src/errors';
import { Catalogue } from '../../src/resources/catalogue';
import { checkTask, jsonDepth, parseTask } from '../../src/resources/task';
import { makeResourceRoot, taskFor } from '../support/resources';

const limits = { maxCopies: 50, maxTaskBytes: 1_000_000 };

describe('parseTask', () => {
  let catalogue: Catalogue;

  before(() => {
    const root = makeResourceRoot({
      cards: {
        manifest: {
          title: 'Cards',
          options: {
            display_numbers: {
              label: 'Display numbers',
              values: [true, false],
              default: true,
              subtitle: { true: 'with numbers', false: 'without numbers' },
            },
            bits: {
              label: 'Bits',
              values: [4, 8],
              default: 8,
              subtitle: { '4': '4 bits', '8': '8 bits' },
            },
          },
          subtitle: ['bits', 'display_numbers'],
        },
        template: '<section class="page">{{ bits }}</section>',
      },
    });
    catalogue = Catalogue.load(root);
  });

  const valid = () =>
    taskFor('cards', {
      resource_name: 'Cards',
      display_numbers: true,
      bits: 8,
    });
  const parse = (task: unknown) =>
    parseTask(
      Buffer.from(typeof task === 'string' ? task : JSON.stringify(task)),
      't1',
      catalogue,
      limits,
    );

  it('names the file after the resource name and the subtitle rule', () => {
    const job = parse(valid());
    expect(job.filename).to.equal('Cards (8 bits - with numbers - a4).pdf');
    expect(job.options).to.deep.equal({
      display_numbers: true,
      bits: 8,
      paper_size: 'a4',
    });
  });

  it('accepts the text form of an allowed value and stores the declared value', () => {
    const job = parse({
      ...valid(),
      bits: '4',
      display_numbers: 'false',
      paper_size: 'letter',
    });
    expect(job.options).to.deep.equal({
      display_numbers: false,
      bits: 4,
      paper_size: 'letter',
    });
    expect(job.filename).to.equal(
      'Cards (4 bits - without numbers - letter).pdf',
    );
  });

  it('cleans separators and control characters out of the file name', () => {
    const job = parse({ ...valid(), resource_name: '../a/b\\c:d*\u0000e' });
    expect(job.filename).to.equal(
      '__a_b_c_d__e (8 bits - with numbers - a4).pdf',
    );
    expect(job.filename).not.to.match(/[/\\\u0000]/);
  });

  it('delivers inline when it fits unless the task asks for a link', () => {
    expect(parse(valid()).delivery).to.equal('auto');
    expect(parse({ ...valid(), delivery: 'link' }).delivery).to.equal('link');
    expect(() => parse({ ...valid(), delivery: 'email' })).to.throw(
      InvalidTaskError,
      /field delivery: got "email", expected "auto" or "link"/,
    );
  });

  it('ignores unknown extra keys', () => {
    expect(parse({ ...valid(), colour: 'mauve' }).filename).to.match(/^Cards/);
  });

  const rejects: [string, unknown, RegExp][] = [
    ['a payload that is not JSON', 'not json', /not valid JSON/],
    ['a truncated payload', '{"kind":', /not valid JSON/],
    ['JSON that is an array', '[]', /must be a JSON object, got an array/],
    ['JSON that is a string', '"hello"', /must be a JSON object, got string/],
    ['JSON null', 'null', /must be a JSON object, got null/],
    ['JSON that is a number', '42', /must be a JSON object, got number/],
    ['an empty object', '{}', /field kind is missing/],
    [
      'an unknown kind',
      { ...valid(), kind: 'task#paint' },
      /field kind: got "task#paint", expected "task#render"/,
    ],
    ['a missing url', { ...valid(), url: undefined }, /field url is missing/],
    [
      'a resource_view that is not a string',
      { ...valid(), resource_view: 7 },
      /resource_view: got 7/,
    ],
    [
      'an unknown resource_view',
      { ...valid(), resource_view: 'nope' },
      /resource_view: got "nope", expected one of cards/,
    ],
    [
      'a resource_view that climbs out',
      { ...valid(), resource_view: '../../etc' },
      /resource_view: got "..\/..\/etc"/,
    ],
    [
      'a missing option',
      { ...valid(), bits: undefined },
      /option bits is missing, expected 4 or 8/,
    ],
    [
      'an option not among its values',
      { ...valid(), display_numbers: 'maybe' },
      /option display_numbers: got "maybe", expected true or false/,
    ],
    [
      'an option of the wrong shape',
      { ...valid(), bits: [8] },
      /option bits: got \[8\]/,
    ],
    [
      'a paper size not offered',
      { ...valid(), paper_size: 'a3' },
      /option paper_size: got "a3", expected "a4" or "letter"/,
    ],
    [
      'copies below one',
      { ...valid(), copies: -1 },
      /copies: got -1, expected a whole number from 1 to 50/,
    ],
    [
      'copies above the maximum',
      { ...valid(), copies: 100_000 },
      /copies: got 100000/,
    ],
    [
      'copies that are not whole',
      { ...valid(), copies: 1.5 },
      /copies: got 1.5/,
    ],
    ['copies as text', { ...valid(), copies: '2' }, /copies: got "2"/],
    [
      'a header text too long for its line',
      { ...valid(), header_text: 'X'.repeat(900_000) },
      /field header_text: got 900000 bytes, expected at most 300/,
    ],
    [
      'a resource name too long for a file name',
      { ...valid(), resource_name: 'ā'.repeat(100) },
      /field resource_name: got 200 bytes, expected at most 150/,
    ],
  ];
  for (const [what, payload, message] of rejects) {
    it(`rejects ${what} with a clear error`, () => {
      expect(() => parse(payload)).to.throw(InvalidTaskError, message);
    });
  }

  it('rejects bytes that are not UTF-8 (B19)', () => {
    const bad = Buffer.from([0xff, 0xfe, 0x00]);
    expect(() => parseTask(bad, 't', catalogue, limits)).to.throw(
      InvalidTaskError,
      /not valid UTF-8/,
    );
  });

  it('rejects a payload over the size limit before parsing it (B19)', () => {
    // Not JSON at all: had it been parsed first, the error would say so.
    const big = Buffer.from('{"kind": "task#render", ' + 'a'.repeat(5_000_000));
    expect(() => parseTask(big, 't', catalogue, limits)).to.throw(
      InvalidTaskError,
      /payload is 5000\d+ bytes, larger than the limit of 1000000 bytes/,
    );
  });

  it('rejects JSON nested 10,000 arrays deep without overflowing the stack (B19)', () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    expect(() => parse(deep)).to.throw(
      InvalidTaskError,
      /task payload is nested more than 64 levels deep/,
    );
  });

  it('rejects a field nested 200,000 levels deep, naming the limit (B19)', () => {
    const copies = '['.repeat(200_000) + '1' + ']'.repeat(200_000);
    const text = JSON.stringify(valid()).replace(
      '"copies":1',
      `"copies":${copies}`,
    );
    expect(text.length).to.be.below(limits.maxTaskBytes);
    expect(() => parse(text)).to.throw(
      InvalidTaskError,
      /nested more than 64 levels deep .*the limit of 64/,
    );
  });

  it('takes JSON nested up to the limit, braces inside strings not counted', () => {
    const nested = '['.repeat(63) + '1' + ']'.repeat(63);
    const text = JSON.stringify({ ...valid(), note: '[[[[{{{{' }).replace(
      '"copies":1',
      `"extra":${nested},"copies":1`,
    );
    expect(parse(text).copies).to.equal(1);
    expect(jsonDepth(text, 64)).to.equal(64);
    // A backslash ending a string does not escape its closing quote.
    expect(jsonDepth('["\\\\"[', 64)).to.equal(2);
    expect(jsonDepth('["\\"["]', 64)).to.equal(1);
  });

  it('quotes a deep or huge wrong value in few characters, without recursing', () => {
    const deep: unknown[] = [];
    let inner = deep;
    for (let i = 0; i < 100_000; i++) {
      const next: unknown[] = [];
      inner.push(next);
      inner = next;
    }
    const task = { ...valid(), bits: deep };
    expect(() => checkTask(task, 't', catalogue, limits)).to.throw(
      InvalidTaskError,
      /option bits: got \[\[\[\[.*\.\.\., expected 4 or 8/,
    );
    const wide = {
      ...valid(),
      bits: Array.from({ length: 1_000_000 }, () => 1),
    };
    expect(() => checkTask(wide, 't', catalogue, limits)).to.throw(
      /option bits: got \[1,1,1/,
    );
  });
});
