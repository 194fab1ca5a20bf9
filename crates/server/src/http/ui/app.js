// profiled explanation viewer. Plain DOM + SVG; every number drawn comes
// from this server's HTTP API and is kept on its mark as data-value (the
// number exactly as the API sent it), with a <title> and a data table
// beside every chart as its text alternative.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

const EXAMPLE = {
  fields: { occupation: 'engineer', age: 31, gender: 'F' },
  events: [
    { item_id: '3', timestamp: 880000000, rating: 4 },
    { item_id: '7', timestamp: 880000100, rating: 5 },
    { item_id: '12', timestamp: 880000200 },
  ],
};

function authHeaders(json) {
  const h = {};
  if (json) h['content-type'] = 'application/json';
  const t = $('token').value.trim();
  if (t) h.authorization = 'Bearer ' + t;
  return h;
}

async function api(path, body) {
  const init = body === undefined
    ? { headers: authHeaders(false) }
    : { method: 'POST', headers: authHeaders(true), body: JSON.stringify(body) };
  const r = await fetch(path, init);
  let j = null;
  try { j = await r.json(); } catch (_) { j = null; }
  if (!r.ok) {
    const msg = j && j.message ? `${j.code} (HTTP ${j.status}): ${j.message}` : `HTTP ${r.status}`;
    throw new Error(`${path}: ${msg}`);
  }
  return j;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(x) {
  return typeof x === 'number' ? x.toPrecision(4) : String(x);
}

function short(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

let uid = 0;

// A data table: caption, header row, rows of cells (strings or numbers).
function table(caption, head, rows) {
  const t = el('table');
  t.appendChild(el('caption', {}, caption));
  const thead = el('thead');
  const tr = el('tr');
  for (const h of head) tr.appendChild(el('th', { scope: 'col' }, h));
  thead.appendChild(tr);
  t.appendChild(thead);
  const tb = el('tbody');
  for (const r of rows) {
    const row = el('tr');
    r.forEach((c, i) => row.appendChild(el(i === 0 ? 'th' : 'td', i === 0 ? { scope: 'row' } : {}, typeof c === 'number' ? fmt(c) : c)));
    tb.appendChild(row);
  }
  t.appendChild(tb);
  return t;
}

function withTable(fig, tbl) {
  const d = el('details');
  d.appendChild(el('summary', {}, 'Data table'));
  d.appendChild(tbl);
  fig.appendChild(d);
  return fig;
}

// A horizontal bar chart. rows: [{label, value, attrs}] (value null = not
// returned by this method: no bar). Bars carry data-value and a <title>.
function barChart(title, desc, rows, klass) {
  const id = `chart${++uid}`;
  const labelW = 300, plotW = 320, rowH = 22, top = 6;
  const vals = rows.map((r) => r.value).filter((v) => typeof v === 'number');
  const maxAbs = Math.max(1e-12, ...vals.map(Math.abs));
  const neg = vals.some((v) => v < 0);
  const x0 = labelW + (neg ? plotW / 2 : 0);
  const scale = (neg ? plotW / 2 : plotW) / maxAbs;
  const h = top + rows.length * rowH + 6;
  const svg = svgEl('svg', {
    role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, class: `chart ${klass || ''}`,
    width: labelW + plotW + 80, height: h, viewBox: `0 0 ${labelW + plotW + 80} ${h}`,
  });
  svg.appendChild(svgEl('title', { id: `${id}-t` }, title));
  svg.appendChild(svgEl('desc', { id: `${id}-d` }, desc));
  svg.appendChild(svgEl('line', { x1: x0, x2: x0, y1: 0, y2: h, class: 'axis' }));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const label = svgEl('text', { x: labelW - 6, y: y + 15, 'text-anchor': 'end', class: 'label' }, short(r.label, 38));
    label.appendChild(svgEl('title', {}, r.label));
    svg.appendChild(label);
    if (typeof r.value !== 'number') {
      svg.appendChild(svgEl('text', { x: x0 + 4, y: y + 15, class: 'na' }, 'not returned'));
      return;
    }
    const w = Math.abs(r.value) * scale;
    const rect = svgEl('rect', Object.assign({
      class: `bar ${r.value < 0 ? 'negative' : 'positive'}`,
      x: r.value < 0 ? x0 - w : x0, y: y + 3, width: Math.max(w, 0.5), height: rowH - 6,
      'data-value': String(r.value), 'data-label': r.label,
    }, r.attrs || {}));
    rect.appendChild(svgEl('title', {}, `${r.label}: ${fmt(r.value)}`));
    svg.appendChild(rect);
    svg.appendChild(svgEl('text', { x: r.value < 0 ? x0 - w - 4 : x0 + w + 4, y: y + 15, 'text-anchor': r.value < 0 ? 'end' : 'start', class: 'value' }, fmt(r.value)));
  });
  const fig = el('figure', { class: 'figure' });
  fig.appendChild(el('figcaption', {}, title));
  fig.appendChild(svg);
  return fig;
}

function out(section) {
  return document.querySelector(`#${section} .out`);
}

function clearAll() {
  for (const s of ['groups', 'tokens', 'heatmap', 'items', 'lookalikes', 'item-why']) out(s).replaceChildren();
  $('error').textContent = '';
  $('subject').textContent = '';
}

function note(section, text) {
  out(section).replaceChildren(el('p', { class: 'note' }, text));
}

function modelLine(m, method, target) {
  return `Model ${m.name} version ${m.version} (generation ${m.generation_id}); method: ${method}; target: ${target}.`;
}

const METHOD = {
  occlusion: 'occlusion (score drop when masked)',
  attention_rollout: 'attention rollout (attention mass, not importance)',
  attention: 'attention (raw attention mass from the output position, not importance)',
};

function renderGroups(ex, section, targetText) {
  const o = out(section);
  o.appendChild(el('p', {}, modelLine(ex.model, METHOD[ex.method], targetText) + ` Base score: ${fmt(ex.base_score)}.`));
  const rows = ex.groups.map((g) => ({ label: `${g.group} (${g.tokens} tokens)`, value: g.value, attrs: { 'data-group': g.group } }));
  const fig = barChart(`Group contributions — ${METHOD[ex.method]}`,
    `Per dimension group, the ${ex.value_kind === 'score_drop' ? 'drop of the score when the whole group is masked' : 'attention mass'}.`,
    rows, 'groups');
  o.appendChild(withTable(fig, table('Group contributions', ['group', 'value', 'share', 'tokens'],
    ex.groups.map((g) => [g.group, g.value, g.share, String(g.tokens)]))));
}

// Tokens of two methods side by side, aligned by position.
function renderTokens(occ, roll) {
  const o = out('tokens');
  o.appendChild(el('p', { class: 'wide' }, modelLine(occ.model, 'occlusion and attention rollout', 'profile') +
    ' Each method returns its own largest tokens; a token one method did not return shows no bar there.'));
  const positions = new Map();
  for (const t of occ.tokens.concat(roll.tokens)) positions.set(t.token.position, t.token);
  const ordered = [...positions.values()].sort((a, b) => a.position - b.position);
  const value = (ex, p) => {
    const t = ex.tokens.find((x) => x.token.position === p);
    return t ? t.value : null;
  };
  for (const [ex, klass] of [[occ, 'tokens-occlusion'], [roll, 'tokens-rollout']]) {
    const rows = ordered.map((t) => ({ label: t.label, value: value(ex, t.position), attrs: { 'data-position': String(t.position) } }));
    const fig = barChart(`Tokens — ${METHOD[ex.method]}`,
      ex.value_kind === 'score_drop' ? 'Per token, the drop of the profile score when that token is masked.' : 'Per token, attention mass after rollout through the layers.',
      rows, klass);
    fig.classList.add(klass);
    o.appendChild(withTable(fig, table(`Tokens — ${ex.method}`, ['token', 'position', 'value', 'share'],
      ex.tokens.map((t) => [t.token.label, String(t.token.position), t.value, t.share]))));
  }
}

function heatColor(v, max) {
  const x = Math.max(0, Math.min(1, v / max));
  const r = Math.round(255 - 200 * x), g = Math.round(255 - 150 * x), b = Math.round(255 - 40 * x);
  return `rgb(${r},${g},${b})`;
}

function renderHeatmap(att) {
  const o = out('heatmap');
  o.appendChild(el('p', {}, modelLine(att.model, METHOD.attention, 'profile') +
    ' Rows: layer and head (and the head mean); columns: the tokens. Darker = more attention mass (the colour scale runs from 0 to the largest value shown). Attention mass is not importance.'));
  const toks = att.token_table;
  const rows = [];
  for (const l of att.layers) {
    for (const h of l.heads) rows.push({ name: `layer ${l.layer} head ${h.head}`, layer: l.layer, head: String(h.head), mass: h.mass });
    rows.push({ name: `layer ${l.layer} mean`, layer: l.layer, head: 'mean', mass: l.head_mean });
  }
  const max = Math.max(1e-12, ...rows.map((r) => Math.max(...r.mass)));
  const id = `chart${++uid}`;
  const cw = 30, ch = 20, left = 150, topH = 200;
  const w = left + toks.length * cw + 10, h = topH + rows.length * ch + 10;
  const svg = svgEl('svg', { role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, class: 'chart heatmap', width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  svg.appendChild(svgEl('title', { id: `${id}-t` }, 'Attention mass per layer and head (method: attention)'));
  svg.appendChild(svgEl('desc', { id: `${id}-d` }, `Heatmap of ${rows.length} rows (layer, head) by ${toks.length} tokens, colour from 0 to ${fmt(max)}; the data table below lists every value.`));
  toks.forEach((t, j) => {
    const x = left + j * cw + cw / 2;
    const label = svgEl('text', { x, y: topH - 6, transform: `rotate(-60 ${x} ${topH - 6})`, class: 'label' }, short(t.label, 24));
    label.appendChild(svgEl('title', {}, t.label));
    svg.appendChild(label);
  });
  rows.forEach((r, i) => {
    const y = topH + i * ch;
    svg.appendChild(svgEl('text', { x: left - 6, y: y + 14, 'text-anchor': 'end', class: 'label' }, r.name));
    r.mass.forEach((v, j) => {
      const rect = svgEl('rect', {
        class: 'cell', x: left + j * cw, y, width: cw - 1, height: ch - 1, fill: heatColor(v, max),
        'data-layer': String(r.layer), 'data-head': r.head, 'data-position': String(j), 'data-value': String(v),
      });
      rect.appendChild(svgEl('title', {}, `${r.name}, ${toks[j] ? toks[j].label : j}: ${fmt(v)}`));
      svg.appendChild(rect);
    });
  });
  const fig = el('figure', { class: 'figure' });
  fig.appendChild(el('figcaption', {}, 'Attention mass — method: attention'));
  fig.appendChild(svg);
  o.appendChild(withTable(fig, table('Attention mass per layer and head', ['layer / head'].concat(toks.map((t) => `${t.position}: ${t.label}`)),
    rows.map((r) => [r.name].concat(r.mass)))));
}

function renderHits(section, res, what) {
  const o = out(section);
  if (!res.hits.length) {
    o.appendChild(el('p', {}, `No ${what}.`));
    return;
  }
  o.appendChild(el('p', {}, `Model ${res.model.name} version ${res.model.version}; ${res.path} search over ${res.index_rows} rows; score = inner product with the profile.`));
  const rows = res.hits.map((h) => ({ label: h.title ? `${h.title} (${h.id})` : h.id, value: h.score, attrs: { 'data-id': h.id } }));
  const fig = barChart(`${what[0].toUpperCase()}${what.slice(1)} — scores`, `The ${res.hits.length} nearest ${what} and their scores.`, rows, section);
  o.appendChild(withTable(fig, table(what, ['id', 'title', 'score'], res.hits.map((h) => [h.id, h.title || '', h.score]))));
  if (section === 'items') {
    const p = el('p', { class: 'help' }, 'Explain a score: ');
    for (const h of res.hits.slice(0, 5)) {
      const b = el('button', { type: 'button', class: 'why', 'data-id': h.id }, `why ${h.id}?`);
      b.addEventListener('click', () => {
        $('item').value = h.id;
        runItem().catch((e) => { $('error').textContent = e.message; });
      });
      p.appendChild(b);
    }
    o.appendChild(p);
  }
}

function readForm() {
  const model = { name: $('model').value };
  const userId = $('user-id').value.trim();
  const text = $('features').value.trim();
  let features = null;
  if (text) {
    try {
      features = JSON.parse(text);
    } catch (e) {
      throw new Error(`Features JSON: ${e.message}`);
    }
  }
  const topN = Math.max(1, parseInt($('top-n').value, 10) || 12);
  return { model, userId, features, topN };
}

// Who the form asks about: pasted features, or a user id resolved by the
// server (Embed by id answers where the profile came from: live state,
// which can be explained, or the users index's stored vector, which cannot).
async function subject(f) {
  if (f.features) return { query: { features: f.features }, explainable: true, source: 'features' };
  const r = await api('/v1/embed', { model: f.model, users: [{ user_id: f.userId }] });
  const u = r.users[0];
  return { query: { user_id: f.userId }, explainable: u.source === 'user_state', source: u.source, model: r.model };
}

function subjectLine(f, s) {
  if (s.source === 'features') return 'Profile of the pasted features.';
  const m = `model ${s.model.name} version ${s.model.version}`;
  return s.source === 'user_state'
    ? `User ${f.userId}: live state (the fields and events Track stored), profile computed by ${m}.`
    : `User ${f.userId}: no live state; the stored profile vector of the users index of ${m}.`;
}

function noExplanation(f) {
  return `Explanations need the user's events and fields: user ${f.userId} has no live state, only a stored profile vector in the users index. Track the user's events (POST /v1/track) or paste features above.`;
}

async function runItem(known) {
  let f;
  try { f = readForm(); } catch (e) { $('error').textContent = e.message; return; }
  const item = $('item').value.trim();
  out('item-why').replaceChildren();
  if (!item) { note('item-why', 'Give an item id (or pick one of the nearest items) to explain its score.'); return; }
  if (!f.features && !f.userId) { note('item-why', 'Give a user id or paste features above.'); return; }
  const s = known || await subject(f);
  if (!s.explainable) { note('item-why', noExplanation(f)); return; }
  const ex = await api('/v1/explain', Object.assign({ model: f.model, target: { kind: 'item', item_id: item }, method: 'occlusion', top_n: f.topN }, s.query));
  renderGroups(ex, 'item-why', `item ${item}`);
  const rows = ex.tokens.map((t) => ({ label: t.token.label, value: t.value, attrs: { 'data-position': String(t.token.position) } }));
  const fig = barChart(`Tokens — ${METHOD.occlusion}, target item ${item}`, `Per token, the drop of the score against item ${item} when that token is masked.`, rows, 'item-tokens');
  out('item-why').appendChild(withTable(fig, table(`Tokens, item ${item}`, ['token', 'value', 'share'], ex.tokens.map((t) => [t.token.label, t.value, t.share]))));
}

async function run(ev) {
  if (ev) ev.preventDefault();
  clearAll();
  $('status').textContent = 'Working…';
  let f;
  try {
    f = readForm();
    if (!f.model.name) throw new Error('Pick a model (none is ready, or the token is missing).');
    if (!f.features && !f.userId) throw new Error('Give a user id or paste features JSON.');
  } catch (e) {
    $('error').textContent = e.message;
    $('status').textContent = 'Failed.';
    return;
  }
  let s;
  try {
    s = await subject(f);
  } catch (e) {
    $('error').textContent = e.message;
    $('status').textContent = 'Failed.';
    return;
  }
  $('subject').textContent = subjectLine(f, s);
  toLink(f);
  const q = s.query;
  const tasks = [
    api('/v1/search', Object.assign({ model: f.model, k: 10, include_attributes: true }, q)).then((r) => renderHits('items', r, 'items')),
    api('/v1/search', Object.assign({ model: f.model, k: 10, target: 'users', include_attributes: true }, q)).then((r) => renderHits('lookalikes', r, 'lookalike users')),
  ];
  if (s.explainable) {
    const body = (method) => Object.assign({ model: f.model, method, top_n: f.topN }, q);
    tasks.push(Promise.all([api('/v1/explain', body('occlusion')), api('/v1/explain', body('attention_rollout')), api('/v1/explain', body('attention'))])
      .then(([occ, roll, att]) => { renderGroups(occ, 'groups', 'profile'); renderTokens(occ, roll); renderHeatmap(att); }));
    tasks.push(runItem(s));
  } else {
    for (const sec of ['groups', 'tokens', 'heatmap', 'item-why']) note(sec, noExplanation(f));
  }
  const results = await Promise.allSettled(tasks);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  $('error').textContent = failed.join('\n');
  $('status').textContent = failed.length ? 'Done, with errors.' : 'Done.';
}

async function loadModels() {
  const sel = $('model');
  sel.replaceChildren();
  try {
    const r = await api('/v1/models');
    for (const m of r.models) {
      if (!m.default_version) continue;
      const o = el('option', { value: m.name }, `${m.name} (version ${m.default_version})`);
      if (m.name === r.default_model) o.selected = true;
      sel.appendChild(o);
    }
    $('status').textContent = sel.options.length ? `${sel.options.length} ready model(s).` : 'No model is ready yet.';
  } catch (e) {
    $('error').textContent = e.message;
  }
}

// A link to an explanation: /ui/?model=M&user_id=U[&item=I][&top_n=N] fills
// the form and runs it once the models are listed; every run by user id
// puts its own link in the address bar, to share.
function fromLink() {
  const p = new URLSearchParams(window.location.search);
  if (!p.get('user_id')) return false;
  $('user-id').value = p.get('user_id');
  if (p.get('item')) $('item').value = p.get('item');
  if (p.get('top_n')) $('top-n').value = p.get('top_n');
  if (p.get('model')) {
    for (const o of $('model').options) o.selected = o.value === p.get('model');
  }
  return true;
}

function toLink(f) {
  if (!f.userId || f.features) return;
  const p = new URLSearchParams({ model: f.model.name, user_id: f.userId, top_n: String(f.topN) });
  const item = $('item').value.trim();
  if (item) p.set('item', item);
  window.history.replaceState(null, '', `?${p}`);
}

document.addEventListener('DOMContentLoaded', () => {
  $('query').addEventListener('submit', run);
  $('load-models').addEventListener('click', loadModels);
  $('example').addEventListener('click', () => { $('features').value = JSON.stringify(EXAMPLE, null, 2); });
  loadModels().then(() => { if (fromLink()) run(); });
});
