import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { CloudTasksQueue } from '../../src/queue/cloud-tasks-queue';
import { startFakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
import type { FakeCloudTasks } from '../../src/queue/fake-cloud-tasks-server';
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

/**
 * Like {@link run}, without blocking this process: for a queue service
 * that this process serves itself.
 */
function runAsync(
  args: string[],
  env: Record<string, string> = {},
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('node', [CLI, ...args], {
      env: { ...process.env, RENDER_LOG_LEVEL: 'warn', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/** A SQLite queue's tasks tagged `tag`, leased and acknowledged. */
async function drainQueue(file: string, tag: string) {
  const queue = new SqliteQueue(file);
  const leased = await queue.lease({ tag, max: 100, leaseSeconds: 5 });
  for (const task of leased) await queue.acknowledge(task);
  await queue.close();
  return leased;
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

  it('renders one resource to a file without a queue, quietly', () => {
    const out = path.join(dir, 'cards.pdf');
    const { code, stdout, stderr } = run(
      [
        'render',
        'binary-cards',
        '--option',
        'black_back=true',
        '--copies',
        '2',
        '--out',
        out,
      ],
      // Unset: the command's own default (warn) applies.
      { RENDER_LOG_LEVEL: '' },
    );
    expect(code).to.equal(0);
    expect(stdout).to.contain(
      '(Binary Cards (with numbers - with black back - a4).pdf)',
    );
    expect(pdfFacts(out).pages).to.equal(32);
    // No JSON info lines ("browser started") among the command's output.
    expect(stderr).not.to.match(/"level":"info"/);
  });

  it('refuses an option the resource does not have, listing those it has', () => {
    const { code, stderr } = run([
      'render',
      'binary-cards',
      '--option',
      'foo=bar',
      '--out',
      path.join(dir, 'never.pdf'),
    ]);
    expect(code).to.equal(2);
    expect(stderr).to.contain(
      '--option foo: binary-cards has no such option; its options are display_numbers, black_back, paper_size',
    );
    expect(fs.existsSync(path.join(dir, 'never.pdf'))).to.equal(false);
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

  it('enqueues nothing from an array with one bad task, naming the item', async () => {
    const queueFile = path.join(dir, 'all-or-nothing.db');
    const tasks = Array.from({ length: 8 }, (_, i) => ({
      ...taskFor('grid'),
      task_id: i === 6 ? 'bad id' : `ok-${i}`,
    }));
    const { code, stderr, stdout } = run(
      ['enqueue', '-'],
      { RENDER_QUEUE: `sqlite:${queueFile}` },
      JSON.stringify(tasks),
    );
    expect(code).to.equal(2);
    expect(stdout).to.equal('');
    expect(stderr).to.contain(
      'stdin item 7: task id: got "bad id", expected 1 to 100 letters, digits, - or _',
    );
    expect(await drainQueue(queueFile, 'task')).to.have.length(0);

    const reserved = run(
      ['enqueue', '-'],
      { RENDER_QUEUE: `sqlite:${queueFile}` },
      JSON.stringify({ ...taskFor('grid'), task_id: 'result-x' }),
    );
    expect(reserved.code).to.equal(2);
    expect(reserved.stderr).to.contain('not starting with "result-"');
  });

  it('refuses a task nested too deep with a clear error, not a crash (B19)', async () => {
    const queueFile = path.join(dir, 'deep.db');
    const file = path.join(dir, 'deep.json');
    fs.writeFileSync(
      file,
      JSON.stringify(taskFor('grid')).replace(
        '"copies":1',
        `"copies":${'['.repeat(200_000)}1${']'.repeat(200_000)}`,
      ),
    );
    const { code, stderr } = run(['enqueue', file], {
      RENDER_QUEUE: `sqlite:${queueFile}`,
    });
    expect(code).to.equal(2);
    expect(stderr).to.contain(
      `render-farm: ${file}: a task is nested more than 64 levels deep`,
    );
    expect(stderr).not.to.match(/RangeError|at /);
    expect(await drainQueue(queueFile, 'task')).to.have.length(0);
  });

  it('takes at most N results with --wait N', async () => {
    const queueFile = path.join(dir, 'wait.db');
    const queue = new SqliteQueue(queueFile);
    for (const n of [1, 2, 3])
      await queue.put(JSON.stringify({ task_id: `T${n}` }), 'result');
    await queue.close();
    const { code, stdout } = run(['results', '--wait', '2'], {
      RENDER_QUEUE: `sqlite:${queueFile}`,
    });
    expect(code).to.equal(0);
    expect(stdout.trim().split('\n')).to.have.length(2);
    const left = await drainQueue(queueFile, 'result');
    expect(left.map((r) => r.payload.toString())).to.deep.equal([
      '{"task_id":"T3"}',
    ]);
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

describe('render-farm command line on Cloud Tasks (fake service on loopback)', function () {
  this.timeout(90_000);
  let fake: FakeCloudTasks;
  let queuePath: string;
  let env: Record<string, string>;

  before(async () => {
    fake = await startFakeCloudTasks({ port: 0 });
  });
  beforeEach(() => {
    queuePath = `projects/test/locations/here/queues/q-${randomUUID()}`;
    env = {
      RENDER_QUEUE: `cloud-tasks:${queuePath}`,
      RENDER_CLOUD_TASKS_ENDPOINT: fake.address,
      METADATA_SERVER_DETECTION: 'none',
    };
  });
  after(async () => fake.stop());

  it('enqueues tasks as pull tasks tagged "task", under a given task_id', async () => {
    const tasks = [
      taskFor('binary-cards'),
      { ...taskFor('grid'), task_id: 'my-task-1' },
    ];
    const { code, stdout, stderr } = await runAsync(
      ['enqueue', '-'],
      env,
      JSON.stringify(tasks),
    );
    expect(code, stderr).to.equal(0);
    const ids = stdout.trim().split('\n');
    expect(ids).to.have.length(2);
    expect(ids[1]).to.equal(`${queuePath}/tasks/my-task-1`);
    const stored = fake.tasks(queuePath);
    expect(stored.map((t) => t.name)).to.deep.equal(ids);
    expect(stored.every((t) => t.tag === 'task')).to.equal(true);
    expect(JSON.parse(stored[1]?.payload.toString() ?? '')).to.include({
      resource_view: 'grid',
    });
    // All or nothing here too.
    const bad = await runAsync(
      ['enqueue', '-'],
      env,
      JSON.stringify([taskFor('grid'), { ...taskFor('grid'), task_id: 7 }]),
    );
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.contain('stdin item 2: task_id: got 7');
    expect(fake.tasks(queuePath)).to.have.length(2);
  });

  it('takes at most N results with --wait N and saves their documents', async () => {
    const queue = new CloudTasksQueue(queuePath, {
      emulatorEndpoint: fake.address,
    });
    const pdf = Buffer.from('%PDF-1.7 test');
    for (const n of [1, 2, 3]) {
      await queue.put(
        JSON.stringify({
          kind: 'result#document',
          success: true,
          task_id: `T${n}`,
          filename: 'Cards (a4).pdf',
          document: pdf.toString('base64'),
          pages: 1,
        }),
        'result',
      );
    }
    await queue.close();
    const save = fs.mkdtempSync(path.join(os.tmpdir(), 'rf-cli-save-'));
    const { code, stdout, stderr } = await runAsync(
      ['results', '--wait', '2', '--timeout', '20', '--save', save],
      env,
    );
    expect(code, stderr).to.equal(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((l) => l['task_id'])).to.deep.equal(['T1', 'T2']);
    expect(fs.readFileSync(String(lines[0]?.['document']))).to.deep.equal(pdf);
    const left = fake.tasks(queuePath);
    expect(left).to.have.length(1);
    expect(left[0]?.leased).to.equal(false);
  });
});
