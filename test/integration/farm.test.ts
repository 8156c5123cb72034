import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect } from 'chai';
import { pageTexts, pdfFacts } from '../support/pdf';
import type { Farm, Result } from '../support/farm';
import { startFarm, waitFor, waitTasksAcknowledged } from '../support/farm';
import { shortTaskId } from '../../src/queue/queue';
import { RESOURCES_DIR, makeResourceRoot, taskFor } from '../support/resources';

const PROJECT = path.resolve(__dirname, '..', '..', '..');

function documentOf(result: Result): Buffer {
  if (typeof result['document'] === 'string')
    return Buffer.from(result['document'], 'base64');
  const url = new URL(String(result['url']));
  throw new Error(`result is a link: ${url.href}`);
}

async function pdfOf(result: Result, farm: Farm): Promise<Buffer> {
  if (result['kind'] === 'result#document') return documentOf(result);
  const response = await fetch(
    String(result['url']).replace(
      /^http:\/\/[^/]+/,
      `http://127.0.0.1:${farm.port}`,
    ),
  );
  expect(response.status).to.equal(200);
  return Buffer.from(await response.arrayBuffer());
}

for (const backend of ['sqlite', 'cloud-tasks'] as const)
  describe(`render-farm start, end to end on ${backend}`, function () {
    this.timeout(240_000);
    let farm: Farm;

    before(async () => {
      farm = await startFarm(
        {
          RENDER_DAEMONS: '2',
          RENDER_RESOURCES_DIR: RESOURCES_DIR,
          RENDER_INLINE_LIMIT_BYTES: '150000',
          RENDER_LOG_LEVEL: 'warn',
        },
        backend,
      );
    });

    after(async () => {
      expect(await farm.stop()).to.equal(0);
    });

    it('answers 20 tasks across three resources with 20 matching results', async () => {
      const binary = (display: boolean, back: boolean, copies: number) =>
        taskFor('binary-cards', {
          resource_name: 'Binary Cards',
          display_numbers: display,
          black_back: back,
          copies,
        });
      const parity = (colour: string, copies: number) =>
        taskFor('parity-cards', {
          resource_name: 'Parity Cards',
          back_colour: colour,
          copies,
        });
      const network = (level: string, copies: number) =>
        taskFor('sorting-network', {
          resource_name: 'Sorting Network',
          prefilled_values: level,
          copies,
        });
      const cases: {
        task: unknown;
        pages?: number;
        error?: RegExp;
        name?: string;
      }[] = [
        {
          task: binary(true, false, 1),
          pages: 8,
          name: 'Binary Cards (with numbers - without black back - a4).pdf',
        },
        { task: binary(false, true, 1), pages: 16 },
        { task: binary(true, true, 2), pages: 32 },
        {
          task: { ...binary(false, false, 1), paper_size: 'letter' },
          pages: 8,
        },
        {
          task: parity('red', 1),
          pages: 2,
          name: 'Parity Cards (red back - a4).pdf',
        },
        { task: parity('blue', 3), pages: 6 },
        { task: parity('green', 1), pages: 2 },
        { task: parity('purple', 2), pages: 4 },
        { task: network('blank', 1), pages: 1 },
        { task: network('easy', 2), pages: 2 },
        {
          task: network('medium', 3),
          pages: 3,
          name: 'Sorting Network (10 to 99 - a4).pdf',
        },
        { task: network('hard', 1), pages: 1 },
        { task: { ...network('hard', 1), paper_size: 'letter' }, pages: 1 },
        { task: binary(true, false, 1), pages: 8 },
        { task: 'not json', error: /not valid JSON/ },
        { task: [], error: /must be a JSON object/ },
        {
          task: { ...binary(true, false, 1), display_numbers: 'maybe' },
          error: /option display_numbers: got "maybe"/,
        },
        {
          task: { ...parity('red', 1), resource_view: '../../etc' },
          error: /resource_view: got "..\/..\/etc"/,
        },
        { task: { ...network('easy', 1), copies: 0 }, error: /copies: got 0/ },
        {
          task: { ...network('easy', 1), url: undefined },
          error: /field url is missing/,
        },
      ];
      const ids: string[] = [];
      for (const item of cases) ids.push(await farm.enqueue(item.task));

      const results = await farm.results(20, 180_000);
      expect(results).to.have.length(20);
      expect(results.map((r) => r.task_id).sort()).to.deep.equal(
        [...ids].sort(),
      );

      for (const [i, item] of cases.entries()) {
        const result = results.find((r) => r.task_id === ids[i]);
        if (!result) throw new Error(`no result for case ${i}`);
        if (item.error) {
          expect(result.success, `case ${i}`).to.equal(false);
          expect(result['kind']).to.equal('result#document');
          expect(String(result['error'])).to.match(item.error);
          continue;
        }
        expect(
          result.success,
          `case ${i}: ${String(result['error'])}`,
        ).to.equal(true);
        if (item.name) expect(result['filename']).to.equal(item.name);
        const pdf = await pdfOf(result, farm);
        expect(pdfFacts(pdf).pages, `case ${i}`).to.equal(item.pages);
        expect(result['pages']).to.equal(item.pages);
      }
      const kinds = new Set(
        results.filter((r) => r.success).map((r) => r['kind']),
      );
      expect([...kinds].sort()).to.deep.equal([
        'result#document',
        'result#link',
      ]);
    });

    it("serves the authors' preview and its PDFs from the supervisor", async () => {
      const base = `http://127.0.0.1:${farm.port}/preview/`;
      expect(await (await fetch(base)).text()).to.contain('<h2>Binary Cards');
      const response = await fetch(`${base}parity-cards.pdf?back_colour=green`);
      expect(response.headers.get('content-type')).to.equal('application/pdf');
      expect(
        pdfFacts(Buffer.from(await response.arrayBuffer())).pages,
      ).to.equal(2);
    });

    it('prints six distinct numbers of the range on each sorting network copy', async () => {
      const id = await farm.enqueue(
        taskFor('sorting-network', {
          resource_name: 'Sorting Network',
          prefilled_values: 'medium',
          copies: 2,
        }),
      );
      const [result] = await farm.results(1, 60_000);
      expect(result?.task_id).to.equal(id);
      const pages = pageTexts(await pdfOf(result as Result, farm));
      const sets = pages.map((text) => {
        const numbers =
          (text.split('Sorting Network')[1] ?? text)
            .match(/\b\d{2}\b/g)
            ?.map(Number) ?? [];
        return numbers.filter((n) => n >= 10 && n <= 99);
      });
      for (const numbers of sets) {
        expect(new Set(numbers).size).to.be.at.least(6);
        for (const n of numbers) expect(n).to.be.within(10, 99);
      }
      expect(sets[0]).not.to.deep.equal(sets[1]);
    });
  });

describe('render-farm start on Cloud Tasks when the service goes away', function () {
  this.timeout(240_000);
  let farm: Farm;

  after(async () => {
    await farm?.stop();
  });

  it('answers every task exactly once through a restart of the queue service', async () => {
    farm = await startFarm(
      {
        RENDER_DAEMONS: '2',
        RENDER_RESOURCES_DIR: RESOURCES_DIR,
        RENDER_LOG_LEVEL: 'warn',
      },
      'cloud-tasks',
    );
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      ids.push(
        await farm.enqueue(
          taskFor('sorting-network', {
            resource_name: 'Sorting Network',
            prefilled_values: 'easy',
          }),
        ),
      );
    }
    const fake = farm.fake;
    if (!fake) throw new Error('no Cloud Tasks stand-in');
    const early = await farm.results(2, 60_000);
    await fake.pause();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await fake.resume();
    const rest = await farm.results(8 - early.length, 120_000);
    const all = [...early, ...rest];
    expect(all.map((r) => r.task_id).sort()).to.deep.equal([...ids].sort());
    expect(all.every((r) => r.success)).to.equal(true);
    expect(await farm.results(1, 3_000)).to.have.length(0);
    expect(
      (await fetch(`http://127.0.0.1:${farm.port}/healthz`)).status,
    ).to.equal(200);
  });
});

describe('delivery: kills, duplicates and poison tasks', function () {
  this.timeout(240_000);
  const root = makeResourceRoot({
    smoke: { template: '<section class="page"><p>SMOKE</p></section>' },
    slow: {
      manifest: {
        options: {
          wait_ms: { label: 'Busy wait', values: [0, 5000], default: 0 },
        },
      },
      template:
        '<script>const until = Date.now() + {{ wait_ms }}; while (Date.now() < until) {}</script>' +
        '<section class="page"><p>SLOW {{ wait_ms }} {{ random.int(1, 1000000) }}</p></section>',
    },
    'heap-hog': {
      template:
        '<script>const hog = []; for (;;) { hog.push(new Array(1e6).fill(Math.random())); }</script>' +
        '<p>unreached</p>',
    },
    // Task data reaches a template only through declared options: `order`
    // is not one, as in a template with a typo.
    invoice: {
      template:
        'Invoice for {{ resource_name }}, total due: {{ order.total }} {{ currency | upper }}',
    },
  });
  let farm: Farm;

  afterEach(async () => {
    await farm?.stop();
  });

  for (const backend of ['sqlite', 'cloud-tasks'] as const)
    it(`B17(a): a daemon killed mid-render loses nothing; the task is answered once (${backend})`, async () => {
      farm = await startFarm(
        {
          RENDER_DAEMONS: '2',
          RENDER_RESOURCES_DIR: root,
          RENDER_LEASE_SECONDS: '12',
          RENDER_TIMEOUT_SECONDS: '10',
          RENDER_LOG_LEVEL: 'warn',
        },
        backend,
      );
      await farm.daemonsUp();
      const id = await farm.enqueue(taskFor('slow', { wait_ms: 5000 }));
      const holder = await farm.holderOf(id);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      process.kill(holder.pid, 'SIGKILL');

      const results = await farm.results(1, 12_000 + 20_000 + 10_000);
      expect(results).to.have.length(1);
      expect(results[0]?.task_id).to.equal(id);
      expect(results[0]?.success, String(results[0]?.['error'])).to.equal(true);
      expect(await farm.results(1, 3_000)).to.have.length(0);
    });

  it('drains through scripts/shutdown-script.sh: exits 0 with no lease left held', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '2',
      RENDER_RESOURCES_DIR: root,
      RENDER_ADMIN_TOKEN: 'drain-secret',
      RENDER_DRAIN_GRACE_SECONDS: '3',
      RENDER_LOG_LEVEL: 'warn',
    });
    await farm.daemonsUp();
    const short = await farm.enqueue(taskFor('smoke'));
    const long = await farm.enqueue(taskFor('slow', { wait_ms: 5000 }));
    await farm.holderOf(long);

    const exited = new Promise<number | null>((resolve) =>
      farm.process.once('exit', (code) => resolve(code)),
    );
    const script = spawnSync(
      'bash',
      [path.join(PROJECT, 'scripts', 'shutdown-script.sh')],
      {
        env: {
          ...process.env,
          RENDER_PORT: String(farm.port),
          RENDER_ADMIN_TOKEN: 'drain-secret',
          RENDER_PID_FILE: path.join(farm.dir, 'supervisor.pid'),
          RENDER_DRAIN_GRACE_SECONDS: '3',
        },
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    expect(script.status, script.stderr).to.equal(0);
    expect(await exited).to.equal(0);

    // The slow task was answered or given back: either way nothing is
    // leased, and it can be leased again at once.
    const results = await farm.results(2, 2_000);
    expect(results.map((r) => r.task_id)).to.include(short);
    if (!results.some((r) => r.task_id === long)) {
      const again = await farm.queue.lease({
        tag: 'task',
        max: 5,
        leaseSeconds: 5,
      });
      expect(again.map((t) => t.id)).to.deep.equal([long]);
    }
  });

  for (const backend of ['sqlite', 'cloud-tasks'] as const)
    it(`B17(b): a task put twice under one id is rendered and answered once (${backend})`, async () => {
      farm = await startFarm(
        {
          RENDER_DAEMONS: '1',
          RENDER_RESOURCES_DIR: root,
          RENDER_LOG_LEVEL: 'warn',
        },
        backend,
      );
      const task = taskFor('slow', { wait_ms: 0 });
      const id = await farm.enqueue(task, 'T3');
      expect(shortTaskId(id)).to.equal('T3');
      expect(await farm.enqueue(task, 'T3')).to.equal(id);
      const first = await farm.results(1, 30_000);
      expect(first.map((r) => r.task_id)).to.deep.equal([id]);
      // The second put would have been rendered at once, in about a second.
      expect(await farm.results(1, 3_000)).to.have.length(0);
      // Put again after it was answered: still remembered, not rendered
      // again (SQLite keeps answered ids; Cloud Tasks keeps a removed
      // task's name taken for about an hour).
      expect(await farm.enqueue(task, 'T3')).to.equal(id);
      expect(await farm.results(1, 2_000)).to.have.length(0);
    });

  it('B13: an undefined variable fails the task once, naming it, and the daemon lives on', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: root,
      RENDER_LOG_LEVEL: 'warn',
      // Every document is stored, so a stored PDF would show.
      RENDER_INLINE_LIMIT_BYTES: '0',
    });
    await farm.daemonsUp();
    const pidBefore = (await farm.status()).daemons[0]?.pid;
    const id = await farm.enqueue(taskFor('invoice', { order: { total: 3 } }));
    const [result] = await farm.results(1, 60_000);
    expect(result?.task_id).to.equal(id);
    expect(result?.success).to.equal(false);
    expect(String(result?.['error']))
      .to.match(/order/)
      .and.match(/line 1/);
    expect(attemptsOf(farm, id)).to.deep.equal([1]);
    expect(fs.existsSync(`${farm.dir}/output/${id}`)).to.equal(false);
    expect((await farm.status()).daemons[0]?.pid).to.equal(pidBefore);
  });

  it('B19: each malformed payload gets one failure result at once, and the daemon keeps serving', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: root,
      RENDER_LOG_LEVEL: 'warn',
      RENDER_MAX_TASK_BYTES: '1000000',
    });
    await farm.daemonsUp();
    const [daemon] = (await farm.status()).daemons;
    const bodies: [Buffer | string, RegExp][] = [
      ['not json', /not valid JSON/],
      ['{"template":', /not valid JSON/],
      ['[]', /JSON object, got an array/],
      ['"hello"', /JSON object, got string/],
      ['null', /JSON object, got null/],
      ['42', /JSON object, got number/],
      ['{}', /field kind is missing/],
      [
        JSON.stringify({ ...taskFor('smoke'), resource_view: 7 }),
        /resource_view: got 7/,
      ],
      [JSON.stringify({ ...taskFor('smoke'), copies: -1 }), /copies: got -1/],
      [
        JSON.stringify({ ...taskFor('smoke'), copies: 100_000 }),
        /copies: got 100000/,
      ],
      [Buffer.from([0xff, 0xfe, 0x00]), /not valid UTF-8/],
      [
        JSON.stringify({ ...taskFor('smoke'), blob: 'a'.repeat(5_000_000) }),
        /larger than the limit/,
      ],
      ['['.repeat(10_000) + ']'.repeat(10_000), /nested more than 64 levels/],
      [
        JSON.stringify(taskFor('smoke')).replace(
          '"copies":1',
          `"copies":${'['.repeat(200_000)}1${']'.repeat(200_000)}`,
        ),
        /nested more than 64 levels deep .*limit of 64/,
      ],
    ];
    const ids: string[] = [];
    for (const [body] of bodies) ids.push(await farm.enqueue(body));
    const smokeId = await farm.enqueue(taskFor('smoke'));

    const results = await farm.results(bodies.length + 1, 60_000);
    expect(results).to.have.length(bodies.length + 1);
    bodies.forEach(([, reason], i) => {
      const mine = results.filter((r) => r.task_id === ids[i]);
      expect(mine, `body ${i}`).to.have.length(1);
      expect(mine[0]?.success).to.equal(false);
      expect(String(mine[0]?.['error']), `body ${i}`).to.match(reason);
      expect(attemptsOf(farm, ids[i] ?? ''), `body ${i}`).to.deep.equal([1]);
    });
    expect(results.find((r) => r.task_id === smokeId)?.success).to.equal(true);
    await waitTasksAcknowledged(farm.queue);
    expect((await farm.status()).daemons[0]?.pid).to.equal(daemon?.pid);
    expect(
      (await fetch(`http://127.0.0.1:${farm.port}/healthz`)).status,
    ).to.equal(200);
  });

  it('B18: a task that crashes the renderer is tried 3 times, then fails once; others go on', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: root,
      RENDER_MAX_ATTEMPTS: '3',
      RENDER_LOG_LEVEL: 'warn',
    });
    const poison = await farm.enqueue(taskFor('heap-hog'));
    const smokes: string[] = [];
    for (let i = 0; i < 10; i++)
      smokes.push(await farm.enqueue(taskFor('smoke')));

    const results = await farm.results(11, 180_000);
    const final = results.filter((r) => r.task_id === poison);
    expect(final).to.have.length(1);
    expect(final[0]?.success).to.equal(false);
    expect(String(final[0]?.['error'])).to.match(
      /^gave up after 3 attempts: .*crash/i,
    );
    expect(
      results.filter((r) => smokes.includes(r.task_id) && r.success),
    ).to.have.length(10);
    expect(attemptsOf(farm, poison)).to.deep.equal([1, 2, 3]);
    await waitTasksAcknowledged(farm.queue);
  });

  it('B18 (variant): a task whose daemon is SIGKILLed at each start is delivered 3 times, then fails once', async () => {
    farm = await startFarm({
      RENDER_DAEMONS: '1',
      RENDER_RESOURCES_DIR: root,
      RENDER_MAX_ATTEMPTS: '3',
      RENDER_TIMEOUT_SECONDS: '20',
      RENDER_LEASE_SECONDS: '60',
      RENDER_LOG_LEVEL: 'warn',
    });
    const poison = await farm.enqueue(taskFor('slow', { wait_ms: 5000 }));
    const deliveries: number[] = [];
    const killed: number[] = [];
    for (let kill = 0; kill < 3; kill++) {
      const holder = await waitFor(async () => {
        const daemon = await farm.holderOf(poison);
        return killed.includes(daemon.pid) ? undefined : daemon;
      }, 30_000);
      deliveries.push(
        holder.tasks.find((t) => t.taskId === poison)?.attempt ?? 0,
      );
      killed.push(holder.pid);
      process.kill(holder.pid, 'SIGKILL');
    }
    // Each delivery came well before its 60 s lease ran out: the
    // supervisor gave the task back as soon as its daemon was gone.
    expect(deliveries).to.deep.equal([1, 2, 3]);

    const [final] = await farm.results(1, 20_000);
    expect(await farm.results(1, 3_000)).to.have.length(0);
    expect(final?.task_id).to.equal(poison);
    expect(final?.success).to.equal(false);
    expect(String(final?.['error'])).to.equal(
      'gave up after 3 attempts: the daemon rendering the last one died (killed by SIGKILL)',
    );
    // Answered and acknowledged: there is no 4th delivery to come.
    await waitTasksAcknowledged(farm.queue);
    const smoke = await farm.enqueue(taskFor('smoke'));
    const [after] = await farm.results(1, 60_000);
    expect(after?.task_id).to.equal(smoke);
    expect(after?.success).to.equal(true);
  });
});

/**
 * The deliveries (the queue's count) that ended in a failure or a retry of
 * the task, from the daemons' log lines.
 */
function attemptsOf(farm: Farm, taskId: string): unknown[] {
  return farm.logs
    .filter(
      (l) =>
        l['task_id'] === taskId &&
        /passing reason|task failed/.test(String(l['message'])),
    )
    .map((l) => l['attempt']);
}
