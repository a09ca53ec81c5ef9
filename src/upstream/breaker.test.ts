import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../core/clock.ts';
import { CircuitBreaker } from './breaker.ts';
import { spreadKey } from './spread.ts';

const SETTINGS = {
  consecutiveFailures: 5,
  openMs: 5000,
  windowMs: 10_000,
  minRequests: 20,
  failurePercent: 50,
  minClients: 3,
  minPaths: 3,
};

function setup() {
  const clock = createManualClock(1000);
  const breaker = new CircuitBreaker('postal', { ...SETTINGS, consecutiveFailures: 3, openMs: 5000 }, clock);
  const changes: string[] = [];
  breaker.onChange = (_b, from, to) => changes.push(`${from}->${to}`);
  return { clock, breaker, changes };
}

test('the breaker opens after consecutiveFailures connect failures in a row, and a success resets the count', () => {
  const { breaker, changes } = setup();
  breaker.onConnectFailure();
  breaker.onConnectFailure();
  breaker.onSuccess();
  breaker.onConnectFailure();
  breaker.onConnectFailure();
  assert.equal(breaker.state, 'closed');
  breaker.onConnectFailure();
  assert.equal(breaker.state, 'open');
  assert.equal(breaker.allowRequest(), false);
  assert.deepEqual(changes, ['closed->open']);
});

test('an open breaker lets exactly one probe through after openMs; its success closes it', () => {
  const { clock, breaker, changes } = setup();
  for (let i = 0; i < 3; i++) breaker.onConnectFailure();
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
  for (let i = 0; i < 3; i++) breaker.onConnectFailure();
  clock.advance(5000);
  assert.equal(breaker.allowRequest(), true);
  breaker.onConnectFailure();
  assert.equal(breaker.state, 'open');
  clock.advance(4000);
  assert.equal(breaker.allowRequest(), false);
  clock.advance(1000);
  assert.equal(breaker.allowRequest(), true);
});

test('a probe whose outcome never comes back is replaced after another openMs', () => {
  const { clock, breaker } = setup();
  for (let i = 0; i < 3; i++) breaker.onConnectFailure();
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
  for (let i = 0; i < 3; i++) breaker.onConnectFailure();
  clock.advance(3000);
  breaker.onConnectFailure();
  clock.advance(2000);
  assert.equal(breaker.allowRequest(), true);
});

test('response failures from one client, or on one path, never open the breaker however many', () => {
  // One prefix, many paths: the attacker varies the path.
  const one = setup().breaker;
  for (let i = 0; i < 1000; i++) one.onResponseFailure('198.51.100.0/24', `/slow/${i}`);
  assert.equal(one.state, 'closed');
  assert.equal(one.allowRequest(), true);
  // Many prefixes, one path: a botnet on one slow path.
  const many = setup().breaker;
  for (let i = 0; i < 1000; i++) many.onResponseFailure(`10.0.${i % 250}.0/24`, '/slow');
  assert.equal(many.state, 'closed');
  assert.equal(many.allowRequest(), true);
});

test('response failures spread over clients and paths open the breaker past the volume and the percentage', () => {
  const { breaker, changes } = setup();
  for (let i = 0; i < 19; i++) breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  assert.equal(breaker.state, 'closed', 'below minRequests (20)');
  breaker.onResponseFailure('10.0.9.0/24', '/p9');
  assert.equal(breaker.state, 'open');
  assert.deepEqual(changes, ['closed->open']);
});

test('spread response failures below failurePercent of the answers do not open the breaker', () => {
  const { breaker } = setup();
  for (let i = 0; i < 60; i++) {
    breaker.onSuccess();
    breaker.onSuccess();
    breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  }
  assert.equal(breaker.state, 'closed', 'a third of the answers failing');
  for (let i = 0; i < 200; i++) breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  assert.equal(breaker.state, 'open', 'then most of them');
});

test('response failures older than the window are forgotten', () => {
  const { clock, breaker } = setup();
  for (let i = 0; i < 15; i++) breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  clock.advance(25_000);
  for (let i = 0; i < 15; i++) breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  assert.equal(breaker.state, 'closed', '15 + 15 failures, 25 s apart: never 20 within a window');
  // Within one window (across a bucket boundary), they add up.
  clock.advance(6_000);
  for (let i = 0; i < 10; i++) breaker.onResponseFailure(`10.0.${i % 5}.0/24`, `/p${i % 4}`);
  assert.equal(breaker.state, 'open');
});

test('a connect failure streak is broken by a success or an answer, and a failed half-open probe of either kind reopens', () => {
  const { clock, breaker } = setup();
  breaker.onConnectFailure();
  breaker.onConnectFailure();
  breaker.onResponseFailure('10.0.0.0/24', '/a');
  breaker.onConnectFailure();
  breaker.onConnectFailure();
  assert.equal(breaker.state, 'closed');
  breaker.onConnectFailure();
  assert.equal(breaker.state, 'open');
  clock.advance(5000);
  assert.equal(breaker.allowRequest(), true);
  breaker.onResponseFailure('10.0.0.0/24', '/a');
  assert.equal(breaker.state, 'open', 'the probe was answered 504: still down');
  clock.advance(5000);
  assert.equal(breaker.allowRequest(), true);
  breaker.onSuccess();
  assert.equal(breaker.state, 'closed');
  // The failures that opened it were spent: a few more after closing do not reopen it at once.
  for (let i = 0; i < 5; i++) breaker.onResponseFailure(`10.0.${i}.0/24`, `/p${i}`);
  assert.equal(breaker.state, 'closed');
});

test('the spread over clients counts IPv6 by /48: three /64s of one /48 are one client', () => {
  const { breaker } = setup();
  // ctx.clientPrefix of IPv6 clients: their /64 (core/client-key.ts prefixKey).
  for (let i = 0; i < 60; i++) breaker.onResponseFailure(`2001:db8:77:${i % 3}::/64`, `/search/${i % 3}`);
  assert.equal(breaker.state, 'closed', 'one /48 (a tunnel broker account, a home /56) is one client');
  for (let i = 0; i < 3; i++) breaker.onResponseFailure(`2001:db8:${i + 1}:0::/64`, `/p${i}`);
  assert.equal(breaker.state, 'open', 'three /48s are three clients');
  assert.equal(spreadKey('2001:db8:77:ab::/64'), '2001:db8:77::/48');
  assert.equal(spreadKey('2001:0:0:0::/64'), '2001:0:0::/48');
  assert.equal(spreadKey('198.51.100'), '198.51.100');
});
