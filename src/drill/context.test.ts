import { test } from 'node:test';
import assert from 'node:assert/strict';
import { wholeArrivals } from './context.ts';

test('wholeArrivals: an attack window measured between two clock readings gives every arrival its rate calls for', () => {
  // As RateAttack computes it: start = run start + startSec × 1000, end = start + durationSec × 1000.
  let floorShort = 0;
  for (let i = 0; i < 20_000; i++) {
    const runStart = 1000 + i * 1.37;
    const start = runStart + 0.3 * 1000;
    const end = start + 1.7 * 1000;
    const x = ((end - start) * 300) / 1000;
    assert.equal(wholeArrivals(x), 510, `window ${end - start} ms`);
    if (Math.floor(x) !== 510) floorShort++;
  }
  // The rounding it guards against is real: a plain floor came one short for some starts.
  assert.ok(floorShort > 0);
  assert.equal(wholeArrivals(509.5), 509);
  assert.equal(wholeArrivals(0), 0);
});
