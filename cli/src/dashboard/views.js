// The dashboard's views. Each view is `async (main, route) => stop`: it fills `main` and
// answers a function that stops what it keeps doing (polling) when the user leaves it.

import {api, ApiError} from './api.js';
import {drawDag} from './dag.js';
import {badge, changed, duration, h, jsonBlock, keepOpen, link, notice, path, replace, shortId, timeEl} from './dom.js';

const RUN_STATUSES = ['running', 'waiting', 'completed', 'failed', 'cancelled'];
const POLL_MS = 2000;
const PAGE = 50;

/// Calls `tick` now and every POLL_MS while `keepGoing()`; answers the stop function.
function poll(tick, keepGoing = () => true) {
  let timer = null;
  let stopped = false;
  const loop = async () => {
    if (stopped) return;
    try {
      await tick();
    } catch (e) {
      console.warn('refresh failed', e);
    }
    if (!stopped && keepGoing()) timer = setTimeout(loop, POLL_MS);
  };
  loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/// An error shown in place of a view.
function failed(main, e) {
  const message = e instanceof ApiError && e.status === 404 ? `Not found: ${e.message}` : `Could not load: ${e.message}`;
  replace(main, notice(message, 'error'));
}

function userLink(user) {
  return user ? link(path('users', user), user) : h('span', {class: 'muted'}, '—');
}

/// A table of run summaries.
function runsTable(runs, {showFunction = true} = {}) {
  if (!runs.length) return notice('No runs.');
  return h('table', {class: 'runs'},
    h('thead', {}, h('tr', {},
      h('th', {scope: 'col'}, 'Run'),
      showFunction ? h('th', {scope: 'col'}, 'Function') : null,
      h('th', {scope: 'col'}, 'Status'),
      h('th', {scope: 'col'}, 'Version'),
      h('th', {scope: 'col'}, 'User'),
      h('th', {scope: 'col'}, 'Started'),
      h('th', {scope: 'col'}, 'Took'))),
    h('tbody', {}, runs.map((r) => h('tr', {'data-run': r.id, 'data-status': r.status},
      h('td', {}, link(path('runs', r.id), h('code', {}, shortId(r.id)))),
      showFunction ? h('td', {}, link(path('functions', r.function_id), r.function_id)) : null,
      h('td', {}, badge(r.status)),
      h('td', {}, r.fn_version ? 'v' + r.fn_version : '—'),
      h('td', {}, userLink(r.user)),
      h('td', {}, timeEl(r.created_at)),
      h('td', {}, r.ended_at ? duration(r.ended_at - r.created_at) : h('span', {class: 'muted'}, 'still going'))))));
}

// ---- Runs ---------------------------------------------------------------------------------

/// How far back the runs list's *Since* choice reaches.
const SINCE = {'': null, '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000};

/// `/runs?function=&status=&user=&since=&before=`: runs, newest first, filtered, a page at a
/// time (`before`: the cursor of the previous page's last run); the first page refreshes
/// while live. Counts per status head the list.
export async function runsView(main, route) {
  const q = route.query;
  const before = q.get('before') || '';
  const functions = await api('/v1/functions').catch(() => []);
  const chosenFunction = q.get('function') || '';
  const ids = functions.map((f) => f.id);
  // A function in the address that is not live (any more) stays chosen.
  if (chosenFunction && !ids.includes(chosenFunction)) ids.push(chosenFunction);
  const fnSelect = h('select', {id: 'f-function', name: 'function'},
    h('option', {value: ''}, 'any'),
    ids.map((id) => h('option', {value: id, selected: id === chosenFunction}, id)));
  const statusSelect = h('select', {id: 'f-status', name: 'status'},
    h('option', {value: ''}, 'any'),
    RUN_STATUSES.map((s) => h('option', {value: s, selected: s === q.get('status')}, s)));
  const sinceSelect = h('select', {id: 'f-since', name: 'since'},
    Object.keys(SINCE).map((k) => h('option', {value: k, selected: k === (q.get('since') || '')}, k ? `last ${k}` : 'any time')));
  const userInput = h('input', {id: 'f-user', name: 'user', value: q.get('user') || '', placeholder: 'user id', autocomplete: 'off'});
  const live = h('input', {id: 'f-live', type: 'checkbox', checked: !before, disabled: !!before});
  const chosen = () => ({function: fnSelect.value, status: statusSelect.value, user: userInput.value.trim(), since: sinceSelect.value});
  const go = (extra) => window.dispatchEvent(new CustomEvent('weir:navigate', {detail: path('runs', null, {...chosen(), ...extra})}));
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter runs', onsubmit: (e) => {
    e.preventDefault();
    go({});
  }},
  h('label', {for: 'f-function'}, 'Function'), fnSelect,
  h('label', {for: 'f-status'}, 'Status'), statusSelect,
  h('label', {for: 'f-user'}, 'User'), userInput,
  h('label', {for: 'f-since'}, 'Since'), sinceSelect,
  h('button', {type: 'submit'}, 'Filter'),
  h('label', {class: 'live', for: 'f-live'}, live, ' live'));
  for (const select of [fnSelect, statusSelect, sinceSelect]) select.addEventListener('change', () => go({}));
  const counts = h('p', {id: 'run-counts', class: 'counts', 'aria-live': 'polite'});
  const list = h('div', {id: 'runs-list'});
  const pager = h('nav', {class: 'pager', 'aria-label': 'Pages of runs'});
  replace(main, h('h1', {}, 'Runs'), form, counts, list, pager);
  const seen = {};
  const seenCounts = {};
  let asked = 0;
  async function refresh() {
    const ask = ++asked;
    const filter = chosen();
    const from = SINCE[filter.since] ? Date.now() - SINCE[filter.since] : undefined;
    const query = {function: filter.function, user: filter.user, from};
    const [page, tally] = await Promise.all([
      api(path('v1/runs', null, {...query, status: filter.status, before, limit: PAGE}), {withHeaders: true}),
      api(path('v1/runs/counts', null, query)),
    ]);
    // An answer to an older question (the filters changed meanwhile) is dropped.
    if (ask !== asked) return;
    if (changed(seenCounts, tally)) {
      const chip = (status, label, n) => link(path('runs', null, {...filter, status}),
        h('span', {class: 'count s-' + status}, `${label} `, h('strong', {}, String(n))));
      replace(counts,
        // Running and waiting runs are counted together: the chip lists them all.
        link(path('runs', null, {...filter, status: ''}),
          h('span', {class: 'count s-running'}, 'running or waiting ', h('strong', {}, String(tally.running)))), ' ',
        chip('completed', 'completed', tally.completed), ' ',
        chip('failed', 'failed', tally.failed), ' ',
        chip('cancelled', 'cancelled', tally.cancelled),
        tally.capped ? h('span', {class: 'muted'}, ' (at least: counting stopped at 100,000)') : null);
    }
    const next = page.headers.get('x-next-before');
    if (changed(seen, [page.data, next])) {
      replace(list, runsTable(page.data));
      replace(pager,
        before ? link(path('runs', null, filter), '← Newest runs') : null,
        next ? link(path('runs', null, {...filter, before: next}), 'Older runs →') : null);
    }
  }
  return poll(() => (live.checked || seen.last === undefined ? refresh() : null));
}

// ---- One run ------------------------------------------------------------------------------

/// When each step started (its first attempt) and ended, from the run's timeline.
function stepTimes(timeline) {
  const times = {};
  for (const entry of timeline || []) {
    if (!entry.step) continue;
    const t = (times[entry.step] = times[entry.step] || {});
    if (entry.kind === 'step.started' && t.start === undefined) t.start = entry.at;
    if (['step.completed', 'step.failed', 'step.skipped', 'step.cancelled'].includes(entry.kind)) t.end = entry.at;
  }
  return times;
}

/// What the step was given, rebuilt from the run: the event and the outputs of the steps
/// that had completed before its first attempt started (`async` and `ctx` are not kept).
function stepInput(run, stepId, times) {
  const started = times[stepId] && times[stepId].start;
  if (started === undefined) return undefined;
  const steps = {};
  for (const [id, s] of Object.entries(run.steps || {})) {
    const t = times[id];
    if (id !== stepId && s.status === 'completed' && t && t.end !== undefined && t.end <= started) steps[id] = s.output;
  }
  return {event: run.event, steps};
}

/// The run's timeline as a time axis: one bar per step, from its first attempt to its end.
function timeAxis(run, times) {
  const start = run.created_at;
  // The last thing that happened (not this browser's clock, which may differ the server's).
  const last = Math.max(start, ...(run.timeline || []).map((e) => e.at));
  const end = run.ended_at || last;
  const span = Math.max(1, end - start);
  const ids = Object.keys(run.steps || {}).filter((id) => times[id] && times[id].start !== undefined)
    .sort((a, b) => times[a].start - times[b].start);
  const rowH = 22;
  const labelW = 150;
  const barW = 560;
  const height = 26 + ids.length * rowH;
  const x = (at) => labelW + ((at - start) / span) * barW;
  const svg = h('svg:svg', {class: 'axis', viewBox: `0 0 ${labelW + barW + 10} ${height}`, role: 'img',
    'aria-label': `When each step ran, over ${duration(span)}`});
  for (let i = 0; i <= 4; i++) {
    const at = start + (span * i) / 4;
    svg.append(h('svg:line', {x1: x(at), x2: x(at), y1: 14, y2: height, class: 'tick'}),
      h('svg:text', {x: x(at), y: 10, class: 'tick-label', 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle'},
        '+' + duration((span * i) / 4)));
  }
  ids.forEach((id, i) => {
    const t = times[id];
    const y = 20 + i * rowH;
    const stepEnd = t.end !== undefined ? t.end : end;
    svg.append(h('svg:text', {x: 0, y: y + 13, class: 'axis-label'}, id.length > 20 ? id.slice(0, 19) + '…' : id),
      h('svg:rect', {x: x(t.start), y, width: Math.max(2, x(stepEnd) - x(t.start)), height: rowH - 6, rx: 3,
        class: 'bar s-' + run.steps[id].status, 'data-step': id},
      h('svg:title', {}, `${id}: ${duration(stepEnd - t.start)}`)));
  });
  return svg;
}

/// The panel of one step: status, attempts, input, output, log and error.
function stepPanel(run, stepId, times) {
  const s = run.steps[stepId];
  if (!s) return notice('Choose a step in the graph to see its input, output and log.');
  const t = times[stepId] || {};
  const took = t.start !== undefined && t.end !== undefined ? duration(t.end - t.start) : '—';
  return h('section', {class: 'step-panel', 'aria-labelledby': 'step-title', 'data-step': stepId},
    h('h3', {id: 'step-title'}, 'Step ', h('code', {}, stepId), ' ', badge(s.status)),
    h('dl', {class: 'facts'},
      h('dt', {}, 'Attempts'), h('dd', {}, String(s.attempts)),
      h('dt', {}, 'Took'), h('dd', {}, took)),
    s.error ? [h('h4', {}, 'Error'), h('pre', {class: 'error-text', 'data-part': 'error'}, s.error)] : null,
    h('h4', {}, 'Output'), h('pre', {class: 'json', 'data-part': 'output', tabindex: 0},
      s.output === null || s.output === undefined ? '—' : JSON.stringify(s.output, null, 2)),
    h('h4', {}, 'Log (stderr)'), h('pre', {class: 'log', 'data-part': 'log', tabindex: 0}, s.log || '—'),
    h('details', {'data-keep': 'input'}, h('summary', {}, 'Input (rebuilt: the event and the outputs before it)'),
      jsonBlock(stepInput(run, stepId, times), 'Step input')));
}

/// The shell command that runs this run's event through the function again, locally.
function runCommand(run, dir) {
  const event = {name: run.event.name, data: run.event.data, user: run.event.user};
  const quote = (text) => "'" + String(text).replaceAll("'", "'\\''") + "'";
  return `printf '%s' ${quote(JSON.stringify(event))} | weir run ${quote(dir || 'functions/' + run.function_id)} --event -`;
}

/// `/runs/{id}`: the run's DAG with each step's state, a step's details, its timeline and event.
export async function runView(main, route) {
  const id = route.id;
  let selected = null;
  let run = null;
  let dir = null;
  const header = h('div', {});
  const dagBox = h('div', {class: 'dag-box'});
  const panel = h('div', {id: 'step-panel'});
  const axisBox = h('div', {class: 'axis-box'});
  const historyBox = h('div', {});
  const eventBox = h('div', {});
  replace(main,
    header,
    h('section', {'aria-labelledby': 'dag-title'}, h('h2', {id: 'dag-title'}, 'Steps'),
      h('div', {class: 'run-grid'}, dagBox, panel)),
    h('section', {'aria-labelledby': 'axis-title'}, h('h2', {id: 'axis-title'}, 'Timeline'), axisBox, historyBox),
    h('section', {'aria-labelledby': 'event-title'}, h('h2', {id: 'event-title'}, 'Triggering event'), eventBox));
  const select = (stepId) => {
    selected = stepId;
    keepOpen(main, render);
    const node = dagBox.querySelector(`[data-step="${CSS.escape(stepId)}"]`);
    if (node) node.focus();
  };
  function render() {
    const times = stepTimes(run.timeline);
    const states = {};
    for (const [sid, s] of Object.entries(run.steps || {})) {
      const t = times[sid] || {};
      states[sid] = {...s, duration: t.start !== undefined && t.end !== undefined ? duration(t.end - t.start) : undefined};
    }
    const graph = run.graph || {steps: Object.keys(run.steps || {}).map((sid) => ({id: sid, name: sid, runtime: ''})), edges: []};
    const cancellable = run.status === 'running' || run.status === 'waiting';
    const command = runCommand(run, dir);
    replace(header,
      h('h1', {}, 'Run ', h('code', {}, run.run_id), ' ', badge(run.status)),
      h('dl', {class: 'facts'},
        h('dt', {}, 'Function'), h('dd', {}, link(path('functions', run.function_id), run.function_id),
          run.fn_version ? ` v${run.fn_version}` : ''),
        h('dt', {}, 'Event'), h('dd', {}, run.event ? link(path('events', run.event.id), run.event.name) : run.event_id),
        h('dt', {}, 'User'), h('dd', {}, userLink(run.event && userKey(run.event))),
        h('dt', {}, 'Started'), h('dd', {}, timeEl(run.created_at)),
        h('dt', {}, 'Took'), h('dd', {}, run.ended_at ? duration(run.ended_at - run.created_at) : 'still going')),
      run.error ? notice(run.error, 'error') : null,
      h('div', {class: 'actions'},
        cancellable ? h('button', {type: 'button', id: 'cancel', onclick: cancel}, 'Cancel run') : null,
        h('button', {type: 'button', id: 'copy-run', onclick: () => copy(command)}, 'Copy as weir run'),
        h('span', {id: 'copied', class: 'muted', 'aria-live': 'polite'})),
      h('details', {'data-keep': 'command'}, h('summary', {}, 'The weir run command'), h('pre', {class: 'log', id: 'run-command'}, command)));
    replace(dagBox, drawDag(graph, states, select, selected));
    replace(panel, selected ? stepPanel(run, selected, times) : notice('Choose a step in the graph to see its input, output and log.'));
    replace(axisBox, timeAxis(run, times));
    replace(historyBox, h('details', {'data-keep': 'history'}, h('summary', {}, `Every entry (${(run.timeline || []).length})`),
      h('table', {class: 'history'}, h('thead', {}, h('tr', {},
        h('th', {scope: 'col'}, 'At'), h('th', {scope: 'col'}, 'What'), h('th', {scope: 'col'}, 'Step'), h('th', {scope: 'col'}, 'Detail'))),
      h('tbody', {}, (run.timeline || []).map((e) => h('tr', {},
        h('td', {}, '+' + duration(e.at - run.created_at)), h('td', {}, e.kind),
        h('td', {}, e.step || ''), h('td', {}, [e.attempt ? `attempt ${e.attempt} ` : '', e.detail || ''])))))));
    replace(eventBox, jsonBlock(run.event, 'The triggering event'));
  }
  async function cancel() {
    try {
      run = await api(path('v1/runs', id) + '/cancel', {method: 'POST'});
      keepOpen(main, render);
    } catch (e) {
      header.append(notice(`Cancel failed: ${e.message}`, 'error'));
    }
  }
  async function copy(command) {
    const said = header.querySelector('#copied');
    try {
      await navigator.clipboard.writeText(command);
      said.textContent = 'Copied.';
    } catch {
      said.textContent = 'Copy it from "The weir run command" below.';
    }
  }
  try {
    run = await api(path('v1/runs', id));
  } catch (e) {
    failed(main, e);
    return () => {};
  }
  api(path('v1/functions', run.function_id)).then((f) => {
    // The live version's directory: the command runs the function as it is now.
    dir = f.dir;
    keepOpen(main, render);
  }).catch(() => {});
  selected = route.query.get('step');
  const seen = {};
  changed(seen, run);
  keepOpen(main, render);
  const final = () => ['completed', 'failed', 'cancelled'].includes(run.status);
  return poll(async () => {
    if (final()) return;
    const fresh = await api(path('v1/runs', id));
    if (!changed(seen, fresh)) return;
    run = fresh;
    const focused = document.activeElement && document.activeElement.closest('[data-step]');
    keepOpen(main, render);
    // The step that had the keyboard keeps it.
    if (focused) {
      const again = dagBox.querySelector(`[data-step="${CSS.escape(focused.dataset.step)}"]`);
      if (again) again.focus();
    }
  }, () => !final());
}

/// The user key of an event: `user.id`, else `external_id`, else `email` (as the engine's).
export function userKey(event) {
  const user = event.user || {};
  for (const k of ['id', 'external_id', 'email']) {
    if (typeof user[k] === 'string') return user[k];
    if (typeof user[k] === 'number') return String(user[k]);
  }
  return null;
}

// ---- Events -------------------------------------------------------------------------------

/// The form that sends a test event, offering the names the functions are triggered by.
function sendForm(functions, onSent) {
  const names = [...new Set(functions.flatMap((f) => f.triggers.filter((t) => t.event).map((t) => t.event)))];
  const nameInput = h('input', {id: 's-name', name: 'name', list: 's-names', required: true, autocomplete: 'off',
    value: names[0] || ''});
  const data = h('textarea', {id: 's-data', name: 'data', rows: 6, spellcheck: 'false'}, '{\n  \n}');
  const user = h('textarea', {id: 's-user', name: 'user', rows: 2, spellcheck: 'false'}, '{"id": "test-user"}');
  const key = h('input', {id: 's-key', name: 'key', autocomplete: 'off',
    value: sessionStorage.getItem('weir.eventKey') || 'dashboard'});
  const said = h('p', {id: 's-result', 'aria-live': 'polite'});
  const send = async (e) => {
    e.preventDefault();
    let event;
    try {
      event = {name: nameInput.value.trim(), data: JSON.parse(data.value || '{}'), user: JSON.parse(user.value || '{}')};
    } catch (err) {
      replace(said, notice(`Not JSON: ${err.message}`, 'error'));
      return;
    }
    sessionStorage.setItem('weir.eventKey', key.value);
    try {
      const answer = await api(path('e', key.value.trim() || 'dashboard'), {method: 'POST', body: event});
      replace(said, 'Sent: ', answer.ids.map((eid) => link(path('events', eid), h('code', {}, eid))));
      onSent();
    } catch (err) {
      const lines = (err.body && err.body.violations || []).map((v) => `${v.pointer}: ${v.message}`);
      replace(said, notice(`Refused: ${err.message}`, 'error'), lines.length ? h('ul', {}, lines.map((l) => h('li', {}, l))) : null);
    }
  };
  return h('form', {class: 'send', 'aria-labelledby': 'send-title', onsubmit: send},
    h('h2', {id: 'send-title'}, 'Send a test event'),
    h('datalist', {id: 's-names'}, names.map((n) => h('option', {value: n}))),
    h('label', {for: 's-name'}, 'Name'), nameInput,
    h('label', {for: 's-data'}, 'Data (JSON)'), data,
    h('label', {for: 's-user'}, 'User (JSON)'), user,
    h('label', {for: 's-key'}, 'Event key'), key,
    h('button', {type: 'submit', id: 's-send'}, 'Send'), said);
}

/// `/events?name=`: stored events, newest first, and the send form.
export async function eventsView(main, route) {
  const functions = await api('/v1/functions').catch(() => []);
  const nameFilter = h('input', {id: 'e-name', value: route.query.get('name') || '', placeholder: 'event name', autocomplete: 'off'});
  const userFilter = h('input', {id: 'e-user', value: route.query.get('user') || '', placeholder: 'user id', autocomplete: 'off'});
  const list = h('div', {id: 'events-list'});
  const seen = {};
  const apply = (e) => {
    e.preventDefault();
    history.replaceState(null, '', path('events', null, {name: nameFilter.value.trim(), user: userFilter.value.trim()}));
    refresh();
  };
  replace(main, h('h1', {}, 'Events'),
    h('div', {class: 'columns'},
      h('div', {},
        h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter events', onsubmit: apply},
          h('label', {for: 'e-name'}, 'Name'), nameFilter,
          h('label', {for: 'e-user'}, 'User'), userFilter,
          h('button', {type: 'submit'}, 'Filter')),
        list),
      sendForm(functions, () => refresh())));
  async function refresh() {
    const events = await api(path('v1/events', null, {name: nameFilter.value.trim(), user: userFilter.value.trim(), limit: PAGE}));
    if (!changed(seen, events)) return;
    if (!events.length) {
      replace(list, notice('No events stored.'));
      return;
    }
    replace(list, h('table', {class: 'events'},
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Event'), h('th', {scope: 'col'}, 'Name'),
        h('th', {scope: 'col'}, 'User'), h('th', {scope: 'col'}, 'Sent'))),
      h('tbody', {}, events.map((e) => h('tr', {'data-event': e.id},
        h('td', {}, link(path('events', e.id), h('code', {}, shortId(e.id)))),
        h('td', {}, e.name), h('td', {}, userLink(userKey(e))), h('td', {}, timeEl(e.ts)))))));
  }
  return poll(refresh);
}

/// Whether an event name matches a trigger's pattern (`user/*` matches `user/a` and `user/a/b`).
function matches(pattern, name) {
  const p = pattern.split('/');
  const n = name.split('/');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '*' && i === p.length - 1) return n.length >= p.length;
    if (i >= n.length || (p[i] !== '*' && p[i] !== n[i])) return false;
  }
  return p.length === n.length;
}

/// `/events/{id}`: the event's payload and the runs it started.
export async function eventView(main, route) {
  let event;
  try {
    event = await api(path('v1/events', route.id));
  } catch (e) {
    failed(main, e);
    return () => {};
  }
  const runsBox = h('div', {id: 'event-runs'});
  const seen = {};
  replace(main,
    h('h1', {}, 'Event ', h('code', {}, event.id)),
    h('dl', {class: 'facts'},
      h('dt', {}, 'Name'), h('dd', {}, event.name),
      h('dt', {}, 'User'), h('dd', {}, userLink(userKey(event))),
      h('dt', {}, 'Sent'), h('dd', {}, timeEl(event.ts))),
    h('h2', {}, 'Runs it started'), runsBox,
    h('h2', {}, 'Payload'), jsonBlock(event, 'The event'));
  const functions = await api('/v1/functions').catch(() => []);
  const triggered = functions.filter((f) => f.triggers.some((t) => t.event && matches(t.event, event.name)));
  async function refresh() {
    const lists = await Promise.all(triggered.map((f) =>
      api(path('v1/functions', f.id) + '/events/' + encodeURIComponent(event.id) + '/runs').catch(() => [])));
    const runs = lists.flat().map((r) => ({
      id: r.run_id, function_id: r.function_id, status: r.status, fn_version: r.fn_version,
      user: userKey(event), created_at: r.created_at, ended_at: r.ended_at,
    }));
    if (changed(seen, runs)) replace(runsBox, runsTable(runs));
  }
  return poll(refresh);
}

// ---- Functions ----------------------------------------------------------------------------

function triggerText(t) {
  if (t.cron) return `cron ${t.cron}`;
  return t.expression ? `${t.event} if ${t.expression}` : t.event;
}

/// `/functions`: every live function, its triggers and steps.
export async function functionsView(main) {
  const functions = await api('/v1/functions');
  replace(main, h('h1', {}, 'Functions'), functions.length ? h('table', {class: 'functions'},
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Function'), h('th', {scope: 'col'}, 'Triggers'), h('th', {scope: 'col'}, 'Steps'))),
    h('tbody', {}, functions.map((f) => h('tr', {'data-function': f.id},
      h('td', {}, link(path('functions', f.id), f.id), f.name && f.name !== f.id ? h('div', {class: 'muted'}, f.name) : null),
      h('td', {}, h('ul', {class: 'plain'}, f.triggers.map((t) => h('li', {}, h('code', {}, triggerText(t)))))),
      h('td', {}, String(f.steps.length)))))) : notice('No functions loaded.'));
  return () => {};
}

/// `/functions/{id}`: its triggers, DAG, versions and recent runs with their failure rate.
export async function functionView(main, route) {
  let f;
  try {
    f = await api(path('v1/functions', route.id));
  } catch (e) {
    failed(main, e);
    return () => {};
  }
  const versionsBox = h('div', {});
  const runsBox = h('div', {});
  const seen = {};
  replace(main,
    h('h1', {}, 'Function ', h('code', {}, f.id)),
    f.name && f.name !== f.id ? h('p', {}, f.name) : null,
    h('h2', {}, 'Triggers'), h('ul', {}, f.triggers.map((t) => h('li', {}, h('code', {}, triggerText(t))))),
    h('h2', {}, 'Steps'), h('div', {class: 'dag-box'}, drawDag({steps: f.steps, edges: f.edges}, null, null, null)),
    h('h2', {}, 'Versions'), versionsBox,
    h('h2', {}, 'Recent runs'), runsBox,
    h('p', {}, link(path('runs', null, {function: f.id}), 'All runs of this function')));
  api(path('v1/functions', f.id) + '/versions').then((versions) => {
    replace(versionsBox, versions.length ? h('table', {class: 'versions'},
      h('thead', {}, h('tr', {}, ['Version', 'Status', 'Runs', 'Failed', 'Failure rate', 'p50'].map((c) => h('th', {scope: 'col'}, c)))),
      h('tbody', {}, versions.map((v) => h('tr', {'data-version': v.version},
        h('td', {}, 'v' + v.version), h('td', {}, badge(v.status)), h('td', {}, String(v.runs)), h('td', {}, String(v.failed)),
        h('td', {}, v.runs ? `${((100 * v.failed) / v.runs).toFixed(1)} %` : '—'),
        h('td', {}, v.p50_ms !== undefined && v.p50_ms !== null ? duration(v.p50_ms) : '—'))))) : notice('No stored versions (a state store without a catalog).'));
  }).catch((e) => replace(versionsBox, e instanceof ApiError && (e.status === 501 || e.status === 404)
    ? notice('No stored versions: this server\'s state store keeps no catalog, or the function has none stored yet.')
    : notice(`Versions: ${e.message}`, 'error')));
  async function refresh() {
    const runs = await api(path('v1/runs', null, {function: f.id, limit: 20}));
    if (!changed(seen, runs)) return;
    const ended = runs.filter((r) => ['completed', 'failed', 'cancelled'].includes(r.status));
    const failedCount = ended.filter((r) => r.status === 'failed').length;
    replace(runsBox,
      h('p', {}, ended.length ? `${failedCount} of the last ${ended.length} ended runs failed.` : 'No ended runs yet.'),
      runsTable(runs, {showFunction: false}));
  }
  return poll(refresh);
}

// ---- Users --------------------------------------------------------------------------------

/// `/users`: a box to look a user up.
export async function usersView(main) {
  const input = h('input', {id: 'u-id', required: true, autocomplete: 'off', placeholder: 'user.id, external_id or email'});
  const go = (e) => {
    e.preventDefault();
    window.dispatchEvent(new CustomEvent('weir:navigate', {detail: path('users', input.value.trim())}));
  };
  replace(main, h('h1', {}, 'Users'),
    h('p', {}, 'One user\'s events and the runs they started, on one timeline. A user is named by the ',
      h('code', {}, 'user.id'), ' of their events, else ', h('code', {}, 'user.external_id'), ', else ', h('code', {}, 'user.email'), '.'),
    h('form', {class: 'filters', role: 'search', onsubmit: go}, h('label', {for: 'u-id'}, 'User'), input, h('button', {type: 'submit'}, 'Show')));
  input.focus();
  return () => {};
}

/// `/users/{id}`: the user's timeline, newest first.
export async function userView(main, route) {
  const box = h('div', {id: 'user-timeline'});
  replace(main, h('h1', {}, 'User ', h('code', {}, route.id)), box);
  const seen = {};
  async function refresh() {
    const timeline = await api(path('v1/users', route.id) + '/timeline');
    if (!changed(seen, timeline)) return;
    if (!timeline.items.length) {
      replace(box, notice('Nothing stored for this user.'));
      return;
    }
    replace(box, h('ol', {class: 'timeline'}, timeline.items.map((item) => item.kind === 'event'
      ? h('li', {class: 't-event', 'data-event': item.event.id},
        h('div', {class: 'when'}, timeEl(item.at)),
        h('div', {}, 'event ', link(path('events', item.event.id), item.event.name),
          item.runs.length ? h('ul', {class: 'plain'}, item.runs.map((r) => h('li', {'data-run': r.id},
            link(path('runs', r.id), r.function_id), ' ', badge(r.status),
            r.ended_at ? ` in ${duration(r.ended_at - r.created_at)}` : ''))) : h('div', {class: 'muted'}, 'started no run')))
      : h('li', {class: 't-run', 'data-run': item.run.id},
        h('div', {class: 'when'}, timeEl(item.at)),
        h('div', {}, 'run ', link(path('runs', item.run.id), item.run.function_id), ' ', badge(item.run.status),
          h('span', {class: 'muted'}, ' (its event is no longer stored)'))))));
  }
  return poll(refresh);
}
