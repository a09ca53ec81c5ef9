import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { createSignaturesPhase, parseApproval, signaturesAdminRoutes } from '../src/phases/signatures/index.ts';
import { Verdict } from '../src/pipeline/phase.ts';
import { createManualClock } from '../src/core/clock.ts';
import type { AttackLevelMonitor } from '../src/phases/level/monitor.ts';
import { createSim, warmUp, calmSecond, type Sim } from './level-sim.ts';
import { cleanup, startGateway, startUpstream } from './helpers.ts';

const BOT = 'python-requests/2.32.3';

interface RuleView {
  id: string;
  state: string;
  action: string;
  inForce: boolean;
  match: Record<string, string>;
  evidence: {
    feature: string;
    value: string;
    count: number;
    share: number;
    baselineShare: number;
    firstSeenWallMs: number;
    lastSeenWallMs: number;
  };
  hits: number;
}

function floodSecond(sim: Sim, perSecond: number): void {
  for (let i = 0; i < perSecond; i++)
    sim.send({ prefix: `172.16.${i % 50}`, path: `/search/${i}`, ua: BOT, script: true });
}

function simWithSignatures(signatures: Record<string, unknown> = {}) {
  const offences: string[] = [];
  const sim = createSim({ defense: { signatures: { sampleEvery: 1, ...signatures } } });
  (sim.deps as { bans: unknown }).bans = {
    isBanned: () => false,
    ban() {},
    unban: () => false,
    offence: (a: string, k: string, id: string) => void offences.push(`${a} ${k} ${id}`),
  };
  const phase = createSignaturesPhase(sim.deps);
  sim.mount(signaturesAdminRoutes(phase, sim.deps));
  return { sim, phase, offences };
}

/** Warm up, then flood until under attack (and a few seconds more). */
function attack(sim: Sim, seconds = 5): number {
  warmUp(sim, 90, 50);
  let under = -1;
  for (let s = 1; s <= seconds; s++) {
    calmSecond(sim, 50);
    floodSecond(sim, 800);
    sim.second();
    if (under === -1 && sim.monitor.level === AttackLevel.underAttack) under = s;
  }
  return under;
}

const rulesOf = (sim: Sim) => sim.call('GET', '/api/signatures').body.rules as RuleView[];

test('a flood with one dominant user agent and path shape yields proposed rules with their evidence', () => {
  const { sim } = simWithSignatures();
  const under = attack(sim);
  assert.ok(under !== -1 && under <= 3, `under attack after ${under} s`);
  const rules = rulesOf(sim);
  const ua = rules.find((r) => r.match.userAgent === BOT)!;
  assert.ok(ua, JSON.stringify(rules.map((r) => r.match)));
  assert.equal(ua.state, 'proposed');
  assert.equal(ua.action, 'block'); // never seen when calm, and most of the traffic
  assert.equal(ua.evidence.feature, 'userAgent');
  assert.ok(ua.evidence.share > 0.8 && ua.evidence.share <= 1, String(ua.evidence.share));
  assert.equal(ua.evidence.baselineShare, 0);
  assert.ok(ua.evidence.count >= 30);
  assert.ok(ua.evidence.firstSeenWallMs > 0 && ua.evidence.lastSeenWallMs >= ua.evidence.firstSeenWallMs);
  const path = rules.find((r) => r.match.pathShape === '/search/:n')!;
  assert.ok(path, 'path shape rule');
  assert.equal(path.action, 'challenge'); // what is asked is never blocked outright
  // Browsers' user agents and the customers' pages were not proposed.
  assert.ok(!rules.some((r) => typeof r.match.userAgent === 'string' && r.match.userAgent.startsWith('Mozilla')));
  assert.ok(!rules.some((r) => r.match.pathShape === '/products'));
  assert.ok(sim.logs.some((l) => l.msg === 'signature rule proposed'));
  // The top values per feature are listed too.
  const top = sim.call('GET', '/api/signatures').body.top as Record<string, Array<{ value: string }>>;
  assert.equal(top.userAgent![0]!.value, BOT);
});

test('the rules gauge counts mined rules', async () => {
  const { sim } = simWithSignatures();
  attack(sim);
  const n = rulesOf(sim).length;
  assert.ok(n >= 2);
  assert.match(await sim.metrics.registry.metrics(), new RegExp(`rempart_signature_rules ${n}\n`));
});

test('nothing is mined while calm', () => {
  const { sim } = simWithSignatures();
  warmUp(sim, 120, 50);
  assert.equal(rulesOf(sim).length, 0);
});

test('under attack with autoApply, a block rule answers 403 (enforce) and counts an offence; known clients are exempt', () => {
  const { sim, phase, offences } = simWithSignatures({ mode: 'enforce' });
  attack(sim);
  const bot = sim.ctx({ prefix: '172.16.9', ua: BOT, path: '/search/1', script: true });
  assert.equal(phase.onRequest(bot), Verdict.Reply);
  assert.equal(bot.reason, 'RMP_ERR_SIGNATURE_BLOCKED');
  assert.equal(bot.replyStatus, 403);
  assert.match(bot.ruleId, /^sig-/);
  assert.equal(offences.length, 1);
  assert.match(offences[0]!, /^172\.16\.9\.7 signature sig-/);

  const known = sim.ctx({ prefix: '172.16.9', ua: BOT, path: '/search/1', script: true, known: true });
  assert.equal(phase.onRequest(known), Verdict.Continue);
  assert.equal(known.reason, '');
  assert.equal(known.challengeRequiredBy, '');

  const customer = sim.ctx({ prefix: '10.0.1', path: '/products' });
  assert.equal(phase.onRequest(customer), Verdict.Continue);
  assert.equal(customer.challengeRequiredBy, '');
});

test('an approved challenge rule marks unknown clients for the challenge phase, whatever the level', async () => {
  const { sim, phase } = simWithSignatures({ mode: 'enforce', autoApply: false });
  attack(sim);
  const path = rulesOf(sim).find((r) => r.match.pathShape === '/search/:n')!;
  assert.equal(path.inForce, false); // autoApply off: waits for the operator
  const ua = rulesOf(sim).find((r) => r.match.userAgent === BOT)!;
  sim.call('POST', `/api/signatures/${ua.id}/reject`);
  const approved = sim.call('POST', `/api/signatures/${path.id}/approve`, { action: 'challenge' }).body as RuleView;
  assert.equal(approved.state, 'approved');
  assert.equal(approved.inForce, true);
  // Back to calm: an approved rule stays in force.
  for (let s = 0; s < 60; s++) {
    calmSecond(sim, 50);
    sim.second();
  }
  assert.equal(sim.monitor.level, AttackLevel.calm);
  const bot = sim.ctx({ prefix: '172.16.3', ua: BOT, path: '/search/77', script: true });
  assert.equal(phase.onRequest(bot), Verdict.Continue); // the UA rule was rejected: no block
  assert.equal(bot.challengeRequiredBy, path.id);
  assert.match(
    await sim.metrics.registry.metrics(),
    new RegExp(`rempart_guard_decisions_total\\{[^}]*action="marked"[^}]*rule="${path.id}"[^}]*\\} 1`),
  );
  const known = sim.ctx({ prefix: '172.16.3', path: '/search/77', known: true });
  phase.onRequest(known);
  assert.equal(known.challengeRequiredBy, '');
});

test('in observe mode, rules in force are only recorded (observed code, rule id), never acted on', () => {
  const { sim, phase, offences } = simWithSignatures({ mode: 'observe' });
  attack(sim);
  const bot = sim.ctx({ prefix: '172.16.9', ua: BOT, path: '/search/1', script: true });
  assert.equal(phase.onRequest(bot), Verdict.Continue);
  assert.equal(bot.observed, 'RMP_ERR_SIGNATURE_BLOCKED');
  assert.match(bot.ruleId, /^sig-useragent-/);
  assert.equal(bot.challengeRequiredBy, '');
  assert.equal(offences.length, 0);
});

test('configured rules match on every given feature, and the admin API refuses to approve them', () => {
  const { sim, phase } = simWithSignatures({
    mode: 'enforce',
    rules: [{ id: 'old-scraper', match: { userAgent: 'Scrapy/', method: 'GET' }, action: 'block' }],
  });
  const hit = sim.ctx({ prefix: '10.9.9', ua: 'Scrapy/2.11 (+https://scrapy.org)' });
  assert.equal(phase.onRequest(hit), Verdict.Reply);
  assert.equal(hit.ruleId, 'old-scraper');
  const post = sim.ctx({ prefix: '10.9.9', ua: 'Scrapy/2.11', method: 'POST' });
  assert.equal(phase.onRequest(post), Verdict.Continue);
  assert.throws(() => sim.call('POST', '/api/signatures/old-scraper/approve'), /configured/);
  assert.throws(
    () => sim.call('POST', '/api/signatures/nope/approve'),
    (e: Error & { status?: number }) => e.status === 404,
  );
});

test('approval bodies are validated strictly', () => {
  assert.equal(parseApproval(null), null);
  assert.equal(parseApproval({ action: 'block' }), 'block');
  for (const bad of [[], 'block', { action: 'ban' }, { action: 'block', why: 1 }])
    assert.throws(() => parseApproval(bad));
});

test('sketch memory stays bounded under a flood of distinct values', () => {
  const { sim } = simWithSignatures({ k: 32 });
  warmUp(sim, 70, 50);
  for (let s = 0; s < 5; s++) {
    for (let i = 0; i < 5000; i++)
      sim.send({
        prefix: `${(s * 5000 + i) >> 16}.${((s * 5000 + i) >> 8) & 255}.${i & 255}`,
        path: `/x${s}${i}/y`,
        ua: `bot-${s}-${i}`,
      });
    sim.second();
  }
  for (const sk of [...sim.monitor.traffic.current, ...sim.monitor.traffic.baseline]) assert.ok(sk.size <= 32);
  assert.ok(rulesOf(sim).length <= 32);
});

test('end to end: a scripted flood gets a rule, and once approved as a block the gateway answers 403', async (t) => {
  process.env.REMPART_ADMIN_TOKEN = 'signatures-test-token-0123456789';
  const auth = { authorization: `Bearer ${process.env.REMPART_ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const clock = createManualClock(0);
  const up = await startUpstream(t);
  const gw = await startGateway(
    t,
    up.url,
    {
      clientAddress: { trustedProxies: ['127.0.0.1/32'] },
      // The challenge is off: this test is about the block rule, and a customer without a clearance would be challenged under attack.
      defense: {
        decisionHeader: true,
        challenge: { mode: 'off' },
        level: { warmupSeconds: 5, minRatePerSecond: 5 },
        signatures: { mode: 'enforce', autoApply: false, sampleEvery: 1, minSamples: 10 },
      },
    },
    { clock },
  );
  cleanup(t, () => delete process.env.REMPART_ADMIN_TOKEN);
  const monitor = gw.gateway.defense.level as AttackLevelMonitor;
  const get = (ip: string, ua: string) =>
    fetch(`${gw.url}/search/42`, { headers: { 'x-forwarded-for': ip, 'user-agent': ua } });
  for (let s = 0; s < 30; s++) {
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => get(`10.0.${i}.1`, 'Mozilla/5.0 Firefox/127.0').then((r) => r.arrayBuffer())),
    );
    clock.advance(1000);
    monitor.tick();
  }
  for (let s = 0; s < 3; s++) {
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => get(`198.51.${i}.1`, 'evilbot/1.0').then((r) => r.arrayBuffer())),
    );
    clock.advance(1000);
    monitor.tick();
  }
  assert.equal(monitor.level, AttackLevel.underAttack);
  const list = (await (await fetch(`${gw.adminUrl}/api/signatures`, { headers: auth })).json()) as {
    rules: RuleView[];
  };
  const rule = list.rules.find((r) => r.match.userAgent === 'evilbot/1.0')!;
  assert.ok(rule, JSON.stringify(list.rules));
  assert.equal((await fetch(`${gw.adminUrl}/api/signatures/${rule.id}/approve`, { method: 'POST' })).status, 401);
  const r = await fetch(`${gw.adminUrl}/api/signatures/${rule.id}/approve`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ action: 'block' }),
  });
  assert.equal(r.status, 200);
  const blocked = await get('198.51.200.1', 'evilbot/1.0');
  assert.equal(blocked.status, 403);
  assert.equal(((await blocked.json()) as { error: { code: string } }).error.code, 'RMP_ERR_SIGNATURE_BLOCKED');
  assert.equal(blocked.headers.get('rempart-decision'), `RMP_ERR_SIGNATURE_BLOCKED; rule=${rule.id}`);
  const customer = await get('10.0.1.1', 'Mozilla/5.0 Firefox/127.0');
  assert.equal(customer.status, 200);
  await customer.arrayBuffer();
  assert.match(
    await gw.gateway.metrics.registry.metrics(),
    new RegExp(`rempart_guard_decisions_total\\{[^}]*rule="${rule.id}"[^}]*\\} 1`),
  );
});
