// Edge limits: oversized heads, URLs and bodies; slow clients; connection caps; hostile bytes.
// Real sockets on loopback, small limits so every test stays well under a few seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  errorCodeOf,
  holdConnection,
  rawRequest,
  sleep,
  startGatewayAndUpstream,
  statusOf,
  type TestGateway,
  waitFor,
} from './helpers.ts';

async function activeConnections(gw: TestGateway): Promise<number> {
  const m = await gw.gateway.metrics.connectionsActive.get();
  return m.values[0]?.value ?? 0;
}

async function metricValue(gw: TestGateway, line: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  for (const l of text.split('\n')) if (l.startsWith(`${line} `)) return Number(l.slice(line.length + 1));
  return 0;
}

const GET = (path = '/', extra = '') => `GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`;

test('a request head over limits.maxHeaderBytes is answered 431', async (t) => {
  const { gw, up, seen } = await startGatewayAndUpstream(t, { limits: { maxHeaderBytes: 2048 } });
  const raw = await rawRequest(gw.port, GET('/', `X-Big: ${'a'.repeat(3000)}\r\n`));
  assert.equal(statusOf(raw), 431, raw);
  assert.equal(errorCodeOf(raw), 'RMP_ERR_EDGE_HEADERS_TOO_LARGE');
  const ok = await rawRequest(gw.port, GET('/', `X-Small: ${'a'.repeat(1500)}\r\nConnection: close\r\n`));
  assert.equal(statusOf(ok), 200, 'a head under the limit passes');
  await sleep(50);
  assert.equal(seen.heads, 1);
  assert.equal(up.requests.length, 1);
});

test('more header fields than limits.maxHeaderCount are answered 431, and exactly the limit passes', async (t) => {
  const { gw, up, seen } = await startGatewayAndUpstream(t, { limits: { maxHeaderCount: 10 } });
  // Host + Connection + 8 more = 10 fields: at the limit.
  const fields = (n: number) => Array.from({ length: n }, (_, i) => `X-F${i}: ${i}\r\n`).join('');
  const atLimit = await rawRequest(gw.port, GET('/', `Connection: close\r\n${fields(8)}`));
  assert.equal(statusOf(atLimit), 200, atLimit);
  const over = await rawRequest(gw.port, GET('/', `Connection: close\r\n${fields(9)}`));
  assert.equal(statusOf(over), 431, over);
  assert.equal(errorCodeOf(over), 'RMP_ERR_EDGE_HEADERS_TOO_LARGE');
  const wayOver = await rawRequest(gw.port, GET('/', `Connection: close\r\n${fields(200)}`));
  assert.equal(statusOf(wayOver), 431, wayOver);
  await sleep(50);
  assert.equal(seen.heads, 1, 'only the request at the limit reached the upstream');
  assert.equal(up.requests.length, 1);
});

test('a request target longer than limits.maxUrlBytes is answered 414', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, { limits: { maxUrlBytes: 64 } });
  const raw = await rawRequest(gw.port, GET(`/${'a'.repeat(100)}`, 'Connection: close\r\n'));
  assert.equal(statusOf(raw), 414, raw);
  assert.equal(errorCodeOf(raw), 'RMP_ERR_EDGE_URL_TOO_LONG');
  const atLimit = await rawRequest(gw.port, GET(`/${'a'.repeat(63)}`, 'Connection: close\r\n'));
  assert.equal(statusOf(atLimit), 200, 'a target of exactly maxUrlBytes passes');
  await sleep(50);
  assert.equal(seen.heads, 1);
});

test("a Content-Length over the route's maxBodyBytes is answered 413 and the upstream never sees the request", async (t) => {
  const { gw, up, seen } = await startGatewayAndUpstream(t, {
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public', maxBodyBytes: 100 }],
  });
  const raw = await rawRequest(
    gw.port,
    `POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 101\r\n\r\n${'x'.repeat(20)}`,
  );
  assert.equal(statusOf(raw), 413, raw);
  assert.equal(errorCodeOf(raw), 'RMP_ERR_EDGE_BODY_TOO_LARGE');
  assert.match(raw, /\r\nconnection: close\r\n/i, 'the unread body cannot be taken for a next request');
  const ok = await rawRequest(
    gw.port,
    `POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\nConnection: close\r\n\r\n${'x'.repeat(100)}`,
  );
  assert.equal(statusOf(ok), 200, 'exactly maxBodyBytes passes');
  await sleep(100);
  assert.equal(seen.heads, 1);
  assert.equal(up.requests.length, 1);
  assert.equal(up.requests[0]!.bodyBytes, 100);
});

test("a chunked body that grows past the route's maxBodyBytes is refused and the upstream never gets a complete request", async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, {
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public', maxBodyBytes: 1000 }],
  });
  const c = holdConnection(t, gw.port);
  await c.connected;
  c.socket.write('POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n');
  for (let i = 0; i < 6 && !c.isClosed; i++) {
    c.socket.write(`190\r\n${'y'.repeat(400)}\r\n`); // 400 bytes a chunk: past 1000 on the third
    await sleep(30);
  }
  if (!c.isClosed) c.socket.write('0\r\n\r\n');
  await Promise.race([c.closed, sleep(2000)]);
  assert.ok(c.isClosed, 'the connection is closed');
  // 413 if the response had not started; otherwise only the close is left to signal it.
  if (c.data !== '') {
    assert.equal(statusOf(c.data), 413, c.data);
    assert.equal(errorCodeOf(c.data), 'RMP_ERR_EDGE_BODY_TOO_LARGE');
  }
  await sleep(100);
  assert.equal(up.requests.length, 0, 'the upstream got a complete request');
});

test('a client sending its head byte by byte slower than limits.headersTimeoutMs is answered 408 and closed', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, { limits: { headersTimeoutMs: 500 } });
  const head = GET('/slow');
  const c = holdConnection(t, gw.port);
  await c.connected;
  const start = performance.now();
  let sent = 0;
  for (; sent < head.length && !c.isClosed; sent++) {
    c.socket.write(head[sent]!);
    await sleep(50); // the whole head would take ~1.8 s
  }
  const closedAt = await Promise.race([c.closed, sleep(1500).then(() => -1)]);
  assert.notEqual(closedAt, -1, 'the connection was not closed');
  // Cut off before the head was whole (a count a stalled machine cannot change); the time bound is
  // loose: Node checks header timeouts every 500 ms, and a stall adds to it.
  assert.ok(sent < head.length, `closed after ${sent} of ${head.length} bytes`);
  assert.ok(closedAt - start < 3000, `closed after ${Math.round(closedAt - start)} ms`);
  if (c.data !== '') {
    assert.equal(statusOf(c.data), 408, c.data);
    assert.equal(errorCodeOf(c.data), 'RMP_ERR_EDGE_TIMEOUT');
  }
  assert.equal(seen.heads, 0);
});

test('a request body trickled past limits.requestTimeoutMs is cut off and never completes upstream', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, { limits: { headersTimeoutMs: 500, requestTimeoutMs: 800 } });
  const c = holdConnection(t, gw.port);
  await c.connected;
  const start = performance.now();
  c.socket.write('POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n');
  for (let i = 0; i < 100 && !c.isClosed; i++) {
    c.socket.write('z');
    await sleep(50); // the whole body would take 5 s
  }
  assert.ok(c.isClosed, 'the connection was not closed');
  const closedAt = await c.closed;
  // The body (5 s of it) was cut off; the bound is loose, as Node checks request timeouts every 500 ms.
  assert.ok(closedAt - start < 3000, `closed after ${Math.round(closedAt - start)} ms`);
  if (c.data !== '') assert.equal(statusOf(c.data), 408, c.data);
  await sleep(100);
  assert.equal(up.requests.length, 0, 'the upstream got a complete request');
});

test('an idle keep-alive connection is closed after limits.idleTimeoutMs', async (t) => {
  const { gw } = await startGatewayAndUpstream(t, { limits: { idleTimeoutMs: 400 } });
  const c = holdConnection(t, gw.port);
  await c.connected;
  c.socket.write(GET('/'));
  await waitFor(() => c.data.includes('\r\n\r\nok'), { timeoutMs: 2000, message: 'the response' });
  const answeredAt = performance.now();
  assert.equal(statusOf(c.data), 200);
  assert.doesNotMatch(c.data, /connection: close/i, 'the response keeps the connection alive');
  const closedAt = await Promise.race([c.closed, sleep(4000).then(() => -1)]);
  assert.notEqual(closedAt, -1, 'the idle connection was not closed');
  assert.ok(closedAt - answeredAt >= 300, `closed too early: ${Math.round(closedAt - answeredAt)} ms`);
  // Node 24 keeps an idle socket open keepAliveTimeoutBuffer (default 1000 ms) past keepAliveTimeout,
  // and the gateway leaves that default, so the bound is idleTimeoutMs + 1 s (+ slack for a busy machine).
  assert.ok(closedAt - answeredAt < 400 + 1000 + 1500, `closed too late: ${Math.round(closedAt - answeredAt)} ms`);
});

test('with maxConnectionsPerAddress 3 a 4th connection from that address is closed on accept while another address is served', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, { limits: { maxConnectionsPerAddress: 3 } });
  const held = [holdConnection(t, gw.port), holdConnection(t, gw.port), holdConnection(t, gw.port)];
  await Promise.all(held.map((c) => c.connected));
  await waitFor(async () => (await activeConnections(gw)) === 3, {
    timeoutMs: 2000,
    message: 'three accepted connections',
  });
  const refused = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'), { timeoutMs: 1500 });
  assert.equal(refused, '', 'no HTTP reply on a connection refused on accept');
  const other = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'), { localAddress: '127.0.0.2' });
  assert.equal(statusOf(other), 200, 'another address is served');
  assert.equal(await metricValue(gw, 'rempart_refusals_total{reason="RMP_ERR_EDGE_CONN_LIMIT"}'), 1);
  // Held connections are still usable.
  held[0]!.socket.write(GET('/held', 'Connection: close\r\n'));
  await held[0]!.closed;
  assert.equal(statusOf(held[0]!.data), 200);
  // With one slot free again, the address is accepted again.
  await waitFor(async () => (await activeConnections(gw)) === 2, {
    timeoutMs: 2000,
    message: 'the slot to be released',
  });
  const again = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'));
  assert.equal(statusOf(again), 200, 'a new connection is accepted once one closed');
  assert.equal(seen.heads, 3);
});

test('with maxConnections 5 the 6th connection is closed on accept and new ones are accepted after some close', async (t) => {
  const { gw } = await startGatewayAndUpstream(t, { limits: { maxConnections: 5 }, admin: { address: '127.0.0.1:0' } });
  // Five addresses so the per-address cap plays no part.
  const held = [1, 2, 3, 4, 5].map((n) => holdConnection(t, gw.port, `127.0.0.${10 + n}`));
  await Promise.all(held.map((c) => c.connected));
  await waitFor(async () => (await activeConnections(gw)) === 5, {
    timeoutMs: 2000,
    message: 'five accepted connections',
  });
  const sixth = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'), {
    timeoutMs: 1500,
    localAddress: '127.0.0.20',
  });
  assert.equal(sixth, '', 'the 6th connection gets no HTTP reply');
  const seventh = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'), {
    timeoutMs: 1500,
    localAddress: '127.0.0.21',
  });
  assert.equal(seventh, '');
  assert.equal(await metricValue(gw, 'rempart_refusals_total{reason="RMP_ERR_EDGE_CONN_LIMIT"}'), 2);
  held[0]!.socket.destroy();
  held[1]!.socket.destroy();
  await waitFor(async () => (await activeConnections(gw)) === 3, {
    timeoutMs: 2000,
    message: 'closed connections to be released',
  });
  const after = await rawRequest(gw.port, GET('/', 'Connection: close\r\n'), { localAddress: '127.0.0.20' });
  assert.equal(statusOf(after), 200, 'accepted again once connections closed');
  assert.equal(await metricValue(gw, 'rempart_refusals_total{reason="RMP_ERR_EDGE_CONN_LIMIT"}'), 2);
});

test('garbage bytes, a binary request line and abrupt resets never crash the gateway', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, {});
  const garbage = await rawRequest(
    gw.port,
    Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x01, 0x02, 0x0d, 0x0a, 0x0d, 0x0a]),
  );
  assert.equal(statusOf(garbage), 400, JSON.stringify(garbage));
  const random = Buffer.alloc(512);
  for (let i = 0; i < random.length; i++) random[i] = (i * 7919 + 13) & 0xff;
  const binary = await rawRequest(gw.port, Buffer.concat([random, Buffer.from('\r\n\r\n')]));
  assert.ok(binary === '' || statusOf(binary) === 400, JSON.stringify(binary.slice(0, 200)));
  const binaryLine = await rawRequest(
    gw.port,
    Buffer.concat([Buffer.from('GET /'), random.subarray(0, 64), Buffer.from(' HTTP/1.1\r\nHost: a\r\n\r\n')]),
  );
  assert.equal(statusOf(binaryLine), 400);
  const nul = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\0b\r\n\r\n');
  assert.equal(statusOf(nul), 400);

  // Abrupt resets: mid request line, mid head, mid body, and right after a complete request.
  const partials = [
    'GET /abc',
    'GET / HTTP/1.1\r\nHost: a.test\r\nX-Half: ',
    'POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\nhalf',
    'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc',
    GET('/reset-after-send'),
  ];
  for (const p of partials) {
    const c = holdConnection(t, gw.port);
    await c.connected;
    c.socket.write(p);
    await sleep(30);
    c.socket.resetAndDestroy();
    await c.closed;
  }
  // A burst of connections that reset immediately.
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      const c = holdConnection(t, gw.port);
      await c.connected;
      c.socket.resetAndDestroy();
      await c.closed;
    }),
  );
  await sleep(100);
  const res = await fetch(`${gw.url}/still-alive`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
  assert.ok(up.requests.some((r) => r.url === '/still-alive'));
  await waitFor(async () => (await activeConnections(gw)) <= 1, {
    timeoutMs: 2000,
    message: 'reset connections to be released',
  });
  assert.equal(
    gw.logs.filter((l) => l.level === 50 || l.level === 60).length,
    0,
    `errors logged: ${JSON.stringify(gw.logs.filter((l) => (l.level as number) >= 50))}`,
  );
});
