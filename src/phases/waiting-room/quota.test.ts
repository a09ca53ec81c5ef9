// The waiting room's per-client place quota: an IPv6 client counts as its /64, and its /48 shares a
// quota 16 times larger, so the /64s of one free tunnel-broker /48 cannot take the whole line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WindowQuota } from '../../core/window-quota.ts';
import { takeTicketQuota } from './index.ts';
import { prefixKey } from '../../core/client-key.ts';

test('the /64s of one IPv6 /48 take at most 16 x the per-address quota of places; other networks are untouched', () => {
  const q = new WindowQuota(60_000);
  const perMinute = 10;
  let taken = 0;
  for (let k = 0; k < 4096; k++) {
    const address = `2001:db8:0:${k.toString(16)}::1`;
    for (let i = 0; i < perMinute; i++) if (takeTicketQuota(q, address, prefixKey(address), perMinute, 1000)) taken++;
  }
  assert.equal(taken, 16 * perMinute, 'the whole /48 got 16 x the quota, not 4,096 x');
  // A /64 of another /48, and an IPv4 address, still get their own places.
  const other = '2001:db8:1:1::1';
  assert.equal(takeTicketQuota(q, other, prefixKey(other), perMinute, 1000), true);
  assert.equal(takeTicketQuota(q, '198.51.100.7', prefixKey('198.51.100.7'), perMinute, 1000), true);
  // One /64 alone is still held to the per-address quota.
  const one = '2001:db8:2:1::1';
  let mine = 0;
  for (let i = 0; i < 3 * perMinute; i++) if (takeTicketQuota(q, one, prefixKey(one), perMinute, 1000)) mine++;
  assert.equal(mine, perMinute);
});
