// The dashboard in a real headless Chromium, on a phone-sized screen:
// it shows the daemons and keeps their cards (and the buttons on them)
// while live updates stream in, enqueues a task through its form, shows
// the result with a link that opens the PDF in the browser, restarts a
// daemon with its button, offers every real resource with the manifest's
// choices, and prints what tasks say as text, never as HTML.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CHROMIUM_ARGS } from '../../src/render/browser';
import puppeteer from 'puppeteer-core';
import type { Browser, HTTPRequest, Page } from 'puppeteer-core';
import { SqliteQueue } from '../../src/queue/sqlite-queue';
import { Catalogue } from '../../src/resources/catalogue';
import { PAPER_PT, pageTexts, pdfFacts, tempPdf } from '../support/pdf';
import {
  PROJECT_ROOT,
  SupervisorHarness,
  taskFor,
  waitFor,
} from '../support/supervisor-harness';

const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts');

/** A phone's screen: nothing may need scrolling sideways on it. */
const PHONE = { width: 390, height: 844, deviceScaleFactor: 1 };

function launchChromium(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

async function openDashboard(browser: Browser, url: string): Promise<Page> {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport(PHONE);
  await page.goto(url, { waitUntil: 'load' });
  return page;
}

/** Fails when the page is wider than the screen (a sideways scroll). */
async function assertNoOverflow(page: Page): Promise<void> {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.ok(
    scrollWidth <= innerWidth,
    `page is ${scrollWidth} px wide on a ${innerWidth} px screen`,
  );
}

/** The enqueue form's selects for the chosen resource, as the page shows them. */
function formSelects(page: Page) {
  return page.$$eval('#options select', (selects) =>
    selects.map((s) => ({
      name: s.name,
      values: [...s.options].map((o) => o.value),
      labels: [...s.options].map((o) => o.textContent ?? ''),
      selected: s.value,
    })),
  );
}

/** Submits the form and returns the task id the page reports. */
async function submitForm(page: Page): Promise<string> {
  await page.click('#enqueue button[type="submit"]');
  await page.waitForFunction(
    () =>
      /^(Enqueued task|Not enqueued)/.test(
        document.getElementById('form-message')?.textContent ?? '',
      ),
    { timeout: 10_000 },
  );
  const message = await page.$eval('#form-message', (n) => n.textContent);
  assert.match(message ?? '', /^Enqueued task /);
  return (message ?? '').replace('Enqueued task ', '');
}

describe('dashboard', function () {
  this.timeout(60_000);
  let h: SupervisorHarness;
  let browser: Browser;
  let page: Page;
  /** Where this test's screenshot goes, saved even when it fails. */
  let screenshot: string | undefined;

  before(async () => {
    h = await SupervisorHarness.start();
    browser = await launchChromium();
    await h.waitReady();
  });
  after(async () => {
    await browser?.close();
    await h?.stop();
  });
  beforeEach(async () => {
    screenshot = undefined;
    page = await openDashboard(browser, h.baseUrl);
  });
  afterEach(async () => {
    if (screenshot) {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: screenshot, fullPage: true });
    }
    await page.browserContext().close();
  });

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
    await assertNoOverflow(page);
  });

  it('keeps the cards and their buttons while status events stream in', async () => {
    // Mark the button and focus it, as an operator about to click would.
    await page.focus('#daemons button.restart[data-id="1"]');
    await page.evaluate(() => {
      const w = window as unknown as { marked?: Element | null };
      w.marked = document.querySelector('#daemons button.restart');
    });
    // Heartbeats come every 250 ms: wait for several status events by
    // watching the uptime count on.
    const uptime = () =>
      page.$eval(
        '#daemons .daemon[data-id="1"] dl',
        (dl) => /Uptime(\d+) s/.exec(dl.textContent ?? '')?.[1] ?? '',
      );
    const first = Number(await uptime());
    await page.waitForFunction(
      (from: number) =>
        Number(
          /Uptime(\d+) s/.exec(
            document.querySelector('#daemons .daemon[data-id="1"] dl')
              ?.textContent ?? '',
          )?.[1],
        ) >=
        from + 2,
      { timeout: 10_000 },
      first,
    );
    const kept = await page.evaluate(() => {
      const w = window as unknown as { marked?: Element | null };
      const now = document.querySelector('#daemons button.restart');
      return {
        same: now === w.marked,
        connected: w.marked?.isConnected ?? false,
        focused: document.activeElement === w.marked,
        cards: document.querySelectorAll('#daemons .daemon').length,
      };
    });
    assert.deepEqual(kept, {
      same: true,
      connected: true,
      focused: true,
      cards: 1,
    });
  });

  it('removes the card of a daemon that is gone and adds a new one', async () => {
    // The live feed of a supervisor restarted with other daemons: daemon 1
    // is gone, daemon 7 is new. The page then reconnects to the real feed.
    const status = (await (await h.get('/api/status')).json()) as {
      daemons: { id: string }[];
    };
    const other = {
      ...status,
      daemons: status.daemons.map((d) => ({ ...d, id: '7' })),
    };
    const fresh = await page.browserContext().newPage();
    await fresh.setViewport(PHONE);
    await fresh.setRequestInterception(true);
    let fed = false;
    fresh.on('request', (request: HTTPRequest) => {
      if (request.url().endsWith('/api/events') && !fed) {
        fed = true;
        void request.respond({
          status: 200,
          contentType: 'text/event-stream',
          body: `event: status\ndata: ${JSON.stringify(other)}\n\n`,
        });
      } else {
        void request.continue();
      }
    });
    await fresh.goto(h.baseUrl, { waitUntil: 'load' });
    await fresh.waitForSelector('#daemons .daemon[data-id="7"]');
    const ids = await fresh.$$eval('#daemons .daemon', (cards) =>
      cards.map((c) => (c as HTMLElement).dataset.id),
    );
    assert.deepEqual(ids, ['7']);
    assert.ok(await fresh.$('#daemons button.restart[data-id="7"]'));
    // Back on the real feed, daemon 1 returns and 7 goes.
    await fresh.waitForSelector('#daemons .daemon[data-id="1"]', {
      timeout: 15_000,
    });
    const after = await fresh.$$eval('#daemons .daemon', (cards) =>
      cards.map((c) => (c as HTMLElement).dataset.id),
    );
    assert.deepEqual(after, ['1']);
  });

  it('offers every resource with its options as labelled choices', async () => {
    const views = await page.$$eval('#resource option', (options) =>
      options.map((o) => o.value),
    );
    assert.deepEqual(views, ['heap-hog', 'slow', 'smoke']);
    await page.select('#resource', 'slow');
    assert.deepEqual(await formSelects(page), [
      {
        name: 'wait_ms',
        values: ['0', '3000', '100000'],
        labels: ['0', '3000', '100000'],
        selected: '0',
      },
      {
        name: 'paper_size',
        values: ['a4', 'letter'],
        labels: ['A4', 'US Letter'],
        selected: 'a4',
      },
    ]);
  });

  it('enqueues through the form, and its link opens the PDF in the browser', async () => {
    await page.select('#resource', 'smoke');
    await page.select('#options select[name="paper_size"]', 'letter');
    await page.type('#enqueue input[name="header_text"]', 'Room 12 – Kōwhai');
    await page.type(
      '#enqueue input[name="url"]',
      'https://example.org/dashboard-form',
    );
    const taskId = await submitForm(page);
    const link = await page.waitForSelector(
      `#results li[data-task-id="${taskId}"] a`,
      { timeout: 30_000 },
    );
    assert.ok(link);
    assert.equal(
      await link.evaluate((a) => a.textContent ?? ''),
      'Smoke (letter).pdf',
    );
    const href = await link.evaluate((a) => (a as HTMLAnchorElement).href);
    assert.ok(href.startsWith(`${h.baseUrl}/files/${taskId}/`), href);
    await assertNoOverflow(page);

    // A click, as an operator would: the PDF opens in a new tab.
    await link.click();
    const target = await browser.waitForTarget((t) => t.url() === href, {
      timeout: 15_000,
    });
    const tab = await target.page();
    assert.ok(tab, 'the link opened a page');
    await tab.waitForFunction(() => document.readyState === 'complete', {
      timeout: 15_000,
    });
    assert.equal(
      await tab.evaluate(() => document.contentType),
      'application/pdf',
    );

    const response = await fetch(href);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/pdf');
    const pdf = Buffer.from(await response.arrayBuffer());
    assert.ok(pdf.length > 1_000, `${pdf.length} bytes`);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'dashboard-result.pdf');
    fs.writeFileSync(file, pdf);
    const facts = pdfFacts(file);
    assert.equal(facts.pages, 1);
    assert.ok(Math.abs(facts.widthPt - PAPER_PT.letter.width) < 1);
    assert.ok(Math.abs(facts.heightPt - PAPER_PT.letter.height) < 1);
    const [page1] = pageTexts(file);
    assert.match(page1 ?? '', /SMOKE/);
    assert.match(page1 ?? '', /Room 12 – Kōwhai/);
    assert.match(page1 ?? '', /https:\/\/example\.org\/dashboard-form/);
  });

  it('takes a header of up to 300 bytes and shows the server refusing more', async () => {
    await page.select('#resource', 'smoke');
    const box = '#enqueue input[name="header_text"]';
    assert.equal(
      await page.$eval(box, (i) => i.getAttribute('maxlength')),
      '300',
    );
    await page.type(box, 'x'.repeat(301));
    assert.equal(
      (await page.$eval(box, (i) => (i as HTMLInputElement).value)).length,
      300,
    );

    // 151 characters, 302 bytes: the box lets them in, the server does not.
    await page.$eval(box, (i) => {
      (i as HTMLInputElement).value = 'é'.repeat(151);
    });
    await page.click('#enqueue button[type="submit"]');
    await page.waitForFunction(
      () =>
        document
          .getElementById('form-message')
          ?.textContent?.startsWith('Not enqueued'),
      { timeout: 10_000 },
    );
    assert.equal(
      await text('#form-message'),
      'Not enqueued: field header_text: got 302 bytes, expected at most 300',
    );

    await page.$eval(box, (i) => {
      (i as HTMLInputElement).value = 'é'.repeat(150);
    });
    const id = await submitForm(page);
    const result = await h.waitForResult(id);
    assert.equal(result.success, true, result.error);
  });

  it('prints what a task says as text, not HTML, and keeps it off the daemon card', async () => {
    assert.equal(h.daemon().lastError, undefined);
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
    // A customer's bad task is not the daemon's error.
    assert.equal(h.daemon().lastError, undefined);
    assert.match(await text('#daemons .daemon[data-id="1"]'), /Last error—/);
    await assertNoOverflow(page);
  });

  it('restarts a daemon with its button and saves a screenshot', async () => {
    screenshot = path.join(ARTIFACTS, 'dashboard.png');
    const old = h.daemon().pid;
    await page.click('#daemons button.restart[data-id="1"]');
    await waitFor(
      () => h.daemon().restarts === 1 && h.daemon().pid !== old,
      10_000,
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
    // Enabled again once the card shows the new daemon.
    await page.waitForFunction(
      () =>
        !(
          document.querySelector(
            '#daemons button.restart[data-id="1"]',
          ) as HTMLButtonElement | null
        )?.disabled,
      { timeout: 10_000 },
    );
    await assertNoOverflow(page);
  });
});

describe('dashboard with the real resources', function () {
  this.timeout(60_000);
  const resourcesDir = path.join(PROJECT_ROOT, 'resource-templates');
  let h: SupervisorHarness;
  let browser: Browser;
  let page: Page;

  before(async () => {
    h = await SupervisorHarness.start({ RENDER_RESOURCES_DIR: resourcesDir });
    browser = await launchChromium();
    page = await openDashboard(browser, h.baseUrl);
    await h.waitReady();
  });
  after(async () => {
    await browser?.close();
    await h?.stop();
  });

  it("offers each resource's options, allowed values, labels and defaults from its manifest", async () => {
    const manifests = Catalogue.load(resourcesDir).list();
    assert.ok(manifests.length >= 10, `${manifests.length} resources`);
    const views = await page.$$eval('#resource option', (options) =>
      options.map((o) => o.value),
    );
    assert.deepEqual(
      views,
      manifests.map((m) => m.view),
    );
    for (const m of manifests) {
      await page.select('#resource', m.view);
      const expected = Object.entries(m.options).map(([name, spec]) => ({
        name,
        values: spec.values.map(String),
        labels: spec.values.map((v) => spec.labels?.[String(v)] ?? String(v)),
        selected: String(spec.default),
      }));
      assert.deepEqual(await formSelects(page), expected, m.view);
    }
    await assertNoOverflow(page);
  });

  it('enqueues a real resource with choices picked by their labels', async () => {
    await page.select('#resource', 'binary-cards');
    // "No" is what the operator reads; false is what the task carries.
    for (const name of ['display_numbers', 'black_back']) {
      await page.$eval(`#options select[name="${name}"]`, (s) => {
        const select = s as HTMLSelectElement;
        const no = [...select.options].find((o) => o.textContent === 'No');
        if (no) select.value = no.value;
      });
    }
    const id = await submitForm(page);
    const result = await h.waitForResult(id, 40_000);
    assert.equal(result.success, true, result.error);
    assert.equal(
      result.filename,
      'Binary Cards (without numbers - without black back - a4).pdf',
    );
    const response = await fetch(String(result.url));
    const pdf = Buffer.from(await response.arrayBuffer());
    assert.equal(pdfFacts(tempPdf(pdf)).pages, result.pages);
  });
});
