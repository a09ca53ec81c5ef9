import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { parseOverride } from '../src/phases/level/index.ts';
import { createSim, calmSecond, warmUp, BROWSERS, type Sim } from './level-sim.ts';
import { createManualClock } from '../src/core/clock.ts';
import type { RequestContext } from '../src/pipeline/context.ts';
import { QueueEntry } from '../src/upstream/queue.ts';
import { cleanup, startGateway, startUpstream } from './helpers.ts';

/** A botnet second: `perSecond` requests from `prefixes` never-seen prefixes (172.16.x), browser-like. */
function botnetSecond(sim: Sim, perSecond: number, prefixes = 40): void {
  for (let i = 0; i < perSecond; i++)
    sim.send({ prefix: `172.16.${i % prefixes}`, path: `/search/${i}`, ua: BROWSERS[i % 3]! });
}

test('steady customer traffic stays calm for ten minutes and learns its baseline', () => {
  const sim = createSim();
  warmUp(sim, 600, 50);
  assert.equal(sim.monitor.level, AttackLevel.calm);
  assert.equal(sim.monitor.history.length, 0);
  const f = sim.monitor.features!;
  assert.ok(f.warm);
  assert.ok(Math.abs(f.baselineRatePerSecond - 50) < 5, `baseline ${f.baselineRatePerSecond}`);
  assert.ok(f.novelty < 0.05, `novelty ${f.novelty}`);
  assert.ok(
    sim.monitor.scores.strangeness < 0.5 && sim.monitor.scores.pressure < 0.5,
    JSON.stringify(sim.monitor.scores),
  );
});

test('a surge from never-seen prefixes is under attack within 3 s, and calm again within 60 s after it stops', () => {
  const sim = createSim();
  warmUp(sim, 120);
  let reachedAt = -1;
  for (let s = 1; s <= 30; s++) {
    calmSecond(sim, 50);
    botnetSecond(sim, 1000);
    sim.second();
    if (reachedAt === -1 && sim.monitor.level === AttackLevel.underAttack) reachedAt = s;
  }
  assert.ok(reachedAt !== -1 && reachedAt <= 3, `under attack after ${reachedAt} s`);
  assert.equal(sim.monitor.level, AttackLevel.underAttack);
  const change = sim.monitor.history.find((c) => c.to === 'under_attack')!;
  assert.ok(
    change.reasons.some((r) => r.includes('never-seen prefixes')),
    change.reasons.join('; '),
  );
  assert.ok(
    change.reasons.some((r) => r.startsWith('surge')),
    change.reasons.join('; '),
  );
  // Baselines were frozen during the attack: 50 req/s, not the flood's rate.
  assert.ok(
    sim.monitor.features!.baselineRatePerSecond < 60,
    `baseline ${sim.monitor.features!.baselineRatePerSecond}`,
  );

  let calmAt = -1;
  for (let s = 1; s <= 60; s++) {
    calmSecond(sim, 50);
    sim.second();
    if ((sim.monitor.level as AttackLevel) === AttackLevel.calm) {
      calmAt = s;
      break;
    }
  }
  assert.ok(calmAt !== -1 && calmAt <= 60, `calm after ${calmAt} s`);
  // Each change: a log line with reasons, a metric, an alert.
  const logged = sim.logs.filter((l) => l.msg === 'attack level changed');
  assert.ok(logged.length >= 2 && logged.every((l) => Array.isArray(l.reasons) && (l.reasons as string[]).length > 0));
  assert.ok(sim.alerts.some((a) => a.kind === 'attack_level' && a.message.includes('under_attack')));
  // The attack's prefixes were never learned as familiar.
  const ctx = sim.send({ prefix: '172.16.3' });
  assert.ok(ctx);
  sim.second();
  assert.ok(sim.monitor.features!.novelty > 0.01);
});

test('a flash crowd of returning customers raises the level to elevated, never under attack', () => {
  const sim = createSim();
  // 2000 customers visit over the warm-up, so the crowd's prefixes are familiar.
  for (let s = 0; s < 300; s++) {
    calmSecond(sim, 50, 2000, s * 50);
    sim.second();
  }
  for (let s = 0; s < 60; s++) {
    // Ten times the usual rate, from the same customers, mostly on one sale page.
    for (let i = 0; i < 500; i++) {
      const n = (s * 500 + i) % 2000;
      sim.send({ prefix: `10.${n >> 8}.${n & 255}`, path: i % 4 === 0 ? '/' : '/sale/spring', ua: BROWSERS[i % 3]! });
    }
    sim.second();
    assert.notEqual(sim.monitor.level, AttackLevel.underAttack, `second ${s}: ${JSON.stringify(sim.monitor.scores)}`);
  }
  assert.equal(sim.monitor.level, AttackLevel.elevated);
});

test('a borderline surge does not make the level flap', () => {
  const sim = createSim();
  warmUp(sim, 120, 50);
  // Around the 4× threshold: 190 and 215 req/s alternating (3.8× and 4.3×), familiar clients.
  for (let s = 0; s < 200; s++) {
    calmSecond(sim, s % 2 === 0 ? 190 : 215);
    sim.second();
  }
  const changes = sim.monitor.history.length;
  assert.equal(changes, 1, JSON.stringify(sim.monitor.history));
  assert.equal(sim.monitor.level, AttackLevel.elevated);
  // One isolated spike does not raise the level: it must hold riseSeconds of riseSeconds+1 ticks.
  const sim2 = createSim();
  warmUp(sim2, 120, 50);
  for (let s = 0; s < 60; s++) {
    calmSecond(sim2, s % 10 === 0 ? 400 : 50);
    sim2.second();
  }
  assert.equal(sim2.monitor.history.length, 0);
});

test('origin saturation alone (queue at the admission gate) raises the level to elevated', () => {
  const sim = createSim({
    upstreams: [{ name: 'origin', url: 'http://127.0.0.1:9', admission: { mode: 'static', staticLimit: 10 } }],
  });
  warmUp(sim, 90);
  const gate = sim.runtime.upstreams.get('origin')!.admission;
  // Requests of 8 clients waiting (one client's own share of the queue is not saturation: each key counts
  // up to its part, test/review-s28-level.test.ts).
  const waiting = Array.from(
    { length: Math.ceil(gate.limiter.limit * 0.8) },
    (_, i) => new QueueEntry({} as RequestContext, 3, `10.9.${i}`, 0, 1e12),
  );
  for (const e of waiting) assert.equal(gate.queue.push(e, []), null);
  for (let s = 0; s < 3; s++) {
    calmSecond(sim, 50);
    sim.second();
  }
  for (const e of waiting) gate.queue.remove(e);
  assert.equal(sim.monitor.level, AttackLevel.elevated);
  assert.ok(sim.monitor.history[0]!.reasons.some((r) => r.includes('admission queue')));
});

test('the level follows defense.level.override from the config, whatever is detected', () => {
  const sim = createSim({ defense: { level: { override: 'under_attack' } } });
  assert.equal(sim.monitor.level, AttackLevel.underAttack);
  warmUp(sim, 10);
  assert.equal(sim.monitor.level, AttackLevel.underAttack);
  assert.equal(sim.monitor.detected, AttackLevel.calm);
  assert.equal((sim.monitor.snapshot().override as { source: string }).source, 'config');
  // Nothing is learned while pinned above calm.
  assert.equal(sim.monitor.features!.baselineRatePerSecond, 0);
});

test('PUT /api/level bodies are validated strictly', () => {
  assert.deepEqual(parseOverride({ level: 'elevated', reason: 'tv ad at 20:00' }), {
    level: 'elevated',
    reason: 'tv ad at 20:00',
  });
  for (const bad of [
    null,
    [],
    'calm',
    { level: 'auto', reason: 'x' },
    { level: 'panic', reason: 'x' },
    { level: 'calm' },
    { level: 'calm', reason: '' },
    { level: 'calm', reason: 'x', extra: 1 },
    { level: 'calm', reason: 'a\nb' },
    { level: 'calm', reason: 'x'.repeat(201) },
  ])
    assert.throws(() => parseOverride(bad), /must|unknown|JSON object/, JSON.stringify(bad));
});

test('the admin API shows the level, pins it with a token, and releases it (401 without a token)', async (t) => {
  process.env.REMPART_ADMIN_TOKEN = 'level-test-token-0123456789';
  const auth = { authorization: `Bearer ${process.env.REMPART_ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const clock = createManualClock(0);
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {}, { clock });
  cleanup(t, () => delete process.env.REMPART_ADMIN_TOKEN);
  const admin = gw.adminUrl!;
  assert.equal((await fetch(`${admin}/api/level`)).status, 401);
  assert.equal(
    (await fetch(`${admin}/api/level`, { method: 'PUT', body: JSON.stringify({ level: 'under_attack', reason: 'x' }) }))
      .status,
    401,
  );
  let r = await fetch(`${admin}/api/level`, { headers: auth });
  assert.equal(r.status, 200);
  let body = (await r.json()) as Record<string, unknown>;
  assert.equal(body.level, 'calm');
  assert.equal(body.override, null);

  r = await fetch(`${admin}/api/level`, {
    method: 'PUT',
    headers: auth,
    body: JSON.stringify({ level: 'under_attack', reason: 'botnet on /search' }),
  });
  assert.equal(r.status, 200);
  body = (await r.json()) as Record<string, unknown>;
  assert.equal(body.level, 'under_attack');
  assert.equal(body.detected, 'calm');
  assert.equal(gw.gateway.defense.level.level, AttackLevel.underAttack);
  const history = body.history as Array<{ to: string; by: string; reasons: string[] }>;
  assert.equal(history[0]!.to, 'under_attack');
  assert.equal(history[0]!.by, 'operator:env');
  assert.match(history[0]!.reasons[0]!, /botnet on \/search/);
  assert.match(await gw.gateway.metrics.registry.metrics(), /rempart_attack_level 2/);
  assert.match(
    await gw.gateway.metrics.registry.metrics(),
    /rempart_attack_level_changes_total\{from="calm",to="under_attack"\} 1/,
  );

  r = await fetch(`${admin}/api/level`, {
    method: 'PUT',
    headers: auth,
    body: JSON.stringify({ level: 'loud', reason: 'x' }),
  });
  assert.equal(r.status, 400);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'RMP_ERR_ADMIN_BAD_REQUEST');

  r = await fetch(`${admin}/api/level`, { method: 'DELETE', headers: auth });
  assert.equal(r.status, 200);
  body = (await r.json()) as Record<string, unknown>;
  assert.equal(body.released, true);
  assert.equal(body.level, 'calm');
});

test('the level phase counts real requests through the gateway; a surge of fast new clients is detected', async (t) => {
  const clock = createManualClock(0);
  const up = await startUpstream(t);
  const gw = await startGateway(
    t,
    up.url,
    {
      clientAddress: { trustedProxies: ['127.0.0.1/32'] },
      defense: { level: { warmupSeconds: 5, minRatePerSecond: 5 } },
    },
    { clock },
  );
  const monitor = gw.gateway.defense.level as import('../src/phases/level/monitor.ts').AttackLevelMonitor;
  const get = (ip: string) =>
    fetch(`${gw.url}/page`, { headers: { 'x-forwarded-for': ip } }).then((r) => r.arrayBuffer());
  for (let s = 0; s < 30; s++) {
    await Promise.all(Array.from({ length: 8 }, (_, i) => get(`10.0.${i}.1`)));
    clock.advance(1000);
    monitor.tick();
  }
  assert.equal(monitor.level, AttackLevel.calm);
  assert.equal(monitor.features!.requests, 8);
  // New prefixes alone are a crowd (test/crowd-level.test.ts); these five send 20 requests a second
  // each where a customer sends one.
  for (let s = 0; s < 3; s++) {
    await Promise.all(Array.from({ length: 100 }, (_, i) => get(`198.51.${i % 5}.1`)));
    clock.advance(1000);
    monitor.tick();
  }
  assert.equal(monitor.level, AttackLevel.underAttack, JSON.stringify(monitor.scores));
});
