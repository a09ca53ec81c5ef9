// `upstreams[].headersTimeoutMs` is the time allowed for the response head, in total (undici's meaning,
// the node engine's): an origin that drips its head a few bytes at a time must not keep a request, its
// admission slot and the client waiting past it. The lean pool measured it from the last byte received,
// so a head dripped every 100 ms never timed out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { rawRequest, startGateway, track, type Teardown } from './helpers.ts';

/** An origin that writes its head one field line every 100 ms, 40 of them (4 s), then the body. */
async function drippingOrigin(t: Teardown): Promise<string> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\n');
      let n = 0;
      const timer = setInterval(() => {
        if (s.destroyed) return clearInterval(timer);
        if (++n <= 40) s.write(`X-Drip-${n}: ${n}\r\n`);
        else {
          clearInterval(timer);
          s.end('Content-Length: 2\r\n\r\nok');
        }
      }, 100);
      s.on('close', () => clearInterval(timer));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

for (const engine of ['lean', 'node'] as const) {
  test(`${engine}: a head dripped past headersTimeoutMs is a 504, not an answer after the drip`, async (t) => {
    const url = await drippingOrigin(t);
    const gw = await startGateway(t, url, {
      logging: { level: 'error', requests: false },
      upstreams: [{ name: 'origin', url, headersTimeoutMs: 800 }],
      routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'critical' }],
      statusPage: { enabled: false },
      server: { engine },
    });
    const started = performance.now();
    const data = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', {
      timeoutMs: 6000,
    });
    const took = performance.now() - started;
    assert.match(data, /^HTTP\/1\.1 504 /, data.slice(0, 200));
    // Well before the drip's end (4 s): the timeout counted from the request, not from the last byte.
    assert.ok(took < 3000, `answered after ${Math.round(took)} ms`);
  });
}
