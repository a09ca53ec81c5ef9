// Review of the lean engine as default (s24): an origin that answers 204 or 304 with the body
// its head announces, a moment after the head. The answer is complete at its head, so the upstream
// connection went back to the pool; the late bytes then landed as the answer to the next request
// sent on it: another client's. An attacker who controls what such an origin serves (an upload) made
// it a full response and had it delivered to whoever came next (response queue poisoning).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { rawRequest, sleep, startGateway, track, type Teardown } from './helpers.ts';

const EVIL = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED';

/** A naive origin: the no-body answers get their announced body 150 ms after the head; others wait 300 ms. */
async function naiveOrigin(t: Teardown, head: (method: string) => string): Promise<string> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const line = buf.slice(0, end);
        buf = buf.slice(end + 4);
        if (line.startsWith('HEAD') || line.startsWith('GET /upload')) {
          s.write(head(line.slice(0, line.indexOf(' '))));
          setTimeout(() => s.writable && s.write(EVIL), 150);
        } else setTimeout(() => s.writable && s.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest'), 300);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

// HEAD is not among them: its answer carries a GET's Content-Length by rule, so closing after each would
// open an upstream connection per HEAD, and a HEAD flood would fill the gateway's ephemeral ports with
// TIME_WAIT toward the origin (path-and-trust.test.ts keeps HEAD's connections pooled). An origin that
// sends a HEAD its body late still poisons the next answer on that connection, as with nginx and undici
// (both reuse after HEAD; bytes on an idle pooled connection close it, here too).
for (const [what, method, head] of [
  ['204 with a Content-Length', 'GET', `HTTP/1.1 204 No Content\r\nContent-Length: ${EVIL.length}\r\n\r\n`],
  ['304 with a chunked body', 'GET', 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n'],
] as const) {
  test(`lean: ${what}, its body late: never the answer to the next client's request`, async (t) => {
    const url = await naiveOrigin(t, () => head);
    // One upstream connection: the victim's request waits for it, and is sent on it once it is back.
    const gw = await startGateway(t, url, {
      server: { engine: 'lean' },
      upstreams: [{ name: 'origin', url, connections: 1 }],
      logging: { level: 'error', requests: false },
    });
    const attacker = rawRequest(gw.port, `${method} /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, {
      timeoutMs: 3000,
    });
    await sleep(50);
    const victim = await rawRequest(gw.port, 'GET /victim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', {
      timeoutMs: 3000,
    });
    await attacker;
    assert.doesNotMatch(victim, /PWNED/, `the origin's late bytes answered another client: ${JSON.stringify(victim)}`);
    assert.match(victim, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nhonest$/, JSON.stringify(victim));
  });
}

test('lean: a 204 from the origin with a Content-Length reaches the client without it, in step', async (t) => {
  const url = await naiveOrigin(t, () => 'HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n');
  const gw = await startGateway(t, url, { server: { engine: 'lean' }, logging: { level: 'error', requests: false } });
  const data = await rawRequest(
    gw.port,
    'GET /upload HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    { timeoutMs: 3000 },
  );
  const first = data.slice(0, data.indexOf('\r\n\r\n'));
  assert.match(first, /^HTTP\/1\.1 204 /, JSON.stringify(data));
  assert.doesNotMatch(first, /content-length/i, `a 204 carries no Content-Length (RFC 9110 §8.6): ${first}`);
  assert.match(data, /\r\n\r\nHTTP\/1\.1 200 [\s\S]*\r\n\r\nhonest$/, JSON.stringify(data));
});

test('lean: a 204 written with an object of headers drops its Content-Length too', async () => {
  const { LeanResponse } = await import('../src/server/lean/message.ts');
  const conn = { socket: null, keepAliveLines: () => 'Connection: keep-alive\r\n' };
  const req = { method: 'GET', httpVersionMinor: 1, headers: {}, conn, upgrade: false };
  const res = new LeanResponse(req as never, true);
  res.writeHead(204, { 'content-length': 0, 'x-a': 'b' });
  assert.doesNotMatch(res.head, /content-length/i, res.head);
  assert.match(res.head, /x-a: b/);
});
