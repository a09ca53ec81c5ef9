import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

test('a slow POST holds no upstream connection: with one pooled connection, other requests pass while its body trickles', async (t) => {
  const up = await startUpstream(t, (_req, res, body) => res.end(`got ${body.length}`));
  const gw = await startGateway(t, up.url, { upstreams: [{ name: 'origin', url: up.url, connections: 1 }] });
  const slow = net.connect(gw.port, '127.0.0.1');
  cleanup(t, () => slow.destroy());
  await new Promise((r) => slow.once('connect', r));
  slow.write('POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nabc');
  let reply = '';
  slow.on('data', (c) => (reply += c.toString()));
  await sleep(100);
  // The body is incomplete: nothing reached the upstream yet, and its one connection is free.
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${gw.url}/track/${i}`, { signal: AbortSignal.timeout(2000) });
    assert.equal(res.status, 200);
  }
  assert.equal(up.requests.filter((r) => r.method === 'POST').length, 0);
  slow.write('defghijklmnopqrst');
  await waitFor(() => reply.includes('got 20'), {
    timeoutMs: 1000,
    message: () => `the answer; so far ${JSON.stringify(reply)}`,
  });
  assert.match(reply, /^HTTP\/1\.1 200/);
  assert.match(reply, /got 20$/);
  assert.equal(up.requests.filter((r) => r.method === 'POST')[0]!.bodyBytes, 20);
});

test('a body larger than bufferBodyBytes still arrives whole, streamed after the buffered part', async (t) => {
  const up = await startUpstream(t, (_req, res, body) => res.end(`got ${body.length}`));
  const gw = await startGateway(t, up.url, { limits: { bufferBodyBytes: 1024 } });
  const payload = Buffer.alloc(300_000, 7);
  const res = await fetch(`${gw.url}/upload`, { method: 'POST', body: payload });
  assert.equal(res.status, 200);
  assert.equal(up.requests[0]!.bodyBytes, 300_000);
});
