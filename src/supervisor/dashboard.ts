import type { Manifest } from '../resources/manifest';
import { MAX_TEXT_BYTES } from '../resources/task';
import type { DaemonInfo } from './daemon-pool';
import type { RecentResult } from './live-feed';

/** What the dashboard page and its live updates show. */
export interface DashboardStatus {
  ready: boolean;
  reason: string;
  daemons: DaemonInfo[];
  /** Tasks waiting or leased; null when the queue cannot tell. */
  queueDepth: number | null;
  queue: string;
  /** The supervisor's clock, epoch ms, for uptimes and countdowns. */
  nowMs: number;
}

/** One allowed value of an option: as sent, and as shown in the list. */
export interface FormChoice {
  /** The value as the task carries it, as text (`true`, `8`, `a4`). */
  value: string;
  /** The manifest's label for it, or the value itself when it has none. */
  label: string;
}

/** A resource as the enqueue form offers it. */
export interface FormResource {
  view: string;
  title: string;
  options: {
    name: string;
    label: string;
    values: FormChoice[];
    /** The default value, as text. */
    default: string;
  }[];
}

/** Longest header text a task may carry, in UTF-8 bytes (the form's box). */
export const HEADER_TEXT_MAX_BYTES = MAX_TEXT_BYTES['header_text'] ?? 300;

/** Longest `url` a task may carry, in UTF-8 bytes (the form's box). */
export const URL_MAX_BYTES = MAX_TEXT_BYTES['url'] ?? 1000;

/** What the page is drawn from. */
export interface DashboardPage {
  status: DashboardStatus;
  results: RecentResult[];
  resources: FormResource[];
  csrfToken: string;
  /** Whether actions need the admin token (the page asks for it). */
  tokenRequired: boolean;
}

/**
 * The enqueue form's view of the catalogue: values as text, each with the
 * manifest's label for it (as the preview shows them).
 */
export function formResources(manifests: Manifest[]): FormResource[] {
  return manifests.map((m) => ({
    view: m.view,
    title: m.title,
    options: Object.entries(m.options).map(([name, spec]) => ({
      name,
      label: spec.label,
      values: spec.values.map((value) => ({
        value: String(value),
        label: spec.labels?.[String(value)] ?? String(value),
      })),
      default: String(spec.default),
    })),
  }));
}

/**
 * The dashboard page. Everything from daemons, tasks or manifests is
 * escaped here; the script (static/dashboard/dashboard.js) takes over with
 * live updates and builds its DOM with textContent only.
 */
export function dashboardHtml(page: DashboardPage): string {
  const { status } = page;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${escapeHtml(page.csrfToken)}">
<title>Render farm</title>
<link rel="stylesheet" href="/dashboard/dashboard.css">
</head>
<body data-token-required="${page.tokenRequired}">
<header>
  <h1>Render farm</h1>
  <p id="readiness" class="${status.ready ? 'ok' : 'bad'}">${escapeHtml(status.reason)}</p>
  <p>Queue <span id="queue">${escapeHtml(status.queue)}</span>:
    <strong id="queue-depth">${status.queueDepth ?? 'unknown'}</strong> task(s) waiting or in hand</p>
</header>
<main>
<section>
  <h2>Daemons</h2>
  <div id="daemons">${status.daemons.map((d) => daemonCard(d, status.nowMs)).join('\n')}</div>
</section>
<section>
  <h2>Enqueue a task</h2>
  ${enqueueForm(page.resources)}
  <p id="form-message" role="status"></p>
</section>
<section>
  <h2>Recent results</h2>
  <p class="note">Tasks enqueued here are stored and linked. Inline results
    of other tasks carry their PDF in the result message, for their consumer.</p>
  <ol id="results">${page.results.map(resultItem).join('\n')}</ol>
</section>
${page.tokenRequired ? tokenBox() : ''}
</main>
<script type="application/json" id="initial">${jsonForScript({
    status,
    results: page.results,
    resources: page.resources,
  })}</script>
<script src="/dashboard/dashboard.js" defer></script>
</body>
</html>
`;
}

function daemonCard(d: DaemonInfo, nowMs: number): string {
  const task = d.tasks[0];
  const rows: [string, string][] = [
    [
      'State',
      d.state +
        (d.nextStartMs
          ? ` (restart in ${secondsUntil(d.nextStartMs, nowMs)})`
          : ''),
    ],
    [
      'Task',
      task
        ? `${task.taskId} (${task.view || '?'}, ${secondsSince(task.sinceMs, nowMs)})`
        : '—',
    ],
    ['Uptime', d.pid ? secondsSince(d.startedAtMs, nowMs) : '—'],
    ['Renders', `${d.rendersDone} done, ${d.rendersFailed} failed`],
    [
      'Browser',
      d.browserPid
        ? `pid ${d.browserPid}, ${mib(d.browserMemoryBytes)}`
        : 'none',
    ],
    ['Restarts', `${d.restarts} (streak ${d.crashStreak})`],
    ['Last error', d.lastError ?? '—'],
  ];
  return `<article class="daemon ${escapeHtml(d.state)}" data-id="${escapeHtml(d.id)}">
  <h3>Daemon ${escapeHtml(d.id)} <small>pid ${d.pid}</small></h3>
  <dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>
  <button type="button" class="restart" data-id="${escapeHtml(d.id)}">Restart</button>
</article>`;
}

function enqueueForm(resources: FormResource[]): string {
  const choices = resources
    .map(
      (r) =>
        `<option value="${escapeHtml(r.view)}">${escapeHtml(r.title)} (${escapeHtml(r.view)})</option>`,
    )
    .join('');
  return `<form id="enqueue">
  <label>Resource <select name="resource_view" id="resource">${choices}</select></label>
  <div id="options"></div>
  <label>Copies <input name="copies" type="number" min="1" value="1" required></label>
  <label>Header text <input name="header_text" type="text" maxlength="${HEADER_TEXT_MAX_BYTES}">
    <small class="note">at most ${HEADER_TEXT_MAX_BYTES} bytes: an accented letter takes 2</small></label>
  <label>Page footer link <input name="url" type="url" maxlength="${URL_MAX_BYTES}" placeholder="this dashboard's address">
    <small class="note">printed at the foot of every page; empty: this dashboard's address</small></label>
  <button type="submit">Enqueue</button>
</form>`;
}

function resultItem(r: RecentResult): string {
  const what = r.url
    ? `<a href="${escapeHtml(r.url)}" target="_blank" rel="noopener">${escapeHtml(r.filename ?? r.url)}</a>`
    : escapeHtml(r.filename ?? '');
  const detail = r.error
    ? ` — ${escapeHtml(r.error)}`
    : r.outcome === 'success' && !r.url
      ? ' (inline)'
      : '';
  return `<li class="${escapeHtml(r.outcome)}"><strong>${escapeHtml(r.outcome)}</strong> ${escapeHtml(r.view)} ${what}${detail}</li>`;
}

function tokenBox(): string {
  return `<section>
  <h2>Admin token</h2>
  <label>Token for actions <input id="token" type="password" autocomplete="off"></label>
</section>`;
}

/** Text safe inside HTML elements and quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON safe inside a script element: no `</script>` or `<!--` can close it. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028|\u2029/g, ' ');
}

function secondsSince(ms: number, nowMs: number): string {
  return `${Math.max(0, Math.round((nowMs - ms) / 1000))} s`;
}

function secondsUntil(ms: number, nowMs: number): string {
  return `${Math.max(0, Math.round((ms - nowMs) / 1000))} s`;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
