// Responses on a pipelined connection go out in request order, also when a later request cannot be
// parsed or is a refused upgrade: Rempart writes those answers itself on the raw socket, and one
// written while an earlier request waits for its upstream would be read by the client as the answer
// to that earlier request (a forwarded payment seen as refused). Found by the fuzzer (bench/fuzz.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rawRequest, startGateway, startUpstream } from './helpers.ts';

/** Status lines of every response in a raw reply, in order. */
function statuses(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

async function withSlowUpstream(fn: (port: number, seen: string[]) => Promise<void>): Promise<void> {
  const seen: string[] = [];
  const up = await startUpstream((req, res) => {
    seen.push(req.url!);
    setTimeout(() => res.end('slow ok'), 300);
  });
  const gw = await startGateway(up.url, { routes: [{ name: 'slow', path: '/slow*', upstream: 'origin', class: 'public' }] });
  try {
    await fn(gw.port, seen);
  } finally {
    await gw.close();
    await up.close();
  }
}

const slow = 'GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n';

test('a parse error behind a pending request is answered after it, in order', async () => {
  await withSlowUpstream(async (port, seen) => {
    for (const bad of ['GET /x HTTP/1.1\r\nHost: a.test\r\nno colon here\r\n\r\n', 'GET /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 'GET /x HTTP/1.1\r\nHost: a.test\r\nx: a\r\n b\r\n\r\n', `GET /x HTTP/1.1\r\nHost: a.test\r\nx: ${'a'.repeat(20000)}\r\n\r\n`]) {
      seen.length = 0;
      const raw = await rawRequest(port, slow + bad, { timeoutMs: 3000 });
      const got = statuses(raw);
      assert.deepEqual(seen, ['/slow']);
      assert.equal(got[0], 200, `the forwarded request's answer comes first: ${JSON.stringify(raw.slice(0, 300))}`);
      assert.ok(got[1] === 400 || got[1] === 431, `then the refusal: ${JSON.stringify(raw.slice(0, 400))}`);
      assert.match(raw, /slow ok/);
    }
  });
});

test('a refused upgrade behind a pending request is answered after it, in order', async () => {
  await withSlowUpstream(async (port) => {
    const upgrade = 'GET /nowhere HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const raw = await rawRequest(port, slow + upgrade, { timeoutMs: 3000 });
    assert.deepEqual(statuses(raw), [200, 404], JSON.stringify(raw.slice(0, 400)));
  });
});

test('a parse error with nothing pending is still answered at once', async () => {
  await withSlowUpstream(async (port) => {
    const raw = await rawRequest(port, 'GET /x HTTP/1.1\r\nHost: a.test\r\nno colon here\r\n\r\n', { timeoutMs: 3000 });
    assert.deepEqual(statuses(raw), [400]);
  });
});
