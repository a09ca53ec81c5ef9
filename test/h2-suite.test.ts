// The core behaviours, run over HTTP/1.1 and HTTP/2 against the same TLS listener: one pipeline, two
// entries. Each case asserts the same outcome whatever the protocol the client spoke; the log line and
// metrics say which it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { startUpstream, waitFor } from './helpers.ts';
import { PROTOS, clientFor, startTlsGateway } from './h2-client.ts';

const codeOf = (body: string): string => (JSON.parse(body) as { error: { code: string } }).error.code;

for (const proto of PROTOS) {
  test(`${proto}: a request is forwarded with Host, X-Forwarded-*, Via and one Cookie; the log line and metrics name the protocol`, async (t) => {
    const up = await startUpstream(t, (req, res) => {
      // Fields an HTTP/2 response may not carry: they must not reach (or break) an HTTP/2 client.
      // node:http2 throws on any of them, and on a second Content-Type: a crash, or a wedged reply, if passed on.
      res.writeHead(
        200,
        [
          ['content-type', 'text/plain'],
          ['content-type', 'text/html'],
          ['connection', 'keep-alive, upgrade'],
          ['keep-alive', 'timeout=5'],
          ['upgrade', 'h2c'],
          ['http2-settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
          ['x-echo', `${req.headers.host}|${req.headers.cookie}|${req.headers['x-forwarded-proto']}`],
        ].flat(),
      );
      res.end(`hello ${req.method} ${req.url}`);
    });
    const gw = await startTlsGateway(t, up.url);
    const c = clientFor(t, proto, gw.port);
    const r = await c.request('/a/b?c=1', { headers: { cookie: proto === 'h2' ? ['x=1', 'y=2'] : 'x=1; y=2' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello GET /a/b?c=1');
    assert.equal(r.headers.via, '1.1 rempart');
    assert.equal(r.headers['x-echo'], `127.0.0.1:${gw.port}|x=1; y=2|https`);
    // The origin's connection fields never cross (HTTP/1.1 gets Node's own for its connection).
    if (proto === 'h2') assert.deepEqual([r.headers.connection, r.headers['keep-alive']], [undefined, undefined]);
    const seen = up.requests[0]!;
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.ok(!seen.rawHeaders.some((n) => n.startsWith(':')), 'no pseudo-header reaches the origin');
    assert.equal(seen.rawHeaders.filter((n) => n.toLowerCase() === 'cookie').length, 1);
    // A body, with and without a declared length.
    const post = await c.request('/upload', { method: 'POST', body: 'x'.repeat(5000) });
    assert.equal(post.status, 200);
    assert.equal(up.requests[1]!.bodyBytes, 5000);
    const line = await waitFor(() => gw.logs.find((l) => l.msg === 'request' && l.path === '/a/b'));
    assert.equal(line.protocol, proto);
    const metrics = await gw.gateway.metrics.registry.metrics();
    assert.match(metrics, new RegExp(`rempart_requests_by_protocol_total\\{protocol="${proto}"\\} 2\\n`));
  });

  test(`${proto}: a banned client is refused 403 RMP_ERR_BANNED on a connection opened before the ban`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startTlsGateway(t, up.url);
    const c = clientFor(t, proto, gw.port, '127.0.0.7');
    assert.equal((await c.request('/')).status, 200);
    gw.gateway.defense.bans.ban('127.0.0.7', 60000, 'test', '', 'operator:test');
    const r = await c.request('/').catch(() => null);
    // Refused with its code, or (HTTP/1.1) the connection closed with it: never forwarded.
    if (r !== null) {
      assert.equal(r.status, 403);
      assert.equal(codeOf(r.body), 'RMP_ERR_BANNED');
    }
    assert.equal(up.requests.length, 1);
    // The connection is closed after the refusal (HTTP/2: GOAWAY): what the client sends next is not read.
    if (proto === 'h2') await waitFor(() => c.closed(), 'the HTTP/2 connection is closed');
  });

  test(`${proto}: past its burst a client gets 429 RMP_ERR_RATE_LIMITED`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startTlsGateway(t, up.url, {
      defense: { rateLimit: { rules: [{ id: 'tight', key: 'address', ratePerSec: 0.01, burst: 2 }] } },
    });
    const c = clientFor(t, proto, gw.port);
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await c.request('/x')).status);
    assert.deepEqual(statuses, [200, 200, 429, 429]);
    const r = await c.request('/x');
    assert.equal(codeOf(r.body), 'RMP_ERR_RATE_LIMITED');
    assert.equal(r.headers['retry-after'] !== undefined, true);
    assert.equal(up.requests.length, 2);
  });

  test(`${proto}: under attack a browser gets the challenge page, never the origin`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startTlsGateway(t, up.url, { defense: { level: { override: 'under_attack' } } });
    const c = clientFor(t, proto, gw.port);
    const r = await c.request('/page', { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    assert.equal(r.status, 403);
    assert.match(String(r.headers['content-type']), /^text\/html/);
    assert.match(r.body, /new Worker/);
    assert.equal(up.requests.length, 0);
  });

  test(`${proto}: a cacheable answer is served from the cache the second time`, async (t) => {
    const up = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=60' });
      res.end('{"n":1}');
    });
    const gw = await startTlsGateway(t, up.url, {
      routes: [{ name: 'tracking', path: '/*', upstream: 'origin', class: 'cacheable' }],
    });
    const c = clientFor(t, proto, gw.port);
    const first = await c.request('/track/A');
    assert.equal(first.headers['x-cache'], undefined);
    const second = await c.request('/track/A');
    assert.equal(second.status, 200);
    assert.equal(second.headers['x-cache'], 'HIT');
    assert.equal(second.body, '{"n":1}');
    assert.equal(up.requests.length, 1);
  });

  test(`${proto}: with the one slot taken and the queue full, a request is shed 503 RMP_ERR_ADMISSION_SHED`, async (t) => {
    const held: http.ServerResponse[] = [];
    const up = await startUpstream(t, (_req, res) => held.push(res));
    t.after(() => {
      for (const res of held) res.end('late');
    });
    const gw = await startTlsGateway(t, up.url, {
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
      admission: { queue: { maxEntries: 1, timeoutMs: { public: 10_000 } } },
      defense: { rateLimit: { mode: 'off' } },
    });
    const gate = gw.gateway.runtime().upstreams.get('origin')!.admission;
    const c = clientFor(t, proto, gw.port);
    const first = c.request('/one').catch(() => null);
    await waitFor(() => gate.limiter.inFlight === 1, 'the first request holds the slot');
    const second = c.request('/two').catch(() => null);
    await waitFor(() => gate.queue.size === 1, 'the second request is queued');
    const third = await c.request('/three');
    assert.equal(third.status, 503);
    assert.equal(codeOf(third.body), 'RMP_ERR_ADMISSION_SHED');
    for (const res of held.splice(0)) res.end('ok');
    await waitFor(() => held.length === 1, 'the queued request reached the origin');
    held.splice(0)[0]!.end('ok');
    assert.equal((await first)?.status, 200);
    assert.equal((await second)?.status, 200);
  });

  test(`${proto}: bodies at and past maxBodyBytes: 200 up to the limit, 413 past it, the connection serves on`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startTlsGateway(t, up.url, {
      limits: { maxBodyBytes: 64 * 1024, bufferBodyBytes: 128 * 1024 },
      defense: { rateLimit: { mode: 'off' }, bans: { mode: 'off' } },
    });
    const c = clientFor(t, proto, gw.port);
    assert.equal((await c.request('/up', { method: 'POST', body: Buffer.alloc(64 * 1024, 1) })).status, 200);
    const over = await c.request('/up', { method: 'POST', body: Buffer.alloc(64 * 1024 + 1, 1) }).catch(() => null);
    // HTTP/1.1 may see its connection closed instead (the body still on the wire); an HTTP/2 stream gets its 413.
    if (over !== null || proto === 'h2') assert.equal(over?.status, 413);
    // No declared length (HTTP/1.1: chunked; HTTP/2: DATA frames until END_STREAM), on both sides of the limit.
    const sized = (n: number) => ({ method: 'POST', body: Buffer.alloc(n, 1), noLength: true });
    assert.equal((await c.request('/up', sized(64 * 1024))).status, 200);
    assert.equal(up.requests.at(-1)!.bodyBytes, 64 * 1024);
    const unsized = await c.request('/up', sized(64 * 1024 + 1)).catch(() => null);
    if (unsized !== null || proto === 'h2') assert.equal(unsized?.status, 413);
    assert.equal((await c.request('/after')).status, 200);
    assert.equal(up.requests.length, 3);
  });
}
