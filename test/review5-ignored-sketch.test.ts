// Review (issue 17, refusal branch): the ignored-challenge sketch's slots must not be computable by a
// client. With an unkeyed SHA-256 of the address, an attacker computes a victim's two slots offline,
// picks two addresses of its own that land on them (about 4096 tries each: an IPv6 /48 holds 65536
// /64 keys) and ignores challenges from those: the victim's estimate passes `ignoredPerMinute` and
// every challenge it is given is then an offence towards a ban. Keyed per process, the attacker's
// addresses land elsewhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hash } from 'node:crypto';
import { IgnoredChallenges, SecondsInARow } from '../src/phases/challenge/ignored.ts';

const SLOTS = 4096;
/** The slots an outsider computes: the first two 16-bit words of SHA-256(key). */
function publicSlots(key: string): [number, number] {
  const h = hash('sha256', key, 'buffer');
  return [h.readUInt16BE(0) % SLOTS, h.readUInt16BE(2) % SLOTS];
}

/** Two attacker keys (IPv6 /64s of one /48) that meet the victim's row-0 and row-1 slots. */
function colliders(victim: string): [string, string] {
  const [a, b] = publicSlots(victim);
  let first = '';
  let second = '';
  for (let i = 0; i < 65536 && (first === '' || second === ''); i++) {
    const key = `2001:db8:66:${i.toString(16)}::/64`;
    const [x, y] = publicSlots(key);
    if (first === '' && x === a) first = key;
    else if (second === '' && y === b) second = key;
  }
  assert.ok(first !== '' && second !== '', 'colliders found offline');
  return [first, second];
}

test('review5: an attacker cannot push a chosen address over the ignored-challenge threshold', () => {
  const victim = '203.0.113.50';
  const [k1, k2] = colliders(victim);
  const s = new IgnoredChallenges(60_000);
  for (let i = 0; i < 100; i++) {
    s.add(k1, 1000 + i);
    s.add(k2, 1000 + i);
  }
  // The victim's first challenge of the minute must read (about) 1, not the attacker's 100.
  assert.ok(s.add(victim, 2000) < 5, 'the victim inherits the counts of addresses chosen to collide');
});

test('review5: an attacker cannot make a chosen key look marked two seconds in a row', () => {
  const victim = '203.0.113.51';
  const [k1, k2] = colliders(victim);
  const s = new SecondsInARow();
  // Marked in the second before; the victim's first refusal, the next second, would count towards a ban.
  s.mark(k1, 0);
  s.mark(k2, 0);
  assert.equal(s.mark(victim, 1000), false, 'first mark of the victim must not read as a second in a row');
});
