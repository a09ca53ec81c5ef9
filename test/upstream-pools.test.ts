// Upstream pools (upstreams[].servers, issue 16): the config rules, each balancing policy's spread on
// real sockets, hash stickiness and its disruption bound, the retry rule, passive and active health
// per server with maxEjectedPercent, admission slots summing over servers, and failover to the
// route's fallback only once the whole pool is down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { validateConfig } from '../src/config/load.ts';
import { ServerPool, UpstreamServer, type DispatcherFactory } from '../src/upstream/pool.ts';
import {
  problemsOf,
  startGateway,
  startUpstream,
  type RecordingUpstream,
  type Teardown,
  sleep,
  waitFor,
} from './helpers.ts';

const base = (upstream: Record<string, unknown>) => ({
  version: 1,
  listeners: [{ address: '127.0.0.1:0' }],
  upstreams: [{ name: 'origin', ...upstream }],
  routes: [{ name: 'default', path: '/*', upstream: 'origin' }],
});

test('config: `servers` or `url`, not both, not neither; one scheme; no server twice', () => {
  const both = problemsOf(() =>
    validateConfig(base({ url: 'http://127.0.0.1:1', servers: ['http://127.0.0.1:2'] }), '(test)'),
  );
  assert.match(both.map((p) => p.message).join('\n'), /`url` and `servers` are both given/);
  const neither = problemsOf(() => validateConfig(base({}), '(test)'));
  assert.match(neither.map((p) => p.message).join('\n'), /give `url` \(one server\) or `servers`/);
  const mixed = problemsOf(() =>
    validateConfig(base({ servers: ['http://127.0.0.1:1', 'https://127.0.0.1:2'] }), '(test)'),
  );
  assert.deepEqual(
    mixed.map((p) => p.path),
    ['upstreams[0].servers[1]'],
  );
  assert.match(mixed[0]!.message, /one scheme/);
  const twice = problemsOf(() =>
    validateConfig(base({ servers: ['http://127.0.0.1:1', 'http://127.0.0.1:1/'] }), '(test)'),
  );
  assert.match(twice[0]!.message, /listed twice/);
  const pathy = problemsOf(() => validateConfig(base({ servers: ['http://127.0.0.1:1/app'] }), '(test)'));
  assert.match(pathy[0]!.message, /without path/);
  const badKey = problemsOf(() =>
    validateConfig(base({ servers: ['http://127.0.0.1:1'], balance: 'hash', hashKey: 'header:' }), '(test)'),
  );
  assert.equal(badKey[0]!.path, 'upstreams[0].hashKey');
  // The one `url` stays valid.
  const ok = validateConfig(base({ url: 'http://127.0.0.1:1' }), '(test)');
  assert.equal(ok.upstreams[0]!.balance, 'least_request');
});

/** `n` recording upstreams, each answering its own index (after `delayMs[i]` if given). */
async function origins(t: Teardown, n: number, handler?: (i: number) => Parameters<typeof startUpstream>[1]) {
  const ups: RecordingUpstream[] = [];
  for (let i = 0; i < n; i++) ups.push(await startUpstream(t, handler?.(i) ?? ((_q, res) => res.end(String(i)))));
  return ups;
}

/**
 * A GET from loopback client `127.0.<1 + i % 5>.1`: each its own /24 client prefix, so failures come from
 * several clients (outlier detection wants `minClients` of them).
 */
function getFrom(url: string, i: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { localAddress: `127.0.${1 + (i % 5)}.1`, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function get(url: string, init?: RequestInit): Promise<{ status: number; body: string }> {
  const res = await fetch(url, init);
  return { status: res.status, body: await res.text() };
}

test('round_robin: sequential requests go to each server in turn', async (t) => {
  const ups = await origins(t, 3);
  const gw = await startGateway(t, ups[0]!.url, {
    upstreams: [{ name: 'origin', servers: ups.map((u) => u.url), balance: 'round_robin' }],
  });
  for (let i = 0; i < 30; i++) assert.equal((await get(`${gw.url}/x${i}`)).status, 200);
  assert.deepEqual(
    ups.map((u) => u.requests.length),
    [10, 10, 10],
  );
});

test('least_request: an idle pool spreads evenly, and a slow server gets fewer requests', async (t) => {
  // Server 0 answers after 150 ms, the others at once: with the same number of requests in flight
  // offered, least_request keeps sending to the ones that finish.
  const ups = await origins(t, 3, (i) => (_q, res) => {
    if (i === 0) setTimeout(() => res.end('0'), 150);
    else res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    upstreams: [{ name: 'origin', servers: ups.map((u) => u.url) }],
    defense: { rateLimit: { mode: 'off' } },
  });
  // Sequential requests on an idle pool: ties rotate, so each server gets its turn.
  for (let i = 0; i < 9; i++) assert.equal((await get(`${gw.url}/seq`)).status, 200);
  assert.deepEqual(
    ups.map((u) => u.requests.length),
    [3, 3, 3],
  );
  // Eight clients in a loop for a while: the slow server holds its requests longer, so it is picked less.
  const until = performance.now() + 1200;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (performance.now() < until) assert.equal((await get(`${gw.url}/load`)).status, 200);
    }),
  );
  const load = ups.map((u) => u.requests.filter((r) => r.url === '/load').length);
  assert.ok(load[0]! * 3 < load[1]! && load[0]! * 3 < load[2]!, `slow server got ${load.join(' / ')}`);
});

test('hash on a header: a key stays on its server, keys spread, and a request without it is still served', async (t) => {
  const ups = await origins(t, 3);
  const gw = await startGateway(t, ups[0]!.url, {
    upstreams: [{ name: 'origin', servers: ups.map((u) => u.url), balance: 'hash', hashKey: 'header:x-user' }],
  });
  const seen = new Map<string, Set<string>>();
  for (let round = 0; round < 3; round++)
    for (let k = 0; k < 30; k++) {
      const r = await get(`${gw.url}/p${round}`, { headers: { 'x-user': `user-${k}` } });
      assert.equal(r.status, 200);
      const s = seen.get(`user-${k}`) ?? new Set();
      s.add(r.body);
      seen.set(`user-${k}`, s);
    }
  for (const [k, servers] of seen) assert.equal(servers.size, 1, `${k} moved between servers`);
  const used = new Set([...seen.values()].map((s) => [...s][0]));
  assert.equal(used.size, 3, 'thirty keys land on all three servers');
  assert.equal((await get(`${gw.url}/nokey`)).status, 200);
});

test('hash on a cookie and on the path: the same key, the same server', async (t) => {
  const ups = await origins(t, 4);
  const gw = await startGateway(t, ups[0]!.url, {
    upstreams: [
      { name: 'origin', servers: ups.map((u) => u.url), balance: 'hash', hashKey: 'cookie:sid' },
      { name: 'bypath', servers: ups.map((u) => u.url), balance: 'hash', hashKey: 'path' },
    ],
    routes: [
      { name: 'paths', path: '/static/*', upstream: 'bypath' },
      { name: 'default', path: '/*', upstream: 'origin' },
    ],
  });
  const a = await get(`${gw.url}/x`, { headers: { cookie: 'theme=dark; sid=abc123; other=1' } });
  for (let i = 0; i < 10; i++)
    assert.equal((await get(`${gw.url}/y${i}`, { headers: { cookie: `sid=abc123; n=${i}` } })).body, a.body);
  const p = await get(`${gw.url}/static/app.js?v=1`);
  for (let i = 0; i < 10; i++) assert.equal((await get(`${gw.url}/static/app.js?v=${i}`)).body, p.body);
});

/** A pool of `n` servers whose clients are never used (the balancer alone). */
function bareServers(n: number): UpstreamServer[] {
  const none: DispatcherFactory = () => ({ destroy: async () => {} }) as never;
  const settings = {
    connections: 1,
    connectTimeoutMs: 1,
    headersTimeoutMs: 1,
    bodyTimeoutMs: 1,
    keepAliveTimeoutMs: 1,
    tlsServerName: null,
    tlsFiles: null,
  };
  return Array.from({ length: n }, (_, i) => new UpstreamServer('u', `http://10.0.0.${i + 1}:80`, settings, none));
}

/** The schema's defaults of the windowed judgement of response failures. */
const windowed = {
  windowMs: 10_000,
  minRequests: 20,
  failurePercent: 50,
  minPaths: 3,
  minClients: 3,
  maxEjectedPercent: 50,
};

test('consistent hashing: ejecting a server moves only its own keys, evenly, and its return brings them back', () => {
  const servers = bareServers(5);
  const outlier = { ...windowed, consecutiveFailures: 1, baseEjectionMs: 60_000, maxEjectionMs: 60_000 };
  const pool = new ServerPool('u', servers, { balance: 'hash', outlier });
  const keys = 20_000;
  const before = Array.from({ length: keys }, (_, k) => pool.pick(k * 2654435761, null)!);
  const share = servers.map((s) => before.filter((b) => b === s).length / keys);
  for (const x of share) assert.ok(x > 0.17 && x < 0.23, `uneven spread: ${share.join(', ')}`);
  const gone = servers[2]!;
  pool.onConnectFailure(gone, performance.now());
  assert.equal(gone.inService, false);
  const after = Array.from({ length: keys }, (_, k) => pool.pick(k * 2654435761, null)!);
  let moved = 0;
  const movedTo = new Map<UpstreamServer, number>();
  for (let k = 0; k < keys; k++) {
    if (before[k] === after[k]) continue;
    moved++;
    assert.equal(before[k], gone, 'a key of a server still in service moved');
    movedTo.set(after[k]!, (movedTo.get(after[k]!) ?? 0) + 1);
  }
  // Exactly the ejected server's keys moved (the bound: 1/n of the keys), spread over the four others.
  assert.equal(moved, before.filter((b) => b === gone).length);
  assert.equal(movedTo.size, 4);
  for (const c of movedTo.values()) assert.ok(c > moved * 0.18 && c < moved * 0.32, 'moved keys spread evenly');
  pool.uneject(gone, performance.now());
  for (let k = 0; k < keys; k++) assert.equal(pool.pick(k * 2654435761, null), before[k]);
  pool.destroy().catch(() => {});
});

test('retry: a GET whose server dies mid-request is retried once on another; a POST is not', async (t) => {
  // Server 0 takes the request and drops the connection without an answer (as a process killed mid-request).
  const drop = (_q: http.IncomingMessage, res: http.ServerResponse) => res.socket?.destroy();
  const ups = await origins(t, 2, (i) => (i === 0 ? drop : (_q, res) => res.end('1')));
  const gw = await startGateway(t, ups[0]!.url, {
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        outlierDetection: { consecutiveFailures: 100 },
      },
    ],
  });
  for (let i = 0; i < 6; i++) {
    const r = await get(`${gw.url}/g${i}`);
    assert.deepEqual(r, { status: 200, body: '1' }, 'every GET answered by the live server');
  }
  // Round robin's turn goes on through the retries: each GET went to server 0 first, then to server 1.
  assert.equal(ups[0]!.requests.filter((r) => r.method === 'GET').length, 6, 'each GET was tried on server 0');
  assert.equal(ups[1]!.requests.filter((r) => r.method === 'GET').length, 6, 'and retried once, on server 1');
  // A POST that reached server 0 may have done its work there: never sent twice.
  const posts = [];
  for (let i = 0; i < 4; i++) posts.push((await get(`${gw.url}/p${i}`, { method: 'POST', body: 'x' })).status);
  assert.deepEqual(posts.sort(), [200, 200, 502, 502]);
  assert.equal(ups[1]!.requests.filter((r) => r.method === 'POST').length, 2, 'no POST was replayed');
});

test('retry: a connection refused is retried for any method (the request never left), and only once', async (t) => {
  const ups = await origins(t, 3);
  await ups[0]!.close();
  await ups[1]!.close();
  const gw = await startGateway(t, ups[2]!.url, {
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        circuitBreaker: { consecutiveFailures: 1000 },
        outlierDetection: { consecutiveFailures: 1000 },
      },
    ],
  });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push((await get(`${gw.url}/p${i}`, { method: 'POST', body: 'x' })).status);
  // Round robin over 0 (refused), 1 (refused), 2: a first try on 0 retries on 1 (the next) and fails:
  // one retry, not a search through the pool.
  assert.ok(statuses.includes(502), `statuses ${statuses.join(',')}`);
  assert.ok(statuses.filter((s) => s === 200).length >= 3, `statuses ${statuses.join(',')}`);
  assert.equal(ups[2]!.requests.length, statuses.filter((s) => s === 200).length);
});

const noLimits = { defense: { rateLimit: { mode: 'off' } } };

test('passive: a server failing on every path while its peers serve is ejected, its traffic goes to the others, and it comes back', async (t) => {
  let failing = true;
  const ups = await origins(t, 3, (i) => (_q, res) => {
    if (i === 0 && failing) {
      res.statusCode = 502;
      res.end('bad gateway');
    } else res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        outlierDetection: { minRequests: 3, baseEjectionMs: 400 },
      },
    ],
  });
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push((await getFrom(`${gw.url}/a${i}`, i)).status);
  // Its first three answers were 502 (a head came back: not retried), on three paths (/a0, /a3, /a6)
  // from three clients, while its two peers answered: 100 % failed against their 0 %, then it was out.
  assert.equal(statuses.filter((s) => s === 502).length, 3);
  assert.equal(ups[0]!.requests.length, 3);
  assert.equal(pool.servers[0]!.state, 'ejected');
  assert.equal(pool.liveCount, 2);
  for (let i = 0; i < 10; i++) assert.equal((await get(`${gw.url}/b${i}`)).status, 200);
  assert.equal(ups[0]!.requests.length, 3, 'no request reached the ejected server');
  failing = false;
  await waitFor(() => pool.servers[0]!.state === 'up', 'the ejection to end');
  for (let i = 0; i < 6; i++) assert.equal((await get(`${gw.url}/c${i}`)).status, 200);
  assert.equal(ups[0]!.requests.length, 5, 'back in the rotation');
});

test('passive: a second ejection soon after the return lasts longer (base × ejections)', () => {
  const servers = bareServers(4);
  const outlier = { ...windowed, consecutiveFailures: 1, baseEjectionMs: 50_000, maxEjectionMs: 120_000 };
  const pool = new ServerPool('u', servers, { balance: 'round_robin', outlier });
  const s = servers[1]!;
  pool.onConnectFailure(s, 1000);
  assert.equal(s.ejections, 1);
  pool.uneject(s, 51_000);
  pool.onConnectFailure(s, 60_000);
  assert.equal(s.ejections, 2, 'ejected again within maxEjectionMs of its return');
  pool.uneject(s, 160_000);
  pool.onConnectFailure(s, 500_000);
  assert.equal(s.ejections, 1, 'long after its return it starts over');
  void pool.destroy();
});

test('passive: three IPv6 /64s of one /48 are one client for the spread (as for the breaker), three /48s are three', () => {
  const [a, b, c] = bareServers(3) as [UpstreamServer, UpstreamServer, UpstreamServer];
  const outlier = {
    ...windowed,
    consecutiveFailures: 5,
    baseEjectionMs: 60_000,
    maxEjectionMs: 60_000,
    minRequests: 10,
  };
  const pool = new ServerPool('u', [a, b, c], { balance: 'round_robin', outlier });
  for (let i = 0; i < 10; i++) for (const x of [b, c]) pool.onSuccess(x, 1000);
  for (let i = 0; i < 30; i++) pool.onResponseFailure(a, `2001:db8:77:${i % 3}::/64`, `/v${i}`, 1000);
  assert.equal(a.state, 'up', 'three /64s of one /48');
  for (let i = 0; i < 3; i++) pool.onResponseFailure(a, `2001:db8:${i}:1::/64`, `/w${i}`, 1000);
  assert.equal(a.state, 'ejected', 'three /48s');
  void pool.destroy();
});

test('passive: connect failures count in a row; response failures need volume, spread and a clear lead on peers', () => {
  const [a, b, c] = bareServers(3) as [UpstreamServer, UpstreamServer, UpstreamServer];
  const outlier = {
    ...windowed,
    consecutiveFailures: 5,
    baseEjectionMs: 60_000,
    maxEjectionMs: 60_000,
    minRequests: 10,
  };
  const pool = new ServerPool('u', [a, b, c], { balance: 'round_robin', outlier });
  // A response failure from one of three client prefixes in turn (or from `prefix`).
  let n = 0;
  const fail = (x: UpstreamServer, path: string, at: number, prefix = `10.0.${n++ % 3}.0/24`) =>
    pool.onResponseFailure(x, prefix, path, at);
  // Four refused connects, then an answer: the streak is over. Five in a row: out.
  for (let i = 0; i < 4; i++) pool.onConnectFailure(a, 1000);
  fail(a, '/x', 1000);
  for (let i = 0; i < 4; i++) pool.onConnectFailure(a, 1000);
  assert.equal(a.state, 'up');
  pool.onConnectFailure(a, 1000);
  assert.equal(a.state, 'ejected');
  pool.uneject(a, 2000);
  // Peers serving; `a` fails on one path only, however often: a path of its, not the server.
  const serve = (at: number) => {
    for (let i = 0; i < 10; i++) for (const x of [b, c]) pool.onSuccess(x, at);
  };
  serve(2000);
  for (let i = 0; i < 30; i++) fail(a, '/one', 2000);
  assert.equal(a.state, 'up', 'one path');
  // Two windows later (those failures forgotten): one client on many paths, as `balance: hash` on the
  // client would send it to one server. Its peers never see its requests: they cannot vouch.
  serve(25_000);
  for (let i = 0; i < 30; i++) fail(a, `/m${i}`, 25_000, '192.0.2.0/24');
  assert.equal(a.state, 'up', 'one client prefix');
  // Two windows later again: three paths from three prefixes, but below minRequests.
  const t1 = 50_000;
  serve(t1);
  for (let i = 0; i < 9; i++) fail(a, `/p${i % 3}`, t1);
  assert.equal(a.state, 'up', 'nine answers, below minRequests');
  fail(a, '/p0', t1);
  assert.equal(a.state, 'ejected', 'ten failures on three paths, its peers at 0 %');
  pool.uneject(a, t1 + 1);
  // Peers failing 40 %, `a` 60 %: not twice theirs, the failures are the requests'.
  const t2 = 100_000;
  for (let i = 0; i < 10; i++)
    for (const x of [b, c]) {
      if (i < 4) fail(x, `/q${i}`, t2);
      else pool.onSuccess(x, t2);
    }
  for (let i = 0; i < 4; i++) pool.onSuccess(a, t2);
  for (let i = 0; i < 6; i++) fail(a, `/q${i}`, t2);
  assert.equal(a.state, 'up', '60 % against peers at 40 %');
  for (let i = 0; i < 20; i++) fail(a, `/r${i}`, t2);
  assert.equal(a.state, 'ejected', '26 of 30 (87 %) against peers at 40 %');
  void pool.destroy();
});

test('maxEjectedPercent: never more than that share of the pool is out, whatever fails', async (t) => {
  // Three of four servers answer 502 on every path: with 50 %, two may be out, the third stays in. Each
  // is judged against the peers that serve (server 3), not against the failing ones.
  const ups = await origins(t, 4, (i) => (_q, res) => {
    if (i < 3) {
      res.statusCode = 502;
      res.end();
    } else res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        outlierDetection: { minRequests: 3, maxEjectedPercent: 50 },
        // Three servers of four failing for five clients is the breaker's case too: kept closed here.
        circuitBreaker: { consecutiveFailures: 1000, minRequests: 100000 },
      },
    ],
  });
  for (let i = 0; i < 40; i++) await getFrom(`${gw.url}/x${i}`, i);
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  assert.deepEqual(
    pool.servers.map((s) => s.state),
    ['ejected', 'ejected', 'up', 'up'],
  );
  assert.equal(pool.liveCount, 2);
  assert.ok(ups[2]!.requests.length > 10, 'the third failing server kept its share: the pool was not emptied');
});

test('passive: a path failing on every server ejects nothing, from one client or many; other paths stay spread', async (t) => {
  // Every server answers /slow with 504 and never answers /hang: the path's fault, not a server's. Five
  // of them in a row used to eject a server (up to maxEjectedPercent), from one client.
  const ups = await origins(t, 3, (i) => (req, res) => {
    if (req.url?.startsWith('/slow')) {
      res.statusCode = 504;
      res.end();
    } else if (req.url !== '/hang') res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        headersTimeoutMs: 300,
        admission: { mode: 'off' },
        // Volume is no gate here: what holds is the spread over paths and clients, and the peers.
        outlierDetection: { minRequests: 3 },
        // A path failing for five clients on every server is the breaker's to judge, not this test's.
        circuitBreaker: { minRequests: 100000 },
      },
    ],
  });
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  // One path, at once: 504s and response timeouts on every server.
  const one = [
    ...Array.from({ length: 30 }, () => get(`${gw.url}/slow`)),
    ...Array.from({ length: 15 }, () => get(`${gw.url}/hang`)),
  ];
  const first = await Promise.all(one);
  assert.ok(
    first.every((r) => r.status === 504),
    `every one answered 504: ${first.map((r) => r.status).join(',')}`,
  );
  // Then many paths from five clients, each failing on every server: every server fails alike, none is
  // an outlier (the comparison with its peers holds here, not the spread).
  for (let round = 0; round < 3; round++)
    await Promise.all(Array.from({ length: 20 }, (_, i) => getFrom(`${gw.url}/slow/${round}/${i}`, i)));
  assert.deepEqual(
    pool.servers.map((s) => s.state),
    ['up', 'up', 'up'],
  );
  assert.equal(pool.liveCount, 3);
  assert.ok(
    ups.every((u) => u.requests.filter((r) => r.url.startsWith('/slow')).length >= 5),
    'the failing path reached every server',
  );
  const before = ups.map((u) => u.requests.length);
  for (let i = 0; i < 30; i++) assert.equal((await get(`${gw.url}/ok${i}`)).status, 200);
  const spread = ups.map((u, i) => u.requests.length - before[i]!);
  assert.ok(
    spread.every((n) => n >= 5),
    `other paths spread over all three servers: ${spread.join(',')}`,
  );
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.doesNotMatch(text, /rempart_upstream_ejections_total\{upstream="origin",server="[^"]+"\} [1-9]/);
});

test('active health per server: an unhealthy server gets no traffic; a checker failing everywhere cannot empty the pool', async (t) => {
  const sick = new Set<number>([1]);
  const ups = await origins(t, 3, (i) => (req, res) => {
    if (req.url === '/healthz' && sick.has(i)) {
      res.statusCode = 500;
      res.end();
    } else res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        healthCheck: { path: '/healthz', intervalMs: 50, healthyThreshold: 1, unhealthyThreshold: 1 },
      },
    ],
  });
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  assert.equal(pool.healthChecks.length, 3, 'one check per server');
  await waitFor(() => pool.servers[1]!.state === 'unhealthy', 'server 1 to fail its check');
  for (let i = 0; i < 12; i++) assert.equal((await get(`${gw.url}/x${i}`)).status, 200);
  assert.equal(ups[1]!.requests.filter((r) => r.url !== '/healthz').length, 0, 'no request on the unhealthy server');
  // Each check went to its own server.
  for (const u of ups) assert.ok(u.requests.some((r) => r.url === '/healthz'));
  // The health endpoint breaks everywhere (the pages still work): one server may be out, two stay in.
  sick.add(0);
  sick.add(2);
  await waitFor(() => pool.servers.every((s) => s.health!.healthy === false), 'every check to fail');
  assert.equal(pool.liveCount, 2);
  assert.equal(pool.usable, true);
  for (let i = 0; i < 6; i++) assert.equal((await get(`${gw.url}/y${i}`)).status, 200);
  sick.clear();
  await waitFor(() => pool.liveCount === 3, 'all three back');
});

test('failover: the route goes to its fallback only once the whole pool is down', async (t) => {
  const ups = await origins(t, 3);
  const fallback = await startUpstream(t, (_q, res) => res.end('fallback'));
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        circuitBreaker: { consecutiveFailures: 3, openMs: 60_000 },
        outlierDetection: { consecutiveFailures: 2 },
      },
      { name: 'spare', url: fallback.url },
    ],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', fallback: 'spare' }],
  });
  // One server gone, then two: the rest of the pool answers, the fallback sees nothing.
  await ups[0]!.close();
  for (let i = 0; i < 10; i++) assert.notEqual((await get(`${gw.url}/a${i}`)).body, 'fallback');
  await ups[1]!.close();
  for (let i = 0; i < 10; i++) assert.equal((await get(`${gw.url}/b${i}`)).status, 200);
  assert.equal(fallback.requests.length, 0, 'no failover while a server of the pool is alive');
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'closed');
  // The last one: failures now reach clients, the breaker opens, the route moves to its fallback.
  await ups[2]!.close();
  await waitFor(async () => (await get(`${gw.url}/c`)).body === 'fallback', 'the route on its fallback');
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'open');
});

test('admission: the limit is per server and sums over the pool; an ejected server takes its slots with it', async (t) => {
  // Every server holds its requests until released: what reaches them at once is what admission let in.
  const held: http.ServerResponse[] = [];
  const ups = await origins(t, 3, (i) => (req, res) => {
    if (req.url?.startsWith('/fail')) {
      res.statusCode = i === 0 ? 502 : 200;
      res.end();
    } else held.push(res);
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    limits: { maxConnectionsPerAddress: 10000, maxConnections: 20000 },
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        admission: { mode: 'static', staticLimit: 2 },
        outlierDetection: { minRequests: 3 },
      },
    ],
  });
  const gate = gw.gateway.runtime().upstreams.get('origin')!.admission;
  assert.equal(gate.limiter.limit, 6, 'three servers of two slots each');
  const replies = Array.from({ length: 10 }, (_, i) => get(`${gw.url}/hold${i}`));
  await waitFor(() => held.length === 6 && gate.queue.size === 4, 'six at the servers and four queued');
  await sleep(100);
  assert.equal(held.length, 6, 'no seventh request reached a server');
  assert.deepEqual(
    ups.map((u) => u.requests.length),
    [2, 2, 2],
  );
  for (const r of held.splice(0)) r.end('done');
  await waitFor(() => held.length === 4, 'the four queued ones let in');
  for (const r of held.splice(0)) r.end('done');
  for (const r of await Promise.all(replies)) assert.equal(r.status, 200);
  // Server 0 fails on every path (its peers serve them) and is ejected once that is half its answers
  // (it served its share of the held ones): its two slots go with it.
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  for (let i = 0; i < 18; i++) await getFrom(`${gw.url}/fail${i}`, i);
  assert.equal(pool.servers[0]!.state, 'ejected');
  assert.equal(gate.limiter.limit, 4);
  pool.uneject(pool.servers[0]!, performance.now());
  assert.equal(gate.limiter.limit, 6);
});

test('admission: the adaptive limiter learns a per-server limit, scaled by the servers in service', async () => {
  const { ConcurrencyLimiter } = await import('../src/upstream/limiter.ts');
  const { createManualClock } = await import('../src/core/clock.ts');
  const lim = new ConcurrencyLimiter(
    { mode: 'adaptive', initialLimit: 10, minLimit: 2, maxLimit: 50 },
    createManualClock(),
  );
  assert.equal(lim.limit, 10);
  lim.setScale(4);
  assert.equal(lim.limit, 40);
  lim.setScale(3);
  assert.equal(lim.limit, 30);
  lim.setScale(0);
  assert.equal(lim.limit, 10, 'never below one server');
});

test('metrics and the dashboard snapshot show each server: state, in flight, latency; ejections and retries counted', async (t) => {
  let failing = true;
  const ups = await origins(t, 3, (i) => (req, res) => {
    if (i === 0 && failing) res.socket?.destroy();
    else if (req.url === '/slow') setTimeout(() => res.end(String(i)), 300);
    else res.end(String(i));
  });
  const gw = await startGateway(t, ups[0]!.url, {
    ...noLimits,
    upstreams: [
      {
        name: 'origin',
        servers: ups.map((u) => u.url),
        balance: 'round_robin',
        outlierDetection: { minRequests: 3, baseEjectionMs: 60_000 },
      },
    ],
  });
  const { SnapshotBuilder } = await import('../src/control/snapshot.ts');
  const snapshots = new SnapshotBuilder({
    metrics: gw.gateway.metrics,
    getRuntime: () => gw.gateway.runtime(),
    api: gw.gateway.api,
    node: () => 'test',
    auditSeq: () => 0,
  });
  await snapshots.build(Date.now() - 1000);
  for (let i = 0; i < 9; i++) assert.equal((await getFrom(`${gw.url}/x${i}`, i)).status, 200);
  const slow = get(`${gw.url}/slow`);
  await waitFor(() =>
    gw.gateway
      .runtime()
      .upstreams.get('origin')!
      .pool.servers.some((s) => s.inFlight > 0),
  );
  const label = (i: number) => new URL(ups[i]!.url).host;
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(
    text,
    new RegExp(`rempart_upstream_server_state\\{upstream="origin",server="${label(0)}",state="ejected"\\} 1`),
  );
  assert.match(
    text,
    new RegExp(`rempart_upstream_server_state\\{upstream="origin",server="${label(1)}",state="up"\\} 1`),
  );
  assert.match(text, /rempart_upstream_server_in_flight\{upstream="origin",server="[^"]+"\} 1/);
  assert.match(
    text,
    new RegExp(`rempart_upstream_server_response_seconds_count\\{upstream="origin",server="${label(2)}"\\} [1-9]`),
  );
  assert.match(text, new RegExp(`rempart_upstream_ejections_total\\{upstream="origin",server="${label(0)}"\\} 1`));
  // Its resets on /x0, /x2, /x4 (each GET retried on a peer that served it): ejected at the third.
  assert.match(text, /rempart_upstream_retries_total\{upstream="origin",reason="RMP_ERR_UPSTREAM_RESET"\} 3/);
  const snap = await snapshots.build();
  const view = snap.upstreams.find((u) => u.name === 'origin')!;
  assert.deepEqual(
    view.servers.map((s) => [s.name, s.state]),
    [
      [label(0), 'ejected'],
      [label(1), 'up'],
      [label(2), 'up'],
    ],
  );
  assert.equal(
    view.servers.reduce((n, s) => n + s.inFlight, 0),
    1,
  );
  assert.ok(view.servers[1]!.p50Ms !== null, 'a latency for a server that answered');
  failing = false;
  assert.equal((await slow).status, 200);
});

test('reload: a kept server keeps its state and connections; a removed one gets nothing more', async (t) => {
  const ups = await origins(t, 3, (i) => (_q, res) => {
    if (i === 0) {
      res.statusCode = 502;
      res.end();
    } else res.end(String(i));
  });
  const cfg = (servers: string[]) => ({
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [
      {
        name: 'origin',
        servers,
        balance: 'round_robin',
        outlierDetection: { minRequests: 3, baseEjectionMs: 60_000 },
      },
    ],
    routes: [{ name: 'default', path: '/*', upstream: 'origin' }],
    defense: { rateLimit: { mode: 'off' } },
  });
  const all = ups.map((u) => u.url);
  const gw = await startGateway(t, ups[0]!.url, { ...noLimits, upstreams: cfg(all).upstreams });
  for (let i = 0; i < 9; i++) await getFrom(`${gw.url}/a${i}`, i);
  const before = gw.gateway.runtime().upstreams.get('origin')!.pool;
  assert.equal(before.servers[0]!.state, 'ejected');
  // The same servers (another route added): the same server objects, server 0 still out.
  await gw.gateway.reload(
    validateConfig({ ...cfg(all), routes: [{ name: 'x', path: '/x', upstream: 'origin' }, ...cfg(all).routes] }),
  );
  const after = gw.gateway.runtime().upstreams.get('origin')!.pool;
  assert.notEqual(after, before);
  assert.deepEqual(after.servers, before.servers);
  assert.equal(after.servers[0]!.state, 'ejected');
  assert.equal(after.liveCount, 2);
  // Server 2 removed: nothing more reaches it, server 1 serves everything.
  await gw.gateway.reload(validateConfig(cfg([all[0]!, all[1]!])));
  const n2 = ups[2]!.requests.length;
  for (let i = 0; i < 6; i++) assert.equal((await get(`${gw.url}/b${i}`)).body, '1');
  assert.equal(ups[2]!.requests.length, n2);
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.pool.servers[1], before.servers[1], 'server 1 kept');
});
