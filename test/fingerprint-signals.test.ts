// The client fingerprints as signals (issue 16): a flood that copies the customers in everything a
// header check sees (their prefixes, their browsers' user agents and header order, their pages) but
// comes from another TLS stack or HTTP/2 stack shifts only the fingerprint mix. The level counts
// that shift as strangeness (under attack, not merely elevated by the surge), the miner proposes a
// rule on the fingerprint, and the rule refuses the flood while the customers' browsers go through.
// Configured rules can name a fingerprint; "no fingerprint" (plain HTTP, HTTP/1.1) is never mined.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { Verdict } from '../src/pipeline/phase.ts';
import { createSignaturesPhase, signaturesAdminRoutes } from '../src/phases/signatures/index.ts';
import { scoreFeatures } from '../src/phases/level/monitor.ts';
import { validateConfig } from '../src/config/load.ts';
import { BROWSERS, createSim, type Sim, type SimRequest } from './level-sim.ts';

// What each of the three browsers' connections show (Chromium's JA4 as our browser test logs it).
const BROWSER_JA4 = [
  't13d1517h2_8daaf6152771_cb7bf5808d99',
  't13d2014h2_a09f3c656075_14788d8d241b',
  't13d1715h2_5b57614c22b0_3d5424432f57',
];
const BROWSER_H2 = [
  '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p',
  '2:0;4:2097152;3:100;5:16384;9:1|10485760|0|m,s,p,a',
  '1:65536;2:0;4:131072;5:16384|12517377|0|m,p,a,s',
];
// A Node script sending Chromium's headers: Node's TLS and HTTP/2 defaults (as test/fingerprints.test.ts logs them).
const SCRIPT_JA4 = 't13d521100_b262b3658495_8e6e362c5eac';
const SCRIPT_H2 = '|00|0|m,a,s,p';
const PAGES = ['/', '/products', '/products/123', '/cart', '/api/stock/9', '/about'];

type Feature = 'ja4' | 'h2';

/** One second of traffic from the 300 customer prefixes, browsers and pages in their usual mix. */
function second(sim: Sim, perSecond: number, offset: number, stack: (i: number) => Partial<SimRequest>): void {
  for (let i = 0; i < perSecond; i++) {
    const n = (offset + i * 7919) % 300;
    const path = PAGES[i % PAGES.length]!;
    sim.send({
      prefix: `10.${n >> 8}.${n & 255}`,
      path,
      ua: BROWSERS[i % BROWSERS.length]!,
      route: path.startsWith('/api') ? 0 : 1,
      ...stack(i),
    });
  }
}
const browser = (i: number) => ({ ja4: BROWSER_JA4[i % 3]!, h2: BROWSER_H2[i % 3]! });
const script = (feature: Feature | 'both') => (i: number) => ({
  ...browser(i),
  ...(feature !== 'h2' ? { ja4: SCRIPT_JA4 } : {}),
  ...(feature !== 'ja4' ? { h2: SCRIPT_H2 } : {}),
});

function simWithSignatures() {
  const sim = createSim({ defense: { signatures: { sampleEvery: 1, mode: 'enforce' } } });
  const phase = createSignaturesPhase(sim.deps);
  sim.mount(signaturesAdminRoutes(phase, sim.deps));
  return { sim, phase };
}

/** Calm for 90 s, then the look-alike flood; returns the second it was under attack (-1: never). */
function lookAlikeFlood(sim: Sim, feature: Feature | 'both', seconds = 6): number {
  for (let s = 0; s < 90; s++) {
    second(sim, 50, s * 13, browser);
    sim.second();
  }
  let under = -1;
  for (let s = 1; s <= seconds; s++) {
    second(sim, 50, s * 17, browser);
    second(sim, 800, s * 29, script(feature));
    sim.second();
    if (under === -1 && sim.monitor.level === AttackLevel.underAttack) under = s;
  }
  return under;
}

for (const feature of ['ja4', 'h2'] as const) {
  test(`a look-alike flood from another ${feature === 'ja4' ? 'TLS' : 'HTTP/2'} stack: the ${feature} mix shift makes it an attack, a rule refuses it`, () => {
    const { sim, phase } = simWithSignatures();
    const under = lookAlikeFlood(sim, feature);
    const f = sim.monitor.features!;
    // The other "who" features barely moved: a header check alone sees the customers.
    assert.ok(f.shift.userAgent < 0.2 && f.shift.headerOrder < 0.2 && f.shift.prefix < 0.4, JSON.stringify(f.shift));
    assert.ok(f.shift[feature] >= 0.8, JSON.stringify(f.shift));
    assert.ok(under !== -1 && under <= 3, `under attack after ${under} s`);
    // The flood is 16 times the customers' per-address pace too (800 req/s from their 300 prefixes),
    // which is strange on its own: set at calm's, the fingerprint's shift alone still makes it strange,
    // and without the fingerprint's shift the same seconds would score under 1: elevated by the surge only.
    const level = sim.runtime.config.defense.level;
    const calmPace = { ...f, pace: f.paceBaseline };
    assert.ok(scoreFeatures(calmPace, level).strangeness >= 1, JSON.stringify(scoreFeatures(calmPace, level)));
    const without = scoreFeatures({ ...calmPace, shift: { ...f.shift, [feature]: 0 } }, level);
    assert.ok(without.strangeness < 1, JSON.stringify(without));
    assert.ok(sim.monitor.history.some((c) => c.reasons.some((r) => r.startsWith(`${feature} mix shifted`))));

    const rules = sim.call('GET', '/api/signatures').body.rules as Array<{
      id: string;
      action: string;
      inForce: boolean;
      match: Record<string, string>;
    }>;
    const value = feature === 'ja4' ? SCRIPT_JA4 : SCRIPT_H2;
    const rule = rules.find((r) => r.match[feature] === value);
    assert.ok(rule, JSON.stringify(rules.map((r) => r.match)));
    assert.equal(rule.action, 'block', 'never seen when calm, most of the traffic: who it is');
    assert.equal(rule.inForce, true);
    assert.match(rule.id, new RegExp(`^sig-${feature}-[0-9a-f]{8}$`));
    // No rule names a browser's fingerprint.
    assert.ok(!rules.some((r) => [...BROWSER_JA4, ...BROWSER_H2].includes(r.match[feature]!)));

    const bot = sim.ctx({ prefix: '10.0.7', path: '/products', ...script(feature)(0) });
    assert.equal(phase.onRequest(bot), Verdict.Reply);
    assert.equal(bot.reason, 'RMP_ERR_SIGNATURE_BLOCKED');
    assert.equal(bot.ruleId, rule.id);
    for (let i = 0; i < 3; i++) {
      const customer = sim.ctx({ prefix: '10.0.7', path: '/products', ua: BROWSERS[i]!, ...browser(i) });
      assert.equal(phase.onRequest(customer), Verdict.Continue);
      assert.equal(customer.reason, '');
    }
  });
}

test('a flood over plain HTTP against calm HTTPS traffic: "(none)" is never proposed as a fingerprint rule', () => {
  const { sim } = simWithSignatures();
  for (let s = 0; s < 90; s++) {
    second(sim, 50, s * 13, browser);
    sim.second();
  }
  for (let s = 1; s <= 6; s++) {
    second(sim, 50, s * 17, browser);
    second(sim, 800, s * 29, () => ({ ja4: '', h2: '' }));
    sim.second();
  }
  assert.ok(sim.monitor.features!.shift.ja4 >= 0.8, 'the mix did shift');
  const rules = sim.call('GET', '/api/signatures').body.rules as Array<{ match: Record<string, string> }>;
  assert.ok(!rules.some((r) => r.match.ja4 !== undefined || r.match.h2 !== undefined), JSON.stringify(rules));
  const top = sim.call('GET', '/api/signatures').body.top as Record<string, Array<{ value: string }>>;
  assert.equal(top.ja4![0]!.value, '(none)', 'listed among the top values all the same');
});

test('configured rules name a JA4 or an HTTP/2 fingerprint, exactly, alone or with other features', () => {
  const rules = [
    { id: 'node-tls', match: { ja4: SCRIPT_JA4 }, action: 'block' },
    { id: 'node-h2-api', match: { h2: SCRIPT_H2, pathShape: '/api/stock/:n' }, action: 'challenge' },
  ];
  const sim = createSim({ defense: { signatures: { mode: 'enforce', rules } } });
  const phase = createSignaturesPhase(sim.deps);
  const node = sim.ctx({ prefix: '10.0.1', path: '/', ja4: SCRIPT_JA4 });
  assert.equal(phase.onRequest(node), Verdict.Reply);
  assert.equal(node.ruleId, 'node-tls');
  const chrome = sim.ctx({ prefix: '10.0.1', path: '/', ja4: BROWSER_JA4[0]!, h2: BROWSER_H2[0]! });
  assert.equal(phase.onRequest(chrome), Verdict.Continue);
  assert.equal(chrome.ruleId, '');
  // Not a substring match: a JA4 sharing its first part is another client.
  const cousin = sim.ctx({ prefix: '10.0.1', path: '/', ja4: `${SCRIPT_JA4.slice(0, -1)}0` });
  assert.equal(phase.onRequest(cousin), Verdict.Continue);
  const h2 = sim.ctx({ prefix: '10.0.1', path: '/api/stock/9', h2: SCRIPT_H2 });
  assert.equal(phase.onRequest(h2), Verdict.Continue);
  assert.equal(h2.challengeRequiredBy, 'node-h2-api');
  const h2Elsewhere = sim.ctx({ prefix: '10.0.1', path: '/cart', h2: SCRIPT_H2 });
  phase.onRequest(h2Elsewhere);
  assert.equal(h2Elsewhere.challengeRequiredBy, '');

  // The schema refuses what is not a JA4.
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:9' }],
    routes: [{ name: 'r', path: '/*', upstream: 'o' }],
  };
  const withRule = (match: Record<string, string>) =>
    validateConfig({ ...base, defense: { signatures: { rules: [{ id: 'r', match, action: 'block' }] } } }, '(t)');
  assert.doesNotThrow(() => withRule({ ja4: SCRIPT_JA4 }));
  assert.throws(() => withRule({ ja4: 'chrome' }), /ja4/);
  assert.throws(() => withRule({ ja4: `${SCRIPT_JA4}_x` }), /ja4/);
  assert.throws(() => withRule({ h2: '' }), /h2/);
});
