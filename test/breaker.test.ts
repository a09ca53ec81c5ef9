// The circuit breaker on real sockets: one client asking for a slow (or 504-answering) path cannot
// take the whole upstream down for everyone, while an origin really down for many clients on every
// path still opens it and its route goes to the fallback (src/upstream/breaker.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGateway, startUpstream, waitFor, type TestGateway } from './helpers.ts';

interface Reply {
  status: number;
  body: string;
}

/** One request from `localAddress` (loopback 127.0.0.0/8: each 127.0.N.x is its own /24 client prefix). */
function get(gw: TestGateway, path: string, localAddress = '127.0.0.1'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${gw.url}${path}`, { localAddress, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
  });
}

const noLimits = { defense: { rateLimit: { mode: 'off' } } };

test('one client hammering a slow path and a 504-answering path does not open the breaker; other paths stay served', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow')
      held.push(res); // never answers: the upstream's headersTimeoutMs does
    else if (req.url!.startsWith('/broken/')) res.writeHead(504).end('origin gateway timeout');
    else res.end('ok');
  });
  t.after(() => {
    for (const r of held) r.destroy();
  });
  const gw = await startGateway(t, up.url, {
    ...noLimits,
    upstreams: [{ name: 'origin', url: up.url, headersTimeoutMs: 300, circuitBreaker: { openMs: 60_000 } }],
  });
  const breaker = gw.gateway.runtime().upstreams.get('origin')!.breaker;
  // Thirty at once to one slow path: all time out together, before any success could break a streak.
  const slow = await Promise.all(Array.from({ length: 30 }, () => get(gw, '/slow')));
  assert.equal(slow.filter((r) => r.status === 504).length, 30, JSON.stringify(slow.map((r) => r.status)));
  assert.equal(breaker.state, 'closed', 'a slow path times out on its own; the upstream is not declared down');
  // The same client on many paths the origin answers 504.
  const broken = await Promise.all(Array.from({ length: 30 }, (_, i) => get(gw, `/broken/${i}`)));
  assert.equal(broken.filter((r) => r.status === 504).length, 30);
  assert.equal(breaker.state, 'closed', 'one client prefix cannot open it');
  // Everyone else, on every other path, is still served by the origin.
  for (let i = 0; i < 5; i++) {
    const r = await get(gw, `/page/${i}`, `127.0.${10 + i}.1`);
    assert.equal(r.status, 200, `another client on /page/${i}: ${r.status} ${r.body}`);
    assert.equal(r.body, 'ok');
  }
});

test('an origin timing out on every path for many clients opens the breaker: the route goes to its fallback', async (t) => {
  const held: http.ServerResponse[] = [];
  let down = false;
  const up = await startUpstream(t, (_req, res) => {
    if (down) held.push(res);
    else res.end('primary');
  });
  t.after(() => {
    for (const r of held) r.destroy();
  });
  const spare = await startUpstream(t, (_req, res) => res.end('fallback'));
  const gw = await startGateway(t, up.url, {
    ...noLimits,
    upstreams: [
      { name: 'origin', url: up.url, headersTimeoutMs: 300, circuitBreaker: { openMs: 60_000 } },
      { name: 'spare', url: spare.url },
    ],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', fallback: 'spare' }],
  });
  assert.equal((await get(gw, '/')).body, 'primary');
  down = true;
  // Six client prefixes on six paths, five requests each, all at once: 30 timeouts, spread.
  const all = await Promise.all(
    Array.from({ length: 30 }, (_, i) => get(gw, `/p${i % 6}`, `127.0.${1 + Math.floor(i / 5)}.1`)),
  );
  assert.ok(
    all.every((r) => r.status === 504 || r.body === 'fallback'),
    JSON.stringify(all.map((r) => r.status)),
  );
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'open');
  const before = up.requests.length;
  await waitFor(async () => (await get(gw, '/next', '127.0.9.1')).body === 'fallback', 'the route on its fallback');
  assert.equal(up.requests.length, before, 'nothing more sent to the dead origin while the breaker is open');
});

test('connections refused from a single client still open the breaker at once: no request can cause them', async (t) => {
  // Port 1: nobody listens there.
  const gw = await startGateway(t, 'http://127.0.0.1:1', {
    ...noLimits,
    upstreams: [{ name: 'origin', url: 'http://127.0.0.1:1', circuitBreaker: { openMs: 60_000 } }],
  });
  for (let i = 0; i < 5; i++) assert.equal((await get(gw, '/same')).status, 502);
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'open');
  assert.equal((await get(gw, '/same')).status, 503);
});
