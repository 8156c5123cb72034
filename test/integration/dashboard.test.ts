// The dashboard in a real headless Chromium, on a phone-sized screen:
// it shows the daemons, enqueues a task through its form, shows the result
// with a link that opens the PDF, restarts a daemon with its button, and
// prints what tasks say as text, never as HTML.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CHROMIUM_ARGS } from '../../src/render/browser';
import puppeteer from 'puppeteer-core';
import type { Browser, Page } from 'puppeteer-core';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import {
  PROJECT_ROOT,
  SupervisorHarness,
  taskFor,
  waitFor,
} from '../support/supervisor-harness';

const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts');

describe('dashboard', function () {
  this.timeout(60_000);
  let h: SupervisorHarness;
  let browser: Browser;
  let page: Page;

  before(async () => {
    h = await SupervisorHarness.start({ RENDER_INLINE_LIMIT_BYTES: '1000' });
    browser = await puppeteer.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
    });
    await h.waitReady();
  });
  after(async () => {
    await browser?.close();
    await h?.stop();
  });
  beforeEach(async () => {
    const context = await browser.createBrowserContext();
    page = await context.newPage();
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 1 });
    await page.goto(h.baseUrl, { waitUntil: 'load' });
  });
  afterEach(async () => page.browserContext().close());

  function text(selector: string): Promise<string> {
    return page.$eval(selector, (node) => node.textContent ?? '');
  }

  it('shows each daemon with its state, browser and restarts', async () => {
    await page.waitForFunction(
      () =>
        document
          .querySelector('#daemons .daemon[data-id="1"]')
          ?.textContent?.includes('idle'),
      { timeout: 10_000 },
    );
    const card = await text('#daemons .daemon[data-id="1"]');
    assert.match(card, new RegExp(`pid ${h.daemon().pid}`));
    assert.match(
      card,
      new RegExp(`Browserpid ${h.daemon().browserPid}, \\d+ MiB`),
    );
    assert.match(card, /Restarts0 \(streak 0\)/);
    assert.match(await text('#readiness'), /1 daemon\(s\) ready/);
  });

  it('offers every resource with its options as choices', async () => {
    const views = await page.$$eval('#resource option', (options) =>
      options.map((o) => o.value),
    );
    assert.deepEqual(views, ['heap-hog', 'slow', 'smoke']);
    await page.select('#resource', 'slow');
    const waits = await page.$$eval(
      '#options select[name="wait_ms"] option',
      (o) => o.map((x) => x.value),
    );
    assert.deepEqual(waits, ['0', '3000', '100000']);
    const papers = await page.$$eval(
      '#options select[name="paper_size"] option',
      (o) => o.map((x) => x.value),
    );
    assert.deepEqual(papers, ['a4', 'letter']);
  });

  it('enqueues through the form and links the result to its PDF', async () => {
    await page.select('#resource', 'smoke');
    await page.select('#options select[name="paper_size"]', 'letter');
    await page.click('#enqueue button[type="submit"]');
    await page.waitForFunction(
      () =>
        document
          .getElementById('form-message')
          ?.textContent?.startsWith('Enqueued task'),
      { timeout: 10_000 },
    );
    const taskId = (await text('#form-message')).replace('Enqueued task ', '');
    const link = await page.waitForSelector(
      `#results li[data-task-id="${taskId}"] a`,
      {
        timeout: 30_000,
      },
    );
    const href = await link!.evaluate((a) => (a as HTMLAnchorElement).href);
    assert.match(
      await link!.evaluate((a) => a.textContent ?? ''),
      /^Smoke \(letter\)\.pdf$/,
    );

    const response = await fetch(href);
    assert.equal(response.status, 200);
    const pdf = Buffer.from(await response.arrayBuffer());
    assert.equal(pdf.subarray(0, 4).toString(), '%PDF');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'dashboard-result.pdf');
    fs.writeFileSync(file, pdf);
    const info = execFileSync('pdfinfo', [file], { encoding: 'utf8' });
    assert.match(info, /^Pages:\s+1$/m);
    assert.match(info, /^Page size:.*\(letter\)$/m);
  });

  it('prints what a task says as text, not HTML', async () => {
    const queue = new SqliteQueue(h.config.queue.slice('sqlite:'.length));
    const evil = '<img src=x onerror="window.pwned=1">';
    const task = { ...taskFor('smoke'), resource_view: evil };
    const id = await queue.put(JSON.stringify(task), 'task');
    await queue.close();
    await page.waitForSelector(`#results li[data-task-id="${id}"]`, {
      timeout: 15_000,
    });
    await page.reload({ waitUntil: 'load' });
    await page.waitForSelector(`#results li[data-task-id="${id}"]`);
    assert.equal(await page.$('#results img'), null);
    assert.equal(
      await page.evaluate(
        () => (window as unknown as { pwned?: number }).pwned,
      ),
      undefined,
    );
    assert.match(await text('#results'), /resource_view: got "<img src=x/);
  });

  it('restarts a daemon with its button and saves a screenshot', async () => {
    const old = h.daemon().pid;
    await page.click('#daemons button.restart[data-id="1"]');
    await waitFor(
      () => h.daemon().restarts === 1 && h.daemon().pid !== old,
      5_000,
      'restart',
    );
    await page.waitForFunction(
      () =>
        /Restarts1 /.test(
          document.querySelector('#daemons .daemon[data-id="1"]')
            ?.textContent ?? '',
        ),
      { timeout: 10_000 },
    );
    await h.waitReady();
    await page.waitForFunction(
      () =>
        document
          .querySelector('#daemons .daemon[data-id="1"]')
          ?.textContent?.includes('idle'),
      { timeout: 10_000 },
    );
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({
      path: path.join(ARTIFACTS, 'dashboard.png'),
      fullPage: true,
    });
  });
});
