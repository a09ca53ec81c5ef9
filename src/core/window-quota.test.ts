import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WindowQuota } from './window-quota.ts';

test('a window quota counts each key up to its limit, refusals count nothing, and a new window starts afresh', () => {
  const q = new WindowQuota(60_000, 10);
  let taken = 0;
  for (let i = 0; i < 25; i++) if (q.take('198.51.100.1', 10, 1000)) taken++;
  assert.equal(taken, 10);
  assert.equal(q.estimate('198.51.100.1', 1000), 10, 'the 15 refusals were not counted');
  assert.equal(q.take('198.51.100.2', 10, 1000), true, 'another key has its own quota');
  assert.equal(q.take('198.51.100.1', 10, 61_000), true, 'a new window');
  assert.equal(q.bytes, 4 * 1024 * 2, 'fixed memory');
});

test('a window quota over 100 000 distinct keys in one window: fixed memory, honest keys still get their quota', () => {
  const q = new WindowQuota();
  for (let i = 0; i < 100_000; i++) q.take(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, 10, 0);
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    let n = 0;
    while (n < 10 && q.take(`172.16.${i >> 8}.${i & 255}`, 10, 0)) n++;
    if (n < 9) refused++;
  }
  assert.ok(refused <= 5, `keys short of their quota by over-counting: ${refused} of 1000`);
  assert.equal(q.bytes, 512 * 1024);
});
