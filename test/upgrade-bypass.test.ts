// A request carrying `Connection: Upgrade` + `Upgrade: websocket` crosses the phases like any other:
// on a route that does not allow WebSocket it is an ordinary GET (admission, cache, every phase), and
// on a route that does, the tunnel takes an admission slot, holds it until it closes, and its bytes
// count against the exfiltration quota. Real sockets throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import {
  cleanup,
  errorCodeOf,
  rawRequest,
  sleep,
  startGateway,
  statusOf,
  type Teardown,
  track,
  waitFor,
} from './helpers.ts';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const handshake = (path = '/ws', host = 'chat.example') =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

interface Origin {
  url: string;
  /** Exchanges seen, as requests or as upgrades. */
  requests: number;
  upgrades: number;
  inFlight: number;
  maxInFlight: number;
  /** Sockets the origin switched to a tunnel (echoing what they receive). */
  tunnels: Set<net.Socket>;
  close(): Promise<void>;
}

/**
 * An origin with two faces: ordinary requests get `body` after `delayMs` (cacheable); upgrade requests
 * get the same 200 after the same delay (an origin without WebSocket on that path), unless `ws` is
 * set: then 101 and an echo tunnel. Closed when the test `t` ends.
 */
async function startOrigin(t: Teardown, opts: { delayMs?: number; ws?: boolean; body?: string } = {}): Promise<Origin> {
  const delayMs = opts.delayMs ?? 0;
  const body = opts.body ?? 'page';
  const sockets = new Set<net.Socket>();
  const origin: Origin = {
    url: '',
    requests: 0,
    upgrades: 0,
    inFlight: 0,
    maxInFlight: 0,
    tunnels: new Set(),
    close: async () => {},
  };
  const enter = () => {
    origin.inFlight++;
    origin.maxInFlight = Math.max(origin.maxInFlight, origin.inFlight);
  };
  const server = http.createServer((req, res) => {
    origin.requests++;
    enter();
    req.resume();
    setTimeout(() => {
      origin.inFlight--;
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' }).end(body);
    }, delayMs);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    origin.upgrades++;
    socket.on('error', () => {});
    if (opts.ws) {
      const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${WS_GUID}`).digest('base64');
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      if (head.length > 0) socket.write(head);
      origin.tunnels.add(socket);
      socket.on('close', () => origin.tunnels.delete(socket));
      socket.pipe(socket);
      return;
    }
    enter();
    setTimeout(() => {
      origin.inFlight--;
      socket.end(
        `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: public, max-age=60\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
    }, delayMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  origin.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  origin.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return track(t, origin);
}

/** Open a raw connection, send a handshake, resolve with the answer's head (and the socket, still open). */
function openHandshake(
  port: number,
  payload: string,
): Promise<{ head: string; socket: net.Socket; received(): Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let resolved = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer; got ${JSON.stringify(buf.toString('latin1'))}`));
    }, 10_000);
    socket.on('error', () => {});
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (resolved || end === -1) return;
      resolved = true;
      clearTimeout(timer);
      resolve({ head: buf.subarray(0, end).toString('latin1'), socket, received: () => buf.subarray(end + 4) });
    });
    socket.on('close', () => {
      if (resolved) return;
      clearTimeout(timer);
      resolved = true;
      resolve({ head: buf.toString('latin1'), socket, received: () => Buffer.alloc(0) });
    });
  });
}

async function metricsOf(adminUrl: string | null): Promise<string> {
  return (await fetch(`${adminUrl}/metrics`)).text();
}

test('a flood of GETs dressed as WebSocket handshakes does not bypass admission: the origin never sees more than the limit', async (t) => {
  const origin = await startOrigin(t, { delayMs: 150 });
  const gw = await startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url, admission: { mode: 'static', staticLimit: 2 } }],
    routes: [{ name: 'payments', path: '/*', upstream: 'origin', class: 'critical' }],
    admission: { queue: { timeoutMs: { critical: 30000 } } },
  });
  const answers = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      rawRequest(gw.port, handshake(`/payments/approve?i=${i}`), { timeoutMs: 30000 }),
    ),
  );
  for (const raw of answers) assert.equal(statusOf(raw), 200, raw);
  assert.equal(origin.requests + origin.upgrades, 12);
  assert.equal(origin.upgrades, 0, 'the origin was offered an upgrade on a route that does not allow WebSocket');
  assert.ok(
    origin.maxInFlight <= 2,
    `the origin saw ${origin.maxInFlight} requests at once, past the admission limit of 2`,
  );
  const metrics = await metricsOf(gw.adminUrl);
  assert.match(metrics, /^rempart_admission_queued_total\{upstream="origin",class="critical"\} (\d+)$/m);
  assert.ok(
    Number(/^rempart_admission_queued_total\{upstream="origin",class="critical"\} (\d+)$/m.exec(metrics)![1]) >= 10,
  );
  assert.doesNotMatch(metrics, /^rempart_websocket_upgrades_total\{/m);
});

test('on a cached route, a GET carrying Upgrade is answered from the cache: the origin is asked once', async (t) => {
  const origin = await startOrigin(t, { body: 'catalogue' });
  const gw = await startGateway(t, origin.url, {
    routes: [{ name: 'catalogue', path: '/*', upstream: 'origin', class: 'cacheable' }],
  });
  for (let i = 0; i < 5; i++) {
    const raw = await rawRequest(gw.port, handshake('/track/A'), { timeoutMs: 5000 });
    assert.equal(statusOf(raw), 200, raw);
    assert.match(raw, /\r\n\r\n(?:9\r\n)?catalogue/);
    // Node stops parsing at such a request: the answer says the connection ends with it.
    assert.match(raw, /\r\nConnection: close\r\n/i);
    if (i > 0) assert.match(raw, /\r\nx-cache: HIT\r\n/i);
  }
  assert.equal(origin.requests + origin.upgrades, 1, 'the Upgrade header walked past the cache');
});

test('a route that does not allow WebSocket never opens a tunnel: the handshake is an ordinary GET', async (t) => {
  const origin = await startOrigin(t, { ws: true, body: 'no websocket here' });
  const gw = await startGateway(t, origin.url);
  const { head, socket } = await openHandshake(
    gw.port,
    `${handshake('/ws')}GET /pipelined HTTP/1.1\r\nHost: chat.example\r\n\r\n`,
  );
  // Bounded: on a tunnel the connection would stay open.
  await Promise.race([
    new Promise<void>((r) => (socket.destroyed ? r() : socket.once('close', () => r()))),
    sleep(3000),
  ]);
  socket.destroy();
  assert.equal(statusOf(head), 200, head);
  assert.match(head, /\r\nConnection: close/i);
  assert.equal(origin.upgrades, 0, 'the origin was offered the upgrade');
  assert.equal(origin.requests, 1, 'only the handshake, as an ordinary GET, reached the origin');
  assert.doesNotMatch(await metricsOf(gw.adminUrl), /^rempart_websocket_upgrades_total\{/m);
});

test('a WebSocket tunnel holds an admission slot while open and gives it back on close; past the limit a handshake is shed', async (t) => {
  const origin = await startOrigin(t, { ws: true });
  const gw = await startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url, admission: { mode: 'static', staticLimit: 1 } }],
    routes: [
      { name: 'chat', path: '/ws', upstream: 'origin', class: 'public', websocket: true },
      { name: 'pages', path: '/*', upstream: 'origin', class: 'critical' },
    ],
    admission: { queue: { timeoutMs: { public: 300, critical: 30000 } } },
  });
  let tunnel: net.Socket | undefined;
  cleanup(t, () => tunnel?.destroy());
  const first = await openHandshake(gw.port, handshake('/ws'));
  tunnel = first.socket;
  assert.equal(statusOf(first.head), 101, first.head);
  // The tunnel works end to end.
  first.socket.write('ping');
  await waitFor(() => first.received().toString() === 'ping', { intervalMs: 20, message: 'the echo' });
  // A second tunnel finds no slot: it waits its class's queue deadline and is shed, never dialled.
  const second = await rawRequest(gw.port, handshake('/ws'), { timeoutMs: 5000 });
  assert.equal(statusOf(second), 503, second);
  assert.equal(errorCodeOf(second), 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT');
  assert.equal(origin.upgrades, 1);
  // An ordinary request waits behind the open tunnel…
  const page = fetch(`${gw.url}/page`).then(async (r) => ({ status: r.status, body: await r.text() }));
  const queued = /^rempart_admission_queued_total\{upstream="origin",class="critical"\} 1$/m;
  await waitFor(async () => queued.test(await metricsOf(gw.adminUrl)), {
    intervalMs: 20,
    message: 'the page to queue',
  });
  await sleep(100);
  assert.equal(origin.requests, 0, 'the page reached the origin while the tunnel held the only slot');
  // …and goes through once the tunnel closes.
  tunnel.destroy();
  assert.deepEqual(await page, { status: 200, body: 'page' });
  assert.equal(origin.requests, 1);
  const idle = /^rempart_admission_in_flight\{upstream="origin"\} 0$/m;
  await waitFor(async () => idle.test(await metricsOf(gw.adminUrl)), { intervalMs: 20, message: 'the slot back' });
  const log = gw.logs.find((l) => l.msg === 'request' && l.status === 101);
  assert.equal(log?.decision, 'forwarded');
});

test('bytes the origin sends down a WebSocket tunnel count against the exfiltration quota, and the tunnel is cut where it crosses it', async (t) => {
  const origin = await startOrigin(t, { ws: true });
  const gw = await startGateway(t, origin.url, {
    routes: [
      {
        name: 'feed',
        path: '/ws',
        upstream: 'origin',
        class: 'authenticated',
        websocket: true,
        sensitive: { bytesPerDay: 4000, identity: 'address' },
      },
    ],
    defense: { decisionHeader: true },
  });
  const first = await openHandshake(gw.port, handshake('/ws'));
  assert.equal(statusOf(first.head), 101, first.head);
  first.socket.write(randomBytes(1000));
  await waitFor(() => first.received().length >= 1000, { intervalMs: 20, message: 'the first echo' });
  // 6000 more would take the identity to 7000 bytes: the tunnel is closed before they are sent on.
  const closed = new Promise<void>((r) => (first.socket.destroyed ? r() : first.socket.once('close', () => r())));
  first.socket.write(randomBytes(6000));
  await Promise.race([closed, sleep(5000)]);
  assert.ok(first.socket.destroyed || first.socket.readableEnded, 'the tunnel stayed open past the quota');
  assert.ok(first.received().length < 4000, `${first.received().length} bytes went down the tunnel`);
  await waitFor(() => gw.logs.some((l) => l.msg === 'request' && l.status === 101), {
    intervalMs: 20,
    message: 'the tunnel to be logged',
  });
  assert.equal(gw.logs.find((l) => l.msg === 'request' && l.status === 101)!.reason, 'RMP_ERR_EXFILTRATION');
  // What did go down counted: the next handshake is refused.
  const second = await rawRequest(gw.port, handshake('/ws'), { timeoutMs: 5000 });
  assert.equal(statusOf(second), 429, second);
  assert.equal(errorCodeOf(second), 'RMP_ERR_EXFILTRATION');
  assert.equal(origin.upgrades, 1);
});

test('open tunnels are capped by limits.maxTunnels, whatever admission says; a closed tunnel frees its place', async (t) => {
  const origin = await startOrigin(t, { ws: true });
  const gw = await startGateway(t, origin.url, {
    ...{ routes: [{ name: 'chat', path: '/*', upstream: 'origin', class: 'public', websocket: true }] },
    limits: { maxTunnels: 2 },
  });
  const open: net.Socket[] = [];
  cleanup(t, () => {
    for (const s of open) s.destroy();
  });
  for (let i = 0; i < 2; i++) {
    const hs = await openHandshake(gw.port, handshake('/ws'));
    open.push(hs.socket);
    assert.equal(statusOf(hs.head), 101, hs.head);
  }
  const third = await rawRequest(gw.port, handshake('/ws'), { timeoutMs: 5000 });
  assert.equal(statusOf(third), 503, third);
  assert.equal(errorCodeOf(third), 'RMP_ERR_TUNNEL_LIMIT');
  assert.match(third, /\r\nretry-after: 5\r\n/i);
  assert.equal(origin.upgrades, 2, 'the refused handshake was dialled');
  // Ordinary requests are not tunnels: they still pass.
  assert.equal((await fetch(`${gw.url}/page`)).status, 200);
  open.shift()!.destroy();
  await waitFor(
    async () => {
      const hs = await openHandshake(gw.port, handshake('/ws'));
      open.push(hs.socket);
      return statusOf(hs.head) === 101;
    },
    { intervalMs: 20, message: 'a place to free' },
  );
  assert.equal(origin.upgrades, 3);
});

test('a WebSocket handshake pipelined behind a request still being answered is never forwarded, and the gateway stays up', async (t) => {
  const origin = await startOrigin(t, { ws: true, delayMs: 200, body: 'slow page' });
  const gw = await startGateway(t, origin.url, {
    routes: [{ name: 'chat', path: '/*', upstream: 'origin', class: 'public', websocket: true }],
  });
  const raw = await rawRequest(gw.port, `GET /slow HTTP/1.1\r\nHost: chat.example\r\n\r\n${handshake('/ws')}`, {
    timeoutMs: 5000,
  });
  assert.equal(statusOf(raw), 200, raw);
  assert.match(raw, /slow page/);
  assert.equal(raw.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, `one answer only: ${JSON.stringify(raw)}`);
  assert.equal(origin.upgrades, 0, 'the pipelined handshake reached the origin');
  const after = await fetch(`${gw.url}/after`);
  assert.equal(after.status, 200);
  await after.body?.cancel();
});

test('a WebSocket handshake without a pass waits in the waiting room like a page: no tunnel is opened', async (t) => {
  const origin = await startOrigin(t, { ws: true });
  const gw = await startGateway(t, origin.url, {
    routes: [
      {
        name: 'chat',
        path: '/*',
        upstream: 'origin',
        class: 'public',
        websocket: true,
        waitingRoom: { enabled: true, force: true },
      },
    ],
  });
  const raw = await rawRequest(gw.port, handshake('/ws'), { timeoutMs: 5000 });
  assert.equal(statusOf(raw), 503, raw);
  assert.match(raw, /"waitingRoom":\{"position":1/);
  assert.match(raw, /\r\nset-cookie: /i, 'the handshake got its place in line');
  assert.equal(origin.upgrades, 0);
});
