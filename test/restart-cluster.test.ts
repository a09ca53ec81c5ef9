// The state file in cluster mode (docs/operations.md#what-survives-a-restart): the store stays
// authoritative, the file only warms a node. A node restarted while the store answers drops the
// restored bans the store no longer holds (lifted elsewhere meanwhile); a node that starts while the
// store is away enforces what its file kept from the first connection. Real redis-server, loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, startGateway, startUpstream, type TestGateway } from './helpers.ts';
import { freePort } from './helpers.ts';
import { skipRedis, startRedis } from './redis-server.ts';

/** A new connection from `localAddress`: true when it got an HTTP answer, false when refused on accept. */
function answered(port: number, localAddress: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    let bytes = 0;
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    socket.on('data', (c) => (bytes += c.length));
    socket.on('error', () => {});
    socket.on('close', () => resolve(bytes > 0));
    setTimeout(() => socket.destroy(), 2000).unref();
  });
}

const NAME =
  'cluster: restored bans the store lost are lifted at the first resync; with the store away the file is enforced';

test(NAME, { skip: skipRedis, timeout: 60_000 }, async () => {
  const redis = await startRedis();
  const up = await startUpstream();
  const dir = mkdtempSync(join(tmpdir(), 'rempart-state-cluster-'));
  const file = join(dir, 'rempart-state.db');
  const prefix = `s${Math.random().toString(36).slice(2, 8)}:`;
  // Every node still running when an assertion fails is stopped in `finally` (a Redis client keeps the test alive).
  const open = new Set<TestGateway>();
  const stop = async (g: TestGateway) => {
    open.delete(g);
    await g.close();
  };
  const node = async (name: string, url: string, stateFile: string | null): Promise<TestGateway> => {
    process.env.REMPART_REDIS_URL = url;
    try {
      const g = await startGateway(up.url, {
        logging: { level: 'warn', requests: false },
        state: { file: stateFile ?? 'off' },
        cluster: {
          store: 'redis',
          nodeName: name,
          redis: { keyPrefix: prefix, commandTimeoutMs: 1000, connectTimeoutMs: 300, reconnectMaxMs: 500 },
          resyncMs: 500,
        },
      });
      open.add(g);
      return g;
    } finally {
      delete process.env.REMPART_REDIS_URL;
    }
  };
  try {
    const a = await node('a', redis.url, file);
    a.gateway.defense.bans.ban('127.0.3.1', 600_000, 'kept', '', 'operator:t');
    a.gateway.defense.bans.ban('127.0.3.2', 600_000, 'lifted while a is down', '', 'operator:t');
    await sleep(300); // shared with the store
    await stop(a); // the state file holds both
    const b = await node('b', redis.url, null);
    assert.equal(b.gateway.defense.bans.isBanned('127.0.3.2'), true);
    b.gateway.defense.bans.unban('127.0.3.2', 'operator:t');
    await sleep(300);

    // a comes back: the file restores both, the store (answering) says one was lifted.
    const a2 = await node('a', redis.url, file);
    assert.equal(a2.gateway.defense.bans.isBanned('127.0.3.1'), true);
    assert.equal(a2.gateway.defense.bans.isBanned('127.0.3.2'), false, 'lifted elsewhere while a was down');
    assert.equal(await answered(a2.port, '127.0.3.2'), true);
    await stop(a2);

    // The store away: a starts from its file alone and refuses the banned address on accept.
    const deadUrl = `redis://127.0.0.1:${await freePort()}`;
    const a3 = await node('a', deadUrl, file);
    assert.equal(a3.gateway.cluster.store.healthy, false);
    assert.equal(await answered(a3.port, '127.0.3.1'), false, 'refused on accept from the file');
    assert.equal(await answered(a3.port, '127.0.3.9'), true);
  } finally {
    for (const g of open) await g.close().catch(() => {});
    await redis.stop();
    await up.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
