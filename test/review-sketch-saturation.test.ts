// Review (attack): the no-JS door's quota is a count-min sketch 4 × 2^12 wide (challenge/index.ts:
// `new WindowQuota(60_000, 12)`), keyed by client prefix (an IPv6 /64), 3 clearances a minute under
// attack. Distinct keys saturate it: 16,384 /64s (a quarter of one /48, which tunnel brokers hand out
// for free) redeeming ~25,000 delay tokens in a minute leave 94 % of fresh prefixes refused at their
// first clearance (measured with this test's loop), i.e. no-JS visitors everywhere are locked out.
// The waiting room's ticket quota (2^16 wide, 10 a minute) goes the same way at 262,144 /64s (93 %).
// Proxy test at the sketch level with the phase's parameters. Fixed: the door's sketch is 2^16 wide
// now (and an IPv6 client also spends from its /48's quota, 16 times larger); this test drives the
// review's 16,384 /64s x 3 into the widened sketch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WindowQuota } from '../src/core/window-quota.ts';

test('review: one /48 worth of /64 prefixes cannot lock every other prefix out of the no-JS door', () => {
  const q = new WindowQuota(60_000, 16); // as src/phases/challenge/index.ts
  const limit = 3;
  for (let k = 0; k < 16384; k++) for (let i = 0; i < limit; i++) q.take(`2001:db8:0:${k.toString(16)}::/64`, limit, 1);
  let refused = 0;
  for (let j = 0; j < 1000; j++) if (!q.take(`198.51.${j >> 8}.${j & 255}`, limit, 2)) refused++;
  assert.ok(refused < 100, `${refused / 10} % of fresh prefixes refused their first no-JS clearance`);
});
