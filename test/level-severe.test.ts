// The severe-onset rule (defense.level.severeFactor): a tick whose load and client behaviour are both far
// past their thresholds enters under_attack at once, without the riseSeconds confirmation, so an
// attack's first second is not forwarded as calm (issue 13 point 3: what bots that solve get before
// the level asks anything). Only strangeness counts as behaviour there: new visitors on new paths
// (drift with newcomers) and a crowd browsing like calm's clients keep the confirmation or stay below
// under_attack. Each test fails without its half: the rule removed (rises a tick later), or widened to
// drift and newcomers (rises at once on a campaign's first second).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { createSim, calmSecond, warmUp, BROWSERS, type Sim } from './level-sim.ts';

/** A scripted flood's second: `perSecond` requests from never-seen prefixes, a script's agent and headers, calm's paths. */
function scriptSecond(sim: Sim, perSecond: number): void {
  const pages = ['/', '/products', '/cart'];
  for (let i = 0; i < perSecond; i++)
    sim.send({ prefix: `172.16.${i % 30}`, path: pages[i % 3]!, ua: 'python-requests/2.32.3', script: true });
}

/** New visitors with calm's browsers and headers on paths calm never asked for (a campaign's landing page). */
function campaignSecond(sim: Sim, perSecond: number): void {
  for (let i = 0; i < perSecond; i++)
    sim.send({
      prefix: `198.51.${i % 200}`,
      path: `/spring-sale/${i % 7 === 0 ? 'faq' : 'offer'}`,
      ua: BROWSERS[i % 3]!,
    });
}

function ticksToUnderAttack(sim: Sim, second: (sim: Sim) => void, limit = 6): number {
  for (let s = 1; s <= limit; s++) {
    calmSecond(sim, 50);
    second(sim);
    sim.second();
    if (sim.monitor.level === AttackLevel.underAttack) return s;
  }
  return -1;
}

test('a flood unlike calm at many times the load is under attack after its first tick', () => {
  const sim = createSim();
  warmUp(sim, 120);
  const at = ticksToUnderAttack(sim, (s) => scriptSecond(s, 500));
  assert.equal(at, 1, JSON.stringify(sim.monitor.scores));
  const change = sim.monitor.history.find((c) => c.to === 'under_attack')!;
  assert.ok(change.reasons[0]!.startsWith('severe'), change.reasons.join('; '));
  assert.ok(
    change.reasons.some((r) => r.startsWith('userAgent mix') || r.startsWith('headerOrder mix')),
    change.reasons.join('; '),
  );

  // The same flood with the rule out of reach waits for riseSeconds (2) ticks: the rule is what made it 1.
  const slow = createSim({ defense: { level: { severeFactor: 1000 } } });
  warmUp(slow, 120);
  assert.equal(
    ticksToUnderAttack(slow, (s) => scriptSecond(s, 500)),
    2,
  );
});

test('signals just past the enter bar keep the riseSeconds confirmation', () => {
  // 500 req/s from 500 new clients at a person's pace, 55 % of them a script: strangeness between 1
  // and severeFactor (1.5), pressure far past it.
  // Every request sampled: with the default 1 in 4 at random, strangeness near 1 is noisy enough to
  // dip under the enter bar for a tick (seen once in CI: confirmed a tick late).
  const sim = createSim({ defense: { signatures: { sampleEvery: 1 } } });
  warmUp(sim, 120);
  const pages = ['/', '/products', '/cart'];
  const at = ticksToUnderAttack(sim, (s) => {
    for (let i = 0; i < 500; i++) {
      const script = i % 100 < 55;
      const ua = script ? 'python-requests/2.32.3' : BROWSERS[i % 3]!;
      s.send({ prefix: `172.${16 + (i >> 8)}.${i & 255}`, path: pages[i % 3]!, ua, script });
    }
  });
  const s = sim.monitor.scores;
  assert.ok(s.pressure >= 1.5 && s.strangeness >= 1 && s.strangeness < 1.5, JSON.stringify(s));
  assert.equal(at, 2, JSON.stringify(s));
});

test('new visitors on a new page at ten times the load are not under attack on the first tick', () => {
  // Drift and newcomers, both far past their bars, with calm's browsers: a campaign until it lasts.
  const sim = createSim();
  warmUp(sim, 120);
  calmSecond(sim, 50);
  campaignSecond(sim, 500);
  sim.second();
  const s = sim.monitor.scores;
  assert.ok(s.pressure >= 1.5 && s.drift >= 1.5 && s.newcomers >= 1.5, JSON.stringify(s));
  assert.ok(s.strangeness < 1.5, JSON.stringify(s));
  assert.notEqual(sim.monitor.level, AttackLevel.underAttack, JSON.stringify(s));
});
