import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../core/clock.ts';
import { CircuitBreaker } from './breaker.ts';

function setup() {
  const clock = createManualClock(1000);
  const breaker = new CircuitBreaker('postal', { consecutiveFailures: 3, openMs: 5000 }, clock);
  const changes: string[] = [];
  breaker.onChange = (_b, from, to) => changes.push(`${from}->${to}`);
  return { clock, breaker, changes };
}

test('the breaker opens after consecutiveFailures failures in a row, and a success resets the count', () => {
  const { breaker, changes } = setup();
  breaker.onFailure();
  breaker.onFailure();
  breaker.onSuccess();
  breaker.onFailure();
  breaker.onFailure();
  assert.equal(breaker.state, 'closed');
  breaker.onFailure();
  assert.equal(breaker.state, 'open');
  assert.equal(breaker.allowRequest(), false);
  assert.deepEqual(changes, ['closed->open']);
});

test('an open breaker lets exactly one probe through after openMs; its success closes it', () => {
  const { clock, breaker, changes } = setup();
  for (let i = 0; i < 3; i++) breaker.onFailure();
  clock.advance(4999);
  assert.equal(breaker.wouldAllow(), false);
  assert.equal(breaker.allowRequest(), false);
  clock.advance(1);
  assert.equal(breaker.wouldAllow(), true);
  assert.equal(breaker.allowRequest(), true);
  assert.equal(breaker.state, 'half_open');
  assert.equal(breaker.allowRequest(), false, 'a second request while the probe is out is refused');
  breaker.onSuccess();
  assert.equal(breaker.state, 'closed');
  assert.equal(breaker.allowRequest(), true);
  assert.deepEqual(changes, ['closed->open', 'open->half_open', 'half_open->closed']);
});

test('a failed half-open probe reopens the breaker for another openMs', () => {
  const { clock, breaker } = setup();
  for (let i = 0; i < 3; i++) breaker.onFailure();
  clock.advance(5000);
  assert.equal(breaker.allowRequest(), true);
  breaker.onFailure();
  assert.equal(breaker.state, 'open');
  clock.advance(4000);
  assert.equal(breaker.allowRequest(), false);
  clock.advance(1000);
  assert.equal(breaker.allowRequest(), true);
});

test('a probe whose outcome never comes back is replaced after another openMs', () => {
  const { clock, breaker } = setup();
  for (let i = 0; i < 3; i++) breaker.onFailure();
  clock.advance(5000);
  assert.equal(breaker.allowRequest(), true);
  clock.advance(4999);
  assert.equal(breaker.allowRequest(), false);
  clock.advance(1);
  assert.equal(breaker.allowRequest(), true);
  assert.equal(breaker.state, 'half_open');
});

test('failures while open do not extend the open period', () => {
  const { clock, breaker } = setup();
  for (let i = 0; i < 3; i++) breaker.onFailure();
  clock.advance(3000);
  breaker.onFailure();
  clock.advance(2000);
  assert.equal(breaker.allowRequest(), true);
});
