// Attacker review of the lean pool's retry of a dead reused connection (h1-pool.ts, Exchange.fresh) and of the
// node engine's 204/304 with a Content-Length (forward.ts). What must hold: nothing of the dead connection's
// answer (an interim 103 with fields, a part of a final head) reaches the client or mixes into the retry's;
// a PATCH or a POST with a streamed body is never sent twice; an origin that kills every reused connection
// costs at most one retry and one new connection per request, and the pool stays within its cap; a client
// that leaves while its retry waits for a slot takes the retry with it (no healthy connection closed for
// it, nothing sent again); a pool destroyed under a retryable exchange opens no new connection; a 204 or 304
// whose Content-Length "body" is another response smuggles nothing into the next answer, on either engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { H1Pool } from '../src/upstream/h1-pool.ts';
import { startGateway, track, waitFor, type Teardown } from './helpers.ts';

interface Req {
  method: string;
  target: string;
  /** The connection's number (1 for the first the origin accepted) and the request's number on it (1, 2 …). */
  conn: number;
  nth: number;
}

interface RawOrigin {
  url: string;
  port: number;
  /** Requests received, by `METHOD target`. */
  seen: Map<string, number>;
  /** Connections accepted, and those still open. */
  accepted: () => number;
  open: () => number;
}

/** A raw origin: `answer` writes the exact bytes for each request (whole requests only: a head and its body). */
async function rawOrigin(t: Teardown, answer: (s: net.Socket, r: Req) => void): Promise<RawOrigin> {
  const seen = new Map<string, number>();
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    const conn = ++accepted;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let nth = 0;
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        let rest = end + 4;
        const length = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (length !== null) rest += Number(length[1]);
        else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
          const last = buf.indexOf('\r\n0\r\n\r\n', end);
          if (last === -1 && !buf.startsWith('0\r\n\r\n', end + 4)) return;
          rest = last === -1 ? end + 9 : last + 7;
        }
        if (buf.length < rest) return;
        buf = buf.slice(rest);
        const [method, target] = head.slice(0, head.indexOf('\r\n')).split(' ') as [string, string];
        const key = `${method} ${target}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
        answer(s, { method, target, conn, nth: ++nth });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, {
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port, seen, accepted: () => accepted, open: () => sockets.size };
}

function ok(s: net.Socket, r: Req): void {
  const body = `ok ${r.target}`;
  s.write(
    `HTTP/1.1 200 OK\r\nContent-Length: ${r.method === 'HEAD' ? 0 : body.length}\r\n\r\n${r.method === 'HEAD' ? '' : body}`,
  );
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Interim (1xx) answers the client was given. */
  interim: number[];
}

function request(
  agent: http.Agent,
  port: number,
  method: string,
  path: string,
  body?: string | string[],
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const interim: number[] = [];
    const req = http.request({ agent, host: '127.0.0.1', port, method, path, headers }, (res) => {
      let data = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data, interim }));
    });
    req.on('information', (info) => interim.push(info.statusCode));
    req.on('error', reject);
    if (Array.isArray(body)) {
      // A streamed (chunked) body: the gateway cannot replay what it did not keep.
      for (const piece of body) req.write(piece);
      req.end();
    } else req.end(body);
  });
}

const BASE = {
  logging: { level: 'error', requests: false },
  defense: { rateLimit: { mode: 'off' } },
  routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'critical' }],
  server: { engine: 'lean' },
};

test('lean: a 103 with fields and a part of a head on a dead reused connection: nothing of them reaches the client', async (t) => {
  const origin = await rawOrigin(t, (s, r) => {
    if (r.nth === 1) return ok(s, r);
    // The reused connection: an interim answer with fields, a final head in pieces, then the close.
    s.write('HTTP/1.1 103 Early Hints\r\nLink: </evil.css>; rel=preload\r\n\r\n');
    s.write('HTTP/1.1 200 OK\r\nX-Dead: 1\r\nSet-Cookie: dead=1\r\n');
    setTimeout(() => s.write('Content-Length: 99\r\nX-Dead-2'), 5);
    setTimeout(() => s.destroy(), 10);
  });
  const gw = await startGateway(t, origin.url, { ...BASE });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  track(t, { close: () => agent.destroy() });
  for (let i = 0; i < 5; i++) {
    const a = await request(agent, gw.port, 'GET', `/g/${i}`);
    assert.equal(a.status, 200, a.body);
    assert.equal(a.body, `ok /g/${i}`);
    assert.deepEqual(a.interim, [], 'an interim answer of the dead connection reached the client');
    assert.equal(a.headers['x-dead'], undefined);
    assert.equal(a.headers['set-cookie'], undefined);
  }
  // /g/0 went out on a new connection (sent once); every other met a reused one, then its retry.
  assert.equal(origin.seen.get('GET /g/0'), 1);
  for (let i = 1; i < 5; i++) assert.equal(origin.seen.get(`GET /g/${i}`), 2, `/g/${i}`);
});

test('lean: a PATCH, a POST with a streamed body, never sent twice when the reused connection dies', async (t) => {
  const origin = await rawOrigin(t, (s, r) => {
    if (r.nth === 1) return ok(s, r);
    s.write('HTTP/1.1 200 OK\r\nX-Dead: 1\r\n');
    setTimeout(() => s.destroy(), 5);
  });
  const gw = await startGateway(t, origin.url, { ...BASE });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  track(t, { close: () => agent.destroy() });
  const cases: [string, string, string | string[]][] = [
    ['PATCH', '/patch', 'a=1'],
    ['POST', '/post-stream', ['a=', '1']],
  ];
  for (const [method, path, body] of cases) {
    // A GET first: the write goes out on a reused connection.
    assert.equal((await request(agent, gw.port, 'GET', `/warm${path}`)).status, 200);
    const a = await request(agent, gw.port, method, path, body);
    assert.equal(a.status, 502, `${method} ${path}: ${a.status} ${a.body}`);
    assert.equal(origin.seen.get(`${method} ${path}`), 1, `${method} ${path} received again`);
  }
});

test('lean: an origin killing every reused connection: each request at most twice, one new connection, cap kept', async (t) => {
  const origin = await rawOrigin(t, (s, r) => {
    if (r.nth === 1) return ok(s, r);
    // Every reused connection: a part of a head, then a reset.
    s.write('HTTP/1.1 200 OK\r\nContent-');
    setTimeout(() => s.resetAndDestroy(), 1);
  });
  const cap = 3;
  const gw = await startGateway(t, origin.url, {
    ...BASE,
    upstreams: [{ name: 'origin', url: origin.url, connections: cap }],
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  track(t, { close: () => agent.destroy() });
  let requests = 0;
  const bad: string[] = [];
  for (let wave = 0; wave < 10; wave++) {
    await Promise.all(
      Array.from({ length: 16 }, async (_, k) => {
        requests++;
        const a = await request(agent, gw.port, 'GET', `/w/${wave}/${k}`);
        if (a.status !== 200 || a.body !== `ok /w/${wave}/${k}`) bad.push(`/w/${wave}/${k}: ${a.status}`);
      }),
    );
  }
  assert.deepEqual(bad, []);
  for (const [key, n] of origin.seen) assert.ok(n <= 2, `${key} received ${n} times`);
  // Amplification bounded: at most one new connection per request (its retry's).
  assert.ok(origin.accepted() <= requests + cap, `${origin.accepted()} connections for ${requests} requests`);
  // Nothing left over the cap once the waves are done.
  await waitFor(() => origin.open() <= cap, `${origin.open()} connections open, cap ${cap}`);
});

test('lean: a client leaving while its retry waits for a slot: the retry is dropped, no connection closed for it', async (t) => {
  let heldW: net.Socket | null = null;
  const origin = await rawOrigin(t, (s, r) => {
    if (r.target === '/a') {
      // /a on the warm, reused connection: a part of a head, then the close.
      // (late enough for /w to be waiting for the one connection by then).
      s.write('HTTP/1.1 200 OK\r\nX-Part: 1\r\n');
      setTimeout(() => s.destroy(), 300);
      return;
    }
    if (r.target === '/w') {
      heldW = s; // answered when the test says
      return;
    }
    ok(s, r);
  });
  // One connection: when /a's dies, /w (waiting) takes the slot and /a's retry waits at the queue's front.
  const gw = await startGateway(t, origin.url, {
    ...BASE,
    upstreams: [{ name: 'origin', url: origin.url, connections: 1 }],
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  track(t, { close: () => agent.destroy() });
  assert.equal((await request(agent, gw.port, 'GET', '/warm')).status, 200);
  const aReq = http.request({ agent: false, host: '127.0.0.1', port: gw.port, path: '/a' });
  aReq.on('error', () => {});
  aReq.end();
  await waitFor(() => origin.seen.get('GET /a') === 1);
  const w = request(agent, gw.port, 'GET', '/w');
  await waitFor(() => heldW !== null, 'the waiting /w was not sent on a new connection');
  // /a's client leaves while its retry waits for /w's connection.
  aReq.destroy();
  await new Promise((r) => setTimeout(r, 300));
  heldW!.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok w');
  assert.equal((await w).status, 200);
  const after = await request(agent, gw.port, 'GET', '/after');
  assert.equal(after.status, 200);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(origin.seen.get('GET /a'), 1, '/a was sent again after its client left');
  // /w's connection, healthy, carried /after: not closed to make room for a retry nobody waits on.
  assert.equal(origin.accepted(), 2, `${origin.accepted()} connections`);
});

test('lean pool: destroyed under a retryable exchange, it opens no new connection', async (t) => {
  const origin = await rawOrigin(t, (s, r) => {
    if (r.nth === 1) return ok(s, r);
    s.write('HTTP/1.1 200 OK\r\nX-Part: 1\r\n'); // and hold
  });
  const pool = new H1Pool({
    host: '127.0.0.1',
    port: origin.port,
    authority: `127.0.0.1:${origin.port}`,
    connections: 4,
    connectTimeoutMs: 5000,
    headersTimeoutMs: 5000,
    bodyTimeoutMs: 5000,
    keepAliveTimeoutMs: 5000,
  });
  track(t, { close: () => pool.destroy() });
  const run = (path: string) =>
    new Promise<string>((resolve) => {
      pool.dispatch({ method: 'GET', path, headers: [] }, {
        onConnect() {},
        onHeaders: () => true,
        onData: () => true,
        onComplete: () => resolve('complete'),
        onError: (err: Error) => resolve(`error ${(err as { code?: string }).code}`),
      } as never);
    });
  assert.equal(await run('/warm'), 'complete');
  const a = run('/a');
  await waitFor(() => origin.seen.get('GET /a') === 1);
  await pool.destroy();
  // Sent again on a new connection, /a would hang there (the origin holds its answer; no sweep runs).
  const hung = new Promise<string>((r) => setTimeout(() => r('hung'), 1000).unref());
  assert.match(await Promise.race([a, hung]), /^error /);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(origin.seen.get('GET /a'), 1, '/a sent again by a destroyed pool');
  assert.equal(origin.accepted(), 1, 'a destroyed pool opened a connection');
});

for (const engine of ['node', 'lean'] as const) {
  test(`${engine}: a 204 or 304 whose Content-Length "body" is a response: nothing smuggled into the next answer`, async (t) => {
    const smuggled = 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nSMUGGLED';
    const origin = await rawOrigin(t, (s, r) => {
      if (r.target === '/204' || r.target === '/304') {
        const status = r.target === '/204' ? '204 No Content' : '304 Not Modified';
        s.write(`HTTP/1.1 ${status}\r\nContent-Length: ${smuggled.length}\r\nETag: "v1"\r\n\r\n${smuggled}`);
      } else ok(s, r);
    });
    const gw = await startGateway(t, origin.url, { ...BASE, server: { engine } });
    // One client connection, one request after the other.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    track(t, { close: () => agent.destroy() });
    for (const [path, status] of [
      ['/204', 204],
      ['/n1', 200],
      ['/304', 304],
      ['/n2', 200],
      ['/n3', 200],
    ] as const) {
      const a = await request(agent, gw.port, 'GET', path, undefined, { 'if-none-match': '"v1"' });
      assert.equal(a.status, status, `${path}: ${a.status} ${a.body}`);
      assert.equal(a.headers['x-smuggled'], undefined, path);
      assert.equal(a.body, status === 200 ? `ok ${path}` : '', path);
    }
  });
}

test('lean: a GET that kills its connection on two servers: sent at most twice to each, four in all', async (t) => {
  // The pool's one retry (a reused connection died) and forward.ts's one retry on another server compound:
  // a "query of death" reaches each server at most twice. This is the bound; a loop would exceed it.
  const qod = (s: net.Socket, r: Req) => {
    if (r.target !== '/qod') return ok(s, r);
    s.write('HTTP/1.1 200 OK\r\nX-Part: 1\r\n');
    setTimeout(() => s.destroy(), 2);
  };
  const a = await rawOrigin(t, qod);
  const b = await rawOrigin(t, qod);
  const gw = await startGateway(t, a.url, { ...BASE, upstreams: [{ name: 'origin', servers: [a.url, b.url] }] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  track(t, { close: () => agent.destroy() });
  // Both servers get a connection to reuse.
  for (let i = 0; i < 4; i++) assert.equal((await request(agent, gw.port, 'GET', `/warm/${i}`)).status, 200);
  assert.ok(a.accepted() >= 1 && b.accepted() >= 1);
  const r = await request(agent, gw.port, 'GET', '/qod');
  assert.equal(r.status, 502, r.body);
  const sa = a.seen.get('GET /qod') ?? 0;
  const sb = b.seen.get('GET /qod') ?? 0;
  assert.ok(sa <= 2 && sb <= 2, `received ${sa} and ${sb} times`);
  t.diagnostic(`received ${sa} + ${sb} times`);
});
