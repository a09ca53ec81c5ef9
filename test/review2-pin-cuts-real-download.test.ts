// Review 2 (attack on d64586e): the pinned-reply cap cuts the OLDEST stalled reply. A real user
// downloading at their own (slower than the origin) pace is "stalled" most of the time (the
// response buffer is full whenever the origin is faster), and is pinned at its first backpressure
// and never re-queued. An attacker who opens pool/2 + 1 non-reading requests then makes the gateway
// destroy the real user's socket mid-download. Before d64586e the download completed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

test('review2: non-reading clients cannot get a real, slowly-reading download cut', async (t) => {
  const SIZE = 12 * 1024 * 1024;
  const big = Buffer.alloc(SIZE, 0x61);
  const up = await startUpstream(t, (req, res) => res.end(req.url === '/big' ? big : 'small'));
  let bigSeen = 0;
  up.server.on('request', (req) => req.url === '/big' && bigSeen++);
  const gw = await startGateway(t, up.url, { upstreams: [{ name: 'origin', url: up.url, connections: 4 }] });
  const socks: net.Socket[] = [];
  cleanup(t, () => {
    for (const s of socks) s.destroy();
  });
  // The real user: reads steadily, one chunk every 40 ms (~1-2 MB/s), slower than the origin.
  const victim = net.connect(gw.port, '127.0.0.1');
  let got = 0;
  let closed = false;
  victim.on('error', () => {});
  victim.on('close', () => (closed = true));
  victim.on('data', (d: Buffer) => {
    got += d.length;
    victim.pause();
    setTimeout(() => victim.resume(), 40);
  });
  victim.write('GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await waitFor(() => bigSeen >= 1, {
    timeoutMs: 10_000,
    intervalMs: 20,
    message: "the victim's request at the origin",
  });
  await sleep(300); // the victim's reply meets backpressure and is pinned
  // The attacker: pool/2 + 2 requests that never read, one after another.
  for (let i = 0; i < 4; i++) {
    const s = net.connect(gw.port, '127.0.0.1');
    s.on('error', () => {});
    s.pause();
    s.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    socks.push(s);
    await waitFor(() => bigSeen >= 2 + i, {
      timeoutMs: 10_000,
      intervalMs: 20,
      message: `attacker request ${i + 1} at the origin`,
    });
    await sleep(200);
  }
  await waitFor(() => closed, {
    timeoutMs: 30_000,
    intervalMs: 50,
    message: () => `the victim's download to end (got ${got} of ${SIZE} body bytes)`,
  });
  assert.ok(closed, 'victim finished within 30 s');
  assert.ok(got > SIZE, `the real user received the whole reply (got ${got} of ${SIZE} body bytes)`);
});
