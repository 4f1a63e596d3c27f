// The dashboard's router: the address names the view (`/runs/{id}`, `/events/{id}`,
// `/functions/{id}`, `/users/{id}`, or the same after `/#`), links are followed without
// reloading, and the strip at the top shows the engine's own counters.

import {api} from './api.js';
import {duration, h, replace, safeHref} from './dom.js';
import * as views from './views.js';

const main = document.getElementById('view');
let stopView = () => {};

/// The view an address names: `{section, id, query}`.
function parse(location) {
  let pathname = location.pathname;
  let search = location.search;
  // `/#/runs/ID` works too (a link pasted from a page served under another path).
  if (location.hash.startsWith('#/')) {
    const inner = new URL(location.hash.slice(1), location.origin);
    pathname = inner.pathname;
    search = inner.search;
  }
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // `100%`: not an escape, taken as written
    }
  };
  const parts = pathname.split('/').filter(Boolean).map(decode);
  return {section: parts[0] || 'runs', id: parts[1], query: new URLSearchParams(search)};
}

const VIEWS = {
  runs: [views.runsView, views.runView],
  events: [views.eventsView, views.eventView],
  functions: [views.functionsView, views.functionView],
  users: [views.usersView, views.userView],
};

/// Which call of `show` is the current one: a view that finishes loading after the user
/// moved on is stopped and never shown.
let generation = 0;
/// The address `show` last drew (path and query).
let shown = null;

/// Draws the view of the current address, in a container of its own: a view still loading
/// when the user moves on draws into a container no longer on the page.
async function show() {
  stopView();
  stopView = () => {};
  const current = ++generation;
  shown = window.location.pathname + window.location.search + (window.location.hash.startsWith('#/') ? window.location.hash : '');
  const route = parse(window.location);
  const pair = VIEWS[route.section];
  for (const a of document.querySelectorAll('nav a')) {
    a.toggleAttribute('aria-current', a.dataset.section === route.section);
    if (a.dataset.section === route.section) a.setAttribute('aria-current', 'page');
  }
  if (!pair) {
    replace(main, h('p', {class: 'error'}, 'No such page.'));
    return;
  }
  const view = route.id === undefined ? pair[0] : pair[1];
  document.title = `weir · ${route.section}${route.id ? ' · ' + route.id : ''}`;
  const box = h('div', {class: 'view'}, h('p', {class: 'muted'}, 'Loading…'));
  replace(main, box);
  document.body.dataset.view = route.id === undefined ? route.section : route.section + '-one';
  try {
    const stop = await view(box, route);
    if (current === generation) {
      stopView = stop;
    } else {
      stop();
    }
  } catch (e) {
    if (current === generation) replace(box, h('p', {class: 'error', role: 'alert'}, `Could not load: ${e.message}`));
  }
}

/// Goes to an address of the dashboard without reloading.
function navigate(to) {
  history.pushState(null, '', to);
  show();
  main.focus({preventScroll: true});
  window.scrollTo(0, 0);
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const href = a.getAttribute('href');
  if (!href || safeHref(href) !== href || href === '#' || a.target) return;
  e.preventDefault();
  navigate(href);
});
// Back and forward redraw the view; a jump to an anchor of this page (the skip link) does not.
window.addEventListener('popstate', () => {
  const now = window.location.pathname + window.location.search + (window.location.hash.startsWith('#/') ? window.location.hash : '');
  if (now !== shown) show();
});
window.addEventListener('weir:navigate', (e) => navigate(e.detail));

// ---- At a glance: from the engine's Prometheus counters -----------------------------------

/// `name{labels} value` lines of the Prometheus text format: [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({name: m[1], labels, value: Number(m[4])});
  }
  return out;
}

function sum(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
}

/// A quantile of the step duration histogram (summed over functions and steps), in ms.
function quantile(samples, q) {
  const buckets = new Map();
  for (const s of samples) {
    if (s.name !== 'weir_step_attempt_duration_seconds_bucket') continue;
    buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) + s.value);
  }
  const sorted = [...buckets.entries()].map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), n])
    .filter(([le]) => !Number.isNaN(le)).sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  const found = sorted.find(([, n]) => n >= q * total);
  if (!found) return null;
  // Past the last finite bucket: "more than" it.
  if (found[0] === Infinity) {
    const last = sorted.filter(([le]) => le !== Infinity).pop();
    return last ? {over: last[0] * 1000} : null;
  }
  return found[0] * 1000;
}

function shownQuantile(q) {
  if (q === null) return '—';
  return typeof q === 'object' ? '> ' + duration(q.over) : '≤ ' + duration(q);
}

let previous = null;

async function glance() {
  const box = document.getElementById('glance');
  try {
    const samples = parseMetrics(await api('/metrics', {text: true}));
    const finished = sum(samples, 'weir_runs_finished_total');
    const failedRuns = sum(samples, 'weir_runs_finished_total', (l) => l.status === 'failed');
    const now = Date.now();
    let rate = '—';
    // A counter that went down: the server restarted, so no rate this time.
    if (previous && now > previous.at && finished >= previous.finished) {
      rate = ((finished - previous.finished) / ((now - previous.at) / 1000)).toFixed(1);
    }
    previous = {at: now, finished};
    const p50 = quantile(samples, 0.5);
    const p99 = quantile(samples, 0.99);
    const item = (label, value, id) => [h('dt', {}, label), h('dd', {id}, value)];
    replace(box,
      item('runs/s', rate, 'g-rate'),
      item('failed', String(failedRuns), 'g-failed'),
      item('step p50', shownQuantile(p50), 'g-p50'),
      item('step p99', shownQuantile(p99), 'g-p99'));
  } catch {
    replace(box);
  }
}

show();
glance();
setInterval(glance, 5000);
