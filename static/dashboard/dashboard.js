// The render farm dashboard: live daemon cards and results from
// /api/events, the enqueue form and the restart buttons. Everything from
// the server is put in the page with textContent, never as HTML.
'use strict';

(function () {
  const initial = JSON.parse(document.getElementById('initial').textContent);
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const resources = initial.resources;
  const daemonsBox = document.getElementById('daemons');
  const resultsList = document.getElementById('results');
  const form = document.getElementById('enqueue');
  const message = document.getElementById('form-message');
  const MAX_RESULTS = 50;

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) node.append(child);
    return node;
  }

  function seconds(ms) {
    return Math.max(0, Math.round(ms / 1000)) + ' s';
  }

  /** The rows of a daemon's card: [label, text]. */
  function daemonRows(d, nowMs) {
    const task = d.tasks[0];
    let state = d.state;
    if (d.nextStartMs)
      state += ' (restart in ' + seconds(d.nextStartMs - nowMs) + ')';
    if (d.nextBrowserLaunchMs) {
      state +=
        ' (browser launch in ' + seconds(d.nextBrowserLaunchMs - nowMs) + ')';
    }
    return [
      ['State', state],
      [
        'Task',
        task
          ? task.taskId +
            ' (' +
            (task.view || '?') +
            ', ' +
            seconds(nowMs - task.sinceMs) +
            ')'
          : '—',
      ],
      ['Uptime', d.pid ? seconds(nowMs - d.startedAtMs) : '—'],
      ['Renders', d.rendersDone + ' done, ' + d.rendersFailed + ' failed'],
      [
        'Browser',
        d.browserPid
          ? 'pid ' +
            d.browserPid +
            ', ' +
            (d.browserMemoryBytes / 1048576).toFixed(0) +
            ' MiB'
          : 'none',
      ],
      ['Restarts', d.restarts + ' (streak ' + d.crashStreak + ')'],
      ['Last error', d.lastError || '—'],
    ];
  }

  /** An empty card for a daemon, in the page's structure. */
  function newCard(id, rowCount) {
    const list = el('dl');
    for (let i = 0; i < rowCount; i++) list.append(el('dt'), el('dd'));
    const button = el('button', {
      type: 'button',
      className: 'restart',
      textContent: 'Restart',
    });
    button.dataset.id = id;
    const card = el('article', { className: 'daemon' }, [
      el('h3', {}, ['Daemon ' + id + ' ', el('small')]),
      list,
      button,
    ]);
    card.dataset.id = id;
    return card;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /**
   * Updates a card in place: only texts and classes change, so a button
   * the operator is about to click (or has focused) stays the same element.
   */
  function updateCard(card, d, nowMs) {
    const rows = daemonRows(d, nowMs);
    const className = 'daemon ' + d.state;
    if (card.className !== className) card.className = className;
    setText(card.querySelector('h3 small'), 'pid ' + d.pid);
    const terms = card.querySelectorAll('dl > dt');
    const values = card.querySelectorAll('dl > dd');
    rows.forEach(([key, value], i) => {
      setText(terms[i], key);
      setText(values[i], value);
    });
    const button = card.querySelector('button.restart');
    // A restart asked for from here is over once another process runs.
    if (
      button.disabled &&
      button.dataset.restartingPid &&
      d.pid &&
      String(d.pid) !== button.dataset.restartingPid
    ) {
      button.disabled = false;
      delete button.dataset.restartingPid;
    }
  }

  /** Whether a card (drawn by the server or by us) has the rows we fill. */
  function fits(card, rowCount) {
    return (
      card.querySelector('h3 small') &&
      card.querySelector('button.restart') &&
      card.querySelectorAll('dl > dt').length === rowCount &&
      card.querySelectorAll('dl > dd').length === rowCount
    );
  }

  function showStatus(status) {
    const readiness = document.getElementById('readiness');
    setText(readiness, status.reason);
    readiness.className = status.ready ? 'ok' : 'bad';
    setText(
      document.getElementById('queue-depth'),
      status.queueDepth === null ? 'unknown' : String(status.queueDepth),
    );
    const cards = new Map();
    for (const card of daemonsBox.querySelectorAll(':scope > .daemon'))
      cards.set(card.dataset.id, card);
    const wanted = new Set(status.daemons.map((d) => d.id));
    for (const [id, card] of cards) {
      if (!wanted.has(id)) {
        card.remove();
        cards.delete(id);
      }
    }
    status.daemons.forEach((d, index) => {
      const rowCount = daemonRows(d, status.nowMs).length;
      let card = cards.get(d.id);
      if (card && !fits(card, rowCount)) {
        card.remove();
        card = undefined;
      }
      if (!card) card = newCard(d.id, rowCount);
      updateCard(card, d, status.nowMs);
      // Moved only when out of place: moving would drop the focus too.
      const here = daemonsBox.children[index];
      if (here !== card) daemonsBox.insertBefore(card, here || null);
    });
  }

  function resultItem(r) {
    const item = el('li', { className: r.outcome }, [
      el('strong', { textContent: r.outcome }),
      ' ' + r.view + ' ',
    ]);
    if (r.url) {
      item.append(
        el('a', {
          href: r.url,
          target: '_blank',
          rel: 'noopener',
          textContent: r.filename || r.url,
        }),
      );
    } else if (r.filename) {
      item.append(r.filename);
    }
    if (r.error) item.append(' — ' + r.error);
    else if (r.outcome === 'success' && !r.url) item.append(' (inline)');
    item.dataset.taskId = r.taskId;
    return item;
  }

  function addResult(r) {
    resultsList.prepend(resultItem(r));
    while (resultsList.children.length > MAX_RESULTS)
      resultsList.lastElementChild.remove();
  }

  function showOptions() {
    const view = form.elements.resource_view.value;
    const resource = resources.find((r) => r.view === view);
    const box = document.getElementById('options');
    box.replaceChildren();
    if (!resource) return;
    for (const option of resource.options) {
      const select = el('select', { name: option.name });
      for (const choice of option.values) {
        select.append(
          el('option', {
            value: choice.value,
            textContent: choice.label,
            selected: choice.value === option.default,
          }),
        );
      }
      box.append(el('label', { textContent: option.label + ' ' }, [select]));
    }
  }

  async function post(url, body) {
    const headers = { 'x-csrf-token': csrfToken };
    const tokenBox = document.getElementById('token');
    if (tokenBox && tokenBox.value)
      headers.authorization = 'Bearer ' + tokenBox.value;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(url, {
      method: 'POST',
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok)
      throw new Error(answer.error || 'HTTP ' + response.status);
    return answer;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const view = form.elements.resource_view.value;
    const resource = resources.find((r) => r.view === view);
    const task = {
      kind: 'task#render',
      resource_slug: view,
      resource_name: resource ? resource.title : view,
      resource_view: view,
      // The link printed at the foot of every page: the operator's, or
      // this dashboard's own address.
      url: form.elements.url.value.trim() || location.origin + '/',
      header_text: form.elements.header_text.value,
      copies: Number(form.elements.copies.value),
      // Stored and linked even when small, so that it opens from here.
      delivery: 'link',
    };
    for (const select of document.querySelectorAll('#options select'))
      task[select.name] = select.value;
    message.textContent = 'Enqueuing…';
    try {
      const answer = await post('/api/tasks', task);
      message.textContent = 'Enqueued task ' + answer.task_id;
      message.className = 'ok';
    } catch (error) {
      message.textContent = 'Not enqueued: ' + error.message;
      message.className = 'bad';
    }
  });

  daemonsBox.addEventListener('click', async (event) => {
    const button = event.target.closest('button.restart');
    if (!button) return;
    button.disabled = true;
    // Enabled again when the card shows another process (or after 15 s).
    const pid = button.closest('.daemon').querySelector('h3 small');
    button.dataset.restartingPid = pid.textContent.replace('pid ', '');
    setTimeout(() => {
      button.disabled = false;
    }, 15000);
    try {
      await post(
        '/api/daemons/' + encodeURIComponent(button.dataset.id) + '/restart',
      );
      message.textContent = 'Daemon ' + button.dataset.id + ' is restarting';
      message.className = 'ok';
    } catch (error) {
      message.textContent = 'Restart refused: ' + error.message;
      message.className = 'bad';
      button.disabled = false;
    }
  });

  form.elements.resource_view.addEventListener('change', showOptions);
  showOptions();
  showStatus(initial.status);
  resultsList.replaceChildren(...initial.results.map(resultItem));

  const events = new EventSource('/api/events');
  events.addEventListener('status', (event) =>
    showStatus(JSON.parse(event.data)),
  );
  events.addEventListener('result', (event) =>
    addResult(JSON.parse(event.data)),
  );
  events.addEventListener('error', () => {
    document.getElementById('readiness').textContent =
      'connection to the supervisor lost; retrying…';
    document.getElementById('readiness').className = 'bad';
  });
})();
