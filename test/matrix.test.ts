// The drill matrix (src/drill/matrix.ts, issue 13 point 5): the draw is reproducible and covers its
// ranges, the origin models behave as documented, and a short matrix through real gateways produces
// a report whose worst case replays. It asserts the instrument, not the targets (those are
// measured by the full run, bench/matrix.ts, into bench/RESULTS.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import {
  DEMO_CONFIG,
  RANGES,
  demoConfig,
  describe,
  drawScenario,
  matrixText,
  newSeed,
  parseReplay,
  runMatrix,
} from '../src/drill/matrix.ts';
import { ORIGIN_KINDS, startOriginModel } from '../src/drill/origins.ts';
import { botAddress } from '../src/drill/bots.ts';
import { TEST_ENGINE, track } from './helpers.ts';

test('matrix draw: the same seed and index give the same scenario, and draws cover the ranges', () => {
  const seed = newSeed();
  assert.deepEqual(drawScenario(seed, 5, 'full'), drawScenario(seed, 5, 'full'));
  assert.notDeepEqual(drawScenario(seed, 5, 'full').origin, drawScenario(seed ^ 1, 5, 'full').origin);
  const R = RANGES.full;
  const kinds = new Set<string>();
  const shapes = { attackOnly: 0, crowdOnly: 0, both: 0 };
  let minAddr = Infinity;
  let maxAddr = 0;
  let maxPrefixes = 0;
  let solvers = 0;
  for (let i = 1; i < 3000; i++) {
    const s = drawScenario(seed, i, 'full');
    assert.ok(!('name' in s), 'a drawn scenario has no name: nothing can key on one');
    kinds.add(s.origin.kind);
    assert.ok(s.calmSec >= R.calmSec[0] && s.calmSec <= R.calmSec[1]);
    assert.ok(s.attackSec >= R.attackSec[0] && s.attackSec <= R.attackSec[1]);
    if (s.attack && s.crowd) shapes.both++;
    else if (s.attack) shapes.attackOnly++;
    else if (s.crowd) shapes.crowdOnly++;
    else assert.fail(`scenario ${s.id} has neither attack nor crowd`);
    if (s.attack) {
      const a = s.attack;
      minAddr = Math.min(minAddr, a.addresses);
      maxAddr = Math.max(maxAddr, a.addresses);
      maxPrefixes = Math.max(maxPrefixes, a.prefixes);
      if (a.solve) solvers++;
      assert.ok(a.addresses >= R.attackers[0] && a.addresses <= R.attackers[1], `${a.addresses}`);
      assert.ok(a.prefixes >= Math.ceil(a.addresses / 254) && a.prefixes <= Math.min(a.addresses, 5000));
      assert.ok(a.ratePerAddress <= R.ratePerAddress[1] && a.totalRate <= R.maxTotalRate, describe(s));
      if (a.solve) assert.ok(a.cookies, 'a solver keeps the clearance it earned');
    }
    // The origin carries the calm users three times over: a calm failure is never the draw's.
    assert.ok((s.origin.workers * 1000) / s.origin.serviceMs >= (s.calmUsers + s.vaultUsers) * 0.6 * 3 * 0.95);
  }
  assert.deepEqual([...kinds].sort(), [...ORIGIN_KINDS].sort());
  assert.ok(shapes.attackOnly > 0 && shapes.crowdOnly > 0 && shapes.both > 0, JSON.stringify(shapes));
  assert.ok(minAddr < 20 && maxAddr > 5000, `attacker counts span the range: ${minAddr}..${maxAddr}`);
  assert.ok(maxPrefixes > 1000 && solvers > 0);
  const control = drawScenario(seed, 0, 'full', true);
  assert.equal(control.attack, null);
  assert.equal(control.crowd, null);
  assert.deepEqual(parseReplay(`${seed}:3,7`), { seed, indexes: [3, 7] });
  assert.equal(parseReplay('nope'), null);
  assert.equal(parseReplay('99999999999:1'), null);
});

test('rempart drill matrix: its own --help, and a bad --replay is a usage error (exit 2) that runs nothing', () => {
  const bin = fileURLToPath(new URL('../bin/rempart.js', import.meta.url));
  const help = spawnSync(process.execPath, [bin, 'drill', 'matrix', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: rempart drill matrix/);
  assert.match(help.stdout, /--replay S:I/);
  const bad = spawnSync(process.execPath, [bin, 'drill', 'matrix', '--replay', 'nope'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--replay must be SEED:INDEX/);
});

test('matrix bots: addresses stay in 127/8, in the drawn number of /24s', () => {
  const prefixes = new Set<string>();
  for (let n = 0; n < 10_000; n++) {
    const a = botAddress(10, 5000, n);
    assert.match(a, /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/);
    assert.ok(a.split('.').every((x) => Number(x) <= 255));
    prefixes.add(a.split('.').slice(0, 3).join('.'));
  }
  assert.equal(prefixes.size, 5000);
  const one = new Set(Array.from({ length: 254 }, (_, n) => botAddress(10, 1, n)));
  assert.equal(one.size, 254, '254 distinct addresses in one /24');
});

test("matrix demo config: only the addresses change, every defence is the file's", () => {
  const file = parseYaml(readFileSync(DEMO_CONFIG, 'utf8')) as Record<string, unknown>;
  const cfg = demoConfig('http://127.0.0.1:1234', 5555, 6666);
  const strip = (c: Record<string, unknown>) => {
    const { listeners: _l, upstreams, admin, ...rest } = structuredClone(c);
    const u = (upstreams as Array<Record<string, unknown>>).map(({ url: _u, ...x }) => x);
    const { address: _a, ...adm } = admin as Record<string, unknown>;
    return { ...rest, upstreams: u, admin: adm };
  };
  assert.deepEqual(strip(cfg), strip(file));
  assert.deepEqual(cfg.listeners, [{ address: '127.0.0.1:5555' }]);
});

test('matrix origin models: slots answer 503 at once when full, only the login model grants a session to any POST', async (t) => {
  const slots = track(t, await startOriginModel({ kind: 'slots', workers: 1, serviceMs: 300, queue: 0 }));
  const t0 = performance.now();
  const [a, b] = await Promise.all([fetch(`${slots.url}/`), fetch(`${slots.url}/`)]);
  const statuses = [a.status, b.status].sort();
  assert.deepEqual(statuses, [200, 503]);
  assert.ok([a, b].every((r) => r.headers.get('x-origin') === 'slots'));
  assert.equal(slots.stats().rejected, 1);
  assert.ok(performance.now() - t0 < 5000);
  const post = (url: string) =>
    fetch(`${url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-drill-kind': 'attack' },
      body: 'user=mallory&password=x',
    });
  const login = track(t, await startOriginModel({ kind: 'login', workers: 4, serviceMs: 1, queue: 8 }));
  const granted = await post(login.url);
  assert.equal(granted.status, 200);
  assert.match(granted.headers.get('set-cookie') ?? '', /^sid=[0-9a-f]{32}/);
  assert.equal(login.stats().received.attack, 1);
  const queue = track(t, await startOriginModel({ kind: 'queue', workers: 4, serviceMs: 1, queue: 100 }));
  assert.equal((await post(queue.url)).status, 401);
});

test('a short matrix through zero-config and the demo config: the report holds, the control is served, the worst case replays', async () => {
  const seed = newSeed();
  const report = await runMatrix({
    seed,
    profile: 'short',
    scenarios: 2,
    configs: ['zero', 'demo'],
    engine: TEST_ENGINE,
  });
  assert.equal(report.seed, seed);
  assert.equal(report.results.length, 2);
  assert.ok(report.results[0]!.scenario.control);
  assert.match(matrixText(report), new RegExp(`seed ${seed}`));
  for (const r of report.results) {
    assert.equal(r.runs.length, 2);
    for (const o of r.runs) {
      assert.ok(o.legitRequests > 20, `real users sent requests: ${o.legitRequests}`);
      assert.ok(o.servedPct !== null && o.servedPct >= 0 && o.servedPct <= 100);
      assert.ok(
        o.level.timeline.length >= r.scenario.calmSec + r.scenario.attackSec,
        'the level was polled each second',
      );
      if (r.scenario.attack) {
        assert.ok(o.attack !== null && o.attack.sent > 0, 'the generator sent the attack');
        assert.ok(o.attack.drawnRate > 0 && o.attack.achievedRate >= 0);
        assert.ok(o.attackReachPct !== null && o.attackReachPct >= 0 && o.attackReachPct <= 100);
        assert.ok(o.log.byPopulation.attack !== undefined, 'the gateway logged the attack, tallied apart');
      }
    }
  }
  for (const s of report.summary) {
    // With no attack and no crowd, real users are served (the instrument itself is sound).
    assert.ok(
      s.control !== null && s.control.servedPct !== null && s.control.servedPct >= 95,
      JSON.stringify(s.control),
    );
    assert.equal(s.control.challengedUsers, 0);
    assert.equal(s.counted + s.notProduced, 1, 'the control is not in the distribution');
    for (const k of ['min', 'p10', 'median'] as const) assert.ok(s.counted === 0 || typeof s.served[k] === 'number');
  }
  const worst = report.summary[0]!.worst[0];
  if (worst === undefined) return; // the one drawn scenario was beyond the generator: nothing to replay
  const id = parseReplay(worst.id);
  assert.ok(id !== null && id.seed === seed);
  const again = await runMatrix({
    seed: id.seed,
    only: id.indexes,
    profile: 'short',
    configs: ['zero'],
    engine: TEST_ENGINE,
  });
  assert.equal(again.results.length, 1);
  assert.deepEqual(again.results[0]!.scenario, report.results[id.indexes[0]!]!.scenario);
  assert.equal(again.results[0]!.description, worst.description);
});
