import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../../core/clock.ts';
import { CALM_MS, TARGET_SHED, WINDOW_MS, WaitingRoom } from './room.ts';

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

/** One second of a saturated room: `served` and `shed` insiders' requests, then the advance that weighs them. */
function second(room: WaitingRoom, clock: { now(): number; advance(ms: number): void }, served: number, shed: number, ceiling: number, adaptive = true): void {
  for (let i = 0; i < served; i++) room.noteInside(false);
  for (let i = 0; i < shed; i++) room.noteInside(true);
  clock.advance(WINDOW_MS);
  room.advance(clock.now(), true, ceiling, adaptive);
}

test('adaptive: the rate falls by the share of insiders shed (at most by half a second, never below 1) and climbs back by a tenth of the ceiling while they are served', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 50);
  for (let i = 0; i < 10_000; i++) room.take();
  assert.equal(room.rate, 50, 'starts at admitPerSecond');
  second(room, clock, 96, 4, 50);
  assert.equal(room.rate, 50, `${TARGET_SHED * 100} % shed or less is tolerated`);
  second(room, clock, 80, 20, 50);
  assert.equal(room.rate, 40, '20 % shed: 20 % fewer let in');
  second(room, clock, 10, 90, 50);
  assert.equal(room.rate, 20, 'at most halved in a second');
  second(room, clock, 1, 3, 50);
  assert.equal(room.rate, 25, 'fewer than 5 requests say nothing about sheds: served and waiting, it climbs');
  for (let i = 0; i < 10; i++) second(room, clock, 0, 50, 50);
  assert.equal(room.rate, 1, 'never below one a second: the line keeps moving');
  for (let i = 0; i < 3; i++) second(room, clock, 100, 0, 50);
  assert.equal(room.rate, 16);
  for (let i = 0; i < 20; i++) second(room, clock, 100, 0, 50);
  assert.equal(room.rate, 50, 'never above admitPerSecond');
});

test('adaptive: the slower rate is what lets people in, and the room starts over at admitPerSecond once it closes', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 10);
  for (let i = 0; i < 1000; i++) room.take();
  second(room, clock, 50, 50, 10);
  assert.equal(room.rate, 5);
  const before = room.admittedUpTo;
  clock.advance(2000);
  room.advance(clock.now(), true, 10);
  assert.equal(room.admittedUpTo - before, 10, '5 a second for 2 s');
  clock.advance(CALM_MS + 1);
  room.advance(clock.now(), false, 10);
  assert.equal(room.length, 0, 'calm: everyone in');
  assert.equal(room.rate, 10, 'closed: back to admitPerSecond for the next crowd');
});

test('not adaptive: admitPerSecond whatever happens to those inside', () => {
  const clock = createManualClock();
  const room = new WaitingRoom();
  room.advance(clock.now(), true, 10, false);
  for (let i = 0; i < 100; i++) room.take();
  for (let i = 0; i < 3; i++) second(room, clock, 0, 100, 10, false);
  assert.equal(room.rate, 10);
  assert.equal(room.admittedUpTo, 30);
});
