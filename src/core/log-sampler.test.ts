import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from './clock.ts';
import { LogSampler } from './log-sampler.ts';

test('the first lines per reason pass, the rest are counted and summed up when the window turns', () => {
  const clock = createManualClock();
  const sampler = new LogSampler(clock, 3, 1000);
  const summaries: [string, number][] = [];
  const onSummary = (reason: string, n: number) => summaries.push([reason, n]);
  const passed = Array.from({ length: 10 }, () => sampler.allow('A', onSummary)).filter(Boolean).length;
  assert.equal(passed, 3);
  assert.ok(sampler.allow('B', onSummary), 'another reason has its own budget');
  clock.advance(1000);
  assert.ok(sampler.allow('A', onSummary));
  assert.deepEqual(summaries, [['A', 7]]);
});
