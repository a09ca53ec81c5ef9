// The fixed-memory sketches of ignored challenges and of seconds refused in a row.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IgnoredChallenges, SecondsInARow } from './ignored.ts';

test('ignored challenges: one key counts up within its window and starts over after it; other keys stay apart', () => {
  const s = new IgnoredChallenges(60_000);
  for (let i = 1; i <= 50; i++) assert.equal(s.add('203.0.113.7', 1000 + i), i);
  // Two rows of 4096: a handful of other keys almost never meet in both; none here reads the 50.
  for (let i = 0; i < 200; i++) assert.ok(s.add(`198.51.${i >> 8}.${i & 255}`, 2000) < 50);
  assert.equal(s.add('203.0.113.7', 61_001), 1, 'a new window');
});

test('seconds in a row: true only for the first mark of a second that follows a marked second', () => {
  const s = new SecondsInARow();
  assert.equal(s.mark('2001:db8::/64', 0), false);
  assert.equal(s.mark('2001:db8::/64', 500), false);
  assert.equal(s.mark('2001:db8::/64', 1000), true);
  assert.equal(s.mark('2001:db8::/64', 1500), false, 'once a second');
  assert.equal(s.mark('192.0.2.1', 1600), false, 'another key was not marked before');
  assert.equal(s.mark('2001:db8::/64', 3500), false, 'a second skipped: the row starts over');
});
