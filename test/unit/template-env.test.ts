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
