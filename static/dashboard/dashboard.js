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

  function daemonCard(d, nowMs) {
    const task = d.tasks[0];
    let state = d.state;
    if (d.nextStartMs)
      state += ' (restart in ' + seconds(d.nextStartMs - nowMs) + ')';
    if (d.nextBrowserLaunchMs) {
      state +=
        ' (browser launch in ' + seconds(d.nextBrowserLaunchMs - nowMs) + ')';
    }
    const rows = [
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
    const list = el('dl');
    for (const [key, value] of rows) {
      list.append(
        el('dt', { textContent: key }),
        el('dd', { textContent: value }),
      );
    }
    const button = el('button', {
      type: 'button',
      className: 'restart',
      textContent: 'Restart',
    });
    button.dataset.id = d.id;
    const card = el('article', { className: 'daemon ' + d.state }, [
      el('h3', { textContent: 'Daemon ' + d.id + ' ' }, [
        el('small', { textContent: 'pid ' + d.pid }),
      ]),
      list,
      button,
    ]);
    card.dataset.id = d.id;
    return card;
  }

  function showStatus(status) {
    const readiness = document.getElementById('readiness');
    readiness.textContent = status.reason;
    readiness.className = status.ready ? 'ok' : 'bad';
    document.getElementById('queue-depth').textContent =
      status.queueDepth === null ? 'unknown' : String(status.queueDepth);
    daemonsBox.replaceChildren(
      ...status.daemons.map((d) => daemonCard(d, status.nowMs)),
    );
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
      for (const value of option.values) {
        select.append(
          el('option', {
            value: value,
            textContent: value,
            selected: value === option.default,
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
      url: location.origin + '/',
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
