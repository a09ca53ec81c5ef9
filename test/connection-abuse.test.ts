// Connection abuse (issue 12, findings 1, 5 and 9): what one connection may cost the gateway.
// Pipelined floods that never read, clients that stop reading a large reply while holding an
// admission slot, and idle keep-alive connections holding the global cap. Real sockets on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dc from 'node:diagnostics_channel';
import http from 'node:http';
import tls from 'node:tls';
import {
  cleanup,
  type HeldConnection,
  holdConnection,
  sleep,
  startGateway,
  startUpstream,
  selfSignedCert,
  statusOf,
  type TestGateway,
  waitFor,
} from './helpers.ts';

async function activeConnections(gw: TestGateway): Promise<number> {
  const m = await gw.gateway.metrics.connectionsActive.get();
  return m.values[0]?.value ?? 0;
}

async function refusals(gw: TestGateway, reason: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = `rempart_refusals_total{reason="${reason}"}`;
  for (const l of text.split('\n')) if (l.startsWith(`${line} `)) return Number(l.slice(line.length + 1));
  return 0;
}

const GET = (path = '/', extra = '') => `GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`;
const responses = (raw: string) => raw.match(/HTTP\/1\.1 \d{3}/g) ?? [];

test('2,000 pipelined GETs in one write, never read: at most 2 x maxPipelinedRequests reach the upstream, the connection is closed and its address banned', async (t) => {
  // The upstream holds every request a while, so they pile up as the attacker's would.
  let inFlight = 0;
  let maxInFlight = 0;
  const up = await startUpstream(t, (_req, res) => {
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    setTimeout(() => {
      inFlight--;
      res.end('x'.repeat(200));
    }, 200);
  });
  const gw = await startGateway(t, up.url, {
    limits: { maxPipelinedRequests: 8 },
    defense: { rateLimit: { mode: 'off' }, bans: { offences: { threshold: 2 } } },
  });
  const flood = GET('/flood').repeat(2000);
  const clients: HeldConnection[] = [];
  // Node announces each request its HTTP server takes on (and builds a response object for) here.
  let handled = 0;
  const onStart = (m: unknown) => {
    if ((m as { request: http.IncomingMessage }).request.url === '/flood') handled++;
  };
  dc.subscribe('http.server.request.start', onStart);
  cleanup(t, () => dc.unsubscribe('http.server.request.start', onStart));
  const heap0 = process.memoryUsage().heapUsed;
  for (let i = 0; i < 2; i++) {
    const c = holdConnection(t, gw.port, '127.0.0.7', false);
    clients.push(c);
    await c.connected;
    c.socket.write(flood);
    await waitFor(async () => (await refusals(gw, 'RMP_ERR_EDGE_PIPELINE_LIMIT')) === i + 1, {
      timeoutMs: 5000,
      message: `flood connection ${i + 1} closed`,
    });
  }
  await waitFor(async () => (await activeConnections(gw)) === 0, {
    timeoutMs: 5000,
    message: 'flood connections gone',
  });
  assert.ok(
    up.requests.length + inFlight <= 2 * 2 * 8,
    `${up.requests.length} + ${inFlight} requests reached the upstream`,
  );
  assert.ok(maxInFlight <= 2 * 8, `max in flight ${maxInFlight}`);
  // Parsing stopped at the bound: the rest of each 2,000-request write was never turned into objects.
  assert.ok(handled <= 2 * 2 * 8, `Node's server took on ${handled} requests`);
  // Two offences: the address is banned and its next connection is reset on accept.
  assert.equal(gw.gateway.defense.bans.isBanned('127.0.0.7'), true, 'the flooding address is banned');
  const again = holdConnection(t, gw.port, '127.0.0.7');
  await waitFor(() => again.isClosed, { timeoutMs: 3000, message: 'a banned connection reset' });
  assert.equal(again.data, '');
  // Another address is served as usual.
  const other = await fetch(gw.url + '/fine');
  assert.equal(other.status, 200);
  await other.text();
  // 4,000 requests parsed, at most 32 served: no per-request state kept for the rest.
  const growth = process.memoryUsage().heapUsed - heap0;
  assert.ok(growth < 64 * 1024 * 1024, `heap grew by ${Math.round(growth / 1048576)} MB`);
});

test('the same flood over a TLS listener is stopped at the same bound', async (t) => {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-pipe-tls-');
  const up = await startUpstream(t, (_req, res) => setTimeout(() => res.end('x'), 200));
  const gw = await startGateway(t, up.url, {
    listeners: [{ address: '127.0.0.1:0', tls: { certFile, keyFile } }],
    limits: { maxPipelinedRequests: 8 },
    defense: { rateLimit: { mode: 'off' } },
  });
  let handled = 0;
  const onStart = (m: unknown) => {
    if ((m as { request: http.IncomingMessage }).request.url === '/tls-flood') handled++;
  };
  dc.subscribe('http.server.request.start', onStart);
  const socket = tls.connect({ port: gw.port, host: '127.0.0.1', rejectUnauthorized: false });
  socket.on('error', () => {});
  cleanup(t, () => {
    dc.unsubscribe('http.server.request.start', onStart);
    socket.destroy();
  });
  await new Promise((r) => socket.once('secureConnect', r));
  socket.pause(); // never reads
  socket.write(GET('/tls-flood').repeat(2000));
  await waitFor(async () => (await refusals(gw, 'RMP_ERR_EDGE_PIPELINE_LIMIT')) === 1, {
    timeoutMs: 5000,
    message: 'the TLS flood connection closed',
  });
  assert.ok(handled <= 2 * 8, `Node's server took on ${handled} requests`);
  assert.ok(up.requests.length <= 2 * 8);
});

test('a pipelining client that reads gets every answer in order; one that does not wait is read no further than maxPipelinedRequests', async (t) => {
  let held = 0;
  const up = await startUpstream(t, (req, res) => {
    if (req.url!.startsWith('/held')) {
      held++;
      setTimeout(() => res.end('late'), 3000);
    } else setTimeout(() => res.end(req.url), 30);
  });
  const gw = await startGateway(t, up.url, {
    limits: { maxPipelinedRequests: 4 },
    defense: { rateLimit: { mode: 'off' } },
  });
  // Up to twice the limit in one write is still an honest pipeline.
  const c = holdConnection(t, gw.port);
  await c.connected;
  c.socket.write(Array.from({ length: 8 }, (_, i) => GET(`/a${i}`)).join(''));
  await waitFor(() => responses(c.data).length === 8, { timeoutMs: 5000, message: 'eight answers' });
  assert.deepEqual(responses(c.data), Array(8).fill('HTTP/1.1 200'));
  assert.deepEqual(
    [...c.data.matchAll(/\/a\d/g)].map((m) => m[0]),
    Array.from({ length: 8 }, (_, i) => `/a${i}`),
  );
  c.socket.destroy();

  // The fourth request has a body: reading pauses at it while its body is still arriving, and
  // resumes once an earlier answer went.
  const post = holdConnection(t, gw.port);
  await post.connected;
  const body = 'z'.repeat(256 * 1024);
  post.socket.write(
    GET('/b1') +
      GET('/b2') +
      GET('/b3') +
      `POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: ${body.length}\r\n\r\n` +
      body +
      GET('/after'),
  );
  await waitFor(() => responses(post.data).length === 5, {
    timeoutMs: 5000,
    message: 'five answers around a pipelined body',
  });
  assert.deepEqual(responses(post.data), Array(5).fill('HTTP/1.1 200'));
  assert.equal(up.requests.find((r) => r.url === '/upload')?.bodyBytes, body.length);
  post.socket.destroy();

  // A client that does not wait for answers sends twenty requests, one per write, while the
  // upstream is slow: the gateway stops reading it at four unanswered, so the rest wait in the
  // client's socket and never reach the upstream meanwhile.
  const d = holdConnection(t, gw.port, '127.0.0.1', false);
  await d.connected;
  d.socket.setNoDelay(true);
  for (let i = 0; i < 20; i++) {
    d.socket.write(GET(`/held${i}`));
    await sleep(20);
  }
  await waitFor(() => held >= 4, { timeoutMs: 3000, message: 'four requests at the upstream' });
  await sleep(300);
  assert.equal(held, 4, 'requests read from the connection while four are unanswered');
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_PIPELINE_LIMIT'), 0);
  d.socket.destroy();
});

test('clients that stop reading a 5 MB reply do not hold admission slots: a normal client is still served', async (t) => {
  const big = Buffer.alloc(5 * 1024 * 1024, 'b');
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/big') res.end(big);
    else res.end('small');
  });
  const gw = await startGateway(t, up.url, {
    upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 2 } }],
    limits: { slowReadTimeoutMs: 1500 },
    defense: { rateLimit: { mode: 'off' } },
  });
  const slow: HeldConnection[] = [];
  // Four clients (twice the limit) ask for the big reply and never read it.
  for (let i = 0; i < 4; i++) {
    const c = holdConnection(t, gw.port, '127.0.0.1', false);
    slow.push(c);
    await c.connected;
    c.socket.write(GET('/big'));
  }
  // The first two take the two slots; their replies fill the socket buffers and wait.
  await waitFor(() => up.requests.filter((r) => r.url === '/big').length >= 2, {
    timeoutMs: 5000,
    message: 'big requests to reach the upstream',
  });
  await sleep(300);
  const t0 = performance.now();
  const res = await fetch(gw.url + '/small');
  assert.equal(res.status, 200, 'served, not shed');
  assert.equal(await res.text(), 'small');
  assert.ok(performance.now() - t0 < 3000, `served in ${Math.round(performance.now() - t0)} ms`);
  // The slow readers are cut once their replies waited past slowReadTimeoutMs.
  await waitFor(async () => (await refusals(gw, 'RMP_ERR_EDGE_SLOW_READ')) === 4, {
    timeoutMs: 8000,
    message: 'the four slow readers to be cut',
  });
});

test('replies queued behind an unread one are bounded by maxQueuedReplyBytes: past it the connection is closed', async (t) => {
  const big = Buffer.alloc(2 * 1024 * 1024, 'q');
  const up = await startUpstream(t, (_req, res) => res.end(big));
  const gw = await startGateway(t, up.url, {
    limits: { maxQueuedReplyBytes: 256 * 1024 },
    defense: { rateLimit: { mode: 'off' } },
  });
  // Eight pipelined requests for 2 MB each, never read: the first fills the socket, the seven
  // behind it would each hold a buffer's worth in memory until the slow-read deadline (20 s).
  const c = holdConnection(t, gw.port, '127.0.0.1', false);
  await c.connected;
  c.socket.write(GET('/q').repeat(8));
  await waitFor(async () => (await refusals(gw, 'RMP_ERR_EDGE_SLOW_READ')) === 1, {
    timeoutMs: 5000,
    message: 'the connection closed for its queued replies',
  });
  await waitFor(async () => (await activeConnections(gw)) === 0, { timeoutMs: 3000, message: 'the connection gone' });
  c.socket.destroy();
  // A client that reads gets every pipelined 2 MB reply.
  const d = holdConnection(t, gw.port);
  await d.connected;
  d.socket.write(GET('/r').repeat(3));
  await waitFor(() => d.data.length >= 3 * big.length, { timeoutMs: 10000, message: 'three 2 MB replies' });
  assert.deepEqual(responses(d.data), Array(3).fill('HTTP/1.1 200'));
  d.socket.destroy();
});

test('a client reading slowly but steadily is not cut as a slow reader', async (t) => {
  const big = Buffer.alloc(2 * 1024 * 1024, 'c');
  const up = await startUpstream(t, (_req, res) => res.end(big));
  const gw = await startGateway(t, up.url, {
    limits: { slowReadTimeoutMs: 1000 },
    defense: { rateLimit: { mode: 'off' } },
  });
  // Reads 256 KB every 100 ms (about 2.5 MB/s): the send buffer empties well within the deadline.
  const body = await new Promise<number>((resolve, reject) => {
    http
      .get(gw.url + '/steady', (res) => {
        let n = 0;
        res.on('data', (d: Buffer) => {
          n += d.length;
          res.pause();
          setTimeout(() => res.resume(), 10);
        });
        res.on('end', () => resolve(n));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  assert.equal(body, big.length);
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_SLOW_READ'), 0);
});

test('near maxConnections, idle keep-alive connections make room for a new client, oldest idle first', async (t) => {
  const up = await startUpstream(t);
  // A long pressure idle timeout: here it is the new connection at the cap that closes the oldest.
  const gw = await startGateway(t, up.url, {
    limits: { maxConnections: 10, pressureIdleTimeoutMs: 60000 },
    defense: { rateLimit: { mode: 'off' } },
  });
  const held: HeldConnection[] = [];
  // Ten addresses each hold one keep-alive connection that made one request (the attack: one
  // request per connection now and then, well inside idleTimeoutMs).
  for (let i = 0; i < 10; i++) {
    const c = holdConnection(t, gw.port, `127.0.0.${30 + i}`);
    held.push(c);
    await c.connected;
    c.socket.write(GET('/hold'));
    await waitFor(() => responses(c.data).length === 1, { timeoutMs: 3000, message: `answer on held connection ${i}` });
  }
  await waitFor(async () => (await activeConnections(gw)) === 10, { timeoutMs: 2000, message: 'ten open connections' });
  const fresh = holdConnection(t, gw.port, '127.0.0.50');
  await fresh.connected;
  fresh.socket.write(GET('/new', 'Connection: close\r\n'));
  await waitFor(() => fresh.isClosed, { timeoutMs: 3000, message: 'the new client answered' });
  assert.equal(statusOf(fresh.data), 200, 'the new client is served');
  await waitFor(() => held[0]!.isClosed, { timeoutMs: 2000, message: 'the oldest idle connection closed' });
  assert.deepEqual(
    held.slice(1).map((c) => c.isClosed),
    Array(9).fill(false),
    'only the oldest idle one was closed',
  );
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_IDLE_RECLAIMED'), 1);
});

test('under connection pressure, idle keep-alive connections are closed after pressureIdleTimeoutMs, busy ones are kept', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 2500);
    else res.end('ok');
  });
  const gw = await startGateway(t, up.url, {
    limits: { maxConnections: 10, pressureIdleTimeoutMs: 300 },
    defense: { rateLimit: { mode: 'off' } },
  });
  const held: HeldConnection[] = [];
  for (let i = 0; i < 9; i++) {
    const c = holdConnection(t, gw.port, `127.0.0.${60 + i}`);
    held.push(c);
    await c.connected;
    c.socket.write(GET(i === 0 ? '/slow' : '/hold'));
  }
  await waitFor(() => held.slice(1).every((c) => responses(c.data).length === 1), {
    timeoutMs: 3000,
    message: 'answers on the idle connections',
  });
  // 9 of 10 open: pressure. The eight idle ones go within a sweep or two; the busy one stays.
  await waitFor(() => held.slice(1).every((c) => c.isClosed), { timeoutMs: 3000, message: 'idle connections closed' });
  assert.equal(held[0]!.isClosed, false);
  await waitFor(() => responses(held[0]!.data).length === 1, {
    timeoutMs: 5000,
    message: 'the busy connection answered',
  });
  assert.equal(statusOf(held[0]!.data), 200);
});

test('near maxConnections one address may not take more than a tenth of it: another address still gets in', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    limits: { maxConnections: 20, maxConnectionsPerAddress: 100 },
    defense: { rateLimit: { mode: 'off' } },
  });
  const held: HeldConnection[] = [];
  // One address opens 25 connections that never send a request (so none is idle keep-alive).
  for (let i = 0; i < 25; i++) held.push(holdConnection(t, gw.port, '127.0.0.80'));
  await Promise.all(held.map((c) => c.connected));
  await waitFor(async () => held.filter((c) => c.isClosed).length >= 7, {
    timeoutMs: 3000,
    message: 'connections past the share refused',
  });
  await sleep(200);
  // Accepted until pressure (18 = 90 % of 20), then refused: it already holds more than its share (2).
  assert.equal(await activeConnections(gw), 18);
  const other = holdConnection(t, gw.port, '127.0.0.81');
  await other.connected;
  other.socket.write(GET('/other', 'Connection: close\r\n'));
  await waitFor(() => other.isClosed, { timeoutMs: 3000, message: 'the other address answered' });
  assert.equal(statusOf(other.data), 200, 'another address gets in');
});
