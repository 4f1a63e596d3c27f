// Building the page. Every string, and above all every string a producer set (event names,
// data, user ids, step logs), goes in as text, never as markup: there is no innerHTML here.

const SVG_NS = 'http://www.w3.org/2000/svg';

/// An element: `h('a', {href: '/runs', class: 'x', onclick: fn}, 'text', child…)`.
/// A tag starting with `svg:` is an SVG element. `on…` attributes become listeners.
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'href') el.setAttribute('href', safeHref(value));
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/// Only addresses on this server: a producer's string can never become `javascript:…` or
/// another site (`//host`, `/\host`).
export function safeHref(value) {
  const text = String(value);
  if (!text.startsWith('/')) return '#';
  try {
    return new URL(text, window.location.origin).origin === window.location.origin ? text : '#';
  } catch {
    return '#';
  }
}

/// The address of a view: `path('runs', id)` → `/runs/<id escaped>`.
export function path(section, id, query) {
  let out = '/' + section;
  // `.` and `..` would be taken as "here" and "up" by the browser: escaped as %2E.
  if (id !== undefined && id !== null) out += '/' + encodeURIComponent(id).replace(/^\.\.?$/, (d) => d.replaceAll('.', '%2E'));
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const text = q.toString();
    if (text) out += '?' + text;
  }
  return out;
}

/// A link to a view, followed without reloading the page.
export function link(href, ...children) {
  return h('a', {href}, ...children);
}

/// Empties `el` and fills it with `children`.
export function replace(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
}

/// A status badge: `completed`, `failed`, `running`, …
export function badge(status) {
  return h('span', {class: 'badge s-' + String(status).replace(/[^a-z_]/g, '')}, status);
}

/// JSON shown as text.
export function jsonBlock(value, label) {
  return h('pre', {class: 'json', tabindex: 0, 'aria-label': label || 'JSON'},
    value === undefined ? '—' : JSON.stringify(value, null, 2));
}

/// `2026-12-07 21:00:03` (local time) of epoch ms.
export function time(ms) {
  if (!ms && ms !== 0) return '—';
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/// A <time> element: the local time, its ISO form as the machine-readable value.
export function timeEl(ms) {
  if (!ms && ms !== 0) return h('span', {class: 'muted'}, '—');
  return h('time', {datetime: new Date(ms).toISOString(), title: new Date(ms).toISOString()}, time(ms));
}

/// `412 ms`, `3.2 s`, `4 min 3 s`, `2 h 5 min`.
export function duration(ms) {
  if (ms === undefined || ms === null || ms < 0 || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) {
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  const min = Math.round(ms / 60_000);
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

/// Whether `data` differs from what `holder` last saw (and remembers it): a refresh that
/// brings nothing new redraws nothing, so focus, open details and screen readers are left
/// alone.
export function changed(holder, data) {
  const text = JSON.stringify(data);
  if (holder.last === text) return false;
  holder.last = text;
  return true;
}

/// Redraws `container` with `draw()`, keeping its `<details data-keep="…">` open or closed
/// as they were.
export function keepOpen(container, draw) {
  const open = new Set([...container.querySelectorAll('details[data-keep]')]
    .filter((d) => d.open).map((d) => d.dataset.keep));
  draw();
  for (const d of container.querySelectorAll('details[data-keep]')) {
    if (open.has(d.dataset.keep)) d.open = true;
  }
}

/// A short form of a long id (its end, which differs between ids made in the same ms).
export function shortId(id) {
  const text = String(id);
  return text.length > 12 ? '…' + text.slice(-10) : text;
}

/// A message in place of a view's content.
export function notice(text, kind) {
  return h('p', {class: kind === 'error' ? 'error' : 'muted', role: kind === 'error' ? 'alert' : null}, text);
}
