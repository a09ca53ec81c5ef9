// A TLS client that chose h2 by ALPN and then sends nothing (not even the preface, or only part of it)
// is closed after limits.headersTimeoutMs by the accept layer (src/server/accept.ts toH2). Handed to
// node:http2 without its preface it was held for good: session.close() and destroy() never end a
// session whose client preface has not come (found by review, > 45 s with headersTimeoutMs 500).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { startUpstream, sleep } from './helpers.ts';
import { startTlsGateway } from './h2-client.ts';

for (const sent of ['nothing', 'part of the preface']) {
  test(`an h2 client that sends ${sent} is closed after the headers timeout`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startTlsGateway(t, up.url, { limits: { headersTimeoutMs: 500 } });
    const s = tls.connect({ host: '127.0.0.1', port: gw.port, ALPNProtocols: ['h2'], rejectUnauthorized: false });
    t.after(() => s.destroy());
    s.on('error', () => {});
    await new Promise((r) => s.once('secureConnect', r));
    assert.equal(s.alpnProtocol, 'h2');
    if (sent !== 'nothing') s.write('PRI * HTTP/2.0\r\n');
    const closed = new Promise<boolean>((r) => s.once('close', () => r(true)));
    const keepAlive = setInterval(() => {}, 1000);
    const result = await Promise.race([closed, sleep(4000).then(() => false)]);
    clearInterval(keepAlive);
    assert.ok(result, 'the silent connection is closed within 4 s (2 × 500 ms and the sweep)');
  });
}
