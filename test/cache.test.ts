// The response cache end to end: a real gateway on port 0 in front of a recording upstream or the
// postal origin. Time is a manual clock, so freshness and stale windows pass without sleeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { cleanup, sleep, startGateway, startUpstream, track, waitFor } from './helpers.ts';
import { createManualClock } from '../src/core/clock.ts';
import { startPostalOrigin } from '../examples/postal/origin.ts';
import { ConfigError, validateConfig } from '../src/config/load.ts';

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const res = await fetch(url, { headers, method });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

const cacheableRoute = { name: 'tracking', path: '/*', upstream: 'origin', class: 'cacheable' };

test('a second request for a cacheable response is answered from memory: HIT, Age, one upstream request', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=60', 'x-origin': 'up' });
    res.end(JSON.stringify({ url: req.url }));
  });
  const clock = createManualClock();
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] }, { clock });
  const first = await get(`${gw.url}/track/A`);
  assert.equal(first.status, 200);
  assert.equal(first.headers.get('x-cache'), null);
  clock.advance(5_000);
  const second = await get(`${gw.url}/track/A`);
  assert.equal(second.status, 200);
  assert.equal(second.headers.get('x-cache'), 'HIT');
  assert.equal(second.headers.get('age'), '5');
  assert.equal(second.headers.get('content-type'), 'application/json');
  assert.equal(second.headers.get('x-origin'), 'up');
  assert.equal(second.body, first.body);
  const head = await fetch(`${gw.url}/track/A`, { method: 'HEAD' });
  assert.equal(head.headers.get('x-cache'), 'HIT');
  assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(first.body)));
  assert.equal(up.requests.length, 1);

  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /^rempart_cache_lookups_total\{route="tracking",result="hit"\} 2$/m);
  assert.match(metrics, /^rempart_cache_lookups_total\{route="tracking",result="miss"\} 1$/m);
  assert.match(
    metrics,
    /^rempart_requests_total\{route="tracking",class="cacheable",decision="cache_hit",code="200"\} 2$/m,
  );
  assert.match(metrics, /^rempart_cache_entries 1$/m);
  assert.match(metrics, /^rempart_cache_bytes [1-9]\d*$/m);
  const lines = gw.logs.filter((l) => l.msg === 'request');
  assert.equal(lines[0]!.cache, 'miss:stored');
  assert.equal(lines[1]!.cache, 'hit');
  assert.equal(lines[1]!.decision, 'cache_hit');
});

test('responses with Set-Cookie, private, no-store, no freshness or a 5xx status are never stored', async (t) => {
  const kinds: Record<string, Record<string, string>> = {
    '/cookie': { 'cache-control': 'public, max-age=60', 'set-cookie': 'sid=1' },
    '/private': { 'cache-control': 'private, max-age=60' },
    '/nostore': { 'cache-control': 'no-store' },
    '/plain': {},
  };
  const up = await startUpstream(t, (req, res) => {
    const h = kinds[req.url!];
    res.writeHead(h ? 200 : 500, h ?? { 'cache-control': 'public, max-age=60' });
    res.end('x');
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] });
  for (const path of [...Object.keys(kinds), '/error']) {
    for (let i = 0; i < 2; i++) {
      const r = await get(`${gw.url}${path}`);
      assert.equal(r.headers.get('x-cache'), null, path);
    }
    assert.equal(up.requests.filter((r) => r.url === path).length, 2, `${path} reached the upstream each time`);
  }
  const notes = gw.logs.filter((l) => l.msg === 'request').map((l) => l.cache);
  for (const reason of ['set_cookie', 'private', 'no_store', 'no_freshness', 'status'])
    assert.ok(notes.includes(`miss:not_stored:${reason}`), reason);
  assert.equal(gw.gateway.cache.store.entries, 0);
});

test('Vary: Accept-Encoding keeps one variant per encoding', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding' });
    res.end(`variant for ${req.headers['accept-encoding'] ?? 'none'}`);
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] });
  for (let round = 0; round < 2; round++) {
    for (const enc of ['gzip', 'br']) {
      const r = await get(`${gw.url}/page`, { 'accept-encoding': enc });
      assert.equal(r.body, `variant for ${enc}`);
      assert.equal(r.headers.get('x-cache'), round === 0 ? null : 'HIT');
    }
  }
  assert.equal(up.requests.length, 2);
  assert.equal(gw.gateway.cache.store.entries, 2);
});

test('50 concurrent misses for one key send exactly one request to the upstream and all 50 get the answer', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream(t, (_req, res) => {
    // Answer only once everyone is queued behind the first request (or after a generous bound).
    void Promise.race([held, sleep(5_000)]).then(() => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60' });
      res.end('the one answer');
    });
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] });
  cleanup(t, () => release());
  const answers = Array.from({ length: 50 }, () => get(`${gw.url}/track/hot`));
  // The first request is at the upstream; the 49 others wait on it in the gateway.
  await waitFor(() => up.requests.length === 1 && gw.gateway.cache.waiting() === 49, {
    timeoutMs: 10_000,
    intervalMs: 20,
  });
  release();
  const all = await Promise.all(answers);
  for (const a of all) {
    assert.equal(a.status, 200);
    assert.equal(a.body, 'the one answer');
  }
  assert.equal(up.requests.length, 1);
  const notes = gw.logs.filter((l) => l.msg === 'request').map((l) => l.cache);
  assert.equal(notes.filter((n) => n === 'miss:stored').length, 1);
  assert.equal(notes.length, 50);
  assert.equal(notes.filter((n) => n === 'collapsed').length, 49);
  assert.equal(gw.gateway.cache.waiting(), 0);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /^rempart_cache_lookups_total\{route="tracking",result="collapsed"\} 49$/m);
});

test('a response larger than cache.maxObjectBytes passes through and is not stored', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end(Buffer.alloc(5000, 'a'));
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute], cache: { maxObjectBytes: 1000 } });
  for (let i = 0; i < 2; i++) assert.equal((await get(`${gw.url}/big`)).body.length, 5000);
  assert.equal(up.requests.length, 2);
  assert.equal(gw.gateway.cache.store.entries, 0);
});

test('postal tracking: random query strings do not bust the cache (20 requests, 1 origin request)', async (t) => {
  const origin = track(t, await startPostalOrigin({ port: 0, workers: 8, serviceTimeMs: 1, queueLength: 100 }));
  const gw = await startGateway(t, origin.url, {
    routes: [{ name: 'tracking', path: '/track/*', methods: ['GET', 'HEAD'], upstream: 'origin', class: 'cacheable' }],
  });
  for (let i = 0; i < 20; i++) {
    const r = await get(`${gw.url}/track/A?x=${Math.random().toString(36).slice(2)}`);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).id, 'A');
  }
  assert.equal(origin.stats().byRoute['GET /track/:id'], 1);
});

test('postal origin down: tracking is still answered from the stale copy while a non-cacheable route gets 502', async (t) => {
  const origin = track(t, await startPostalOrigin({ port: 0, workers: 8, serviceTimeMs: 1, queueLength: 100 }));
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    origin.url,
    {
      routes: [
        { name: 'tracking', path: '/track/*', methods: ['GET', 'HEAD'], upstream: 'origin', class: 'cacheable' },
        { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
      ],
    },
    { clock },
  );
  const fresh = await get(`${gw.url}/track/6A12345678901`);
  assert.equal(fresh.status, 200);
  // Past max-age=30 and the 10 s stale-while-revalidate window: usable only when the origin fails.
  clock.advance(30_000 + 10_000 + 1_000);
  origin.setDown(true);
  const stale = await get(`${gw.url}/track/6A12345678901`);
  assert.equal(stale.status, 200);
  assert.equal(stale.headers.get('x-cache'), 'STALE');
  assert.equal(stale.body, fresh.body);
  const site = await get(`${gw.url}/`);
  assert.equal(site.status, 502);
  const lines = gw.logs.filter((l) => l.msg === 'request');
  const staleLine = lines.find((l) => l.decision === 'stale')!;
  assert.equal(staleLine.cache, 'stale:error');
  assert.match(String(staleLine.reason), /^RMP_ERR_UPSTREAM_/);
  // A tracking id never seen before has no copy: the failure shows.
  assert.equal((await get(`${gw.url}/track/NEVERSEEN`)).status, 502);
  // Past the stale-if-error window (24 h by default) the copy is gone too.
  clock.advance(86_400_000);
  assert.equal((await get(`${gw.url}/track/6A12345678901`)).status, 502);
});

test('a 5xx from the origin is replaced by the stale copy while within stale-if-error', async (t) => {
  let failing = false;
  const up = await startUpstream(t, (_req, res) => {
    if (failing) {
      res.writeHead(503, { 'retry-after': '1' });
      res.end('overloaded');
      return;
    }
    res.writeHead(200, { 'cache-control': 'max-age=10' });
    res.end('good copy');
  });
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    up.url,
    { routes: [{ ...cacheableRoute, cache: { staleWhileRevalidateMs: 0 } }] },
    { clock },
  );
  assert.equal((await get(`${gw.url}/x`)).body, 'good copy');
  clock.advance(11_000);
  failing = true;
  const r = await get(`${gw.url}/x`);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'good copy');
  assert.equal(r.headers.get('x-cache'), 'STALE');
  assert.equal(up.requests.length, 2);
  const line = gw.logs.filter((l) => l.msg === 'request').at(-1)!;
  assert.equal(line.reason, 'RMP_ERR_UPSTREAM_STATUS');
  assert.equal(line.cache, 'stale:upstream_5xx');
});

test('stale-while-revalidate serves the stale copy at once and one background request updates the entry', async (t) => {
  let version = 0;
  const up = await startUpstream(t, (_req, res) => {
    version++;
    res.writeHead(200, { 'cache-control': 'public, max-age=10' });
    res.end(`v${version}`);
  });
  const clock = createManualClock();
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] }, { clock });
  assert.equal((await get(`${gw.url}/t`)).body, 'v1');
  clock.advance(12_000); // stale, within the default 10 s stale-while-revalidate window
  const stale = await get(`${gw.url}/t`);
  assert.equal(stale.body, 'v1');
  assert.equal(stale.headers.get('x-cache'), 'STALE');
  await waitFor(
    async () => {
      const r = await get(`${gw.url}/t`);
      return r.body === 'v2' && r.headers.get('x-cache') === 'HIT';
    },
    { timeoutMs: 10_000, intervalMs: 20 },
  );
  assert.equal(up.requests.length, 2, 'one background refresh, however many stale answers');
});

test('a stale-while-revalidate refresh takes an admission slot, and none is sent while the origin is at its limit', async (t) => {
  let version = 0;
  let holdSlow: (() => void) | null = null;
  let holdRefresh: (() => void) | null = null;
  let refreshHeld = false;
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') {
      holdSlow = () => res.end('slow');
      return;
    }
    version++;
    const answer = () => {
      res.writeHead(200, { 'cache-control': 'public, max-age=10' });
      res.end(`v${version}`);
    };
    if (refreshHeld) holdRefresh = answer;
    else answer();
  });
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    up.url,
    {
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
      routes: [{ name: 'slow', path: '/slow', upstream: 'origin', class: 'public' }, cacheableRoute],
    },
    { clock },
  );
  const gate = gw.gateway.runtime().upstreams.get('origin')!.admission;
  assert.equal((await get(`${gw.url}/t`)).body, 'v1');
  clock.advance(12_000); // stale, within the stale-while-revalidate window

  // The origin's one slot is taken: the stale copy answers and no refresh goes out.
  const slow = get(`${gw.url}/slow`);
  await waitFor(() => holdSlow !== null, { timeoutMs: 10_000, intervalMs: 20 });
  assert.equal(gate.limiter.inFlight, 1);
  const stale = await get(`${gw.url}/t`);
  assert.equal(stale.headers.get('x-cache'), 'STALE');
  assert.equal(stale.body, 'v1');
  await sleep(50);
  assert.equal(up.requests.filter((r) => r.url === '/t').length, 1, 'no refresh past the limit');
  holdSlow!();
  assert.equal((await slow).body, 'slow');
  await waitFor(() => gate.limiter.inFlight === 0, { timeoutMs: 10_000, intervalMs: 20 });

  // A slot is free: the next stale answer starts a refresh, which holds the slot until it ends.
  refreshHeld = true;
  assert.equal((await get(`${gw.url}/t`)).headers.get('x-cache'), 'STALE');
  await waitFor(() => holdRefresh !== null, { timeoutMs: 10_000, intervalMs: 20 });
  assert.equal(gate.limiter.inFlight, 1, 'the refresh holds the slot');
  holdRefresh!();
  await waitFor(() => gate.limiter.inFlight === 0, { timeoutMs: 10_000, intervalMs: 20 });
  await waitFor(async () => (await get(`${gw.url}/t`)).body === 'v2', { timeoutMs: 10_000, intervalMs: 20 });
});

test('routes that do not cache are untouched, and a route can opt in with cache.enabled', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'cache-control': 'public, max-age=60' });
    res.end('x');
  });
  const gw = await startGateway(t, up.url, {
    routes: [
      { name: 'optin', path: '/in/*', upstream: 'origin', class: 'authenticated', cache: { enabled: true } },
      { name: 'optout', path: '/out/*', upstream: 'origin', class: 'cacheable', cache: { enabled: false } },
      { name: 'vault', path: '/vault/*', upstream: 'origin', class: 'authenticated' },
      { name: 'pay', path: '/pay', upstream: 'origin', class: 'critical' },
      { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
    ],
  });
  for (const p of ['/in/a', '/out/a', '/vault/a', '/pay', '/site'])
    for (let i = 0; i < 2; i++) await get(`${gw.url}${p}`);
  assert.equal(up.requests.filter((r) => r.url === '/in/a').length, 1);
  assert.equal(up.requests.filter((r) => r.url === '/out/a').length, 2);
  // authenticated and critical routes do not cache unless told; public ones do by default.
  assert.equal(up.requests.filter((r) => r.url === '/vault/a').length, 2);
  assert.equal(up.requests.filter((r) => r.url === '/pay').length, 2);
  assert.equal(up.requests.filter((r) => r.url === '/site').length, 1);
  const post = await fetch(`${gw.url}/in/a`, { method: 'POST', body: 'x' });
  assert.equal(post.headers.get('x-cache'), null);
  await post.text();
  assert.equal(up.requests.filter((r) => r.url === '/in/a').length, 2, 'POST bypasses the cache');
});

test('when the request filling a key is abandoned by its client, one waiter takes the fill over and the others wait on it', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream(t, (_req, res) => {
    void Promise.race([held, sleep(5_000)]).then(() => {
      if (res.destroyed) return;
      res.writeHead(200, { 'cache-control': 'public, max-age=60' });
      res.end('answer');
    });
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] });
  cleanup(t, () => release());
  const abort = new AbortController();
  const first = fetch(`${gw.url}/k`, { signal: abort.signal }).catch((err: Error) => err);
  await waitFor(() => up.requests.length === 1, { timeoutMs: 10_000, intervalMs: 20 });
  const waiters = [get(`${gw.url}/k`), get(`${gw.url}/k`)];
  await waitFor(() => gw.gateway.cache.waiting() === 2, { timeoutMs: 10_000, intervalMs: 20 });
  abort.abort();
  assert.ok((await first) instanceof Error);
  // One waiter goes to the upstream in the abandoned fill's place; the other waits on it.
  await waitFor(() => up.requests.length === 2 && gw.gateway.cache.waiting() === 1, {
    timeoutMs: 10_000,
    intervalMs: 20,
  });
  release();
  for (const r of await Promise.all(waiters)) {
    assert.equal(r.status, 200);
    assert.equal(r.body, 'answer');
  }
  assert.equal(up.requests.length, 2, 'an abandoned fill costs the origin one more request, not one per waiter');
});

test('a copy stored from an anonymous request does not answer a request with Authorization unless it was public', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'cache-control': req.url === '/public' ? 'public, max-age=60' : 'max-age=60' });
    res.end(req.url);
  });
  const gw = await startGateway(t, up.url, { routes: [cacheableRoute] });
  for (const path of ['/shared', '/public']) {
    await get(`${gw.url}${path}`);
    assert.equal((await get(`${gw.url}${path}`)).headers.get('x-cache'), 'HIT');
  }
  const authed = await get(`${gw.url}/shared`, { authorization: 'Bearer t' });
  assert.equal(authed.headers.get('x-cache'), null);
  assert.equal((await get(`${gw.url}/public`, { authorization: 'Bearer t' })).headers.get('x-cache'), 'HIT');
  assert.equal(up.requests.filter((r) => r.url === '/shared').length, 2);
  assert.equal(up.requests.filter((r) => r.url === '/public').length, 1);
  const line = gw.logs.filter((l) => l.msg === 'request').find((l) => l.cache === 'bypass:authorization');
  assert.ok(line);
});

test('the API-key header is treated as Authorization: not stored without public, and never answered from a private copy', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    const key = req.headers['x-api-key'] ?? req.headers['x-token'] ?? 'anonymous';
    res.writeHead(200, { 'cache-control': req.url === '/public' ? 'public, max-age=60' : 'max-age=60' });
    res.end(`${req.url} for ${key}`);
  });
  const gw = await startGateway(t, up.url, {
    routes: [cacheableRoute],
    defense: { exfiltration: { apiKeyHeader: 'X-Token' } },
  });
  for (const [p, header] of [
    ['/me', 'x-api-key'],
    ['/me2', 'x-token'],
  ] as const) {
    assert.equal((await get(`${gw.url}${p}`, { [header]: 'alice' })).body, `${p} for alice`);
    const anonymous = await get(`${gw.url}${p}`);
    assert.equal(anonymous.body, `${p} for anonymous`, 'an answer to a request with an API key is not stored');
    assert.equal(anonymous.headers.get('x-cache'), null);
    // Stored from the anonymous request now: that copy does not answer bob.
    const bob = await get(`${gw.url}${p}`, { [header]: 'bob' });
    assert.equal(bob.body, `${p} for bob`);
    assert.equal(bob.headers.get('x-cache'), null);
    assert.equal((await get(`${gw.url}${p}`)).headers.get('x-cache'), 'HIT');
  }
  // RFC 9111 §3.5 on a route the operator switched on: an answer marked public is stored and shared.
  assert.equal((await get(`${gw.url}/public`, { 'x-api-key': 'alice' })).body, '/public for alice');
  assert.equal((await get(`${gw.url}/public`, { 'x-api-key': 'bob' })).headers.get('x-cache'), 'HIT');
  const lines = gw.logs.filter((l) => l.msg === 'request').map((l) => String(l.cache));
  assert.ok(lines.includes('miss:not_stored:authorization'), lines.join(' '));
  assert.ok(lines.includes('bypass:authorization'), lines.join(' '));
});

test('on a route the operator switched on, a cookie neither bypasses the cache nor keeps it from filling', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end(`page ${req.url}`);
  });
  const gw = await startGateway(t, up.url, {
    // 104 requests from one address: past the default per-address burst.
    defense: { rateLimit: { mode: 'off' } },
    routes: [
      { name: 'track', path: '/track/*', upstream: 'origin', class: 'cacheable' },
      { name: 'on', path: '/on/*', upstream: 'origin', class: 'public', cache: { enabled: true } },
    ],
  });
  for (const p of ['/track/A', '/on/A']) {
    // A request with a cookie fills the copy, and a flood of them each with its own cookie is answered from it.
    assert.equal((await get(`${gw.url}${p}`, { cookie: 'a=first' })).headers.get('x-cache'), null);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => get(`${gw.url}${p}`, { cookie: `a=${i}` })));
    for (const a of answers) assert.equal(a.headers.get('x-cache'), 'HIT', p);
    assert.equal((await get(`${gw.url}${p}`)).headers.get('x-cache'), 'HIT');
    assert.equal(up.requests.filter((r) => r.url === p).length, 1, p);
  }
});

test('cache settings have defaults, and a misspelt cache key stops start-up', () => {
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:8080' }],
    upstreams: [{ name: 'app', url: 'http://127.0.0.1:3000' }],
  };
  const ok = validateConfig({ ...base, routes: [{ name: 't', upstream: 'app', class: 'cacheable', cache: {} }] });
  assert.deepEqual(ok.cache, { maxBytes: 64 * 1024 * 1024, maxObjectBytes: 1024 * 1024 });
  assert.deepEqual(ok.routes[0]!.cache, {
    staleWhileRevalidateMs: 10_000,
    staleIfErrorMs: 86_400_000,
  });
  // queryParams left out: none for `cacheable` (the postal tracking test below), the whole target for
  // other classes (test/defaults.test.ts).
  for (const bad of [
    { routes: [{ name: 't', upstream: 'app', cache: { enabeld: true } }] },
    { routes: [{ name: 't', upstream: 'app' }], cache: { maxByte: 1 } },
  ]) {
    assert.throws(
      () => validateConfig({ ...base, ...bad }),
      (err: unknown) => err instanceof ConfigError && err.code === 'RMP_ERR_CONFIG_INVALID',
    );
  }
});

test('an upstream that varies on a name like `constructor` is still answered, and lookups never read Object.prototype', async (t) => {
  const up = await startUpstream(t, (_req, res) =>
    res.writeHead(200, { 'cache-control': 'public, max-age=60', vary: 'constructor', 'content-length': '2' }).end('ok'),
  );
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'tracking', path: '/*', upstream: 'origin', class: 'cacheable' }],
  });
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${gw.url}/track/A`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok');
  }
});

test('thousands of distinct 15 KB Accept-Encoding values: the cache stays within maxBytes and the heap stays bounded', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const heap = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  // An origin that keeps nothing (the recording one would hold every header it saw).
  const seen = new Map<string, number>();
  const origin = http.createServer((req, res) => {
    const ae = String(req.headers['accept-encoding'] ?? '');
    if (ae.length < 100) seen.set(ae, (seen.get(ae) ?? 0) + 1);
    else seen.set('long', (seen.get('long') ?? 0) + 1);
    res.writeHead(200, { 'cache-control': 'max-age=600', vary: 'Accept-Encoding, Accept-Language' }).end('tracked');
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  cleanup(t, () => new Promise<void>((r) => origin.close(() => r())));
  const maxBytes = 4 * 1048576;
  const gw = await startGateway(t, `http://127.0.0.1:${(origin.address() as AddressInfo).port}`, {
    routes: [cacheableRoute],
    cache: { maxBytes, maxObjectBytes: 65536 },
    logging: { level: 'error', requests: false },
    defense: { rateLimit: { mode: 'off' } },
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  cleanup(t, () => agent.destroy());
  let lastCache: string | undefined;
  const send = (path: string, headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      http
        .get(`${gw.url}${path}`, { agent, headers }, (res) => {
          lastCache = res.headers['x-cache'] as string | undefined;
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        })
        .on('error', reject);
    });
  const before = heap();
  const n = 2000;
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const filler = 'x'.repeat(15000);
      // Half carry a known coding among the noise; every tenth a huge Accept-Language instead.
      const headers: Record<string, string> = {
        'accept-encoding': i % 2 === 0 ? `${i},${filler}` : `gzip, ${i}${filler}`,
      };
      if (i % 10 === 0) {
        headers['accept-encoding'] = 'gzip';
        headers['accept-language'] = `${i}${filler}`;
      }
      assert.equal(await send(`/track/${i}`, headers), 200);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  const grown = heap() - before;
  const store = gw.gateway.cache.store;
  assert.ok(store.bytes <= maxBytes, `the store holds ${store.bytes} bytes`);
  assert.ok(
    grown < 16 * 1048576,
    `2,000 requests with 15 KB Accept-Encoding grew the heap by ${(grown / 1048576).toFixed(1)} MiB`,
  );
  // The origin saw Accept-Encoding as the cache files it, never the client's 15 KB.
  assert.deepEqual([...seen.keys()].sort(), ['', 'gzip']);
  assert.ok(
    store.entries >= 1000 && store.entries <= 1800,
    `${store.entries} entries: the huge Accept-Language ones were not stored`,
  );
  // A hit for a request whose noise differs: the same normalised value.
  assert.equal(await send('/track/1', { 'accept-encoding': 'GZIP;q=0.5, x-other' }), 200);
  assert.equal(lastCache, 'HIT');
});
