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

test('a reload naming the other engine keeps the running one on both sides until the restart', async (t) => {
  const up = await startUpstream(t, (_req, res) => res.end('origin'));
  for (const [running, named] of [
    ['lean', 'node'],
    ['node', 'lean'],
  ] as const) {
    const gw = await startGateway(t, up.url, { server: { engine: running } });
    const fresh = {
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'origin', url: up.url, connections: 4 }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
      admin: { address: '127.0.0.1:0' },
      server: { engine: named },
    };
    await gw.gateway.reload(validateConfig(fresh));
    const rt = gw.gateway.runtime();
    assert.equal(rt.config.server.engine, running);
    // The upstream side compiled by the reload: the lean engine's raw pool with lean, undici's alone with node.
    const server = rt.upstreams.get('origin')!.pool.servers[0]!;
    assert.equal(server.h1 !== null, running === 'lean', `${running} running, ${named} named`);
    assert.ok(gw.logs.some((l) => /server\.engine changes take effect at the next restart/.test(String(l.msg))));
    const res = await fetch(`${gw.url}/`);
    assert.equal(await res.text(), 'origin');
  }
});
