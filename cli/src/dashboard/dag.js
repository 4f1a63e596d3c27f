// A function's DAG drawn as an inline SVG: steps in columns by depth (a step sits one column
// right of its deepest parent), ordered in each column by their parents' rows so that edges
// cross little. Each step is a <g data-step="ID" data-status="STATUS">: tests and users'
// scripts can read the run's state off the picture.

import {h} from './dom.js';

const NODE_W = 168;
const NODE_H = 52;
const COL_GAP = 64;
const ROW_GAP = 20;
const PAD = 12;

/// Columns of step ids: each step one column right of its deepest parent.
export function layout(steps, edges) {
  const ids = steps.map((s) => s.id);
  const parents = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (parents.has(e.to) && parents.has(e.from)) parents.get(e.to).push(e.from);
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0; // a cycle cannot be loaded; never loop on one anyway
    seen.add(id);
    const d = Math.max(-1, ...parents.get(id).map((p) => depthOf(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  ids.forEach((id) => depthOf(id));
  const columns = [];
  for (const id of ids) {
    const d = depth.get(id);
    (columns[d] = columns[d] || []).push(id);
  }
  // Each column ordered by the mean row of its parents (definition order breaks ties).
  const row = new Map();
  columns.forEach((column, c) => {
    if (c > 0) {
      const weight = (id) => {
        const rows = parents.get(id).map((p) => row.get(p)).filter((r) => r !== undefined);
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      column.sort((a, b) => weight(a) - weight(b) || ids.indexOf(a) - ids.indexOf(b));
    }
    column.forEach((id, r) => row.set(id, r));
  });
  return columns;
}

/// Cuts a label to fit a node.
function fit(text, max) {
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/// The SVG of `graph` ({steps, edges}); `states` maps step id → {status, attempts, duration};
/// `onSelect(id)` is called when a step is clicked or chosen with the keyboard.
export function drawDag(graph, states, onSelect, selected) {
  const columns = layout(graph.steps, graph.edges);
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const width = PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP;
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
  const at = new Map();
  columns.forEach((column, c) => {
    // A shorter column is centred beside the tallest.
    const offset = ((tallest - column.length) * (NODE_H + ROW_GAP)) / 2;
    column.forEach((id, r) => {
      at.set(id, {x: PAD + c * (NODE_W + COL_GAP), y: PAD + offset + r * (NODE_H + ROW_GAP)});
    });
  });
  const svg = h('svg:svg', {
    class: 'dag',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'group',
    'aria-label': 'The steps of the function and how they connect',
  });
  svg.append(h('svg:defs', {},
    h('svg:marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'},
      h('svg:path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead'}))));
  for (const e of graph.edges) {
    const from = at.get(e.from);
    const to = at.get(e.to);
    if (!from || !to) continue;
    const x1 = from.x + NODE_W;
    const y1 = from.y + NODE_H / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_H / 2;
    const bend = Math.max(24, (x2 - x1) / 2);
    const taken = states && states[e.to] && states[e.to].edges ? states[e.to].edges[e.from] : undefined;
    const classes = ['edge', 'k-' + e.kind];
    if (e.on_timeout) classes.push('on-timeout');
    if (taken === true) classes.push('taken');
    if (taken === false) classes.push('not-taken');
    const describe = [e.kind === 'then' ? '' : e.kind, e.on_timeout ? 'on timeout' : '', e.if ? 'if ' + e.if : '']
      .filter(Boolean).join(', ');
    if (e.if) classes.push('conditional');
    svg.append(h('svg:path', {
      class: classes.join(' '),
      d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
      'marker-end': 'url(#arrow)',
      'data-from': e.from,
      'data-to': e.to,
    }, h('svg:title', {}, `${e.from} → ${e.to}${describe ? ' (' + describe + ')' : ''}`)));
  }
  for (const step of graph.steps) {
    const p = at.get(step.id);
    const state = (states && states[step.id]) || {};
    const status = state.status || 'defined';
    // A function's graph (no run): each step's runtime; a run's: its state.
    const detail = states ? [status] : [step.runtime || 'step'];
    if (state.attempts > 1) detail.push(`${state.attempts} attempts`);
    if (state.duration !== undefined) detail.push(state.duration);
    const node = h('svg:g', {
      class: 'node s-' + status + (selected === step.id ? ' selected' : ''),
      'data-step': step.id,
      'data-status': status,
      transform: `translate(${p.x} ${p.y})`,
      tabindex: onSelect ? 0 : null,
      role: onSelect ? 'button' : 'img',
      'aria-label': `step ${step.id}: ${detail.join(', ')}`,
    },
    h('svg:title', {}, `${step.id} (${step.runtime}): ${detail.join(', ')}`),
    h('svg:rect', {width: NODE_W, height: NODE_H, rx: 8, ry: 8}),
    h('svg:text', {x: 12, y: 21, class: 'name'}, fit(step.id, 20)),
    h('svg:text', {x: 12, y: 40, class: 'detail'}, fit(detail.join(' · '), 26)));
    if (onSelect) {
      node.addEventListener('click', () => onSelect(step.id));
      node.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          onSelect(step.id);
        }
      });
    }
    svg.append(node);
  }
  return svg;
}
