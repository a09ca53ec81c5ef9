// Review (attack): clients that request a large reply and never read it give their admission slot
// back (onClientBackpressure) but keep the upstream connection the reply streams on, paused. As many
// of them as upstream.connections pin the whole pool: admission lets a real user in, and the request
// waits for a pool connection until the slow-read cut (limits.slowReadTimeoutMs, 20 s by default).
// One address may open 256 connections by default, as many as the default pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

test('review: non-reading clients cannot pin every upstream connection and stall other users', async (t) => {
  const big = Buffer.alloc(32 * 1024 * 1024, 0x61);
  const up = await startUpstream(t, (req, res) => res.end(req.url === '/big' ? big : 'small'));
  let bigSeen = 0;
  up.server.on('request', (req) => req.url === '/big' && bigSeen++);
  const gw = await startGateway(t, up.url, { upstreams: [{ name: 'origin', url: up.url, connections: 4 }] });
  const socks: net.Socket[] = [];
  cleanup(t, () => {
    for (const s of socks) s.destroy();
  });
  for (let i = 0; i < 4; i++) {
    const s = net.connect(gw.port, '127.0.0.1');
    s.on('error', () => {});
    s.pause(); // never reads
    s.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    socks.push(s);
  }
  await waitFor(() => bigSeen >= 4, { timeoutMs: 10_000, intervalMs: 20, message: 'four big requests at the origin' });
  assert.equal(bigSeen, 4);
  await sleep(500);
  const r = await fetch(`${gw.url}/small`, { signal: AbortSignal.timeout(5000) }).then(
    async (res) => `${res.status} ${await res.text()}`,
    (e: Error) => `no answer: ${e.name}`,
  );
  // Shed (503) would be an answer too; silence for the slow-read timeout is not.
  assert.match(r, /^(200 small|503)/, 'a real user is answered promptly');
});
