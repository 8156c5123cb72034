import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { TemplateError } from '../../src/errors';
import { Catalogue } from '../../src/resources/catalogue';
import {
  createTemplateEnv,
  renderTemplate,
} from '../../src/resources/template-env';
import { makeResourceRoot } from '../support/resources';

const SECRET = 'RF-SECRET-7f3a';

describe('template environment', () => {
  let root: string;
  let secretFile: string;

  before(() => {
    secretFile = path.join(
      fs.mkdtempSync(path.join(os.tmpdir(), 'rf-secret-')),
      'rf-secret.txt',
    );
    fs.writeFileSync(secretFile, SECRET);
    const climb = `../../../../../../../..${secretFile}`;
    root = makeResourceRoot({
      invoice: {
        raw: true,
        template:
          'Invoice for {{ customer.name }}, total due: {{ order.total }} {{ currency | upper }}',
      },
      money: { raw: true, template: '{{ money(order.total) }}' },
      'include-climb': { raw: true, template: `{% include "${climb}" %}` },
      'include-var': { raw: true, template: '{% include part %}' },
      'include-absolute': {
        raw: true,
        template: `{% include "${secretFile}" %}`,
      },
      partials: {
        raw: true,
        template: 'inside: {% include "./part.njk" %}',
        files: { 'part.njk': 'PART' },
      },
      // B13: an undefined name used other than printed.
      concat: { raw: true, template: 'Total\n{{ "x" ~ totl }}' },
      length: { raw: true, template: 'Total\n{{ totl | length }}' },
      plus: { raw: true, template: 'Total\n{{ totl + 1 }}' },
      loop: {
        raw: true,
        template: 'Total\n{% for i in totl %}{{ i }}{% endfor %}',
      },
      test: { raw: true, template: 'Total\n{% if totl %}yes{% endif %}' },
      'filter-join': { raw: true, template: 'Total\n{{ totl | join(",") }}' },
      'member-join': {
        raw: true,
        template: 'Items\n\n{{ order.items | join(",") }}',
      },
      'in-block': { template: '<p>\n\n{{ totl }}</p>' },
      'in-include': {
        raw: true,
        template: '{% include "./part.njk" %}',
        files: { 'part.njk': 'one\ntwo {{ "a" ~ totl }}' },
      },
      features: {
        raw: true,
        template: [
          '{% for i in range(3) %}{{ i }}{{ loop.index }}{% endfor %}',
          '{% set c = cycler("a", "b") %}{{ c.next() }}{{ c.next() }}',
          '{% set j = joiner("+") %}{% for i in [1, 2] %}{{ j() }}{{ i }}{% endfor %}',
          '{% macro m(a, b = 2) %}{{ a }}{{ b }}{{ caller() if caller else "-" }}{% endmacro %}',
          '{{ m(1) }}{% call m(3) %}C{% endcall %}',
          '{% set x = 5 %}{{ x }}{% set y %}Y{% endset %}{{ y }}',
          '{% from "./lib.njk" import twice %}{{ twice(4) }}',
          '{% include "./part.njk" %}',
          '{{ order.total is defined }}{{ order.missing is defined }}{{ order.missing | default("d") }}',
        ].join(''),
        files: {
          'part.njk': '[{{ order.total }}]',
          'lib.njk': '{% macro twice(n) %}{{ n * 2 }}{% endmacro %}',
        },
      },
    });
  });

  const render = (name: string, context: object) =>
    renderTemplate(
      createTemplateEnv({ root }),
      root,
      `${name}/template.njk`,
      context,
    );

  it('B13: an undefined variable is an error naming it, the template and line 1', () => {
    expect(() => render('invoice', { customer: { name: 'Ada' } }))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(/invoice\/template\.njk line 1/)
      .and.matches(/order/);
  });

  it('B13: a call to a missing helper is an error naming it', () => {
    expect(() => render('money', { order: { total: 3 } }))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(/money/)
      .and.matches(/line 1/);
  });

  for (const view of [
    'concat',
    'length',
    'plus',
    'loop',
    'test',
    'filter-join',
  ]) {
    it(`B13: an undefined name is an error however it is used (${view})`, () => {
      expect(() => render(view, { order: { total: 3 } }))
        .to.throw(TemplateError)
        .with.property('message')
        .that.equals(
          `template ${view}/template.njk line 2: "totl" is undefined`,
        );
    });
  }

  it('B13: an undefined name in a block or an include names that file and line', () => {
    const layout = { layout_css: '', resource_css: '', resource_name: 'R' };
    expect(() => render('in-block', { ...layout, paper_size: 'a4' }))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(
        /^template in-block\/template\.njk line 3: "totl" is undefined$/,
      );
    expect(() => render('in-include', {}))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(
        /^template in-include\/part\.njk line 2: "totl" is undefined$/,
      );
  });

  it('B13: an undefined name in the layout a template extends names the layout', () => {
    expect(() => render('in-block', { paper_size: 'a4', totl: 1 }))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(
        /^template _layout\/base\.njk line \d+: "resource_name" is undefined$/,
      );
  });

  it('B13: a TypeError inside a filter names the template file and line', () => {
    expect(() => render('member-join', { order: {} }))
      .to.throw(TemplateError)
      .with.property('message')
      .that.matches(
        /^template member-join\/template\.njk line 3: TypeError: Cannot read properties of undefined \(reading 'join'\)$/,
      );
  });

  it('B13: strict names leave range, cycler, joiner, macros, caller, loop, set, imports and includes working', () => {
    expect(render('features', { order: { total: 7 } })).to.equal(
      '011223ab1+2' + '12-32C' + '5Y' + '8' + '[7]' + 'truefalsed',
    );
  });

  it('fills a template when every value is there', () => {
    const html = render('invoice', {
      customer: { name: 'Ada' },
      order: { total: 12 },
      currency: 'nzd',
    });
    expect(html).to.equal('Invoice for Ada, total due: 12 NZD');
  });

  it('escapes values (autoescape on)', () => {
    const html = render('invoice', {
      customer: { name: '<b>Ada</b>' },
      order: { total: 1 },
      currency: 'x',
    });
    expect(html).to.contain('&lt;b&gt;Ada&lt;/b&gt;');
  });

  it('allows relative includes inside the root', () => {
    expect(render('partials', {})).to.equal('inside: PART');
  });

  it('B15(a): a template name that climbs out of the root is refused', () => {
    const env = createTemplateEnv({ root });
    // A name that does reach the secret file, climbing from the root.
    const climb = path.relative(root, secretFile);
    expect(climb).to.match(/^\.\.\//);
    expect(() => renderTemplate(env, root, climb, {}))
      .to.throw(TemplateError, /outside the template root/)
      .with.property('message')
      .that.does.not.contain(SECRET);
  });

  it('B15(b): an absolute template name is refused', () => {
    const env = createTemplateEnv({ root });
    expect(() => renderTemplate(env, root, secretFile, {}))
      .to.throw(TemplateError, /outside the template root/)
      .with.property('message')
      .that.does.not.contain(SECRET);
  });

  it('B15(c): an include that climbs out of the root is refused', () => {
    expect(() => render('include-climb', {})).to.throw(
      TemplateError,
      /outside the template root/,
    );
    expect(() => render('include-absolute', {})).to.throw(
      TemplateError,
      /outside the template root/,
    );
  });

  it('B15(d): an include named by task data cannot climb out either', () => {
    const part = `partials/../../../../../../../..${secretFile}`;
    let message = '';
    try {
      render('include-var', { part });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).to.match(/outside the template root|template not found/);
    expect(message).not.to.contain(SECRET);
  });

  it('stops the catalogue from loading when a template does not compile', () => {
    const broken = makeResourceRoot({
      bad: { raw: true, template: '{% if %}' },
    });
    expect(() => Catalogue.load(broken)).to.throw(
      TemplateError,
      /bad\/template\.njk/,
    );
  });

  it('stops the catalogue from loading when a manifest is wrong, naming the file', () => {
    const broken = makeResourceRoot({
      bad: {
        template: '',
        manifest: {
          options: { size: { label: 'Size', values: ['s'], default: 'm' } },
        },
      },
    });
    expect(() => Catalogue.load(broken)).to.throw(
      TemplateError,
      /bad\/manifest\.json: option size: default "m"/,
    );
  });
});
