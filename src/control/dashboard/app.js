// Rempart's cockpit page. Static: everything it shows comes from the admin API with the operator's
// token (sessionStorage, this tab only), sent as a Bearer header; the live feed is read with fetch so
// the token never goes in a URL. Every value from the server is written with textContent, never as
// HTML: ban reasons and signature evidence carry attacker-chosen strings.
/* global uPlot */
'use strict';

const TOKEN_KEY = 'rempart.adminToken';
const HISTORY_POINTS = 300;
const DECISIONS = [
  'forwarded',
  'answered',
  'cache_hit',
  'stale',
  'upstream_error',
  'aborted',
  'rate_limited',
  'challenged',
  'shed',
  'banned',
  'waiting_room',
  'blocked',
  'exfiltration',
  'edge',
  'refused_other',
];
const REFUSED = new Set([
  'rate_limited',
  'challenged',
  'shed',
  'banned',
  'waiting_room',
  'blocked',
  'exfiltration',
  'edge',
  'refused_other',
]);
const COLORS = {
  forwarded: '#3fb950',
  answered: '#2ea043',
  cache_hit: '#58a6ff',
  stale: '#a371f7',
  upstream_error: '#f0883e',
  aborted: '#6e7681',
  rate_limited: '#d29922',
  challenged: '#e3b341',
  shed: '#f85149',
  banned: '#f778ba',
  waiting_room: '#79c0ff',
  blocked: '#9e6a03',
  exfiltration: '#bc8cff',
  edge: '#8b949e',
  refused_other: '#484f58',
  critical: '#f85149',
  authenticated: '#a371f7',
  cacheable: '#58a6ff',
  public: '#3fb950',
  static: '#8b949e',
};
const PALETTE = [
  '#58a6ff',
  '#3fb950',
  '#d29922',
  '#f85149',
  '#a371f7',
  '#79c0ff',
  '#e3b341',
  '#db61a2',
  '#56d4dd',
  '#8b949e',
];

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let feedAbort = null;
let points = [];
let lastAuditSeq = -1;

// ---- small DOM helpers (text only) ----
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children)
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
function fill(tbody, rows, cols, emptyText) {
  tbody.replaceChildren(
    ...(rows.length > 0 ? rows : [h('tr', {}, h('td', { class: 'empty', colspan: String(cols) }, emptyText))]),
  );
}
function fmt(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return n >= 1000 ? Math.round(n).toLocaleString('en') : (Math.round(n * 10 ** digits) / 10 ** digits).toString();
}
function clip(s, n) {
  s = String(s);
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
function pct(x) {
  return x === null || x === undefined ? '–' : `${Math.round(x * 100)}%`;
}
function ago(iso) {
  const ms = Date.now() - Date.parse(iso);
  if (!Number.isFinite(ms)) return String(iso);
  if (ms < 60000) return `${Math.max(0, Math.round(ms / 1000))} s ago`;
  if (ms < 3600000) return `${Math.round(ms / 60000)} min ago`;
  return new Date(iso).toLocaleString();
}
function until(iso) {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (!Number.isFinite(s)) return String(iso);
  if (s < 120) return `in ${Math.max(0, s)} s`;
  if (s < 7200) return `in ${Math.round(s / 60)} min`;
  return `in ${Math.round(s / 3600)} h`;
}
function status(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

// ---- API ----
async function api(method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${token}` }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    signOut('The token was refused.');
    throw new Error('unauthorized');
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(data?.error?.message ?? `HTTP ${res.status}`);
  return data;
}
async function act(label, method, path, body) {
  try {
    await api(method, path, body);
    status(`${label}: done (recorded in the audit trail)`);
    refreshAudit();
    return true;
  } catch (err) {
    if (err.message !== 'unauthorized') status(`${label}: ${err.message}`, true);
    return false;
  }
}

// ---- sign in / out ----
function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  feedAbort?.abort();
  $('app').hidden = true;
  $('logout').hidden = true;
  $('level-badge').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('conn').textContent = '';
}
async function signIn(candidate) {
  const res = await fetch('/api/guards', { headers: { authorization: `Bearer ${candidate}` }, cache: 'no-store' });
  if (res.status === 401) throw new Error('This token is not valid.');
  if (!res.ok) throw new Error(`The admin API answered ${res.status}.`);
  token = candidate;
  sessionStorage.setItem(TOKEN_KEY, candidate);
  start();
}
$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('token').value.trim();
  $('token').value = '';
  signIn(t).catch((err) => ($('login-error').textContent = err.message));
});
$('logout').addEventListener('click', () => signOut(''));

// ---- charts ----
const charts = {};
function axisStyle() {
  return { stroke: '#8a96a3', grid: { stroke: '#2a323c', width: 1 }, ticks: { stroke: '#2a323c', width: 1 } };
}
function chartWidth(el) {
  return Math.max(280, el.clientWidth || el.parentElement.clientWidth - 16);
}
/** Draw `series` (name → values aligned with xs) in the chart `id`; rebuilt when the set of names changes. */
function draw(id, xs, series, opts = {}) {
  const el = $(id);
  const names = Object.keys(series);
  if (names.length === 0 || xs.length < 2) {
    charts[id]?.plot.destroy();
    delete charts[id];
    const text = opts.emptyText || 'no data yet';
    if (el.querySelector('.empty')?.textContent !== text) el.replaceChildren(h('div', { class: 'empty' }, text));
    return;
  }
  const key = names.join('\u0001');
  const data = [xs, ...names.map((n) => series[n])];
  let c = charts[id];
  if (c === undefined || c.key !== key) {
    c?.plot.destroy();
    el.replaceChildren();
    const plot = new uPlot(
      {
        width: chartWidth(el),
        height: 190,
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          y: opts.y || { auto: true, range: (_u, _min, max) => [0, Math.max(max, opts.minMax || 1)] },
        },
        axes: [axisStyle(), { ...axisStyle(), size: 50 }],
        series: [
          {},
          ...names.map((n, i) => ({
            label: n,
            stroke: COLORS[n.split(' ')[0]] || PALETTE[i % PALETTE.length],
            width: 1.5,
            dash: /p99|in flight/.test(n) ? [4, 3] : /p50/.test(n) ? [1, 3] : undefined,
            paths: opts.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
            value: (_u, v) => (v === null || v === undefined ? '–' : fmt(v, 2)),
          })),
        ],
        legend: { live: true },
      },
      data,
      el,
    );
    c = charts[id] = { plot, key };
  } else c.plot.setData(data);
}
window.addEventListener('resize', () => {
  for (const [id, c] of Object.entries(charts)) c.plot.setSize({ width: chartWidth($(id)), height: 190 });
});

function renderCharts() {
  const xs = points.map((p) => p.t / 1000);
  const pick = (names, get) => {
    const out = {};
    for (const n of names) out[n] = points.map((p) => get(p, n) ?? null);
    return out;
  };
  // Decisions: forwarded always, others once they happened in the window.
  const seen = new Set(['forwarded']);
  for (const p of points) for (const [k, v] of Object.entries(p.rps.byDecision)) if (v > 0) seen.add(k);
  draw(
    'c-decision',
    xs,
    pick(
      DECISIONS.filter((d) => seen.has(d)),
      (p, n) => p.rps.byDecision[n] ?? 0,
    ),
  );
  const classes = [...new Set(points.flatMap((p) => Object.keys(p.rps.byClass)))].sort();
  draw(
    'c-class',
    xs,
    pick(classes, (p, n) => p.rps.byClass[n] ?? 0),
  );
  const ups = [...new Set(points.flatMap((p) => p.upstreams.map((u) => u.name)))];
  const lat = {};
  const lim = {};
  for (const u of ups) {
    const get = (p) => p.upstreams.find((x) => x.name === u);
    if (points.some((p) => get(p)?.p90Ms != null)) {
      lat[`${u} p50`] = points.map((p) => get(p)?.p50Ms ?? null);
      lat[`${u} p90`] = points.map((p) => get(p)?.p90Ms ?? null);
      lat[`${u} p99`] = points.map((p) => get(p)?.p99Ms ?? null);
    }
    if (points.some((p) => get(p)?.limit != null)) {
      lim[`${u} limit`] = points.map((p) => get(p)?.limit ?? null);
      lim[`${u} in flight`] = points.map((p) => get(p)?.inFlight ?? null);
    }
  }
  draw('c-latency', xs, lat, { emptyText: 'no forwarded answers yet' });
  draw('c-limit', xs, lim, { emptyText: 'admission control is off on every upstream' });
  // Without admission control nothing ever queues: a flat or empty chart would read as "no
  // pressure", so say why instead (snapshot.admissionOn / admissionOff).
  const last = points[points.length - 1];
  const queueNote = $('c-queue-note');
  if (last && last.admissionOn === false) {
    queueNote.hidden = true;
    draw(
      'c-queue',
      xs,
      {},
      {
        emptyText:
          'admission control is off on every upstream: requests go straight through, nothing queues (upstreams[].admission.mode)',
      },
    );
  } else {
    const off = last?.admissionOff ?? [];
    queueNote.hidden = off.length === 0;
    queueNote.textContent = off.length === 0 ? '' : `admission off, never queued: ${off.join(', ')}`;
    const qclasses = [...new Set(points.flatMap((p) => Object.keys(p.queueDepth)))].sort();
    draw(
      'c-queue',
      xs,
      pick(qclasses, (p, n) => p.queueDepth[n] ?? 0),
      { emptyText: 'nothing has queued yet' },
    );
  }
  draw('c-level', xs, { level: points.map((p) => p.level.value) }, { stepped: true, y: { range: [0, 2.2] } });
  draw(
    'c-cache',
    xs,
    { 'hit ratio': points.map((p) => p.cache.hitRatio), 'stale ratio': points.map((p) => p.cache.staleRatio) },
    { y: { range: [0, 1] } },
  );
  const rooms = [...new Set(points.flatMap((p) => Object.keys(p.waitingRoom)))].sort();
  draw(
    'c-room',
    xs,
    pick(rooms, (p, n) => p.waitingRoom[n] ?? 0),
    { emptyText: 'no route has a waiting room' },
  );
}

// ---- tables and tiles ----
function renderTiles(s) {
  const d = s.rps.byDecision;
  let refused = 0;
  for (const [k, v] of Object.entries(d)) if (REFUSED.has(k)) refused += v;
  $('k-total').textContent = fmt(s.rps.total);
  $('k-forwarded').textContent = fmt(d.forwarded);
  $('k-refused').textContent = fmt(refused);
  $('k-cache').textContent = `${pct(s.cache.hitRatio)} · ${pct(s.cache.staleRatio)}`;
  $('k-conns').textContent = fmt(s.connections, 0);
  $('k-room').textContent = fmt(
    Object.values(s.waitingRoom).reduce((a, b) => a + b, 0),
    0,
  );
  $('k-bans').textContent = s.bans ? fmt(s.bans.active, 0) : '–';
  $('k-level').textContent = s.level.name.replace('_', ' ');
  const badge = $('level-badge');
  badge.hidden = false;
  badge.textContent = s.level.name.replace('_', ' ');
  badge.className = `badge level-${s.level.value}`;
  $('node').textContent = s.node;
}

function renderLevel(s) {
  const d = s.level.detail;
  const parts = [`In force: ${s.level.name.replace('_', ' ')}`];
  if (d && d.detected) parts.push(`detected: ${d.detected.replace('_', ' ')}`);
  if (d && d.override) parts.push(`pinned by ${d.override.by} (${d.override.reason})`);
  if (!d) parts.push('(attack-level detection not available in this build)');
  $('level-now').textContent = parts.join(' · ');
  const hist = (d && Array.isArray(d.history) ? d.history : []).slice(0, 10);
  fill(
    $('level-history'),
    hist.map((c) =>
      h(
        'tr',
        {},
        h('td', {}, ago(new Date(c.atWallMs).toISOString())),
        h('td', {}, `${c.from} → ${c.to}`),
        h('td', {}, c.by),
        h('td', {}, (c.reasons || []).join('; ')),
      ),
    ),
    4,
    'no change yet',
  );
}

function renderBans(s) {
  const b = s.bans;
  const rows = (b && Array.isArray(b.bans) ? b.bans : []).map((x) =>
    h(
      'tr',
      {},
      h('td', {}, x.target),
      h('td', {}, x.reason),
      h('td', {}, x.by),
      h('td', { title: x.expires }, until(x.expires)),
      h(
        'td',
        {},
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            'data-unban': x.target,
            onclick: () => act(`Unban ${x.target}`, 'DELETE', `/api/bans/${encodeURIComponent(x.target)}`),
          },
          'Unban',
        ),
      ),
    ),
  );
  fill($('bans'), rows, 5, b ? `no ban in force (mode ${b.mode})` : 'bans not available in this build');
}

function renderRules(s) {
  const sig = s.signatures;
  const rules = sig && Array.isArray(sig.rules) ? sig.rules : [];
  fill(
    $('rules'),
    rules.map((r) => {
      const buttons =
        r.state === 'proposed'
          ? h(
              'td',
              {},
              h(
                'button',
                {
                  type: 'button',
                  onclick: () => act(`Approve ${r.id}`, 'POST', `/api/signatures/${encodeURIComponent(r.id)}/approve`),
                },
                'Approve',
              ),
              ' ',
              h(
                'button',
                {
                  type: 'button',
                  class: 'danger',
                  onclick: () => act(`Reject ${r.id}`, 'POST', `/api/signatures/${encodeURIComponent(r.id)}/reject`),
                },
                'Reject',
              ),
            )
          : h('td', {});
      return h(
        'tr',
        {},
        h('td', {}, r.id),
        h('td', {}, `${r.state}${r.inForce ? ' (in force)' : ''}`),
        h('td', { class: 'detail' }, JSON.stringify(r.match)),
        h('td', { class: 'detail' }, JSON.stringify(r.evidence)),
        h('td', {}, fmt(r.hits, 0)),
        buttons,
      );
    }),
    6,
    sig ? 'no rule proposed' : 'signature mining not available in this build',
  );
  const top = sig && sig.top ? sig.top : {};
  const rows = [];
  // The values that gained most share against the calm baseline, three per feature.
  for (const [feature, list] of Object.entries(top)) {
    const risers = (list || [])
      .filter((t) => t.share > 0)
      .sort((a, b) => b.share - b.baselineShare - (a.share - a.baselineShare))
      .slice(0, 3);
    for (const t of risers)
      rows.push(
        h(
          'tr',
          {},
          h('td', {}, feature),
          h('td', { class: 'detail', title: t.value }, clip(t.value, 64)),
          h('td', {}, pct(t.share)),
          h('td', {}, pct(t.baselineShare)),
        ),
      );
  }
  fill($('top'), rows, 4, 'nothing stands out');
}

function renderGuards(s) {
  const g = s.guards && Array.isArray(s.guards.guards) ? s.guards.guards : [];
  fill(
    $('guards'),
    g.map((x) => {
      const sel = h(
        'select',
        { 'data-guard': x.name },
        ...['off', 'observe', 'enforce'].map((m) =>
          h('option', m === x.mode ? { value: m, selected: '' } : { value: m }, m),
        ),
      );
      const apply = h(
        'button',
        {
          type: 'button',
          onclick: () =>
            act(`${x.name} → ${sel.value}`, 'PUT', `/api/guards/${encodeURIComponent(x.name)}`, { mode: sel.value }),
        },
        'Set',
      );
      const reset = x.overridden
        ? h(
            'button',
            {
              type: 'button',
              onclick: () =>
                act(`${x.name} back to the file`, 'PUT', `/api/guards/${encodeURIComponent(x.name)}`, { mode: 'file' }),
            },
            'Reset',
          )
        : null;
      return h(
        'tr',
        {},
        h('td', {}, x.name),
        h('td', {}, x.overridden ? `${x.mode} (override)` : x.mode),
        h('td', {}, x.fileMode),
        h('td', {}, sel, ' ', apply, ' ', reset),
      );
    }),
    4,
    'no guard',
  );
  fill(
    $('decisions'),
    s.guardDecisions.map((x) =>
      h(
        'tr',
        {},
        h('td', {}, x.guard),
        h('td', {}, x.action),
        h('td', {}, x.reason),
        h('td', {}, x.rule),
        h('td', {}, fmt(x.perSec)),
      ),
    ),
    5,
    'no guard acted in the last second',
  );
}

function renderUpstreams(s) {
  fill(
    $('upstreams'),
    s.upstreams.flatMap((u) => [
      h(
        'tr',
        {},
        h('td', {}, u.name),
        h('td', { class: `state-${u.breaker}` }, u.breaker.replace('_', '-')),
        h(
          'td',
          { class: u.healthy === false ? 'state-unhealthy' : 'state-healthy' },
          u.healthy === null ? 'no check' : u.healthy ? 'healthy' : 'unhealthy',
        ),
        h('td', {}, u.limit === null ? `off` : fmt(u.limit, 0)),
        h('td', {}, fmt(u.inFlight, 0)),
        h('td', {}, `${fmt(u.p50Ms)} · ${fmt(u.p90Ms)} · ${fmt(u.p99Ms)}`),
      ),
      // A pool: one row per server (state, requests in flight, p50 · p99).
      ...((u.servers ?? []).length > 1 ? u.servers : []).map((sv) =>
        h(
          'tr',
          { class: 'server-row' },
          h('td', {}, `\u21b3 ${sv.name}`),
          h('td', { class: sv.state === 'up' ? 'state-healthy' : 'state-unhealthy' }, sv.state),
          h('td', {}, ''),
          h('td', {}, ''),
          h('td', {}, fmt(sv.inFlight, 0)),
          h('td', {}, `${fmt(sv.p50Ms)} · – · ${fmt(sv.p99Ms)}`),
        ),
      ),
    ]),
    6,
    'no upstream',
  );
  fill(
    $('routes'),
    s.routes.map((r) =>
      h(
        'tr',
        {},
        h('td', {}, r.name),
        h('td', {}, r.class),
        h('td', { class: `state-${r.serving}` }, r.serving),
        h('td', {}, r.fallback ? `${r.upstream} → ${r.fallback}` : r.upstream),
      ),
    ),
    4,
    'no route',
  );
}

function renderStatusPage(s) {
  const p = s.statusPage;
  if (!p) return;
  const ta = $('page-message');
  if (document.activeElement !== ta && ta.dataset.shown !== p.message) {
    ta.value = p.message;
    ta.dataset.shown = p.message;
  }
  $('page-state').textContent =
    `${p.overridden ? 'set from this cockpit' : 'from the configuration file'}${p.enabled ? '' : ' · status page disabled'}`;
}

async function refreshAudit() {
  try {
    const { events } = await api('GET', '/api/audit?limit=50');
    fill(
      $('audit'),
      events.map((e) =>
        h(
          'tr',
          {},
          h('td', { title: e.time }, ago(e.time)),
          h('td', {}, e.node),
          h('td', {}, e.kind),
          h('td', {}, e.who),
          h('td', {}, e.why),
          h('td', { class: 'detail' }, JSON.stringify(e.detail)),
        ),
      ),
      6,
      'nothing recorded yet',
    );
  } catch {
    // shown by the next action or the feed
  }
}

function onSnapshot(s) {
  points.push(s);
  if (points.length > HISTORY_POINTS) points.shift();
  renderTiles(s);
  renderCharts();
  renderLevel(s);
  renderBans(s);
  renderRules(s);
  renderGuards(s);
  renderUpstreams(s);
  renderStatusPage(s);
  if (s.auditSeq !== lastAuditSeq) {
    lastAuditSeq = s.auditSeq;
    refreshAudit();
  }
}

// ---- live feed: Server-Sent Events read with fetch (the token travels as a header) ----
async function feed(signal) {
  const res = await fetch('/api/events', {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    cache: 'no-store',
    signal,
  });
  if (res.status === 401) {
    signOut('The token was refused.');
    return;
  }
  if (!res.ok || !res.body) throw new Error(`live feed: HTTP ${res.status}`);
  $('conn').textContent = '● live';
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      let data = '';
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (data === '') continue;
      const parsed = JSON.parse(data);
      if (event === 'history') points = parsed.slice(-HISTORY_POINTS);
      else onSnapshot(parsed);
    }
  }
}
async function runFeed() {
  feedAbort?.abort();
  const ctl = new AbortController();
  feedAbort = ctl;
  while (!ctl.signal.aborted && token) {
    try {
      await feed(ctl.signal);
    } catch (err) {
      if (ctl.signal.aborted) return;
      $('conn').textContent = `○ reconnecting (${err.message})`;
    }
    if (!ctl.signal.aborted) {
      $('conn').textContent = '○ reconnecting';
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

// ---- actions ----
$('ban-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const target = $('ban-target').value.trim();
  const body = { target, ttlSec: Number($('ban-ttl').value) };
  const reason = $('ban-reason').value.trim();
  if (reason !== '') body.reason = reason;
  if (await act(`Ban ${target}`, 'POST', '/api/bans', body)) {
    $('ban-target').value = '';
    $('ban-reason').value = '';
  }
});
$('level-form').addEventListener('submit', (e) => {
  e.preventDefault();
  act(`Pin level ${$('level-select').value}`, 'PUT', '/api/level', {
    level: $('level-select').value,
    reason: $('level-reason').value.trim() || 'set from the cockpit',
  });
});
$('level-release').addEventListener('click', () => act('Release the level', 'DELETE', '/api/level'));
$('page-form').addEventListener('submit', (e) => {
  e.preventDefault();
  act('Status page message', 'PUT', '/api/status-page', { message: $('page-message').value });
});
$('page-reset').addEventListener('click', () => act('Status page message reset', 'DELETE', '/api/status-page'));

function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  refreshAudit();
  runFeed();
}

if (token) start();
else signOut('');
