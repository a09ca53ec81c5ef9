// The severe-onset rule's confirmation (review of defense.level.severeFactor): a severe tick that the
// riseSeconds rule does not confirm falls back (one second of people), but an attacker pulsing one
// strange, heavy second every few seconds must not pass as calm between pulses nor flap the level:
// a second severe tick within fallSeconds of an unconfirmed one stays. Fails without the repeat rule
// (the level falls back after every pulse, 1 of 3 never rises) and without the fall-back (a single
// pulse holds under_attack for the whole fall).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { createSim, calmSecond, warmUp, type Sim } from './level-sim.ts';

function scriptBurst(sim: Sim, n: number): void {
  for (let i = 0; i < n; i++)
    sim.send({ prefix: `172.16.${i % 30}`, path: '/products', ua: 'python-requests/2.32.3', script: true });
}

test('one severe second falls back after riseSeconds; pulses every 3 s are under attack from the second', () => {
  const sim = createSim();
  warmUp(sim, 120, 20);
  const levels: AttackLevel[] = [];
  for (let s = 0; s < 30; s++) {
    calmSecond(sim, 20);
    // One pulse, 6 s of calm, then a pulse every 3 s.
    if (s === 0 || (s >= 6 && s % 3 === 0)) scriptBurst(sim, 300);
    sim.second();
    levels.push(sim.monitor.level);
  }
  const U = AttackLevel.underAttack;
  // Under attack at once, back after the riseSeconds (2) ticks it was not confirmed in (elevated at most:
  // the strange window is still decaying), then under attack from the second pulse on.
  assert.deepEqual(levels.slice(0, 2), [U, U], levels.join(','));
  assert.ok(
    levels.slice(2, 6).every((l) => l < U),
    levels.join(','),
  );
  assert.ok(
    levels.slice(6).every((l) => l === U),
    levels.join(','),
  );
  const reasons = sim.monitor.history.map((c) => `${c.to}: ${c.reasons[0]}`);
  const changes = sim.monitor.history.filter((c) => c.to === 'under_attack' || c.from === 'under_attack');
  assert.equal(changes.length, 3, reasons.join('\n'));
  assert.match(changes[1]!.reasons[0]!, /not confirmed/);
});
