// Attacker review of 9f1241b (forward.ts #staleReuse / requestHeadBytes / pool.ts dispatchFresh): undici's
// reused keep-alive connection dying under a GET or HEAD is sent again once on a one-off connection. Held
// here: a first request on a new connection is never sent twice, whatever its shape (absolute-form target,
// no Host, a huge head, bytes past ASCII, Content-Length: 0); a reused one is retried whatever its shape;
// TLS upstreams (undici on both engines) take the path; a client leaving, the gateway stopping or a reload
// retiring the server mid-retry leaves no one-off connection open; a 103 before the close is not relayed;
// the stale retry is no upstream failure, a failing one-off attempt is one; a reused connection reset
// (ECONNRESET, not a FIN) is retried as the lean pool retries it (undici's reset error carried no byte count
// until pool.ts serverConnector).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http2 from 'node:http2';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../src/config/load.ts';
import {
  holdConnection,
  rawRequest,
  selfSignedCert,
  startGateway,
  statusOf,
  track,
  waitFor,
  withEngine,
  type Teardown,
} from './helpers.ts';

// The gateway checks an https origin's certificate: the test's self-signed one is trusted through
// `tls.caFile` (trusted(): the one-off retry's connections check it too).

interface Exchange {
  /** The connection's number at the origin (0 for the first it accepted) and the request's on it. */
  conn: number;
  n: number;
  head: string;
  s: net.Socket;
}

interface Origin {
  url: string;
  /** Every request head that reached the origin, in order. */
  heads: string[];
  /** Connections by number, and whether each is closed. */
  conns: net.Socket[];
  closed: boolean[];
  /** The most connections open at once. */
  maxOpen: number;
}

/** An origin on raw sockets (TLS with `cert`): `act` decides what each request gets. Requests carry no body. */
async function origin(
  t: Teardown,
  act: (x: Exchange) => void,
  cert?: { certFile: string; keyFile: string },
): Promise<Origin> {
  const o: Origin = { url: '', heads: [], conns: [], closed: [], maxOpen: 0 };
  let open = 0;
  const onConn = (s: net.Socket) => {
    const conn = o.conns.length;
    o.conns.push(s);
    o.closed.push(false);
    open++;
    o.maxOpen = Math.max(o.maxOpen, open);
    s.on('close', () => {
      o.closed[conn] = true;
      open--;
    });
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let n = 0;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end + 4).toString('latin1');
        buf = buf.subarray(end + 4);
        o.heads.push(head);
        act({ conn, n: n++, head, s });
      }
    });
  };
  const server = cert
    ? tls.createServer({ cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }, onConn)
    : net.createServer(onConn);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, {
    close: () =>
      new Promise<void>((r) => {
        for (const s of o.conns) s.destroy();
        server.close(() => r());
      }),
  });
  o.url = `${cert ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return o;
}

/** A whole answer, its body naming the request line. */
function answer(x: Exchange): void {
  const line = x.head.slice(0, x.head.indexOf('\r\n'));
  const body = `ok ${line}`;
  const head = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`;
  x.s.write(line.startsWith('HEAD ') ? head : head + body, 'latin1');
}

/** A part of a head, then the close. */
function breakOff(x: Exchange): void {
  x.s.end('HTTP/1.1 200 OK\r\nContent-Le', 'latin1');
}

/** The first request of each connection answered, any later one met by the connection closing. */
function firstOnly(x: Exchange): void {
  if (x.n === 0) answer(x);
  else x.s.destroy();
}

/** The origin as the upstream, its self-signed certificate (if any) its authority. */
function trusted(o: Origin, cert: { certFile: string } | undefined, extra: Record<string, unknown> = {}) {
  return { name: 'origin', url: o.url, ...(cert ? { tls: { caFile: cert.certFile } } : {}), ...extra };
}

const BASE = {
  logging: { level: 'error', requests: false },
  defense: { rateLimit: { mode: 'off' } },
  routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'public' }],
};

/** How many request heads reaching the origin name `marker` in their request line. */
function seen(o: Origin, marker: string): number {
  return o.heads.filter((h) => h.slice(0, h.indexOf('\r\n')).includes(marker)).length;
}

/**
 * Requests of unusual shapes, each naming its marker `/shape/<i>` in its target (HTTP/1.1 ones close after),
 * and a plain request with the same Host (undici names a TLS upstream's server by the request's Host, and
 * opens a new connection when it changes).
 */
function shapes(): { name: string; bytes: Buffer; warm: string }[] {
  return shapeList().map((s, i) => {
    const head = s.bytes.toString('latin1');
    const host = /\r\nHost: ([^\r]*)\r\n/.exec(head)?.[1];
    const warm =
      host === undefined
        ? `GET /warm/${i} HTTP/1.0\r\n\r\n`
        : `GET /warm/${i} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    return { ...s, warm };
  });
}

function shapeList(): { name: string; bytes: Buffer }[] {
  const b = (s: string) => Buffer.from(s, 'latin1');
  const big = 'a'.repeat(14000);
  const many = Array.from({ length: 80 }, (_, i) => `X-H-${i}: v${i}\r\n`).join('');
  return [
    { name: 'plain', bytes: b('GET /shape/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n') },
    {
      name: 'absolute-form',
      bytes: b('GET http://localhost/shape/1?q=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'),
    },
    { name: 'HTTP/1.0, no Host', bytes: b('GET /shape/2 HTTP/1.0\r\n\r\n') },
    {
      name: 'a 14 KB header',
      bytes: b(`GET /shape/3 HTTP/1.1\r\nHost: localhost\r\nX-Big: ${big}\r\nConnection: close\r\n\r\n`),
    },
    { name: '80 headers', bytes: b(`GET /shape/4 HTTP/1.1\r\nHost: localhost\r\n${many}Connection: close\r\n\r\n`) },
    {
      name: 'latin1 and utf-8 bytes in values',
      bytes: Buffer.concat([
        b('GET /shape/5 HTTP/1.1\r\nHost: localhost\r\nX-Latin: caf\xe9\r\nX-Utf8: '),
        Buffer.from('café 😀 日本', 'utf8'),
        b('\r\nCookie: a=\xe9\xff\r\nConnection: close\r\n\r\n'),
      ]),
    },
    {
      name: 'Content-Length: 0 on a GET',
      bytes: b('GET /shape/6 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'),
    },
    { name: 'HEAD', bytes: b('HEAD /shape/7 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n') },
    {
      name: 'Expect, a Via, a Connection-named field, X-Forwarded-For',
      bytes: b(
        'GET /shape/8 HTTP/1.1\r\nHost: LocalHost:80\r\nExpect: 100-continue\r\nVia: 1.0 other\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n',
      ),
    },
    {
      name: 'a host with a port, upper case, and a long query',
      bytes: b(`GET /shape/9?${'q=1&'.repeat(500)} HTTP/1.1\r\nHost: EXAMPLE.com:8080\r\nConnection: close\r\n\r\n`),
    },
  ];
}

// The node engine with a plain and an https origin, the lean engine with an https one (its plain-http
// pool retries itself): both parsers' requests measured against what undici writes.
for (const [engine, secure] of [
  ['node', false],
  ['node', true],
  ['lean', true],
] as const) {
  const label = `${engine} engine, ${secure ? 'https' : 'http'} origin`;

  test(`${label}: a first request on a new connection is sent once, whatever its shape`, async (t) => {
    // An origin breaking off every answer: every request meets a new connection, and fails.
    const cert = secure ? selfSignedCert(t) : undefined;
    const o = await origin(t, breakOff, cert);
    const gw = await startGateway(t, o.url, { ...BASE, server: { engine }, upstreams: [trusted(o, cert)] });
    const list = shapes();
    for (let i = 0; i < list.length; i++) {
      const raw = await rawRequest(gw.port, list[i]!.bytes);
      assert.equal(statusOf(raw), 502, `${list[i]!.name}: ${raw.slice(0, 200)}`);
      assert.equal(seen(o, `/shape/${i}`), 1, `${list[i]!.name}: sent ${seen(o, `/shape/${i}`)} times`);
    }
    assert.equal(o.conns.length, list.length);
  });

  test(`${label}: a request of any shape that met a dead reused connection is sent again, once`, async (t) => {
    const cert = secure ? selfSignedCert(t) : undefined;
    const o = await origin(t, firstOnly, cert);
    const gw = await startGateway(t, o.url, {
      ...BASE,
      server: { engine },
      upstreams: [trusted(o, cert, { connections: 1 })],
    });
    const list = shapes();
    for (let i = 0; i < list.length; i++) {
      // The warm-up leaves one idle connection the origin answered once: the next request reuses it.
      assert.equal(statusOf(await rawRequest(gw.port, list[i]!.warm)), 200);
      const raw = await rawRequest(gw.port, list[i]!.bytes);
      assert.equal(statusOf(raw), 200, `${list[i]!.name}: ${raw.slice(0, 200)}`);
      assert.equal(seen(o, `/shape/${i}`), 2, `${list[i]!.name}: sent ${seen(o, `/shape/${i}`)} times`);
    }
    // Each one-off connection closed after its answer; the last pooled one died under its request.
    await waitFor(() => o.closed.every(Boolean), { timeoutMs: 2000 });
  });
}

for (const engine of ['lean', 'node'] as const) {
  test(`${engine} engine, an https origin answering once per connection: GET and HEAD retried, POST not, nothing three times`, async (t) => {
    const cert = selfSignedCert(t);
    const o = await origin(t, firstOnly, cert);
    const gw = await startGateway(t, o.url, { ...BASE, server: { engine }, upstreams: [trusted(o, cert)] });
    let ok = 0;
    for (let i = 0; i < 30; i++) {
      const m = i % 2 === 0 ? 'GET' : 'HEAD';
      const raw = await rawRequest(gw.port, `${m} /t/${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(raw), 200, `${m} /t/${i}: ${raw.slice(0, 200)}`);
      ok++;
    }
    assert.equal(ok, 30);
    for (let i = 0; i < 30; i++) assert.ok(seen(o, `/t/${i} `) <= 2);
    // Half the requests met the connection the one before left: those were sent twice.
    assert.ok(seen(o, '/t/') >= 40, `${seen(o, '/t/')} sends for 30 requests: no retry happened`);
    for (let i = 0; i < 10; i++) {
      const raw = await rawRequest(
        gw.port,
        `POST /p/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
      );
      assert.ok([200, 502].includes(statusOf(raw)), raw.slice(0, 200));
      assert.equal(seen(o, `/p/${i} `), 1);
    }
  });

  test(`${engine} engine, an https origin breaking off every answer: each GET sent once`, async (t) => {
    const cert = selfSignedCert(t);
    const o = await origin(t, breakOff, cert);
    const gw = await startGateway(t, o.url, { ...BASE, server: { engine }, upstreams: [trusted(o, cert)] });
    for (let i = 0; i < 5; i++) {
      const raw = await rawRequest(gw.port, `GET /b/${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(raw), 502);
      assert.equal(seen(o, `/b/${i} `), 1);
    }
  });
}

/**
 * An origin whose first connection answers once then dies under the next request; every later connection
 * (the one-off retry's) takes its request and never answers. Returns once the retry's request is in.
 */
async function retryHanging(t: Teardown, partial: Record<string, unknown> = {}) {
  const o = await origin(t, (x) => {
    if (x.conn === 0) firstOnly(x);
  });
  const gw = await startGateway(t, o.url, { ...BASE, ...partial });
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /warm HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  const client = holdConnection(t, gw.port);
  await client.connected;
  client.socket.write('GET /x HTTP/1.1\r\nHost: w\r\n\r\n');
  await waitFor(() => o.conns.length === 2 && seen(o, '/x ') === 2, { timeoutMs: 3000 });
  assert.equal(o.closed[1], false);
  return { o, gw, client };
}

test('the client leaving mid-retry closes the one-off connection', async (t) => {
  const { o, client } = await retryHanging(t);
  client.socket.destroy();
  await waitFor(() => o.closed[1], { timeoutMs: 2000 });
});

test('the gateway stopping mid-retry closes the one-off connection, and stops in time', async (t) => {
  const { o, gw } = await retryHanging(t);
  const t0 = performance.now();
  await gw.close();
  assert.ok(performance.now() - t0 < 3000, `stop took ${performance.now() - t0} ms`);
  await waitFor(() => o.closed[1], { timeoutMs: 2000 });
});

test('a reload retiring the server mid-retry, then the client leaving: the one-off connection closes', async (t) => {
  const { o, gw, client } = await retryHanging(t);
  const config = gw.gateway.runtime().config;
  // Other client settings: the server is a new one, the old one retired with its pool.
  await gw.gateway.reload(
    validateConfig(
      withEngine({
        ...BASE,
        version: 1,
        listeners: config.listeners,
        admin: config.admin,
        upstreams: [{ name: 'origin', url: o.url, connections: 7 }],
      }),
      '(test)',
    ),
  );
  client.socket.destroy();
  await waitFor(() => o.closed[1], { timeoutMs: 2000 });
});

test('a 103 on the dead reused connection is not relayed: the client gets the retry answer alone', async (t) => {
  const o = await origin(t, (x) => {
    if (x.conn === 0 && x.n === 1) {
      x.s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n', 'latin1');
      setTimeout(() => x.s.destroy(), 5);
    } else answer(x);
  });
  const gw = await startGateway(t, o.url, BASE);
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /warm HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  const raw = await rawRequest(gw.port, 'GET /x HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n');
  assert.equal(statusOf(raw), 200, raw);
  assert.equal(raw.match(/HTTP\/1\.1 /g)?.length, 1, raw);
  assert.ok(raw.endsWith('ok GET /x HTTP/1.1'), raw);
  assert.equal(seen(o, '/x '), 2);
});

/** rempart_upstream_errors_total and rempart_upstream_retries_total, summed. */
async function counts(adminUrl: string): Promise<{ errors: number; retries: number }> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const sum = (name: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { errors: sum('rempart_upstream_errors_total'), retries: sum('rempart_upstream_retries_total') };
}

test('the stale retry is no upstream failure; a one-off attempt that fails is one, counted once', async (t) => {
  const o = await origin(t, (x) => {
    if (x.conn === 0) firstOnly(x);
    else if (x.head.startsWith('GET /fail ')) breakOff(x);
    else answer(x);
  });
  const gw = await startGateway(t, o.url, { ...BASE, admin: { address: '127.0.0.1:0' } });
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /warm HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /ok HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  assert.equal(seen(o, '/ok '), 2);
  assert.deepEqual(await counts(gw.adminUrl!), { errors: 0, retries: 0 });
  // Connection 0 is gone; the next request opens a new one: answered, then reused by /fail.
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /warm2 HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  const raw = await rawRequest(gw.port, 'GET /fail HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n');
  assert.equal(statusOf(raw), 502, raw);
  assert.equal(seen(o, '/fail '), 2);
  assert.deepEqual(await counts(gw.adminUrl!), { errors: 1, retries: 0 });
});

test('a cached route: collapsed waiters get the retried answer, stored once', async (t) => {
  const o = await origin(t, (x) => {
    if (x.conn === 0 && x.n > 0) return void x.s.destroy();
    const body = 'cached body';
    // The retry's answer comes a little later: the other requests for the key wait on it.
    setTimeout(
      () =>
        x.s.write(
          `HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
          'latin1',
        ),
      x.conn === 0 ? 0 : 100,
    );
  });
  const gw = await startGateway(t, o.url, {
    ...BASE,
    routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'public', cache: { enabled: true } }],
  });
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /warm HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  const all = await Promise.all(
    Array.from({ length: 6 }, () => rawRequest(gw.port, 'GET /c HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')),
  );
  for (const raw of all) {
    assert.equal(statusOf(raw), 200, raw);
    assert.ok(raw.endsWith('\r\n\r\ncached body'), raw);
  }
  // The leader's request twice (the dead connection, then its retry); its waiters never reached the origin.
  assert.equal(seen(o, '/c '), 2);
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /c HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 200);
  assert.equal(seen(o, '/c '), 2);
});

test('two servers: a failing retry on a new connection moves on to the other server, no server gets it three times', async (t) => {
  const act = (x: Exchange) => {
    if (x.conn === 0) firstOnly(x);
    else if (x.head.startsWith('GET /x ')) breakOff(x);
    else answer(x);
  };
  const a = await origin(t, act);
  const b = await origin(t, act);
  const gw = await startGateway(t, a.url, {
    ...BASE,
    admin: { address: '127.0.0.1:0' },
    upstreams: [{ name: 'origin', servers: [a.url, b.url] }],
  });
  // One idle connection on each server, answered once.
  for (let i = 0; i < 2; i++)
    assert.equal(
      statusOf(await rawRequest(gw.port, `GET /warm/${i} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n`)),
      200,
    );
  assert.equal(a.conns.length + b.conns.length, 2);
  const raw = await rawRequest(gw.port, 'GET /x HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n');
  assert.equal(statusOf(raw), 502, raw);
  const [na, nb] = [seen(a, '/x '), seen(b, '/x ')];
  // Each server at most twice (docs/upstreams.md); the node engine's one-off retry is once per request (3 in
  // all), the lean pool's per server (4).
  assert.ok(na <= 2 && nb <= 2 && na + nb >= 3, `sent ${na} times to one server, ${nb} to the other`);
  const c = await counts(gw.adminUrl!);
  assert.equal(c.retries, 1);
});

/** A GET over HTTP/2 (cleartext): its status. */
function h2Get(port: number, path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':path': path, ':authority': 'w', ...headers });
    req.on('response', (h) => {
      req.resume();
      req.on('end', () => {
        session.close();
        resolve(Number(h[':status']));
      });
    });
    req.on('error', reject);
    req.end();
  });
}

test('HTTP/2 clients: a GET on a dead reused connection is retried, one on a new connection is not', async (t) => {
  const o = await origin(t, (x) => {
    if (x.head.includes('/fail')) breakOff(x);
    else firstOnly(x);
  });
  const gw = await startGateway(t, o.url, {
    ...BASE,
    listeners: [{ address: '127.0.0.1:0', http2: { cleartext: true } }],
    upstreams: [{ name: 'origin', url: o.url, connections: 1 }],
  });
  // First, on a new connection: not sent again.
  assert.equal(await h2Get(gw.port, '/fail'), 502);
  assert.equal(seen(o, '/fail '), 1);
  for (let i = 0; i < 3; i++) {
    assert.equal(await h2Get(gw.port, `/warm/${i}`), 200);
    assert.equal(await h2Get(gw.port, `/x/${i}`, { 'x-utf8': 'caf\u00e9', cookie: 'a=1' }), 200);
    assert.equal(seen(o, `/x/${i} `), 2);
  }
});

test('a reused connection reset (ECONNRESET) under a GET or HEAD is retried as a closed one is; a new one is not', async (t) => {
  // An origin closing a keep-alive connection whose next request sits unread in its buffer sends a reset, not
  // a FIN (its keep-alive timeout racing the request, a worker killed): the lean pool retries it, undici's
  // reports ECONNRESET (or EPIPE) without the socket's bytes.
  const o = await origin(t, (x) => {
    if (x.head.includes('/fail')) x.s.resetAndDestroy();
    else if (x.n === 0) answer(x);
    else x.s.resetAndDestroy();
  });
  const gw = await startGateway(t, o.url, { ...BASE, upstreams: [{ name: 'origin', url: o.url, connections: 1 }] });
  // A new connection reset: once, a 502.
  assert.equal(statusOf(await rawRequest(gw.port, 'GET /fail HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')), 502);
  assert.equal(seen(o, '/fail '), 1);
  for (let i = 0; i < 4; i++) {
    const m = i % 2 === 0 ? 'GET' : 'HEAD';
    assert.equal(
      statusOf(await rawRequest(gw.port, `GET /warm/${i} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n`)),
      200,
    );
    const raw = await rawRequest(gw.port, `${m} /x/${i} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(raw), 200, `${m} /x/${i}: ${raw.slice(0, 200)}`);
    assert.equal(seen(o, `/x/${i} `), 2);
  }
  // Not a POST.
  assert.equal(
    statusOf(await rawRequest(gw.port, 'GET /warm-post HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n')),
    200,
  );
  const post = await rawRequest(
    gw.port,
    'POST /post HTTP/1.1\r\nHost: w\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx',
  );
  assert.equal(statusOf(post), 502);
  assert.equal(seen(o, '/post '), 1);
});
