// WebSocket upgrades pass through to the upstream and back; an upgrade to a dead upstream gets a
// clear 502. TLS is terminated on a listener with a certificate made at test time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import {
  cleanup,
  rawRequest,
  selfSignedCert,
  startGateway,
  startUpstream,
  statusOf,
  type Teardown,
  track,
  waitFor,
} from './helpers.ts';

/** The default catch-all route, with WebSocket tunnels allowed (routes[].websocket is off by default). */
const WS = { routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public', websocket: true }] };

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptFor = (key: string) =>
  createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');

/** A minimal WebSocket upstream: answers the handshake with 101, then echoes raw bytes back; closed when `t` ends. */
async function startWsEchoUpstream(
  t: Teardown,
): Promise<{ url: string; handshakes: http.IncomingMessage[]; close(): Promise<void> }> {
  const handshakes: http.IncomingMessage[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    handshakes.push(req);
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || String(req.headers.upgrade).toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return track(t, {
    url: `http://127.0.0.1:${port}`,
    handshakes,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
}

/** Raw client handshake; resolves with the response head and the connected socket. */
function wsHandshake(
  port: number,
  key: string,
  path = '/ws',
): Promise<{ head: string; rest: Buffer; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no handshake answer; got ${JSON.stringify(buf.toString('latin1'))}`));
    }, 3000);
    socket.on('error', reject);
    socket.on('connect', () =>
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nX-Secret-Hop: x\r\n\r\n`,
      ),
    );
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      resolve({ head: buf.subarray(0, end).toString('latin1'), rest: buf.subarray(end + 4), socket });
    };
    socket.on('data', onData);
  });
}

/** Collects everything a socket sends after the handshake; `until(n)` waits for n bytes in total. */
function collector(socket: net.Socket, already: Buffer): { until(n: number): Promise<Buffer> } {
  let buf = already;
  let waiting: { n: number; resolve(b: Buffer): void } | null = null;
  socket.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    if (waiting !== null && buf.length >= waiting.n) {
      const w = waiting;
      waiting = null;
      w.resolve(buf.subarray(0, w.n));
    }
  });
  return {
    until(n) {
      if (buf.length >= n) return Promise.resolve(buf.subarray(0, n));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out with ${buf.length}/${n} bytes`)), 3000);
        waiting = {
          n,
          resolve: (b) => {
            clearTimeout(timer);
            resolve(b);
          },
        };
      });
    },
  };
}

test('a WebSocket upgrade passes through: 101 with the right accept key, then bytes are echoed both ways', async (t) => {
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, WS);
  let client: net.Socket | undefined;
  cleanup(t, () => client?.destroy());
  const key = randomBytes(16).toString('base64');
  const { head, rest, socket } = await wsHandshake(gw.port, key);
  client = socket;
  assert.equal(statusOf(head), 101, head);
  assert.match(head, new RegExp(`\\r\\nSec-WebSocket-Accept: ${acceptFor(key).replace(/[+/=]/g, '\\$&')}`, 'i'));
  assert.match(head, /\r\nUpgrade: websocket/i);
  // A masked text frame "hello rempart" as a browser would send it; the echo returns the same bytes.
  const payload = Buffer.from('hello rempart');
  const mask = randomBytes(4);
  const frame = Buffer.concat([
    Buffer.from([0x81, 0x80 | payload.length]),
    mask,
    Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!)),
  ]);
  const received = collector(socket, rest);
  socket.write(frame);
  const echoed = await received.until(frame.length);
  assert.deepEqual(echoed, frame);
  // A larger second message keeps flowing on the same tunnel.
  const big = randomBytes(256 * 1024);
  socket.write(big);
  assert.deepEqual(await received.until(frame.length + big.length), Buffer.concat([frame, big]));
  // The handshake the upstream saw kept Upgrade/Connection but not other hop-by-hop fields.
  const seen = up.handshakes[0]!;
  assert.equal(seen.headers.upgrade, 'websocket');
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(seen.headers.via, '1.1 rempart');
  assert.equal(seen.url, '/ws');
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /rempart_websocket_upgrades_total\{route="default"\} 1\n/);
});

test('closing the client side of a WebSocket tunnel closes the upstream side and logs the request once', async (t) => {
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, WS);
  const { head, socket } = await wsHandshake(gw.port, randomBytes(16).toString('base64'));
  assert.equal(statusOf(head), 101);
  const upstreamSocket = up.handshakes[0]!.socket;
  const upstreamClosed = new Promise<void>((r) =>
    upstreamSocket.destroyed ? r() : upstreamSocket.once('close', () => r()),
  );
  socket.destroy();
  await upstreamClosed;
  await waitFor(() => gw.logs.some((l) => l.msg === 'request'), { timeoutMs: 2000, message: 'the request log line' });
  const logs = gw.logs.filter((l) => l.msg === 'request');
  assert.equal(logs.length, 1);
  assert.equal(logs[0]!.status, 101);
  assert.equal(logs[0]!.decision, 'forwarded');
});

test('a WebSocket upgrade toward a dead upstream gets 502 RMP_ERR_UPSTREAM_CONNECT', async (t) => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const deadPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const gw = await startGateway(t, `http://127.0.0.1:${deadPort}`, WS);
  const key = randomBytes(16).toString('base64');
  const raw = await rawRequest(
    gw.port,
    `GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  assert.equal(statusOf(raw), 502, raw);
  assert.match(raw, /"code":"RMP_ERR_UPSTREAM_CONNECT"/);
  const log = gw.logs.find((l) => l.msg === 'request')!;
  assert.equal(log.decision, 'upstream_error');
  assert.equal(log.status, 502);
  // The gateway still answers ordinary requests (with 502 too: the upstream is down), it did not crash.
  const res = await fetch(`${gw.url}/after`);
  assert.equal(res.status, 502);
  await res.body?.cancel();
});

test('an upgrade the upstream refuses is relayed as an ordinary answer and the connection closed, so no later request can ride the tunnel', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/ws')
      res
        .writeHead(403, {
          'content-type': 'text/plain',
          'content-length': '9',
          connection: 'keep-alive',
          'keep-alive': 'timeout=5',
        })
        .end('forbidden');
    else res.end('ok');
  });
  // Only /ws is routed: /internal/admin must never reach the upstream.
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'ws', path: '/ws', upstream: 'origin', class: 'public', websocket: true }],
  });
  const socket = net.connect(gw.port, '127.0.0.1');
  let received = '';
  socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  await new Promise<void>((r) => socket.on('connect', () => r()));
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await waitFor(() => received.includes('forbidden'), {
    timeoutMs: 2000,
    message: () => `the refusal: ${JSON.stringify(received)}`,
  });
  if (!socket.destroyed) socket.write('GET /internal/admin HTTP/1.1\r\nHost: chat.example\r\n\r\n');
  await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
  socket.destroy();
  assert.equal(statusOf(received), 403, received);
  assert.match(received, /\r\nConnection: close\r\n/i);
  assert.doesNotMatch(received, /keep-alive: timeout/i, 'hop-by-hop fields of the refusal are not relayed');
  assert.match(received, /\r\n\r\nforbidden$/);
  assert.deepEqual(
    up.requests.map((r) => r.url),
    ['/ws'],
  );
  const log = gw.logs.find((l) => l.msg === 'request')!;
  assert.equal(log.status, 403);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.doesNotMatch(
    metrics,
    /rempart_websocket_upgrades_total\{/,
    'a refused upgrade is not counted as passed through',
  );
});

test('an upstream that never answers the upgrade handshake gets 504 RMP_ERR_UPSTREAM_TIMEOUT after headersTimeoutMs', async (t) => {
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  cleanup(t, async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });
  const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const gw = await startGateway(t, url, { ...WS, upstreams: [{ name: 'origin', url, headersTimeoutMs: 300 }] });
  const started = Date.now();
  const raw = await rawRequest(
    gw.port,
    `GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    { timeoutMs: 3000 },
  );
  const elapsed = Date.now() - started;
  assert.equal(statusOf(raw), 504, raw);
  assert.match(raw, /RMP_ERR_UPSTREAM_TIMEOUT/);
  assert.ok(elapsed >= 250 && elapsed < 2000, `answered after ${elapsed} ms`);
});

test('a WebSocket upgrade on an unrouted path gets 404 and never reaches the upstream', async (t) => {
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'api', path: '/api/*', upstream: 'origin', class: 'public' }],
  });
  const raw = await rawRequest(
    gw.port,
    `GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  assert.equal(statusOf(raw), 404, raw);
  assert.match(raw, /RMP_ERR_ROUTE_NOT_FOUND/);
  assert.equal(up.handshakes.length, 0);
});

test('a TLS listener terminates HTTPS and the upstream sees X-Forwarded-Proto: https', async (t) => {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-tls-');
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { listeners: [{ address: '127.0.0.1:0', tls: { certFile, keyFile } }] });
  const agent = new https.Agent({ rejectUnauthorized: false, keepAlive: true, maxSockets: 1 });
  cleanup(t, () => agent.destroy());
  const get = (path: string) =>
    new Promise<{ status: number; body: string; protocol: string }>((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port: gw.port, path, agent, servername: 'localhost' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            body,
            protocol: (req.socket as import('node:tls').TLSSocket).getProtocol() ?? '',
          }),
        );
      });
      req.on('error', reject);
    });
  const first = await get('/secure?a=1');
  assert.equal(first.status, 200);
  assert.equal(first.body, 'ok');
  assert.match(first.protocol, /^TLSv1\.[23]$/);
  const second = await get('/secure2');
  assert.equal(second.status, 200);
  assert.equal(up.requests.length, 2);
  assert.equal(up.requests[0]!.url, '/secure?a=1');
  assert.equal(up.requests[0]!.headers['x-forwarded-proto'], 'https');
  assert.equal(up.requests[0]!.headers['x-forwarded-for'], '127.0.0.1');
  // Plain HTTP on the TLS listener does not reach the upstream.
  const plain = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 1000 });
  assert.equal(statusOf(plain), 0);
  assert.equal(up.requests.length, 2);
});

test('a WebSocket upgrade over the TLS listener reaches the plain-HTTP upstream with X-Forwarded-Proto: https', async (t) => {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-tls-');
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, {
    ...WS,
    listeners: [{ address: '127.0.0.1:0', tls: { certFile, keyFile } }],
  });
  const key = randomBytes(16).toString('base64');
  const { status, socket } = await new Promise<{ status: number; socket: import('node:net').Socket }>(
    (resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1',
        port: gw.port,
        path: '/wss',
        rejectUnauthorized: false,
        headers: {
          upgrade: 'websocket',
          connection: 'Upgrade',
          'sec-websocket-key': key,
          'sec-websocket-version': '13',
        },
      });
      req.on('upgrade', (res, sock) => resolve({ status: res.statusCode!, socket: sock as import('node:net').Socket }));
      req.on('response', (res) => reject(new Error(`expected an upgrade, got ${res.statusCode}`)));
      req.on('error', reject);
      req.end();
    },
  );
  cleanup(t, () => socket.destroy());
  assert.equal(status, 101);
  const received = collector(socket, Buffer.alloc(0));
  socket.write('ping over tls');
  assert.equal((await received.until(13)).toString(), 'ping over tls');
  assert.equal(up.handshakes[0]!.headers['x-forwarded-proto'], 'https');
});

test('stopping the gateway closes open WebSocket tunnels after the grace period instead of waiting for them forever', async (t) => {
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, WS);
  let client: net.Socket | undefined;
  cleanup(t, () => client?.destroy());
  const { head, socket } = await wsHandshake(gw.port, randomBytes(16).toString('base64'));
  client = socket;
  assert.equal(statusOf(head), 101);
  const clientClosed = new Promise<void>((r) => socket.once('close', () => r()));
  const started = Date.now();
  const outcome = await Promise.race([
    gw.gateway.stop(200).then(() => 'stopped'),
    new Promise((r) => setTimeout(() => r('hung'), 3000)),
  ]);
  assert.equal(outcome, 'stopped', 'stop() returned while a tunnel was open');
  assert.ok(Date.now() - started >= 150, 'the tunnel was given the grace period');
  await clientClosed;
  assert.equal(up.handshakes.length, 1);
});

test('an h2c upgrade attempt the upstream ignores is answered once and the connection closed, never left as a tunnel', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'site', path: '/site/*', upstream: 'origin', class: 'public' }],
  });
  const raw = await rawRequest(
    gw.port,
    'GET /site/page HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n' +
      'GET /internal/admin HTTP/1.1\r\nHost: x\r\n\r\n',
  );
  assert.equal(statusOf(raw), 200, raw);
  assert.match(raw, /\r\nConnection: close\r\n/i);
  assert.equal(raw.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, 'one answer only');
  assert.deepEqual(
    up.requests.map((r) => r.url),
    ['/site/page'],
  );
  assert.equal(up.requests[0]!.headers['http2-settings'], undefined, 'a field named in Connection is not forwarded');
  assert.equal(up.requests[0]!.headers.upgrade, undefined, 'only WebSocket upgrades are offered to the upstream');
});

test('an idle WebSocket tunnel is closed on both sides after limits.tunnelIdleTimeoutMs', async (t) => {
  const up = await startWsEchoUpstream(t);
  const gw = await startGateway(t, up.url, { ...WS, limits: { tunnelIdleTimeoutMs: 1000 } });
  // Measured from before the handshake: the idle timer starts during it, and a stall after it must
  // not make an on-time close look early.
  const started = Date.now();
  const { head, socket } = await wsHandshake(gw.port, randomBytes(16).toString('base64'));
  assert.equal(statusOf(head), 101);
  const upstreamSocket = up.handshakes[0]!.socket;
  const clientClosed = new Promise<void>((r) => (socket.destroyed ? r() : socket.once('close', () => r())));
  const upstreamClosed = new Promise<void>((r) =>
    upstreamSocket.destroyed ? r() : upstreamSocket.once('close', () => r()),
  );
  await Promise.all([clientClosed, upstreamClosed]);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 900, `closed after ${elapsed} ms, not before the timeout`);
});
