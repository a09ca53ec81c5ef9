import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../../core/clock.ts';
import { CALM_MS, USED_WINDOW, WaitingRoom } from './room.ts';

test('a saturated room lets in admitPerSecond tickets per second of clock time, in ticket order', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 2);
  const [a, b, c] = [room.take(), room.take(), room.take()];
  assert.deepEqual([a, b, c], [1, 2, 3]);
  assert.equal(room.length, 3);
  assert.equal(room.positionOf(c), 3);
  clock.advance(400);
  room.advance(clock.now(), true, 2);
  assert.equal(room.admittedUpTo, 0, 'less than one whole visitor earned');
  clock.advance(100);
  room.advance(clock.now(), true, 2);
  assert.equal(room.admittedUpTo, 1);
  assert.ok(room.isAdmitted(a) && !room.isAdmitted(b));
  clock.advance(1000);
  room.advance(clock.now(), true, 2);
  assert.equal(room.admittedUpTo, 3);
  assert.ok(room.isEmpty);
});

test('the line drains at once when the class has not been saturated for CALM_MS, not on a flicker', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 1);
  for (let i = 0; i < 50; i++) room.take();
  clock.advance(10);
  room.advance(clock.now(), false, 1);
  assert.equal(room.admittedUpTo, 0, 'one unsaturated moment between two sheds lets nobody in at once');
  clock.advance(CALM_MS - 20);
  room.advance(clock.now(), true, 1); // saturated again: the calm starts over
  clock.advance(CALM_MS - 10);
  room.advance(clock.now(), false, 1);
  assert.ok(room.admittedUpTo < 50);
  clock.advance(10);
  room.advance(clock.now(), false, 1);
  assert.equal(room.admittedUpTo, 50, 'calm for CALM_MS: the whole line goes in');
  assert.equal(room.length, 0);
});

test('an empty room does not bank admissions for the next crowd', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 10);
  clock.advance(60_000);
  room.advance(clock.now(), true, 10);
  for (let i = 0; i < 5; i++) room.take();
  room.advance(clock.now(), true, 10);
  assert.equal(room.admittedUpTo, 0, 'the minute spent empty earned nothing');
  clock.advance(200);
  room.advance(clock.now(), true, 10);
  assert.equal(room.admittedUpTo, 2);
});

test('admittedUpTo never passes issued', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 100);
  room.take();
  clock.advance(10_000);
  room.advance(clock.now(), true, 100);
  assert.equal(room.admittedUpTo, 1);
});

test('a ticket is used once; a number that left the window of remembered numbers counts as used', () => {
  const room = new WaitingRoom();
  for (let i = 0; i < 3; i++) room.take();
  assert.equal(room.use(2), true);
  assert.equal(room.use(2), false, 'used already');
  assert.equal(room.use(3), true);
  assert.equal(room.use(4), false, 'never issued');
  assert.equal(room.use(0), false);
  // Wrap the ring: the slot of ticket 2 now stands for 2 + USED_WINDOW, which starts unused.
  for (let i = 3; i < USED_WINDOW + 2; i++) room.take();
  assert.equal(room.use(2), false, 'too old to tell: refused');
  assert.equal(room.use(USED_WINDOW + 2), true);
  assert.equal(room.use(USED_WINDOW + 2), false);
});

test('the ticket quota counts an IPv4 address (mapped or not) alone and an IPv6 address by its /64', async () => {
  const { ticketQuotaKey } = await import('./index.ts');
  assert.equal(ticketQuotaKey('198.51.100.7', '198.51.100'), '198.51.100.7');
  assert.equal(ticketQuotaKey('::ffff:198.51.100.7', '198.51.100'), '::ffff:198.51.100.7');
  assert.equal(ticketQuotaKey('2001:db8:1:2::7', '2001:db8:1:2::/64'), '2001:db8:1:2::/64');
  assert.equal(ticketQuotaKey('::ffff:abcd:1', '0:0:0:0::/64'), '0:0:0:0::/64');
});
