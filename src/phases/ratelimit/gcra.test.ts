import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { GcraLimiter } from './gcra.ts';

test('a fresh key gets exactly its burst at once, then one request per interval', () => {
  const l = new GcraLimiter(10, 5, 1000); // T = 100 ms, burst 5
  let t = 1000;
  for (let i = 0; i < 5; i++) {
    assert.equal(l.check('a', t), true, `burst request ${i}`);
    assert.equal(l.result.remaining, 4 - i);
  }
  assert.equal(l.check('a', t), false);
  assert.equal(l.result.waitMs, 100);
  t += 99;
  assert.equal(l.check('a', t), false);
  assert.ok(Math.abs(l.result.waitMs - 1) < 1e-9);
  t += 1;
  assert.equal(l.check('a', t), true);
  // steady at its rate: every request passes, none spare
  for (let i = 0; i < 50; i++) {
    t += 100;
    assert.equal(l.check('a', t), true, `steady ${i}`);
  }
  assert.equal(l.check('a', t), false);
});

test('with maxDelayMs, requests past the burst take their turns up to that wait, then are refused; the rate is unchanged', () => {
  const l = new GcraLimiter(10, 5, 1000, 300); // T = 100 ms, burst 5, at most 300 ms of wait: 3 places
  const t = 1000;
  for (let i = 0; i < 5; i++) {
    assert.equal(l.check('a', t), true);
    assert.equal(l.result.delayMs, 0, `burst request ${i} at once`);
  }
  for (let i = 1; i <= 3; i++) {
    assert.equal(l.check('a', t), true, `place ${i}`);
    assert.ok(Math.abs(l.result.delayMs - i * 100) < 1e-6, `waits its turn: ${l.result.delayMs}`);
  }
  assert.equal(l.check('a', t), false, 'the places are taken');
  assert.ok(Math.abs(l.result.waitMs - 100) < 1e-6, 'a place frees in one interval');
  assert.equal(l.check('a', t, 0), false, 'told no wait: refused as without it');
  // Over 10 s at 1 000 requests a second, the key gets its burst, its places and its rate, no more.
  let allowed = 0;
  for (let ms = 1; ms <= 10_000; ms++) if (l.check('a', t + ms)) allowed++;
  assert.equal(allowed, 100);
});

test('a burst at one instant is whole whatever the clock reads (no rounding at the bound)', () => {
  // With rate 0.001/s (T = 1e6 ms) and burst 3, a third request at the same instant sits exactly on the
  // bound; the float sum now + 3T − now came out above 3T for about one clock value in 25.
  for (let i = 0; i < 2000; i++) {
    const l = new GcraLimiter(0.001, 3, 1000);
    const now = 1000 + ((i * 7919.123457) % 1e7);
    for (let k = 0; k < 3; k++) assert.equal(l.check('a', now), true, `request ${k} at ${now}`);
    assert.equal(l.result.remaining, 0);
    assert.equal(l.check('a', now), false, `the fourth at ${now}`);
  }
});

test('refused requests do not advance the state: a client that slows to its rate is served at its rate', () => {
  const l = new GcraLimiter(10, 2, 1000);
  let t = 0;
  assert.ok(l.check('a', t) && l.check('a', t));
  for (let i = 0; i < 1000; i++) assert.equal(l.check('a', t), false); // a flood of refusals
  t += 100;
  assert.equal(l.check('a', t), true, 'one interval later it is served again');
});

test('a rate below one per second: Retry-After covers the whole interval', () => {
  const l = new GcraLimiter(0.5, 1, 1000); // one every 2 s
  assert.equal(l.check('a', 0), true);
  assert.equal(l.check('a', 10), false);
  assert.equal(Math.ceil(l.result.waitMs / 1000), 2);
  assert.equal(l.check('a', 2000), true);
});

test('keys are independent', () => {
  const l = new GcraLimiter(1, 1, 1000);
  assert.equal(l.check('a', 0), true);
  assert.equal(l.check('a', 0), false);
  assert.equal(l.check('b', 0), true);
});

test('a full table drops keys whose bucket is full again to make room', () => {
  const l = new GcraLimiter(10, 1, 16);
  for (let i = 0; i < 16; i++) l.check(`k${i}`, 0);
  assert.equal(l.size, 16);
  assert.equal(l.check('new', 1000), true); // every old key is back to a full bucket by then
  assert.equal(l.size <= 16, true);
  assert.equal(l.sharedBytes, 0, 'no need for the shared rows');
});

test('a million distinct keys stay within the memory budget, and a well-behaved client is still limited exactly', () => {
  const maxKeys = 50000;
  const l = new GcraLimiter(10, 20, maxKeys);
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  let t = 0;
  // A million addresses, each sending one request inside one 50 ms flood (all "live": none evictable).
  for (let i = 0; i < 1_000_000; i++) {
    const addr = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
    l.check(addr, t + (i % 50));
    assert.ok(l.size <= maxKeys);
  }
  t += 50;
  gc();
  const grownBytes = process.memoryUsage().heapUsed - heapBefore;
  assert.equal(l.size, maxKeys, 'the exact table is full, not past it');
  assert.equal(l.sharedBytes, 2 * 65536 * 8, 'the shared rows are a fixed size');
  assert.ok(l.sharedChecks >= 1_000_000 - maxKeys, 'the rest was counted in the shared rows');
  // ~100 bytes per exact key plus the shared rows; a Map of a million keys would be ~10x this.
  assert.ok(grownBytes < 24 * 1024 * 1024, `heap grew by ${(grownBytes / 1048576).toFixed(1)} MiB`);

  // During the flood: a new honest client lands in the shared rows; collisions may only shrink its burst.
  let passed = 0;
  while (l.check('192.0.2.1', t) && passed < 100) passed++;
  assert.ok(passed <= 20, `never more than its burst (${passed})`);
  assert.ok(passed >= 10, `most of its burst survives the collisions (${passed})`);

  // Once the flood's buckets are full again, the client gets a place in the exact table and exactly its budget.
  t += 3000;
  passed = 0;
  while (l.check('192.0.2.2', t) && passed < 100) passed++;
  assert.equal(passed, 20);
  for (let i = 0; i < 20; i++) {
    t += 100;
    assert.equal(l.check('192.0.2.2', t), true, 'served at its rate');
    assert.equal(l.check('192.0.2.2', t), false, 'and not more');
  }
  assert.ok(l.size <= maxKeys);
});
