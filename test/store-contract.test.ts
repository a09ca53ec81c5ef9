// One contract, two implementations: the memory store and the Valkey/Redis store pass the same suite
// (STYLE.md). The Redis half runs against a real redis-server started here.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../src/store/memory.ts';
import { Redis } from 'ioredis';
import { RedisStore } from '../src/store/redis.ts';
import type { ClusterStore, LeaseRequest } from '../src/store/types.ts';
import { skipRedis, startRedis, type RedisServer } from './redis-server.ts';
import { cleanup, sleep, waitFor } from './helpers.ts';

interface Harness {
  /** Two handles on the same shared state (two nodes). */
  open(): Promise<[ClusterStore, ClusterStore]>;
}

function contract(name: string, harness: () => Harness, skip: string | false = false): void {
  describe(`${name} store contract`, { skip }, () => {
    let a: ClusterStore;
    let b: ClusterStore;
    before(async () => {
      [a, b] = await harness().open();
    });
    after(async () => {
      await a.close();
      if (b !== a) await b.close();
    });
    let n = 0;
    const unique = (s: string) => `${s}-${++n}-${Math.random().toString(36).slice(2, 8)}`;

    test('a lease grants at most the burst at once, then tokens at the rate, shared by every node', async () => {
      // One token a minute: nothing refills while the two nodes share the burst, however slow the machine.
      const r: LeaseRequest = {
        bucket: unique('b'),
        intervalMs: 60_000,
        burst: 20,
        want: 15,
        minGrant: 1,
        maxDelayMs: 0,
      };
      assert.equal((await a.lease([r]))[0]!.granted, 15);
      assert.equal((await b.lease([r]))[0]!.granted, 5, 'the other node gets what is left of the burst');
      assert.equal((await a.lease([r]))[0]!.granted, 0, 'nothing left');
      // 100 tokens a second: what comes back after a pause is bounded by the time that really passed.
      const fast: LeaseRequest = {
        bucket: unique('f'),
        intervalMs: 10,
        burst: 20,
        want: 20,
        minGrant: 1,
        maxDelayMs: 0,
      };
      const t0 = performance.now();
      assert.equal((await a.lease([fast]))[0]!.granted, 20);
      await sleep(120);
      const [g] = await b.lease([{ ...fast, want: 100 }]);
      const t2 = performance.now();
      assert.ok(g!.granted >= 11, `at least 120 ms passed at 100/s: 12 tokens, got ${g!.granted}`);
      assert.ok(
        g!.granted <= Math.min(20, Math.ceil((t2 - t0) / 10) + 1),
        `no more than the time passed allows (${Math.round(t2 - t0)} ms), got ${g!.granted}`,
      );
    });

    test('a lease below minGrant grants nothing and says how long to wait', async () => {
      const bucket = unique('m');
      // A token a second: the bounds below hold on a machine that stalls for up to a second.
      const r: LeaseRequest = { bucket, intervalMs: 1000, burst: 10, want: 10, minGrant: 5, maxDelayMs: 0 };
      assert.equal((await a.lease([r]))[0]!.granted, 10);
      const [g] = await b.lease([r]);
      assert.equal(g!.granted, 0);
      assert.ok(g!.waitMs > 4000 && g!.waitMs <= 5000, `about 5 s until 5 tokens, got ${g!.waitMs}`);
    });

    test('an empty bucket reserves minGrant future tokens for the node that asks, within maxDelayMs, and the next node queues behind', async () => {
      const bucket = unique('r');
      const r: LeaseRequest = { bucket, intervalMs: 1000, burst: 10, want: 10, minGrant: 5, maxDelayMs: 8000 };
      assert.equal((await a.lease([r]))[0]!.granted, 10);
      const [g1] = await b.lease([r]);
      assert.equal(g1!.granted, 5, 'reserved');
      assert.ok(g1!.waitMs > 4000 && g1!.waitMs <= 5000, `usable in about 5 s, got ${g1!.waitMs}`);
      const [g2] = await a.lease([r]);
      assert.equal(g2!.granted, 0, 'the next reservation would be due in about 10 s, past maxDelayMs');
      assert.ok(g2!.waitMs > 8000 && g2!.waitMs <= 10000, `${g2!.waitMs}`);
    });

    test('leases for several buckets go in one call, answered in order', async () => {
      const reqs = [1, 2, 3].map(
        (i): LeaseRequest => ({
          bucket: unique('p'),
          intervalMs: 1,
          burst: i * 10,
          want: 100,
          minGrant: 1,
          maxDelayMs: 0,
        }),
      );
      const grants = await a.lease(reqs);
      assert.deepEqual(
        grants.map((g) => g.granted),
        [10, 20, 30],
      );
    });

    test('a table entry put on one node is read on the other, with its time left, until it expires', async () => {
      const t = unique('t');
      const t0 = performance.now();
      await a.tablePut(t, '203.0.113.7', '{"r":"x"}', 300, 100);
      const seen = (await b.tableEntries(t)).entries;
      const elapsed = performance.now() - t0;
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.field, '203.0.113.7');
      assert.equal(seen[0]!.value, '{"r":"x"}');
      assert.ok(
        seen[0]!.ttlMs >= 300 - elapsed - 2 && seen[0]!.ttlMs <= 300,
        `time left ${seen[0]!.ttlMs} ms, ${Math.round(elapsed)} ms after the put`,
      );
      await sleep(350);
      assert.deepEqual((await b.tableEntries(t)).entries, []);
    });

    test('a put replaces the field, a delete removes it, and a full table drops what expires soonest', async () => {
      const t = unique('t');
      await a.tablePut(t, 'x', '1', 10000, 3);
      await a.tablePut(t, 'x', '2', 20000, 3);
      await a.tablePut(t, 'y', 'y', 5000, 3);
      await a.tablePut(t, 'z', 'z', 30000, 3);
      await b.tablePut(t, 'w', 'w', 40000, 3);
      const fields = (await a.tableEntries(t)).entries.map((e) => `${e.field}=${e.value}`).sort();
      assert.deepEqual(fields, ['w=w', 'x=2', 'z=z']);
      await b.tableDelete(t, 'x');
      assert.equal(await b.tableDelete(t, 'never-there'), 7, 'every put and delete bumps the version');
      const after = await a.tableEntries(t);
      assert.deepEqual(after.entries.map((e) => e.field).sort(), ['w', 'z']);
      assert.equal(after.version, 7);
      assert.equal(await b.tableVersion(t), 7);
      assert.equal(await b.tableVersion(unique('never')), 0);
    });

    test('a message published on one node reaches subscribers on every node, the publisher included', async () => {
      const ch = unique('ch');
      const gotA: string[] = [];
      const gotB: string[] = [];
      await a.subscribe(ch, (m) => gotA.push(m));
      await b.subscribe(ch, (m) => gotB.push(m));
      await sleep(50); // the subscription reaches the server
      await a.publish(ch, 'ban 203.0.113.7');
      await waitFor(() => gotA.length > 0 && gotB.length > 0, {
        timeoutMs: 1000,
        intervalMs: 5,
        message: 'the message on both nodes',
      });
      assert.deepEqual(gotA, ['ban 203.0.113.7']);
      assert.deepEqual(gotB, ['ban 203.0.113.7']);
    });

    test('every call counts as store operations', async () => {
      const before = a.operations;
      await a.lease([
        { bucket: unique('o'), intervalMs: 1, burst: 1, want: 1, minGrant: 1, maxDelayMs: 0 },
        { bucket: unique('o'), intervalMs: 1, burst: 1, want: 1, minGrant: 1, maxDelayMs: 0 },
      ]);
      await a.tableEntries(unique('t'));
      assert.equal(a.operations - before, 3);
      assert.equal(a.healthy, true);
    });
  });
}

contract('memory', () => ({
  async open() {
    const s = new MemoryStore();
    return [s, s];
  },
}));

let redis: RedisServer | null = null;
contract(
  'redis',
  () => ({
    async open() {
      redis = await startRedis();
      const mk = async () => {
        const s = new RedisStore({
          url: redis!.url,
          keyPrefix: 'rmp-test:',
          commandTimeoutMs: 1000,
          connectTimeoutMs: 2000,
          reconnectMaxMs: 1000,
        });
        await s.connect();
        return s;
      };
      return [await mk(), await mk()];
    },
  }),
  skipRedis,
);

after(async () => {
  await redis?.stop();
});

test('the subscriber survives a refused re-subscription and a restarted server: no unhandled rejection, and messages flow again', {
  skip: skipRedis,
}, async (t) => {
  // ioredis's own autoResubscribe leaves the promise of its SUBSCRIBE unhandled: an ACL that refuses the
  // channel (or a connection lost before the reply) was an unhandled rejection, which ends a Node process.
  const server = await startRedis();
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  const opts = {
    url: server.url,
    keyPrefix: 'rmp-sub:',
    commandTimeoutMs: 1000,
    connectTimeoutMs: 2000,
    reconnectMaxMs: 200,
  };
  const sub = new RedisStore(opts);
  const pub = new RedisStore(opts);
  const admin = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  admin.on('error', () => {});
  cleanup(t, async () => {
    admin.disconnect();
    await Promise.all([sub.close(), pub.close()]);
    await server.stop();
    process.off('unhandledRejection', onUnhandled);
  });
  await Promise.all([sub.connect(), pub.connect(), admin.connect()]);
  const trouble: Array<[boolean, string]> = [];
  sub.onSubscribeTrouble((failing, reason) => trouble.push([failing, reason]));
  const got: string[] = [];
  await sub.subscribe('events', (m) => got.push(m));
  // Published again and again until it arrives (a message sent before the subscription is lost).
  const delivered = (m: string) =>
    waitFor(
      async () => {
        if (got.includes(m)) return true;
        await pub.publish('events', m).catch(() => {});
        return false;
      },
      { timeoutMs: 5000, intervalMs: 50, message: `${m} to be delivered` },
    );
  assert.equal(await delivered('one'), true, 'subscribed');

  // Redis 7 disconnects a subscriber whose channels the ACL no longer allows; the reconnected
  // subscriber's SUBSCRIBE is then refused with NOPERM.
  const errors0 = sub.errors;
  await admin.call('ACL', 'SETUSER', 'default', 'resetchannels');
  await waitFor(() => sub.errors !== errors0, { timeoutMs: 2000, intervalMs: 20, message: 'a subscriber error' });
  assert.ok(sub.errors > errors0, 'the refused SUBSCRIBE is counted');
  assert.equal(trouble.length, 1, 'reported once, however many retries fail');
  assert.equal(trouble[0]![0], true);
  assert.match(trouble[0]![1], /NOPERM/);
  // Allowed again: the subscriber tries again by itself.
  await admin.call('ACL', 'SETUSER', 'default', 'allchannels');
  assert.equal(await delivered('two'), true, 'subscribed again once the ACL allows it');
  assert.deepEqual(trouble[1], [false, ''], 'and reported working again');

  // A server restarted empty: the subscriber re-subscribes when it reconnects.
  await server.kill();
  await server.restart();
  assert.equal(await delivered('three'), true, 'subscribed again after a restart');
  assert.deepEqual(unhandled, [], 'no unhandled rejection');
});
