// The cockpit's API without a browser: the live feed and the audit trail behind the token, guard
// modes and the status-page message switched at run time (kept across a reload), validation,
// the audit trail's SQLite file, retention and redaction, and /metrics behind a token when asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { AuditTrail, redact } from '../src/control/audit.ts';
import { MAX_SSE_CLIENTS } from '../src/control/cockpit.ts';
import { percentile } from '../src/control/snapshot.ts';
import { createLogger } from '../src/core/log.ts';
import { validateConfig } from '../src/config/load.ts';
import { cleanup, startGateway, startUpstream, tempDir, track, waitFor } from './helpers.ts';

const TOKEN = 'cockpit-unit-token-0123456789';
process.env.REMPART_ADMIN_TOKEN = TOKEN;
const AUTH = { authorization: `Bearer ${TOKEN}` };

function call(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = AUTH) {
  return fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (r) => ({
    status: r.status,
    body: (await r.json().catch(() => null)) as any,
  }));
}

/** The first `n` SSE frames of /api/events. */
async function frames(base: string, n: number): Promise<string[]> {
  const res = await fetch(`${base}/api/events`, { headers: AUTH });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const reader = res.body!.getReader();
  let text = '';
  while ((text.match(/\n\n/g) ?? []).length < n) text += new TextDecoder().decode((await reader.read()).value);
  await reader.cancel();
  return text.split('\n\n').slice(0, n);
}

test('without a token the feed, the audit trail and the cockpit endpoints answer 401; the page itself holds no data', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'error', requests: false } });
  for (const p of ['/api/events', '/api/audit', '/api/guards', '/api/status-page'])
    assert.equal((await call(gw.adminUrl!, 'GET', p, undefined, {})).status, 401, p);
  assert.equal(
    (await call(gw.adminUrl!, 'GET', '/api/events', undefined, { authorization: 'Bearer rmp_wrong-token-wrong-token' }))
      .status,
    401,
  );
  const page = await fetch(`${gw.adminUrl}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  const html = await page.text();
  assert.doesNotMatch(html, /<script>(?!<)/, 'no inline script');
  assert.equal((await fetch(`${gw.adminUrl}/dashboard/uplot.js`)).status, 200, 'uPlot served locally');
  assert.equal((await fetch(`${gw.adminUrl}/dashboard/../metrics`)).status, 200);
  assert.equal((await fetch(`${gw.adminUrl}/dashboard/nope.js`)).status, 404);
});

test('the live feed sends the recent history then one aggregate snapshot per second, and counts requests', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'error', requests: false } });
  await new Promise((r) => setTimeout(r, 1100));
  for (let i = 0; i < 30; i++) await fetch(`${gw.url}/x`).then((r) => r.arrayBuffer());
  // Requests go on while the feed is read: a second in which none was answered (a busy machine
  // between the burst and the subscription) shows zero, so the test takes the first that counts.
  let feeding = true;
  const traffic = (async () => {
    // A few a second: well under the default per-address rate limit.
    while (feeding) {
      await fetch(`${gw.url}/x`).then((r) => r.arrayBuffer());
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const [history, ...live] = await frames(gw.adminUrl!, 4).finally(() => (feeding = false));
  await traffic;
  assert.match(history!, /event: history/);
  const snaps = live.map((f) =>
    JSON.parse(
      f
        .split('\n')
        .find((l) => l.startsWith('data: '))!
        .slice(6),
    ),
  );
  const snap = snaps.find((s) => s.rps.byDecision.forwarded >= 1) ?? snaps[0];
  assert.equal(typeof snap.t, 'number');
  assert.ok(snap.rps.byDecision.forwarded >= 1, JSON.stringify(snap.rps));
  assert.ok(snap.rps.byClass.public >= 1);
  assert.equal(snap.upstreams[0].name, 'origin');
  assert.ok(snap.upstreams[0].p50Ms > 0, 'origin response time measured');
  assert.equal(snap.routes[0].serving, 'primary');
  assert.equal(snap.bans.mode, 'enforce', 'the defence state is read through the API handlers');
  assert.ok(Array.isArray(snap.guards.guards));
  // The upstream's servers are named by their configured host:port (127.0.0.1 here too): not a client's.
  assert.deepEqual(
    snap.upstreams[0].servers.map((s: { name: string }) => s.name),
    [new URL(up.url).host],
  );
  const withoutServers = { ...snap, upstreams: snap.upstreams.map((u: object) => ({ ...u, servers: [] })) };
  assert.ok(!JSON.stringify(withoutServers).includes('127.0.0.1'), 'no client address in the aggregates');
});

test(`at most ${MAX_SSE_CLIENTS} live-feed clients at once; the next gets 503`, async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'error', requests: false } });
  const aborts: AbortController[] = [];
  cleanup(t, () => {
    for (const a of aborts) a.abort();
  });
  for (let i = 0; i < MAX_SSE_CLIENTS; i++) {
    const a = new AbortController();
    aborts.push(a);
    assert.equal((await fetch(`${gw.adminUrl}/api/events`, { headers: AUTH, signal: a.signal })).status, 200);
  }
  assert.equal((await fetch(`${gw.adminUrl}/api/events`, { headers: AUTH })).status, 503);
  // A feed that goes away gives its place back (the response's close counts it out).
  aborts[0]!.abort();
  await waitFor(async () => {
    const a = new AbortController();
    aborts.push(a);
    return (await fetch(`${gw.adminUrl}/api/events`, { headers: AUTH, signal: a.signal })).status === 200;
  });
});

test('guard modes and the status-page message switch at run time, survive a reload, are validated, and are audited with who and why', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'error', requests: false } });
  const base = gw.adminUrl!;
  const set = await call(base, 'PUT', '/api/guards/rateLimit', {
    mode: 'observe',
    reason: 'false positives on /track',
  });
  assert.equal(set.status, 200);
  assert.deepEqual(set.body, { name: 'rateLimit', mode: 'observe', fileMode: 'enforce', overridden: true });
  assert.equal(
    gw.gateway.runtime().config.defense.rateLimit.mode,
    'observe',
    'the guard reads it from the runtime config',
  );
  for (const [path, body, want] of [
    ['/api/guards/rateLimit', { mode: 'loud' }, 400],
    ['/api/guards/rateLimit', { mode: 'off', extra: 1 }, 400],
    ['/api/guards/rateLimit', [1], 400],
    ['/api/guards/nope', { mode: 'off' }, 404],
    ['/api/status-page', { message: '' }, 400],
    ['/api/status-page', { message: 'x'.repeat(2001) }, 400],
    ['/api/status-page', { message: 'bell\u0007' }, 400],
  ] as const)
    assert.equal((await call(base, 'PUT', path, body)).status, want, `${path} ${JSON.stringify(body)}`);
  const bad = await fetch(`${base}/api/status-page`, {
    method: 'PUT',
    headers: { ...AUTH, 'content-type': 'application/json' },
    body: '{not json',
  });
  assert.equal(bad.status, 400);
  assert.equal(
    (await call(base, 'PUT', '/api/status-page', { message: 'We are <b>on it</b>.', reason: 'incident 42' })).status,
    200,
  );
  // A reload of the file keeps the operator's overrides.
  await gw.gateway.reload(
    validateConfig({
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'origin', url: up.url }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin' }],
      admin: { address: '127.0.0.1:0' },
      logging: { level: 'error', requests: false },
    }),
  );
  assert.equal(gw.gateway.runtime().config.defense.rateLimit.mode, 'observe');
  assert.equal(gw.gateway.runtime().config.statusPage.message, 'We are <b>on it</b>.');
  assert.equal((await call(base, 'PUT', '/api/guards/rateLimit', { mode: 'file' })).body.overridden, false);
  assert.equal(gw.gateway.runtime().config.defense.rateLimit.mode, 'enforce');
  const audit = (await call(base, 'GET', '/api/audit?limit=10')).body.events as {
    kind: string;
    who: string;
    why: string;
    detail: any;
  }[];
  assert.deepEqual(
    audit.map((e) => e.kind),
    ['guard_mode', 'config_reload', 'status_page', 'guard_mode'],
  );
  assert.equal(audit[3]!.who, 'operator:env');
  assert.equal(audit[3]!.why, 'false positives on /track');
  assert.equal(audit[3]!.detail.target, 'rateLimit');
  assert.equal((await call(base, 'GET', '/api/audit?kind=status_page')).body.events.length, 1);
  assert.equal((await call(base, 'GET', `/api/audit?since=${Date.now() + 60_000}`)).body.events.length, 0);
  for (const q of ['limit=0', 'limit=5000', 'limit=x', 'kind=DROP%20TABLE', 'since=yesterday'])
    assert.equal((await call(base, 'GET', `/api/audit?${q}`)).status, 400, q);
});

test('with admin.metricsRequireToken, /metrics needs a token; /healthz never does', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    admin: { address: '127.0.0.1:0', metricsRequireToken: true },
    logging: { level: 'error', requests: false },
  });
  assert.equal((await fetch(`${gw.adminUrl}/metrics`)).status, 401);
  assert.equal((await fetch(`${gw.adminUrl}/metrics`, { headers: AUTH })).status, 200);
  assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200);
});

test('the audit trail writes in batches to its SQLite file, prunes by age, and redacts secret-looking fields', async (t) => {
  const dir = tempDir(t, 'rmp-audit-');
  const file = join(dir, 'audit.db');
  let now = Date.UTC(2026, 0, 10);
  const log = createLogger('silent');
  const a = new AuditTrail({ file, retentionDays: 7, node: 'node-a', log, now: () => now });
  a.record('ban', 'operator:alice', 'flood', { target: '203.0.113.7' });
  now += 6 * 86_400_000;
  a.record('unban', 'operator:bob', 'mistake', {
    body: redact({ target: '203.0.113.7', token: 'rmp_secret', nested: { password: 'p' } }),
  });
  a.close();
  const db = new DatabaseSync(file);
  const rows = db.prepare('SELECT kind, who, node, detail FROM audit ORDER BY id').all() as {
    kind: string;
    who: string;
    node: string;
    detail: string;
  }[];
  db.close();
  assert.deepEqual(
    rows.map((r) => [r.kind, r.who, r.node]),
    [
      ['ban', 'operator:alice', 'node-a'],
      ['unban', 'operator:bob', 'node-a'],
    ],
  );
  assert.ok(!rows[1]!.detail.includes('rmp_secret') && !rows[1]!.detail.includes('"p"'), rows[1]!.detail);
  now += 2 * 86_400_000;
  const b = track(t, new AuditTrail({ file, retentionDays: 7, node: 'node-a', log, now: () => now }));
  assert.deepEqual(
    b.query().map((e) => e.kind),
    ['unban'],
    'the 8-day-old event was pruned at start',
  );
});

test('percentiles interpolate inside the bucket like histogram_quantile', () => {
  const bounds = [0.01, 0.1, 1];
  assert.equal(percentile([0, 0, 0, 0], bounds, 0.5), null);
  assert.equal(percentile([10, 0, 0, 0], bounds, 0.5), 5);
  assert.equal(percentile([0, 10, 0, 0], bounds, 0.9), 91);
  assert.equal(percentile([0, 0, 0, 4], bounds, 0.99), 1000);
});

test('the feed says whether admission is on, so the queue chart can say why nothing queues', async (t) => {
  const up = await startUpstream(t);
  // Admission is on by default: `off` is set explicitly where the test needs it off.
  const off = await startGateway(t, up.url, {
    logging: { level: 'error', requests: false },
    upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'off' } }],
  });
  const on = await startGateway(t, up.url, {
    logging: { level: 'error', requests: false },
    upstreams: [
      { name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 8 } },
      { name: 'spare', url: up.url, admission: { mode: 'off' } },
    ],
  });
  const snapOf = async (base: string) => {
    const [, live] = await frames(base, 2);
    return JSON.parse(
      live!
        .split('\n')
        .find((l) => l.startsWith('data: '))!
        .slice(6),
    );
  };
  const a = await snapOf(off.adminUrl!);
  assert.equal(a.admissionOn, false);
  assert.deepEqual(a.admissionOff, ['origin']);
  const b = await snapOf(on.adminUrl!);
  assert.equal(b.admissionOn, true);
  assert.deepEqual(b.admissionOff, ['spare']);
  // The history ring (what the charts are drawn from on connect) carries it too.
  const [history] = await frames(on.adminUrl!, 1);
  assert.match(history!, /"admissionOn":true/);
});

test('GET /api/audit treats empty parameters as absent, and /favicon.ico is not a 404', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'error', requests: false } });
  assert.equal(
    (await call(gw.adminUrl!, 'POST', '/api/bans', { target: '203.0.113.5', ttlSec: 60, reason: 'test' })).status < 300,
    true,
  );
  const all = await call(gw.adminUrl!, 'GET', '/api/audit');
  assert.equal(all.status, 200);
  assert.ok(all.body.events.length >= 1, JSON.stringify(all.body));
  for (const q of ['?since=&kind=&limit=', '?kind=', '?limit=', '?since=']) {
    const r = await call(gw.adminUrl!, 'GET', `/api/audit${q}`);
    assert.equal(r.status, 200, `${q}: ${JSON.stringify(r.body)}`);
    assert.deepEqual(r.body.events, all.body.events, q);
  }
  // A present but bad value is still refused.
  assert.equal((await call(gw.adminUrl!, 'GET', '/api/audit?limit=0')).status, 400);
  const icon = await fetch(`${gw.adminUrl}/favicon.ico`);
  assert.equal(icon.status, 204);
});
