// Review (attack): a WebSocket handshake pipelined behind two requests. onUpgrade waits for the
// response on the socket (`_httpMessage`, the first) and then calls destroySoon(); the second
// request was forwarded (the origin acted on it) but its answer, still on its way, is cut off.
// writeRawReply defers until every earlier answer is out (flushDeferredReply); the upgrade path should too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rawRequest, startGateway, startUpstream } from './helpers.ts';

test('review: every request before a pipelined WebSocket handshake gets its answer', async (t) => {
  const up = await startUpstream(t, (req, res) =>
    setTimeout(() => res.end(`up ${req.url}\n`), req.url === '/first' ? 200 : 600),
  );
  const gw = await startGateway(t, up.url, {
    routes: [
      { name: 'ws', path: '/ws', upstream: 'origin', class: 'public', websocket: true },
      { name: 'default', path: '/*', upstream: 'origin', class: 'public' },
    ],
  });
  const ws =
    'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  const raw = await rawRequest(
    gw.port,
    `GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n${ws}`,
    { timeoutMs: 5000 },
  );
  assert.ok(
    up.requests.some((r) => r.url === '/second'),
    'the origin got the second request',
  );
  assert.match(raw, /up \/first/);
  assert.match(raw, /up \/second/, 'the origin acted on /second: its answer must reach the client');
});
