// Review (attack): a connection that is refused anyway (its address over its per-address cap, or
// banned) must not close a real user's idle keep-alive connection on its way to being refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

function open(port: number, localAddress: string): Promise<{ s: net.Socket; closed: () => boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    let closed = false;
    s.on('error', () => {});
    s.on('close', () => (closed = true));
    // A refusal may reset the connection before connect completes: that is a closed connection too.
    s.once('connect', () => resolve({ s, closed: () => closed }));
    s.once('close', () => resolve({ s, closed: () => true }));
  });
}

test("review: an address over its cap cannot reclaim (close) another client's idle keep-alive connection", async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    limits: { maxConnections: 4, maxConnectionsPerAddress: 3, pressureIdleTimeoutMs: 3600000 },
  });
  const all: net.Socket[] = [];
  cleanup(t, () => {
    for (const s of all) s.destroy();
  });
  // A real user: one keep-alive request answered, then idle.
  const user = await open(gw.port, '127.0.0.2');
  all.push(user.s);
  let got = '';
  user.s.on('data', (c) => (got += c.toString('latin1')));
  user.s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => got.includes('\r\n\r\nok'), {
    timeoutMs: 5000,
    intervalMs: 20,
    message: () => `the user's answer: ${JSON.stringify(got)}`,
  });
  assert.match(got, /^HTTP\/1\.1 200/);
  // The attacker fills its own cap (3) with connections that never finish a request head.
  for (let i = 0; i < 3; i++) {
    const a = await open(gw.port, '127.0.0.3');
    a.s.write('GET / HTTP/1.1\r\n');
    all.push(a.s);
    await sleep(30);
  }
  await sleep(200);
  assert.equal(user.closed(), false, 'the user is still connected at the cap');
  // Now at the cap. Each further attacker connection is refused (over its per-address cap) ...
  const refused: Array<() => boolean> = [];
  for (let i = 0; i < 3; i++) {
    const a = await open(gw.port, '127.0.0.3');
    all.push(a.s);
    refused.push(a.closed);
    await sleep(150);
  }
  await waitFor(() => refused.every((c) => c()), {
    timeoutMs: 5000,
    intervalMs: 20,
    message: 'the extra attacker connections to be refused',
  });
  assert.ok(
    refused.every((c) => c()),
    "the attacker's extra connections are refused",
  );
  await sleep(200);
  // ... and must not have cost the real user its connection.
  assert.equal(
    user.closed(),
    false,
    'the idle user connection was closed to make room for a connection that was then refused',
  );
});
