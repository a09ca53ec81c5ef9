import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PaceSketch } from './pace-sketch.ts';

const NOW = 1_700_000_000_000;
const CAP = 100_000;

test('one person\u2019s pace per address and browser: each request moves its time on by one interval', () => {
  const s = new PaceSketch(10);
  for (let i = 0; i < 12; i++) s.charge('198.51.100.7', 'Bot', NOW, 1000, CAP);
  assert.equal(s.tat('198.51.100.7', 'Bot', NOW, CAP), NOW + 12_000);
  // Another browser at that address, the same browser elsewhere, and no User-Agent are other keys.
  assert.ok(s.tat('198.51.100.7', 'Other', NOW, CAP) <= NOW);
  assert.ok(s.tat('198.51.100.8', 'Bot', NOW, CAP) <= NOW);
  assert.ok(s.tat('198.51.100.7', undefined, NOW, CAP) <= NOW);
  // The separator: the address's last character is not read as the browser's first.
  s.charge('10.0.0.1', '5x', NOW, 1000, CAP);
  assert.ok(s.tat('10.0.0.15', 'x', NOW, CAP) <= NOW);
  // A person's pace (one a second, spread out) never builds up.
  for (let i = 0; i < 30; i++) s.charge('203.0.113.9', 'Person', NOW + i * 2000, 1000, CAP);
  assert.equal(s.tat('203.0.113.9', 'Person', NOW + 60_000, CAP), NOW + 59_000);
});

test('a flood is bounded by the cap and forgotten once it stops; a clock set back leaves no debt', () => {
  const s = new PaceSketch(10);
  for (let i = 0; i < 1000; i++) s.charge('198.51.100.7', 'Bot', NOW, 1000, CAP);
  assert.equal(s.tat('198.51.100.7', 'Bot', NOW, CAP), NOW + CAP);
  assert.ok(s.tat('198.51.100.7', 'Bot', NOW + CAP, CAP) <= NOW + CAP);
  // The wall clock an hour back: the time ahead is past any cap, so it is no debt, and starts again.
  const back = NOW - 3_600_000;
  assert.equal(s.tat('198.51.100.7', 'Bot', back, CAP), 0);
  s.charge('198.51.100.7', 'Bot', back, 1000, CAP);
  assert.equal(s.tat('198.51.100.7', 'Bot', back, CAP), back + 1000);
});

test('fixed memory whatever the number of clients, and a long User-Agent costs no more than its first 256 characters', () => {
  const s = new PaceSketch(10);
  assert.equal(s.bytes, 4 * 1024 * 8);
  for (let i = 0; i < 50_000; i++) s.charge(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, 'UA', NOW, 1000, CAP);
  assert.equal(s.bytes, 4 * 1024 * 8);
  const long = 'a'.repeat(256);
  s.charge('192.0.2.1', `${long}one`, NOW, 1000, CAP);
  assert.equal(s.tat('192.0.2.1', `${long}two`, NOW, CAP), s.tat('192.0.2.1', `${long}one`, NOW, CAP));
});
