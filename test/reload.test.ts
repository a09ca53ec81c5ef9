import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { validateConfig } from '../src/config/load.ts';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

test('a reload that replaces an upstream pool does not fail requests routed before it', async (t) => {
  const up = await startUpstream(t, (_req, res, body) => res.end(`got ${body.length}`));
  const gw = await startGateway(t, up.url, { upstreams: [{ name: 'origin', url: up.url, connections: 8 }] });
  const socket = net.connect(gw.port, '127.0.0.1');
  cleanup(t, () => socket.destroy());
  await new Promise((r) => socket.once('connect', r));
  let reply = '';
  socket.on('data', (c) => (reply += c.toString()));
  socket.write('POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde');
  await sleep(50);
  await gw.gateway.reload(
    validateConfig({
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'origin', url: up.url, connections: 16 }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
      admin: { address: '127.0.0.1:0' },
    }),
  );
  socket.write('fghij');
  await waitFor(() => reply.includes('got 10'), {
    timeoutMs: 1000,
    message: () => `the answer; so far ${JSON.stringify(reply)}`,
  });
  assert.match(reply, /^HTTP\/1\.1 200/);
  assert.match(reply, /got 10$/);
});
