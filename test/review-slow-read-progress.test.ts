// Review (attack): the slow-read cut (limits.slowReadTimeoutMs) closes a connection whose client
// takes no byte of its replies for that long. The kernel hands a writer more room only once about a
// third of a send buffer autotuned up to 4 MB is free, so a steady reader of 20-50 KB/s showed no
// progress for 20-60 s: the old 20 s default cut readers of 50 KB/s (mobile users downloading a large
// file). The default is now 60 s, nginx's send_timeout (readers from about 25 KB/s pass). This test
// keeps the bound's promise at a shorter scale: a client reading ~1 MB/s all along, with a 4 s limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, sleep, startGateway, startUpstream } from './helpers.ts';

test('review: a client that keeps reading, if slowly, is not cut as a slow reader', async (t) => {
  const big = Buffer.alloc(64 * 1024 * 1024, 0x61);
  const up = await startUpstream(t, (_req, res) => res.end(big));
  const gw = await startGateway(t, up.url, { limits: { slowReadTimeoutMs: 4000 } });
  const s = net.connect({ port: gw.port, host: '127.0.0.1' });
  cleanup(t, () => s.destroy());
  s.on('error', () => {});
  const RATE = 1_000_000; // bytes per second, read all along
  let got = 0;
  const t0 = Date.now();
  s.on('data', (d: Buffer) => {
    got += d.length;
    const ahead = (got / RATE) * 1000 - (Date.now() - t0);
    if (ahead > 0) {
      s.pause();
      setTimeout(() => s.resume(), ahead);
    }
  });
  s.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  await sleep(10_000);
  const cut = gw.logs.find((l) => l.path === '/big');
  assert.ok(got > 1_000_000, `the client read ${got} bytes`);
  assert.equal(cut, undefined, `a client reading ~1 MB/s all along was cut: ${JSON.stringify(cut)}`);
});
