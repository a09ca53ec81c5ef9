// HTTP/2's own attacks, each sent frame by frame (test/h2-frames.ts) at a TLS listener that offers h2.
// Each test asserts what the defence does and fails without it (the listener's http2 settings, or
// the h2 entry's counters, src/server/h2/entry.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type http from 'node:http';
import net from 'node:net';
import { cleanup, startGateway, startUpstream, waitFor, sleep } from './helpers.ts';
import { clientFor, startTlsGateway } from './h2-client.ts';
import {
  ErrorCode,
  FrameType,
  PREFACE,
  connectRaw,
  frame,
  getBlock,
  headers,
  hpack,
  ping,
  rstStream,
  settings,
  windowUpdate,
  type RawH2,
} from './h2-frames.ts';

const noGuards = { rateLimit: { mode: 'off' }, bans: { mode: 'off' } };

async function raw(
  t: { after(fn: () => void): void },
  port: number,
  ...args: Parameters<typeof connectRaw> extends [number, ...infer R] ? R : never
): Promise<RawH2> {
  const c = await connectRaw(port, ...args);
  cleanup(t, () => c.close());
  return c;
}

async function refusals(
  gw: { gateway: { metrics: { registry: { metrics(): Promise<string> } } } },
  reason: string,
): Promise<number> {
  const text = await gw.gateway.metrics.registry.metrics();
  const m = text.match(new RegExp(`rempart_refusals_total\\{reason="${reason}"\\} (\\d+)`));
  return m === null ? 0 : Number(m[1]);
}

test('Rapid Reset: a client resetting streams past maxResetsPerSecond gets GOAWAY ENHANCE_YOUR_CALM, an offence, then a ban; others are served', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(
    t,
    up.url,
    { defense: { rateLimit: { mode: 'off' }, bans: { offences: { threshold: 2 } } } },
    {},
    { maxResetsPerSecond: 50 },
  );
  for (let round = 0; round < 2; round++) {
    const c = await raw(t, gw.port, [], { localAddress: '127.0.0.9' });
    const burst: Buffer[] = [];
    // 200 requests opened and cancelled at once: under nghttp2's own limit (a burst of 1000), past ours.
    for (let i = 0; i < 200; i++) burst.push(headers(1 + 2 * i, getBlock(`/r${i}`)), rstStream(1 + 2 * i));
    c.write(Buffer.concat(burst));
    await waitFor(() => c.isClosed(), 'the connection is closed');
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  }
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_H2_RAPID_RESET'), 2);
  assert.ok(gw.gateway.defense.bans.isBanned('127.0.0.9'), 'two offences within the window make a ban');
  const user = clientFor(t, 'h2', gw.port, '127.0.0.10');
  assert.equal((await user.request('/')).status, 200);
});

test('Rapid Reset in the first flight (h2c: the bytes the sniff put back) is counted like any other', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    listeners: [{ address: '127.0.0.1:0', http2: { cleartext: true, maxResetsPerSecond: 50 } }],
    defense: { rateLimit: { mode: 'off' } },
  });
  const burst: Buffer[] = [PREFACE, settings()];
  for (let i = 0; i < 200; i++) burst.push(headers(1 + 2 * i, getBlock(`/r${i}`)), rstStream(1 + 2 * i));
  const c = net.connect(gw.port, '127.0.0.1');
  c.on('error', () => {});
  let got = Buffer.alloc(0);
  c.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  const closed = new Promise((r) => c.once('close', r));
  await new Promise((r) => c.once('connect', r));
  c.write(Buffer.concat(burst)); // one write: it all arrives with the preface
  await closed;
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_H2_RAPID_RESET'), 1);
  // A GOAWAY with ENHANCE_YOUR_CALM went out before the close.
  const goaways: number[] = [];
  for (let p = 0; p + 9 <= got.length; p += 9 + got.readUIntBE(p, 3))
    if (got[p + 3] === FrameType.GOAWAY && p + 17 <= got.length) goaways.push(got.readUInt32BE(p + 13));
  assert.ok(goaways.includes(ErrorCode.ENHANCE_YOUR_CALM), `GOAWAY codes ${goaways}`);
});

test('Rapid Reset: a client cancelling a few streams (a browser navigating away) keeps its connection', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards }, {}, { maxResetsPerSecond: 50 });
  const c = await raw(t, gw.port);
  const burst: Buffer[] = [];
  for (let i = 0; i < 40; i++) burst.push(headers(1 + 2 * i, getBlock(`/r${i}`)), rstStream(1 + 2 * i));
  burst.push(headers(81, getBlock('/last')));
  c.write(Buffer.concat(burst));
  await waitFor(() => c.answered().has(81), 'the last request is answered');
  assert.equal(c.goaway(), null);
  assert.equal(c.isClosed(), false);
});

test('SETTINGS and PING floods past maxControlFramesPerSecond: GOAWAY ENHANCE_YOUR_CALM and an offence', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards }, {}, { maxControlFramesPerSecond: 200 });
  for (const make of [() => settings(), () => ping(7)]) {
    const c = await raw(t, gw.port);
    // In small batches, read as they come (the server's ACKs never pile up: nghttp2's own outbound-ACK
    // limit of 1000 is not what stops this), 300 frames within the second.
    for (let i = 0; i < 6 && !c.isClosed(); i++) {
      c.write(Buffer.concat(Array.from({ length: 50 }, make)));
      await sleep(20);
    }
    await waitFor(() => c.isClosed(), 'the connection is closed');
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  }
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_H2_FLOOD'), 2);
});

test('HPACK bomb: a header block that decodes past limits.maxHeaderBytes is refused, never forwarded', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const c = await raw(t, gw.port);
  // 4 KB into the dynamic table once, then referenced 8 times: 36 KB decoded from ~4 KB on the wire
  // (under node:http2's default 64 KB list size, past the gateway's 16 KB).
  const bomb = [
    hpack.literalIndexed('x-bomb', 'a'.repeat(4000)),
    ...Array.from({ length: 8 }, () => hpack.indexed(62)),
  ];
  c.write(headers(1, getBlock('/bomb', 'localhost', bomb)));
  c.write(headers(3, getBlock('/fine')));
  await waitFor(() => c.answered().has(3), 'the next stream on the connection is answered');
  // Refused 431 before it is a request (no log line, no phase): forwarded, the origin would have been asked.
  assert.ok(c.answered().has(1));
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_HEADERS_TOO_LARGE'), 1);
  assert.ok(!gw.logs.some((l) => l.path === '/bomb'), 'never a request');
});

test('CONTINUATION flood: a header block spread over CONTINUATION frames past the header limit is cut before it is a request', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const c = await raw(t, gw.port);
  // HEADERS without END_HEADERS, then 3 CONTINUATIONs of 8 literals of 1 KB: 24 KB, past 16 KB.
  c.write(headers(1, getBlock('/cont'), true, false));
  for (let i = 0; i < 3; i++) {
    const block = Buffer.concat(Array.from({ length: 8 }, (_, k) => hpack.literal(`x-c${i}-${k}`, 'b'.repeat(1000))));
    c.write(frame(FrameType.CONTINUATION, i === 2 ? 0x4 : 0, 1, block));
  }
  await waitFor(() => c.answered().has(1) || c.isClosed(), 'stream 1 answered');
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_HEADERS_TOO_LARGE'), 1);
  assert.ok(!gw.logs.some((l) => l.path === '/cont'), 'never a request');
  const stillServes = clientFor(t, 'h2', gw.port);
  assert.equal((await stillServes.request('/')).status, 200);
});

test('CONTINUATION flood: many empty CONTINUATION frames close the connection (nghttp2 caps them per header block)', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const c = await raw(t, gw.port);
  const flood = [headers(1, getBlock('/empty'), true, false)];
  for (let i = 0; i < 1000; i++) flood.push(frame(FrameType.CONTINUATION, 0, 1));
  c.write(Buffer.concat(flood));
  await waitFor(() => c.isClosed(), 'the connection is closed');
  assert.notEqual(c.goaway(), null);
  assert.equal(up.requests.length, 0);
});

test('too many concurrent streams: past maxConcurrentStreams a stream is refused (REFUSED_STREAM) before it is a request', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards }, {}, { maxConcurrentStreams: 10 });
  const c = await raw(t, gw.port);
  // Wait for the server's SETTINGS (acknowledged by connectRaw), then open 11 streams that stay open:
  // their bodies never come (a POST's head without END_STREAM).
  await waitFor(() => c.frames.some((f) => f.type === FrameType.SETTINGS));
  await sleep(50);
  const post = (path: string) =>
    Buffer.concat([
      hpack.indexed(3),
      hpack.indexed(7),
      hpack.literalNamed(4, path),
      hpack.literalNamed(1, 'localhost'),
    ]);
  for (let i = 0; i < 11; i++) c.write(headers(1 + 2 * i, post(`/s${i}`), false));
  // nghttp2 treats a stream past the limit its client has acknowledged as a connection error (RFC 9113
  // §5.1.2): GOAWAY PROTOCOL_ERROR whose last stream is the 10th; the 11th was never a request.
  await waitFor(() => c.goaway() !== null, 'GOAWAY');
  const goaway = c.frames.find((f) => f.type === FrameType.GOAWAY)!;
  assert.equal(c.goaway(), ErrorCode.PROTOCOL_ERROR);
  assert.equal(goaway.payload.readUInt32BE(0), 19, 'the last stream processed is the 10th');
  assert.match(goaway.payload.subarray(8).toString(), /max concurrent streams/);
});

test('slow read: a stream whose client never opens its window is reset after limits.slowReadTimeoutMs, its upstream slot back long before', async (t) => {
  const up = await startUpstream(t, (_req, res: http.ServerResponse) => res.end(Buffer.alloc(512 * 1024, 7)));
  const gw = await startTlsGateway(t, up.url, { defense: noGuards, limits: { slowReadTimeoutMs: 1000 } });
  // SETTINGS_INITIAL_WINDOW_SIZE 0: nothing of a response body may be sent until a WINDOW_UPDATE that never comes.
  const c = await raw(t, gw.port, [[4, 0]]);
  c.write(headers(1, getBlock('/big')));
  await waitFor(() => c.answered().has(1), 'the head came');
  const limiter = gw.gateway.runtime().upstreams.get('origin')!.admission.limiter;
  await waitFor(() => limiter.inFlight === 0, 'the admission slot went back');
  await waitFor(() => c.resets().get(1) === ErrorCode.CANCEL, { timeoutMs: 10_000, message: 'stream 1 reset' });
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_SLOW_READ'), 1);
  const line = await waitFor(() => gw.logs.find((l) => l.msg === 'request' && l.path === '/big'));
  assert.equal(line.protocol, 'h2');
  assert.equal(line.decision, 'aborted');
});

test('graceful stop: an HTTP/2 client gets GOAWAY at once while its request in flight still finishes', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await startUpstream(t, (_req, res) => held.push(res));
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const session = http2.connect(`https://127.0.0.1:${gw.port}`, { rejectUnauthorized: false });
  cleanup(t, () => session.destroy());
  session.on('error', () => {});
  let goaway = -1;
  session.on('goaway', (code: number) => (goaway = code));
  const req = session.request({ ':path': '/slow' });
  let status = 0;
  let body = '';
  req.on('response', (h) => (status = Number(h[':status'])));
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  const ended = new Promise<void>((r) => req.on('end', () => r()));
  await waitFor(() => held.length === 1, 'the request reached the origin');
  const stopped = gw.gateway.stop(5000);
  await waitFor(() => goaway !== -1, 'GOAWAY came before the answer');
  assert.equal(goaway, http2.constants.NGHTTP2_NO_ERROR);
  held[0]!.end('done');
  await ended;
  assert.equal(status, 200);
  assert.equal(body, 'done');
  await stopped;
});

test('empty DATA flood: zero-length DATA frames past 100 invalid frames close the connection', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards, limits: { bufferBodyBytes: 0 } });
  const c = await raw(t, gw.port);
  const post = Buffer.concat([
    hpack.indexed(3),
    hpack.indexed(7),
    hpack.literalNamed(4, '/d'),
    hpack.literalNamed(1, 'localhost'),
  ]);
  c.write(headers(1, post, false));
  // Each frame is work for the server and carries nothing (CVE-2019-9518): 300 of them, under node:http2's
  // default of 1000 invalid frames per connection, past the gateway's 100.
  c.write(Buffer.concat(Array.from({ length: 300 }, () => frame(FrameType.DATA, 0, 1))));
  await waitFor(() => c.isClosed(), 'the connection is closed');
});

test('WINDOW_UPDATE and PRIORITY floods are absorbed by nghttp2 without reaching JavaScript: the connection still serves', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const c = await raw(t, gw.port);
  const priority = frame(FrameType.PRIORITY, 0, 101, Buffer.from([0, 0, 0, 0, 15]));
  c.write(Buffer.concat(Array.from({ length: 3000 }, () => windowUpdate(0, 1))));
  c.write(Buffer.concat(Array.from({ length: 3000 }, () => priority)));
  c.write(headers(1, getBlock('/after')));
  await waitFor(() => c.answered().has(1), 'the request after the flood is answered');
  assert.equal(c.goaway(), null);
});

test('a sustained WINDOW_UPDATE or PRIORITY flood (past 1 MiB, 8 bytes per byte of requests) gets GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const priority = frame(FrameType.PRIORITY, 0, 101, Buffer.from([0, 0, 0, 0, 15]));
  for (const make of [() => windowUpdate(0, 1), () => priority]) {
    const c = await raw(t, gw.port);
    // A real request first: its head counts toward what the client asked for, and is still answered.
    c.write(headers(1, getBlock('/before')));
    await waitFor(() => c.answered().has(1), 'the request before the flood is answered');
    // 1.5 MiB of frames that ask nothing, in 64 KiB writes read as they come.
    const batch = Buffer.concat(Array.from({ length: 5000 }, make));
    for (let sent = 0; sent < 1.5 * 1024 * 1024 && !c.isClosed(); sent += batch.length) {
      c.write(batch);
      await sleep(5);
    }
    await waitFor(() => c.isClosed(), { message: 'the connection is closed', timeoutMs: 5000 });
    assert.equal(c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  }
  // The WINDOW_UPDATE flood is the entry's to stop (nghttp2 has no limit on them); nghttp2 may close a
  // PRIORITY flood itself first (its own cap on PRIORITY frames), with the same code.
  assert.ok((await refusals(gw, 'RMP_ERR_EDGE_H2_FLOOD')) >= 1);
});

test('a client that uploads and downloads much more than 1 MiB on one connection keeps it', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards });
  const client = http2.connect(`https://127.0.0.1:${gw.port}`, { rejectUnauthorized: false });
  cleanup(t, () => client.close());
  const body = Buffer.alloc(256 * 1024, 'x');
  for (let i = 0; i < 12; i++) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = client.request({ ':method': 'POST', ':path': `/up${i}`, 'content-type': 'text/plain' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
      req.end(body);
    });
    assert.equal(status, 200, `upload ${i}`);
  }
  assert.equal(client.closed || client.destroyed, false);
  assert.equal(await refusals(gw, 'RMP_ERR_EDGE_H2_FLOOD'), 0);
});

test('an HTTP/2 connection left idle after its streams is closed with GOAWAY after limits.idleTimeoutMs', async (t) => {
  const up = await startUpstream(t);
  const gw = await startTlsGateway(t, up.url, { defense: noGuards, limits: { idleTimeoutMs: 1000 } });
  const c = await raw(t, gw.port);
  c.write(headers(1, getBlock('/one')));
  await waitFor(() => c.answered().has(1), 'answered');
  // PINGs are no activity: a client cannot keep an idle connection with them.
  for (let i = 0; i < 4 && !c.isClosed(); i++) {
    c.write(ping(i));
    await sleep(400);
  }
  await waitFor(() => c.isClosed(), { timeoutMs: 5000, message: 'the idle connection is closed' });
  assert.equal(c.goaway(), ErrorCode.NO_ERROR);
});

test('slow POST: a stream whose body is not all sent after limits.requestTimeoutMs is cut; a whole request waiting on a slow origin is not', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await startUpstream(t, (req, res) => (req.url === '/slow-origin' ? held.push(res) : res.end('ok')));
  const gw = await startTlsGateway(t, up.url, {
    defense: noGuards,
    limits: { requestTimeoutMs: 1000, headersTimeoutMs: 1000 },
  });
  const c = await raw(t, gw.port);
  const post = Buffer.concat([
    hpack.indexed(3),
    hpack.indexed(7),
    hpack.literalNamed(4, '/upload'),
    hpack.literalNamed(1, 'localhost'),
    hpack.literal('content-length', '1000'),
  ]);
  c.write(headers(1, post, false));
  c.write(frame(FrameType.DATA, 0, 1, Buffer.alloc(10, 1)));
  c.write(headers(3, getBlock('/slow-origin')));
  await waitFor(() => c.resets().has(1), { timeoutMs: 10_000, message: 'the slow POST is cut' });
  assert.equal(c.resets().get(1), ErrorCode.CANCEL);
  const line = await waitFor(() => gw.logs.find((l) => l.msg === 'request' && l.path === '/upload'));
  assert.equal(line.reason, 'RMP_ERR_EDGE_TIMEOUT');
  await waitFor(() => held.length === 1, 'the whole request reached the origin');
  await sleep(1200);
  assert.ok(!c.resets().has(3), 'a whole request waiting on its answer is not cut');
  held[0]!.end('late but fine');
  await waitFor(() => c.answered().has(3), 'answered');
});
