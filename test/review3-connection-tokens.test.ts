// Review (s24): an origin's response with two Connection fields. Every field either one names is
// connection-specific (RFC 9110 §7.6.1) and must not reach the client; only the last one's names were
// dropped (`named` replaced per field), on both engines (clientResponseHeaders, clientResponsePairs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { rawRequest, startGateway, track } from './helpers.ts';

for (const engine of ['node', 'lean'] as const) {
  test(`${engine}: fields named by either of two Connection fields of a response never reach the client`, async (t) => {
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', () =>
        s.write(
          'HTTP/1.1 200 OK\r\nX-Internal: secret\r\nConnection: X-Internal\r\nX-Other: 1\r\n' +
            'Connection: keep-alive, X-Other\r\nContent-Length: 2\r\n\r\nok',
        ),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const gw = await startGateway(t, url, { server: { engine }, logging: { level: 'error' } });
    const data = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.match(data, /^HTTP\/1\.1 200 /, data);
    assert.doesNotMatch(data, /x-internal/i, data);
    assert.doesNotMatch(data, /x-other/i, data);
  });
}
