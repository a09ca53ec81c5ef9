// One network cannot put every visitor under attack. Each client (an IPv4 address, an IPv6 /64) counted
// in the pressure signals only up to a quarter of each threshold (test/level-one-client.test.ts), but four
// addresses of one IPv4 /24, or four /64s of one IPv6 /48 (a /48 is free from a tunnel broker: 65,536 /64s),
// still made a surge: one cheap network put every unknown visitor under `under_attack` and its challenge.
// A network (IPv4 /24, IPv6 /48) now counts as one client does (src/phases/level/traffic.ts SOLO_NETWORKS):
// in the rates, the never-seen share, the sheds and the admission queue. Randomized (seeded): the site's
// calm rate, the attacker's rate, its software, its paths, the route it floods, how many addresses or /64s
// it rotates. The same floods from eight or more networks are still under attack within 3 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel, ATTACK_LEVEL_NAMES } from '../src/pipeline/env.ts';
import type { ErrorCode } from '../src/core/errors.ts';
import type { RequestContext } from '../src/pipeline/context.ts';
import { QueueEntry } from '../src/upstream/queue.ts';
import { prefixKey } from '../src/core/client-key.ts';
import { createSim, calmSecond, drawFlood as draw, warmUp, BROWSERS, type Flood, type Sim } from './level-sim.ts';
import { rng } from '../src/drill/rng.ts';

/** Client n of `clients` spread over `networks` networks: IPv4 addresses of 203.0.x.0/24s, or IPv6 /64s of 2001:db8:x::/48s. */
function addressOf(v6: boolean, networks: number, clients: number): (n: number) => string {
  return (n) => {
    const c = n % clients;
    const net = c % networks;
    const host = Math.floor(c / networks);
    return v6 ? `2001:db8:${(0x100 + net).toString(16)}:${host.toString(16)}::7` : `203.0.${net}.${10 + host}`;
  };
}

/** A request of the flood from `address` (an IPv4 one may be spelled IPv4-mapped: one client either way). */
function send(sim: Sim, f: Flood, address: string, n: number, reason: ErrorCode | '' = ''): void {
  const ctx = sim.ctx({
    prefix: '0.0.0',
    path: f.api ? `/api/login` : f.randomPaths ? `/search/${n}` : ['/', '/products', '/cart'][n % 3]!,
    route: f.api ? 0 : 1,
    ua: f.script ? 'python-requests/2.32.3' : BROWSERS[n % BROWSERS.length]!,
    script: f.script,
  });
  ctx.clientAddress = address;
  ctx.clientPrefix = prefixKey(address);
  sim.level.onRequest(ctx);
  if (reason !== '') ctx.reason = reason;
  sim.level.onDone?.(ctx);
}

/** `seconds` of calm traffic and `f.rate` requests a second from `address(n)`: the levels seen. */
function flood(sim: Sim, f: Flood, address: (n: number) => string, seconds: number): AttackLevel[] {
  const levels: AttackLevel[] = [];
  let n = 0;
  for (let s = 0; s < seconds; s++) {
    calmSecond(sim, f.calm, 300, 5000 + s * 13);
    for (let i = 0; i < f.rate; i++, n++) send(sim, f, address(n), n);
    sim.second();
    levels.push(sim.monitor.level);
  }
  return levels;
}

const names = (levels: AttackLevel[]) => levels.map((l) => ATTACK_LEVEL_NAMES[l]).join(' ');

test('4 to 16 addresses of one IPv4 /24 at 3× to 50× the calm rate: never under attack (16 draws)', () => {
  const r = rng(0x5eed30);
  for (let k = 0; k < 16; k++) {
    const f = draw(r);
    const clients = 4 + Math.floor(r() * 13);
    const sim = createSim();
    warmUp(sim, 120, f.calm);
    const base = addressOf(false, 1, clients);
    // Every other address also spelled IPv4-mapped, as a dual-stack listener sees it: the same /24.
    const levels = flood(sim, f, (n) => (n % 4 === 1 ? `::ffff:${base(n)}` : base(n)), 20);
    const what = `${clients} addresses ${JSON.stringify(f)}: ${names(levels)}`;
    assert.ok(!levels.includes(AttackLevel.underAttack), what);
    assert.ok(sim.monitor.scores.pressure < 1, `${what} ${JSON.stringify(sim.monitor.features)}`);
    assert.ok(sim.monitor.features!.soloExcess > 0.3, `${what} ${JSON.stringify(sim.monitor.features)}`);
  }
});

test('4 to 64 /64s of one IPv6 /48 at 3× to 50× the calm rate: never under attack (16 draws)', () => {
  const r = rng(0x5eed31);
  for (let k = 0; k < 16; k++) {
    const f = draw(r);
    const clients = 4 + Math.floor(r() * 61);
    const sim = createSim();
    warmUp(sim, 120, f.calm);
    const levels = flood(sim, f, addressOf(true, 1, clients), 20);
    const what = `${clients} /64s ${JSON.stringify(f)}: ${names(levels)}`;
    assert.ok(!levels.includes(AttackLevel.underAttack), what);
    assert.ok(sim.monitor.scores.pressure < 1, `${what} ${JSON.stringify(sim.monitor.features)}`);
    assert.ok(sim.monitor.features!.soloExcess > 0.3, `${what} ${JSON.stringify(sim.monitor.features)}`);
  }
});

test('the same floods from 8 to 16 networks, at least 5× the calm rate: under attack within 3 s (16 draws)', () => {
  const r = rng(0x5eed32);
  for (let k = 0; k < 16; k++) {
    const f = draw(r);
    f.rate = Math.max(f.rate, f.calm * 5);
    const v6 = k % 2 === 1;
    const networks = 8 + Math.floor(r() * 9);
    const clients = networks * (1 + Math.floor(r() * (v6 ? 8 : 4)));
    const sim = createSim();
    warmUp(sim, 120, f.calm);
    const levels = flood(sim, f, addressOf(v6, networks, clients), 4);
    const at = levels.indexOf(AttackLevel.underAttack);
    assert.ok(
      at !== -1 && at <= 2,
      `${clients} ${v6 ? '/64s' : 'addresses'} in ${networks} networks ${JSON.stringify(f)}: ${names(levels)}`,
    );
  }
});

test('one /24 (16 addresses) or one /48 (64 /64s) whose excess is shed by admission: never under attack', () => {
  for (const v6 of [false, true]) {
    const sim = createSim();
    warmUp(sim, 120, 50);
    const f: Flood = { calm: 50, rate: 0, script: true, randomPaths: true, api: false };
    const address = addressOf(v6, 1, v6 ? 64 : 16);
    const levels: AttackLevel[] = [];
    let n = 0;
    for (let s = 0; s < 20; s++) {
      calmSecond(sim, 50, 300, 7000 + s * 13);
      // 40 served a second, 260 refused: their own share of the queue, not the origin's saturation.
      for (let i = 0; i < 300; i++, n++) send(sim, f, address(n), n, i < 40 ? '' : 'RMP_ERR_ADMISSION_SHED');
      sim.second();
      levels.push(sim.monitor.level);
    }
    assert.ok(!levels.includes(AttackLevel.underAttack), `v6 ${v6}: ${names(levels)}`);
    assert.ok(sim.monitor.scores.pressure < 1, `v6 ${v6}: ${JSON.stringify(sim.monitor.features)}`);
  }
});

test('the admission queue counts a network up to its part: 16 /64s of one /48 are not saturation, of 16 /48s are', () => {
  for (const [networks, pressure] of [
    [1, false],
    [16, true],
  ] as const) {
    const sim = createSim();
    warmUp(sim, 120, 50);
    const gate = sim.runtime.upstreams.get('origin')!.admission;
    const limit = gate.limiter.limit;
    // 16 fairness keys (the default `prefix`: an IPv6 /64), each holding an eighth of the threshold's places.
    const each = Math.ceil((0.5 * limit) / 8);
    const entries: QueueEntry<RequestContext>[] = [];
    for (let c = 0; c < 16; c++) {
      const key = prefixKey(addressOf(true, networks, 16)(c));
      for (let i = 0; i < each; i++) entries.push(new QueueEntry({} as RequestContext, 3, key, 0, 1e12));
    }
    for (const e of entries) assert.equal(gate.queue.push(e, []), null);
    calmSecond(sim, 50);
    sim.second();
    for (const e of entries) gate.queue.remove(e);
    const f = sim.monitor.features!;
    assert.equal(sim.monitor.scores.pressure >= 1, pressure, `${networks} /48s, limit ${limit}: ${JSON.stringify(f)}`);
  }
});

test('a minute of one /48 sending most requests from 32 /64s is said in the log as few networks', () => {
  const sim = createSim();
  warmUp(sim, 120, 50);
  const said = () => sim.logs.filter((l) => String(l.msg).startsWith('a few networks sent most requests')).length;
  const f: Flood = { calm: 5, rate: 500, script: false, randomPaths: false, api: false };
  flood(sim, f, addressOf(true, 1, 32), 59);
  assert.equal(said(), 0, 'not before a minute');
  flood(sim, f, addressOf(true, 1, 32), 2);
  assert.equal(said(), 1);
});
