// Per-address connection caps count clients, not the balancer in front of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { connectionKey } from '../src/server/accept.ts';
import { cleanup, sleep, startGateway, startUpstream, waitFor } from './helpers.ts';

test('IPv6 clients are counted per /64, IPv4 per address', () => {
  assert.equal(connectionKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(connectionKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  assert.equal(connectionKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(connectionKey('::1'), '0:0:0:0::/64');
  assert.equal(connectionKey('203.0.113.9'), '203.0.113.9');
  assert.equal(connectionKey('::ffff:203.0.113.9'), '::ffff:203.0.113.9');
  // defense.ipv6PrefixLength: counted as rate limits and bans count the client.
  assert.equal(connectionKey('2001:db8:1:2:aaaa::1', 48), '2001:db8:1::/48');
  assert.equal(connectionKey('2001:db8:1:2:aaaa::1', 128), '2001:db8:1:2:aaaa::1');
});

/** Open a connection that sends a PROXY v1 line and an incomplete request head, and report whether it stays open. */
async function proxiedConnection(
  port: number,
  source: string,
): Promise<{ socket: net.Socket; refused: () => boolean }> {
  const socket = net.connect(port, '127.0.0.1');
  let closed = false;
  socket.on('error', () => {});
  socket.on('close', () => (closed = true));
  await new Promise((r) => socket.once('connect', r));
  socket.write(`PROXY TCP4 ${source} 127.0.0.1 4000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n`);
  return { socket, refused: () => closed };
}

test('behind a trusted PROXY-protocol balancer the cap applies to each client, not to the balancer', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    listeners: [{ address: '127.0.0.1:0', proxyProtocol: true }],
    clientAddress: { trustedProxies: ['127.0.0.1'] },
    limits: { maxConnectionsPerAddress: 2 },
  });
  const open: net.Socket[] = [];
  cleanup(t, () => {
    for (const s of open) s.destroy();
  });
  const distinct = await Promise.all(
    ['203.0.113.1', '203.0.113.2', '203.0.113.3'].map((a) => proxiedConnection(gw.port, a)),
  );
  open.push(...distinct.map((c) => c.socket));
  const same: Awaited<ReturnType<typeof proxiedConnection>>[] = [];
  for (let i = 0; i < 3; i++) {
    same.push(await proxiedConnection(gw.port, '198.51.100.7'));
    await sleep(30);
  }
  open.push(...same.map((c) => c.socket));
  await waitFor(() => same[2]!.refused(), {
    timeoutMs: 5000,
    intervalMs: 20,
    message: 'the third connection of one client to be refused',
  });
  assert.deepEqual(
    distinct.map((c) => c.refused()),
    [false, false, false],
    'three clients through one balancer all stay connected',
  );
  assert.deepEqual(
    same.map((c) => c.refused()),
    [false, false, true],
    'the third connection of one client is refused',
  );
});
