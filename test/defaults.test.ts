// What a config that writes nothing about the cache or rate limits gets (docs/defaults.md): the test
// gateway's one route is `class: public` with no `cache` and no `defense`, as zero-config's is
// (src/cli.ts configFromFlags). Each test fails when the default it names is taken away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGateway, startUpstream, waitFor } from './helpers.ts';
import { createManualClock } from '../src/core/clock.ts';
import { configFromFlags } from '../src/cli.ts';
import { DEFAULT_RATE_LIMIT_RULE } from '../src/phases/ratelimit/schema.ts';

interface Answer {
  status: number;
  xcache: string | null;
  body: string;
}

/** One request on its own connection, from `localAddress` (any 127.0.0.0/8 address on Linux). */
function send(
  url: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; localAddress?: string; body?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${path}`,
      { method: opts.method ?? 'GET', headers: opts.headers, localAddress: opts.localAddress, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, xcache: (res.headers['x-cache'] as string | undefined) ?? null, body }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** An upstream answering each path with the response headers its handler's table gives. */
async function upstreamWith(t: Parameters<typeof startUpstream>[0], heads: Record<string, Record<string, string>>) {
  return startUpstream(t, (req, res) => {
    const path = req.url!.split('?')[0]!;
    res.writeHead(200, { 'content-type': 'text/plain', ...(heads[path] ?? {}) });
    res.end(`answer for ${req.url}`);
  });
}

const hits = (up: { requests: { url: string }[] }, url: string) => up.requests.filter((r) => r.url === url).length;

test('zero-config caches: routes of class public store what the origin addresses to shared caches, and nothing else', async (t) => {
  const up = await upstreamWith(t, {
    '/public': { 'cache-control': 'public, max-age=60' },
    '/maxage': { 'cache-control': 'max-age=60' },
    '/smaxage': { 'cache-control': 's-maxage=60' },
    '/cookie': { 'cache-control': 'public, max-age=60', 'set-cookie': 'sid=0123456789abcdef0123456789abcdef' },
    '/private': { 'cache-control': 'private, max-age=60' },
    '/nostore': { 'cache-control': 'no-store, max-age=60' },
    '/varystar': { 'cache-control': 'public, max-age=60', vary: '*' },
    '/nolifetime': { 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' },
  });
  const gw = await startGateway(t, up.url);
  assert.equal(gw.gateway.defense.getRuntime().routes[0]!.cache === null, false, 'the cache is on by default');
  for (const p of ['/public', '/smaxage']) {
    assert.equal((await send(gw.url, p)).xcache, null);
    const second = await send(gw.url, p);
    assert.equal(second.xcache, 'HIT', p);
    assert.equal(second.body, `answer for ${p}`);
    assert.equal(hits(up, p), 1, `${p} is stored`);
  }
  // No heuristic freshness, no cookie, nothing private; and a bare max-age, which origins also send
  // browsers for one person's page, is not taken as leave to share: each reaches the origin every time.
  for (const p of ['/maxage', '/cookie', '/private', '/nostore', '/varystar', '/nolifetime']) {
    for (let i = 0; i < 3; i++) assert.equal((await send(gw.url, p)).xcache, null, p);
    assert.equal(hits(up, p), 3, `${p} is not stored`);
  }
  const reasons = gw.logs.filter((l) => l.msg === 'request').map((l) => String(l.cache));
  assert.ok(reasons.includes('miss:not_stored:set_cookie'), reasons.join(' '));
  assert.ok(reasons.includes('miss:not_stored:no_freshness'), reasons.join(' '));
  assert.ok(reasons.includes('miss:not_stored:not_public'), reasons.join(' '));
});

test('zero-config caches: a request with a cookie, Authorization or an API key never fills the cache, and is answered from a public copy', async (t) => {
  // An origin that answers each caller their own page, and (wrongly) calls it public.
  const up = await startUpstream(t, (req, res) => {
    const who = req.headers['x-api-key'] ?? req.headers.authorization ?? req.headers.cookie ?? 'anonymous';
    res.writeHead(200, { 'cache-control': 'public, max-age=60' });
    res.end(`page of ${who}`);
  });
  const gw = await startGateway(t, up.url);
  const people: Record<string, string>[] = [
    { cookie: 'sid=0123456789abcdef0123456789abcdef' },
    { authorization: 'Bearer alice' },
    { 'x-api-key': 'alice' },
  ];
  for (const headers of people) {
    const own = `page of ${Object.values(headers)[0]}`;
    assert.equal((await send(gw.url, '/me', { headers })).body, own);
    assert.equal((await send(gw.url, '/me', { headers })).body, own);
  }
  assert.equal(hits(up, '/me'), 6, 'a request with a cookie or credentials fills nothing, even when public');
  const anonymous = await send(gw.url, '/me');
  assert.equal(anonymous.xcache, null);
  assert.equal(anonymous.body, 'page of anonymous');
  assert.equal(hits(up, '/me'), 7);
  // The copy an anonymous request filled, marked public, may answer anyone.
  for (const headers of [...people, {}]) {
    const r = await send(gw.url, '/me', { headers });
    assert.equal(r.xcache, 'HIT');
    assert.equal(r.body, 'page of anonymous');
  }
  assert.equal(hits(up, '/me'), 7);
  // Rempart's own cookies never reach the origin, so they do not count as a cookie here.
  assert.equal((await send(gw.url, '/me', { headers: { cookie: '__rempart_clearance=x' } })).xcache, 'HIT');
  const reasons = gw.logs.filter((l) => l.msg === 'request').map((l) => String(l.cache));
  assert.ok(reasons.includes('miss:request_cookie'), reasons.join(' '));
  assert.ok(reasons.includes('miss:authorization'), reasons.join(' '));
});

test('zero-config caches: the API-key header Rempart is configured with counts as a credential', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'cache-control': 'public, max-age=60' });
    res.end(`page of ${req.headers['x-token'] ?? 'anonymous'}`);
  });
  const gw = await startGateway(t, up.url, { defense: { rateLimit: { apiKeyHeader: 'X-Token' } } });
  assert.equal((await send(gw.url, '/me', { headers: { 'x-token': 'alice' } })).body, 'page of alice');
  const anonymous = await send(gw.url, '/me');
  assert.equal(anonymous.xcache, null);
  assert.equal(anonymous.body, 'page of anonymous');
});

test('zero-config caches: a stale public copy is refreshed without the requester\u2019s cookie or credentials', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    const who = req.headers.authorization ?? req.headers['x-api-key'] ?? req.headers.cookie ?? 'anonymous';
    res.writeHead(200, { 'cache-control': 'public, max-age=1' });
    res.end(`hello ${who}`);
  });
  const clock = createManualClock();
  const gw = await startGateway(t, up.url, {}, { clock });
  assert.equal((await send(gw.url, '/home')).body, 'hello anonymous');
  const credentials = { authorization: 'Bearer alice', 'x-api-key': 'alice', cookie: 'sid=alice' };
  // Past freshness, within stale-while-revalidate: the stale copy answers and one refresh goes out.
  clock.advance(2_000);
  const stale = await send(gw.url, '/home', { headers: credentials });
  assert.equal(stale.xcache, 'STALE');
  assert.equal(stale.body, 'hello anonymous');
  await waitFor(() => up.requests.length === 2, { timeoutMs: 10_000, intervalMs: 20 });
  const refresh = up.requests[1]!;
  for (const name of Object.keys(credentials)) assert.equal(refresh.headers[name], undefined, name);
  // Once the refresh is stored, the copy is fresh again (and the origin saw no one else).
  await waitFor(async () => (await send(gw.url, '/home')).xcache === 'HIT', { timeoutMs: 10_000, intervalMs: 20 });
  assert.equal(up.requests.length, 2);
  const after = await send(gw.url, '/home');
  assert.equal(after.xcache, 'HIT');
  assert.equal(after.body, 'hello anonymous');
});

test('zero-config caches without changing what the origin receives: the query string is keyed and sent whole', async (t) => {
  const up = await upstreamWith(t, { '/search': { 'cache-control': 'public, max-age=60' } });
  const gw = await startGateway(t, up.url);
  assert.equal((await send(gw.url, '/search?q=a&page=2')).body, 'answer for /search?q=a&page=2');
  assert.equal((await send(gw.url, '/search?q=b')).body, 'answer for /search?q=b');
  const again = await send(gw.url, '/search?q=a&page=2');
  assert.equal(again.xcache, 'HIT');
  assert.equal(again.body, 'answer for /search?q=a&page=2');
  assert.deepEqual(
    up.requests.map((r) => r.url),
    ['/search?q=a&page=2', '/search?q=b'],
  );
});

test('zero-config caches: a page the origin lets nobody store is not serialised behind one request', async (t) => {
  let inFlight = 0;
  let most = 0;
  const up = await startUpstream(t, (_req, res) => {
    most = Math.max(most, ++inFlight);
    setTimeout(() => {
      inFlight--;
      res.writeHead(200, { 'cache-control': 'no-store' });
      res.end('page');
    }, 200);
  });
  const gw = await startGateway(t, up.url);
  await send(gw.url, '/page');
  most = 0;
  // Without the key remembered as unstorable, two of these would wait for the first one's answer.
  await Promise.all([send(gw.url, '/page'), send(gw.url, '/page'), send(gw.url, '/page')]);
  assert.equal(most, 3);
  const notes = gw.logs.filter((l) => l.msg === 'request').map((l) => String(l.cache));
  assert.equal(notes.filter((n) => n.startsWith('miss:pass')).length, 3, notes.join(' '));
});

test('zero-config stale-if-error: a stored copy answers when the origin says 503, then when it refuses connections', async (t) => {
  let failing = false;
  const up = await startUpstream(t, (_req, res) => {
    if (failing) {
      res.writeHead(503, { 'retry-after': '1' });
      res.end('overloaded');
      return;
    }
    res.writeHead(200, { 'cache-control': 'public, max-age=1' });
    res.end('good copy');
  });
  const clock = createManualClock();
  const gw = await startGateway(t, up.url, {}, { clock });
  assert.equal((await send(gw.url, '/home')).body, 'good copy');
  // Past freshness and the stale-while-revalidate window: the request goes to the origin.
  clock.advance(60_000);
  failing = true;
  const on503 = await send(gw.url, '/home');
  assert.equal(on503.status, 200);
  assert.equal(on503.xcache, 'STALE');
  assert.equal(on503.body, 'good copy');
  assert.equal(up.requests.length, 2);
  const uncached = await send(gw.url, '/never-stored');
  assert.equal(uncached.status, 503, 'without a copy the origin\u2019s answer goes through');
  await up.close();
  clock.advance(60_000);
  const refused = await send(gw.url, '/home');
  assert.equal(refused.status, 200);
  assert.equal(refused.xcache, 'STALE');
  assert.equal(refused.body, 'good copy');
  const line = gw.logs.filter((l) => l.msg === 'request').at(-1)!;
  assert.match(String(line.cache), /^stale:/);
});

test('zero-config limits POST floods from unknown clients, per address and per /24, and a person\u2019s few POSTs pass', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const gw = await startGateway(t, up.url, {}, { clock });
  const rules = gw.gateway.defense.getRuntime().config.defense.rateLimit.rules;
  assert.deepEqual(
    rules.map((r) => r.id),
    [DEFAULT_RATE_LIMIT_RULE.id, 'unsafe-all', 'unsafe-unknown'],
  );
  const post = (from: string, path = '/login') =>
    send(gw.url, path, { method: 'POST', localAddress: from, body: 'user=a&password=b' });
  const statuses = async (from: string[], each: number) => {
    const out = await Promise.all(from.flatMap((a) => Array.from({ length: each }, () => post(a))));
    return { ok: out.filter((a) => a.status === 200).length, limited: out.filter((a) => a.status === 429).length };
  };
  // One address: 30 login POSTs at once, the clock standing still.
  const one = await statuses(['127.0.7.1'], 30);
  assert.equal(one.limited, 10, 'one address gets its burst of 20');
  // 120 addresses of one /24, 3 each (each far under its own burst): the /24 shares 16× one budget.
  const many = Array.from({ length: 120 }, (_, i) => `127.0.8.${i + 1}`);
  const spread = await statuses(many, 3);
  assert.equal(spread.ok, 320, 'the /24 gets 16 × 20');
  assert.equal(spread.limited, 40);
  // Meanwhile a person on another network submits a few forms, and GETs are not counted by the rule.
  for (let i = 0; i < 5; i++) assert.equal((await post('127.0.9.9', '/contact')).status, 200);
  for (let i = 0; i < 30; i++) assert.equal((await send(gw.url, '/', { localAddress: '127.0.7.1' })).status, 200);
  // A second later the person's budget has grown back; the flood's has only one more request.
  clock.advance(1000);
  assert.equal((await post('127.0.9.9')).status, 200);
});

test('a POST flood is not limited when the rules are written without the unsafe-methods rule (what the test above relies on)', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { defense: { rateLimit: { rules: [DEFAULT_RATE_LIMIT_RULE] } } });
  const out = await Promise.all(
    Array.from({ length: 30 }, () => send(gw.url, '/login', { method: 'POST', localAddress: '127.0.7.2', body: 'x' })),
  );
  assert.equal(out.filter((a) => a.status === 429).length, 0);
});

test('the unsafe-methods rule counts only unknown clients: a session the origin granted is not counted', async (t) => {
  const sid = '0123456789abcdef0123456789abcdef';
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/login') res.writeHead(200, { 'set-cookie': `sid=${sid}; Path=/`, 'cache-control': 'no-store' });
    else res.writeHead(200, { 'cache-control': 'no-store' });
    res.end('ok');
  });
  const clock = createManualClock(1000);
  const gw = await startGateway(t, up.url, {}, { clock });
  const headers = { 'user-agent': 'Mozilla/5.0 (a person)' };
  assert.equal((await send(gw.url, '/login', { method: 'POST', localAddress: '127.0.6.1', headers })).status, 200);
  const known = { ...headers, cookie: `sid=${sid}` };
  // Granted in calm to a client nobody vouched for, the session is on probation (src/phases/challenge/
  // sessions.ts) and still counted; past it, the session the origin granted is known.
  clock.advance(121_000);
  const out = await Promise.all(
    Array.from({ length: 30 }, () =>
      send(gw.url, '/cart', { method: 'POST', localAddress: '127.0.6.1', headers: known, body: 'x' }),
    ),
  );
  assert.equal(out.filter((a) => a.status === 429).length, 0, 'a known session is not counted');
  // The same cookie value made up by someone else's client is not a session the origin granted.
  const forged = { ...headers, cookie: 'sid=fedcba9876543210fedcba9876543210' };
  const bots = await Promise.all(
    Array.from({ length: 30 }, () =>
      send(gw.url, '/cart', { method: 'POST', localAddress: '127.0.6.2', headers: forged, body: 'x' }),
    ),
  );
  assert.equal(bots.filter((a) => a.status === 429).length, 10);
});

test('a session of one\u2019s own does not lift every limit on unsafe methods: the default unsafe-all rule counts known clients too', async (t) => {
  const sid = '00112233445566778899aabbccddeeff';
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/signup') res.writeHead(200, { 'set-cookie': `sid=${sid}; Path=/`, 'cache-control': 'no-store' });
    else res.writeHead(200, { 'cache-control': 'no-store' });
    res.end('ok');
  });
  const clock = createManualClock(1000);
  const gw = await startGateway(
    t,
    up.url,
    {
      routes: [
        { name: 'login', path: '/login', class: 'critical', upstream: 'origin' },
        { name: 'rest', path: '/*', upstream: 'origin' },
      ],
    },
    { clock },
  );
  const headers = { 'user-agent': 'Stuffer/1' };
  assert.equal((await send(gw.url, '/signup', { method: 'POST', localAddress: '127.0.5.1', headers })).status, 200);
  clock.advance(121_000); // past the session's probation: a known client
  const own = { ...headers, cookie: `sid=${sid}` };
  const out = await Promise.all(
    Array.from({ length: 60 }, () =>
      send(gw.url, '/login', { method: 'POST', localAddress: '127.0.5.1', headers: own, body: 'u=victim&p=123456' }),
    ),
  );
  // (unsafe-unknown skips a known client and per-address leaves critical routes alone: this is unsafe-all.)
  assert.equal(out.filter((a) => a.status === 429).length, 10, 'a known client gets a burst of 50, not unlimited');
  // Its pace afterwards: 5 a second.
  clock.advance(1000);
  const next = await Promise.all(
    Array.from({ length: 8 }, () =>
      send(gw.url, '/login', { method: 'POST', localAddress: '127.0.5.1', headers: own, body: 'x' }),
    ),
  );
  assert.equal(next.filter((a) => a.status === 200).length, 5);
});

test('a POST flood past every client\u2019s budget is refused without checking its credentials', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  // Bans off: what is counted here is the look-ups of requests that reach the rate limit.
  const gw = await startGateway(t, up.url, { defense: { bans: { mode: 'off' } } }, { clock });
  // A made-up clearance on each: telling it from a real one costs a MAC (a JWT: a signature check).
  const headers = { 'rempart-clearance': 'v1.made-up.clearance' };
  let limited = 0;
  for (let i = 0; i < 100; i++)
    if (
      (await send(gw.url, '/login', { method: 'POST', localAddress: '127.0.4.1', headers, body: 'x' })).status === 429
    )
      limited++;
  assert.equal(limited, 80, '20 pass unsafe-unknown');
  // unsafe-all (every client, no look-up) refuses the 50 past its burst before unsafe-unknown asks.
  assert.equal(gw.gateway.challenge.familiarityLookups, 50);
});

test('zero-config is the defaults: no cache, rate-limit or admission setting of its own', () => {
  const config = configFromFlags({ upstream: 'http://127.0.0.1:1' });
  assert.equal(config.routes[0]!.cache, undefined);
  assert.equal(config.routes[0]!.class, 'public');
  assert.equal(config.defense.rateLimit.rules.length, 3);
});

test('an answer that varies on a field Rempart sets (X-Forwarded-For) is never stored: each visitor gets their own page', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, {
      'cache-control': 'public, max-age=60',
      vary: 'X-Forwarded-For',
      'content-type': 'text/plain',
    });
    res.end(`hello visitor from ${req.headers['x-forwarded-for']}`);
  });
  const gw = await startGateway(t, up.url, {});
  const get = (local: string) =>
    new Promise<string>((resolve, reject) => {
      http
        .get(`${gw.url}/geo`, { localAddress: local }, (res) => {
          let b = '';
          res.on('data', (c) => (b += c));
          res.on('end', () => resolve(b));
        })
        .on('error', reject);
    });
  assert.equal(await get('127.0.0.2'), 'hello visitor from 127.0.0.2');
  assert.equal(await get('127.0.0.3'), 'hello visitor from 127.0.0.3');
  assert.equal(up.requests.length, 2);
});
