// Token leases without a server: a memory store shared by three "nodes", a store that fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from './memory.ts';
import { GlobalLimiter, LeaseBroker, type LeaseSettings } from './leases.ts';
import type { ClusterStore } from './types.ts';
import { createManualClock } from '../core/clock.ts';

const tick = () => new Promise((r) => setImmediate(r));

test('three nodes leasing from one bucket admit the bucket\u2019s budget, at about one store operation per block', async () => {
  // A manual clock: 2 s of load in 1 ms steps, whatever the machine's scheduling.
  const clock = createManualClock(1000);
  const store = new MemoryStore({ clock });
  // Blocks of 20 tokens: at most about one block per node is held unspent at the end of the run.
  const settings: LeaseSettings = { leaseMs: 20, leaseTtlMs: 2000, failMode: 'open' };
  const nodes = [0, 1, 2].map(
    () =>
      new GlobalLimiter(
        new LeaseBroker(
          store,
          () => settings,
          () => clock.now(),
        ),
        'r',
        1000,
        100,
        1000,
      ),
  );
  let admitted = 0;
  let asked = 0;
  for (let ms = 0; ms < 2000; ms++) {
    for (const n of nodes) for (let i = 0; i < 5; i++) if (n.check('k', clock.now())) admitted++;
    asked += 15;
    await tick();
    clock.advance(1);
  }
  const expected = 100 + 2000; // burst + 1000/s for 2 s
  assert.ok(asked > expected * 1.5, `the load (${asked}) exceeds the limit`);
  assert.ok(Math.abs(admitted - expected) / expected < 0.05, `admitted ${admitted}, expected ${Math.round(expected)}`);
  assert.ok(
    store.operations / admitted < 0.12,
    `${store.operations} operations for ${admitted} admitted (blocks of 20, at least 10 per lease)`,
  );
});

test('a dead store: fail open hands the decision to the local limiter, fail closed refuses once leased tokens are spent', async () => {
  const dead: ClusterStore = {
    kind: 'redis',
    healthy: false,
    operations: 0,
    onHealth() {},
    lease: () => Promise.reject(new Error('down')),
    tablePut: () => Promise.reject(new Error('down')),
    tableDelete: () => Promise.reject(new Error('down')),
    tableEntries: () => Promise.reject(new Error('down')),
    tableVersion: () => Promise.reject(new Error('down')),
    publish: () => Promise.reject(new Error('down')),
    subscribe: async () => {},
    close: async () => {},
  };
  const open = new LeaseBroker(
    dead,
    () => ({ leaseMs: 100, leaseTtlMs: 2000, failMode: 'open' }),
    () => 0,
  );
  const g = new GlobalLimiter(open, 'r', 10, 10, 100);
  assert.equal(g.check('k', 0), null);
  assert.equal(open.localDecisions, 1);
  const closed = new LeaseBroker(
    dead,
    () => ({ leaseMs: 100, leaseTtlMs: 2000, failMode: 'closed' }),
    () => 0,
  );
  const c = new GlobalLimiter(closed, 'r', 10, 10, 100);
  assert.equal(c.check('k', 0), false);
  assert.ok(c.waitMs > 0);
});

test('the lease table is bounded by maxKeys, whatever the number of keys', async () => {
  const store = new MemoryStore();
  const g = new GlobalLimiter(
    new LeaseBroker(
      store,
      () => ({ leaseMs: 100, leaseTtlMs: 2000, failMode: 'open' }),
      () => 0,
    ),
    'r',
    10,
    10,
    64,
  );
  for (let i = 0; i < 10000; i++) g.check(`k${i}`, 0);
  assert.ok(g.size <= 64);
  await tick();
});
