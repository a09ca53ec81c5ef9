// Upstream failures become clear answers (502/504 with a code), a reset mid-body closes the client
// connection, a client that leaves aborts the upstream exchange, and the gateway keeps serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import {
  cleanup,
  type RecordingUpstream,
  sleep,
  startGateway,
  startUpstream,
  type Teardown,
  type TestGateway,
  track,
  waitFor,
} from './helpers.ts';

/**
 * A raw TCP upstream, closed when the test `t` ends: `onRequest` gets the socket once a full request
 * head has arrived.
 */
async function startRawUpstream(
  t: Teardown,
  onRequest: (socket: net.Socket) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      if (buf.includes('\r\n\r\n')) {
        socket.removeListener('data', onData);
        onRequest(socket);
      }
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return track(t, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
}

/** A port nothing listens on (bound, then closed). */
/**
 * A loopback port nobody listens on: port 1. (A port freed by closing a server of ours may be taken
 * meanwhile by another test file's server: tests run two files at once.)
 */
async function closedPort(): Promise<number> {
  return 1;
}

/** A gateway whose `/ok/*` route goes to a healthy upstream and `/bad/*` to `badUrl`; both stopped when `t` ends. */
async function gatewayWithBadUpstream(
  t: Teardown,
  badUrl: string,
  bad: Record<string, unknown> = {},
): Promise<{ gw: TestGateway; good: RecordingUpstream }> {
  const good = await startUpstream(t);
  const gw = await startGateway(t, good.url, {
    upstreams: [
      { name: 'good', url: good.url },
      { name: 'bad', url: badUrl, ...bad },
    ],
    routes: [
      { name: 'bad', path: '/bad/*', upstream: 'bad', class: 'public' },
      { name: 'ok', path: '/*', upstream: 'good', class: 'public' },
    ],
  });
  return { gw, good };
}

async function errorCode(res: Response): Promise<string> {
  assert.equal(res.headers.get('content-type'), 'application/json');
  const body = (await res.json()) as { error: { code: string } };
  return body.error.code;
}

/** The gateway still answers normally. */
async function assertStillServing(gw: TestGateway): Promise<void> {
  const res = await fetch(`${gw.url}/ok/after`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
}

async function metricsText(gw: TestGateway): Promise<string> {
  return (await fetch(`${gw.adminUrl}/metrics`)).text();
}

function requestLogs(gw: TestGateway): Record<string, unknown>[] {
  return gw.logs.filter((l) => l.msg === 'request');
}

test('a refused upstream connection gets 502 RMP_ERR_UPSTREAM_CONNECT and is counted by upstream and reason', async (t) => {
  const port = await closedPort();
  const { gw } = await gatewayWithBadUpstream(t, `http://127.0.0.1:${port}`);
  const res = await fetch(`${gw.url}/bad/x`);
  assert.equal(res.status, 502);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_CONNECT');
  const res2 = await fetch(`${gw.url}/bad/y`);
  assert.equal(res2.status, 502);
  await res2.body?.cancel();
  await assertStillServing(gw);
  const metrics = await metricsText(gw);
  assert.match(metrics, /rempart_upstream_errors_total\{upstream="bad",reason="RMP_ERR_UPSTREAM_CONNECT"\} 2\n/);
  assert.match(
    metrics,
    /rempart_requests_total\{route="bad",class="public",decision="upstream_error",code="502"\} 2\n/,
  );
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'upstream_error');
  assert.equal(log.reason, 'RMP_ERR_UPSTREAM_CONNECT');
  assert.equal(log.upstream, 'bad');
  assert.equal(log.status, 502);
});

test('an upstream that sends no response head within headersTimeoutMs gets 504 RMP_ERR_UPSTREAM_TIMEOUT', async (t) => {
  const silent = await startRawUpstream(t, () => {
    /* never answers */
  });
  const { gw } = await gatewayWithBadUpstream(t, silent.url, { headersTimeoutMs: 300 });
  const started = Date.now();
  const res = await fetch(`${gw.url}/bad/slow`);
  const elapsed = Date.now() - started;
  assert.equal(res.status, 504);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_TIMEOUT');
  assert.ok(elapsed >= 250 && elapsed < 3000, `answered after ${elapsed} ms`);
  await assertStillServing(gw);
  assert.match(
    await metricsText(gw),
    /rempart_upstream_errors_total\{upstream="bad",reason="RMP_ERR_UPSTREAM_TIMEOUT"\} 1\n/,
  );
});

test('an upstream that resets the connection before the response head gets 502 RMP_ERR_UPSTREAM_RESET', async (t) => {
  const resetter = await startRawUpstream(t, (socket) => socket.resetAndDestroy());
  const { gw } = await gatewayWithBadUpstream(t, resetter.url);
  const res = await fetch(`${gw.url}/bad/reset`);
  assert.equal(res.status, 502);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_RESET');
  await assertStillServing(gw);
  assert.match(
    await metricsText(gw),
    /rempart_upstream_errors_total\{upstream="bad",reason="RMP_ERR_UPSTREAM_RESET"\} 1\n/,
  );
});

test('an upstream that closes the connection cleanly before the response head gets 502', async (t) => {
  const closer = await startRawUpstream(t, (socket) => socket.end());
  const { gw } = await gatewayWithBadUpstream(t, closer.url);
  const res = await fetch(`${gw.url}/bad/fin`);
  assert.equal(res.status, 502);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_RESET');
  await assertStillServing(gw);
});

for (const [how, cut] of [
  ['resets', (socket: net.Socket) => socket.resetAndDestroy()],
  ['closes', (socket: net.Socket) => socket.destroy()],
] as const) {
  test(`an upstream that ${how} its connection in the middle of the body has the client connection closed instead of a complete response`, async (t) => {
    const declared = 100_000;
    const midBody = await startRawUpstream(t, (socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${declared}\r\n\r\n`);
      socket.write(Buffer.alloc(1000, 0x61), () => setTimeout(() => cut(socket), 50));
    });
    const { gw } = await gatewayWithBadUpstream(t, midBody.url);
    const outcome = await new Promise<{ status: number; bytes: number; complete: boolean; error: string }>(
      (resolve) => {
        let status = 0;
        let bytes = 0;
        const req = http.get(`${gw.url}/bad/midbody`, { agent: false }, (res) => {
          status = res.statusCode!;
          res.on('data', (c: Buffer) => (bytes += c.length));
          res.on('end', () => resolve({ status, bytes, complete: res.complete, error: '' }));
          res.on('error', (err) =>
            resolve({
              status,
              bytes,
              complete: res.complete,
              error: (err as NodeJS.ErrnoException).code ?? err.message,
            }),
          );
        });
        req.on('error', (err) =>
          resolve({ status, bytes, complete: false, error: (err as NodeJS.ErrnoException).code ?? err.message }),
        );
      },
    );
    assert.equal(outcome.status, 200, 'the head had already been sent');
    assert.equal(outcome.complete, false, 'the client must not see a complete response');
    assert.ok(outcome.bytes < declared, `received ${outcome.bytes} of ${declared}`);
    assert.notEqual(outcome.error, '');
    await assertStillServing(gw);
    await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
    const log = requestLogs(gw).find((l) => l.route === 'bad')!;
    assert.equal(log.decision, 'upstream_error');
    assert.equal(log.reason, 'RMP_ERR_UPSTREAM_RESET');
    assert.match(
      await metricsText(gw),
      /rempart_upstream_errors_total\{upstream="bad",reason="RMP_ERR_UPSTREAM_RESET"\} 1\n/,
    );
  });
}

test('an upstream that answers with something that is not HTTP gets 502 RMP_ERR_UPSTREAM_BAD_RESPONSE', async (t) => {
  const garbage = await startRawUpstream(t, (socket) => socket.end('this is not http at all\r\n\r\n'));
  const { gw } = await gatewayWithBadUpstream(t, garbage.url);
  const res = await fetch(`${gw.url}/bad/garbage`);
  assert.equal(res.status, 502);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_BAD_RESPONSE');
  await assertStillServing(gw);
  assert.match(
    await metricsText(gw),
    /rempart_upstream_errors_total\{upstream="bad",reason="RMP_ERR_UPSTREAM_BAD_RESPONSE"\} 1\n/,
  );
});

test('an upstream response head with an invalid header value gets 502 and the gateway keeps serving', async (t) => {
  const badHeader = await startRawUpstream(t, (socket) =>
    socket.end('HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok'),
  );
  const { gw } = await gatewayWithBadUpstream(t, badHeader.url);
  const res = await fetch(`${gw.url}/bad/header`);
  assert.equal(res.status, 502);
  assert.equal(await errorCode(res), 'RMP_ERR_UPSTREAM_BAD_RESPONSE');
  await assertStillServing(gw);
});

test('a client that disconnects mid-response aborts the upstream request and is logged as aborted', async (t) => {
  let upstreamClosed = false;
  let timer: NodeJS.Timeout | undefined;
  const slow = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(1024, 0x62));
    timer = setInterval(() => res.write(Buffer.alloc(1024, 0x62)), 20);
    res.on('close', () => {
      clearInterval(timer);
      upstreamClosed = true;
    });
  });
  const { gw } = await gatewayWithBadUpstream(t, slow.url);
  cleanup(t, async () => {
    clearInterval(timer);
  });
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${gw.url}/bad/stream`, { agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
  });
  await waitFor(() => upstreamClosed, { timeoutMs: 3000 });
  await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'aborted');
  assert.equal(log.reason, 'RMP_ERR_CLIENT_ABORTED');
  assert.equal(log.upstream, 'bad');
  await assertStillServing(gw);
  const metrics = await metricsText(gw);
  assert.match(metrics, /rempart_requests_total\{route="bad",class="public",decision="aborted",code="200"\} 1\n/);
  // A client leaving is not an upstream failure.
  assert.doesNotMatch(metrics, /rempart_upstream_errors_total\{/);
});

test('a client that disconnects while waiting for the response head aborts the upstream request', async (t) => {
  let upstreamClosed = false;
  const hanging = await startUpstream(t, (_req, res) => {
    res.on('close', () => (upstreamClosed = true));
  });
  const { gw } = await gatewayWithBadUpstream(t, hanging.url);
  const socket = net.connect(gw.port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write('GET /bad/wait HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => hanging.requests.length === 1, { timeoutMs: 3000 });
  socket.destroy();
  await waitFor(() => upstreamClosed, { timeoutMs: 3000 });
  await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'aborted');
  await assertStillServing(gw);
});

test('a client that disconnects in the middle of a streamed upload aborts the upstream request and the gateway keeps serving', async (t) => {
  let upstreamAborted = false;
  let upstreamBytes = 0;
  const receiver = await startUpstream(t);
  receiver.server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    req.on('data', (c: Buffer) => (upstreamBytes += c.length));
    res.on('close', () => {
      if (!res.writableFinished) upstreamAborted = true;
    });
  });
  // A body larger than limits.bufferBodyBytes streams: the upstream sees it while it arrives.
  const { gw } = await gatewayWithBadUpstream(t, receiver.url);
  const socket = net.connect(gw.port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(`POST /bad/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n`);
  socket.write(Buffer.alloc(200_000, 0x61));
  await waitFor(() => upstreamBytes > 65_536, { timeoutMs: 3000 });
  socket.destroy();
  await waitFor(() => upstreamAborted, { timeoutMs: 3000 });
  await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'aborted');
  assert.equal(log.reason, 'RMP_ERR_CLIENT_ABORTED');
  assert.equal(receiver.requests.length, 0, 'the upstream never saw a complete request');
  await assertStillServing(gw);
  assert.doesNotMatch(await metricsText(gw), /rempart_upstream_errors_total\{/);
});

test('a client that disconnects while its small body is still being buffered never reaches the upstream', async (t) => {
  let upstreamSaw = 0;
  const receiver = await startUpstream(t);
  receiver.server.prependListener('request', () => upstreamSaw++);
  const { gw } = await gatewayWithBadUpstream(t, receiver.url);
  const socket = net.connect(gw.port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(`POST /bad/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n${'a'.repeat(5000)}`);
  await sleep(150);
  socket.destroy();
  await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'aborted');
  assert.equal(log.reason, 'RMP_ERR_CLIENT_ABORTED');
  assert.equal(upstreamSaw, 0, 'no upstream connection was taken for a body that never arrived');
  await assertStillServing(gw);
});

test('an upstream that stalls inside the body for longer than bodyTimeoutMs has the client connection closed', async (t) => {
  const stall = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('x'.repeat(10)); // and then nothing
  });
  const { gw } = await gatewayWithBadUpstream(t, stall.url, { bodyTimeoutMs: 300 });
  const started = Date.now();
  const outcome = await new Promise<{ status: number; bytes: number; complete: boolean }>((resolve) => {
    const req = http.get(`${gw.url}/bad/stall`, { agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      const done = () => resolve({ status: res.statusCode!, bytes, complete: res.complete });
      res.on('end', done);
      res.on('error', done);
    });
    req.on('error', () => resolve({ status: 0, bytes: 0, complete: false }));
  });
  const elapsed = Date.now() - started;
  assert.equal(outcome.status, 200);
  assert.equal(outcome.complete, false);
  assert.equal(outcome.bytes, 10);
  assert.ok(elapsed >= 250 && elapsed < 5000, `closed after ${elapsed} ms`);
  await waitFor(() => requestLogs(gw).some((l) => l.route === 'bad'), { timeoutMs: 3000 });
  const log = requestLogs(gw).find((l) => l.route === 'bad')!;
  assert.equal(log.decision, 'upstream_error');
  await assertStillServing(gw);
});

test('an upstream that answers before reading the whole upload gets its answer to the client', async (t) => {
  const early = await startUpstream(t);
  early.server.removeAllListeners('request');
  early.server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(413, { 'content-type': 'text/plain' });
    res.end('too big for me');
  });
  const { gw } = await gatewayWithBadUpstream(t, early.url);
  const total = 8 * 1024 * 1024;
  const outcome = await new Promise<{ status: number; body: string } | { error: string }>((resolve) => {
    const req = http.request(
      `${gw.url}/bad/upload`,
      { method: 'POST', agent: false, headers: { 'content-length': String(total) } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
        res.on('error', (err) => resolve({ error: err.message }));
      },
    );
    req.on('error', (err) => resolve({ error: err.message }));
    const chunk = Buffer.alloc(64 * 1024);
    let sent = 0;
    const write = () => {
      while (sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
  assert.deepEqual(outcome, { status: 413, body: 'too big for me' });
  await assertStillServing(gw);
});
