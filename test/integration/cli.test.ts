import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { CLI } from '../support/farm';
import { pdfFacts } from '../support/pdf';
import { makeResourceRoot, taskFor } from '../support/resources';

function run(args: string[], env: Record<string, string> = {}, input?: string) {
  const result = spawnSync('node', [CLI, ...args], {
    env: { ...process.env, RENDER_LOG_LEVEL: 'warn', ...env },
    input,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('render-farm command line', function () {
  this.timeout(90_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-cli-'));
  const queueEnv = { RENDER_QUEUE: `sqlite:${path.join(dir, 'queue.db')}` };

  for (const command of [
    'start',
    'render',
    'enqueue',
    'results',
    'resources',
    'preview',
  ]) {
    it(`explains ${command} in --help`, () => {
      const { code, stdout } = run([command, '--help']);
      expect(code).to.equal(0);
      expect(stdout).to.match(new RegExp(`^Usage: render-farm ${command}`));
    });
  }

  it('stops start at once on a bad variable, naming it and what it accepts', () => {
    const { code, stderr } = run(['start'], {
      RENDER_DAEMONS: 'many',
      RENDER_PORT: '0',
    });
    expect(code).to.equal(2);
    expect(stderr).to.contain(
      'RENDER_DAEMONS: got "many", expected a whole number from 1 to 64',
    );
  });

  it('stops start on a broken resource, naming its file', () => {
    const root = makeResourceRoot({ broken: { template: '{{ unclosed ' } });
    const { code, stderr } = run(['start'], {
      ...queueEnv,
      RENDER_RESOURCES_DIR: root,
      RENDER_PORT: '0',
    });
    expect(code).to.equal(1);
    expect(stderr).to.match(/template broken\/template\.njk/);
  });

  it('lists resources with their options, as text and JSON', () => {
    const text = run(['resources']).stdout;
    expect(text).to.match(/^binary-cards {2}\(Binary Cards\)$/m);
    expect(text).to.match(/^ {4}paper_size: \[a4\], letter$/m);
    const list = JSON.parse(run(['resources', '--json']).stdout) as {
      view: string;
    }[];
    expect(list).to.have.length(17);
  });

  it('renders one resource to a file without a queue', () => {
    const out = path.join(dir, 'cards.pdf');
    const { code, stdout } = run([
      'render',
      'binary-cards',
      '--option',
      'black_back=true',
      '--copies',
      '2',
      '--out',
      out,
    ]);
    expect(code).to.equal(0);
    expect(stdout).to.contain(
      '(Binary Cards (with numbers - with black back - a4).pdf)',
    );
    expect(pdfFacts(out).pages).to.equal(32);
  });

  it('refuses a bad option of render with the contract message', () => {
    const { code, stderr } = run([
      'render',
      'binary-cards',
      '-o',
      'black_back=maybe',
      '--out',
      '/dev/null',
    ]);
    expect(code).to.equal(1);
    expect(stderr).to.contain(
      'option black_back: got "maybe", expected true or false',
    );
  });

  it('enqueues an object or an array from stdin, one id a line, under a given task_id', async () => {
    const tasks = [
      taskFor('binary-cards'),
      { ...taskFor('grid'), task_id: 'my-task-1' },
    ];
    const { code, stdout } = run(
      ['enqueue', '-'],
      queueEnv,
      JSON.stringify(tasks),
    );
    expect(code).to.equal(0);
    const ids = stdout.trim().split('\n');
    expect(ids).to.have.length(2);
    expect(ids[1]).to.equal('my-task-1');
    const queue = new SqliteQueue(path.join(dir, 'queue.db'));
    const leased = await queue.lease({ tag: 'task', max: 5, leaseSeconds: 5 });
    expect(leased.map((t) => t.id)).to.deep.equal(ids);
    expect(JSON.parse(leased[1]?.payload.toString() ?? '')).to.include({
      resource_view: 'grid',
    });
    for (const task of leased) await queue.acknowledge(task);
    await queue.close();
  });

  it('takes results off the queue and saves inline documents with --save', async () => {
    const pdf = fs.readFileSync(path.join(dir, 'cards.pdf'));
    const queue = new SqliteQueue(path.join(dir, 'queue.db'));
    await queue.put(
      JSON.stringify({
        kind: 'result#document',
        success: true,
        task_id: 'T9',
        filename: 'Cards (a4).pdf',
        document: pdf.toString('base64'),
        pages: 32,
      }),
      'result',
    );
    await queue.close();
    const save = path.join(dir, 'saved');
    const { code, stdout } = run(
      ['results', '--wait', '1', '--timeout', '10', '--save', save],
      queueEnv,
    );
    expect(code).to.equal(0);
    const line = JSON.parse(stdout.trim()) as Record<string, unknown>;
    expect(line['document']).to.equal(path.join(save, 'T9', 'Cards (a4).pdf'));
    expect(pdfFacts(String(line['document'])).pages).to.equal(32);
  });

  it('says when results did not arrive in time', () => {
    const { code, stderr } = run(
      ['results', '--wait', '1', '--timeout', '1'],
      queueEnv,
    );
    expect(code).to.equal(1);
    expect(stderr).to.contain('1 result(s) did not arrive in time');
  });
});
