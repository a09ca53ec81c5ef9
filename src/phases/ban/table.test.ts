import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createManualClock } from '../../core/clock.ts';
import { validateConfig } from '../../config/load.ts';
import { compileRuntime, type Runtime } from '../../pipeline/runtime.ts';
import { createMetrics } from '../../core/metrics.ts';
import { BanTable } from './table.ts';
import { parseTarget, canonicalAddress } from './target.ts';
import { NftMirror, addLine, deleteLine, setupScript } from './nftables.ts';
import { waitFor } from '../../../test/helpers.ts';

function runtimeWith(bans: Record<string, unknown>): () => Runtime {
  const config = validateConfig({
    version: 1,
    listeners: [{ address: '127.0.0.1:8080' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:1' }],
    routes: [{ name: 'default', path: '/*', upstream: 'o' }],
    defense: { bans },
  });
  const rt = compileRuntime(config).runtime;
  return () => rt;
}

test('targets: addresses are canonical, prefixes lose their host bits, wide or malformed ones are refused', () => {
  assert.equal(parseTarget('203.0.113.7')?.kind, 'address');
  assert.equal(parseTarget('::ffff:203.0.113.7')?.display, '203.0.113.7');
  assert.equal(parseTarget('2001:DB8:0:0:0:0:0:1')?.display, '2001:db8::1');
  assert.equal(canonicalAddress('2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1');
  assert.equal(canonicalAddress('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
  assert.deepEqual(
    { ...parseTarget('203.0.113.9/24') },
    { display: '203.0.113.0/24', key: '203.0.113', kind: 'prefix', family: 4, network: '203.0.113.0', bits: 24 },
  );
  assert.equal(parseTarget('2001:db8:1:2:3::/64')?.key, '2001:db8:1:2::/64');
  assert.equal(parseTarget('10.1.0.0/16')?.kind, 'cidr');
  for (const bad of [
    '',
    'x',
    '1.2.3',
    '1.2.3.4/33',
    '1.2.3.4/7',
    '0.0.0.0/0',
    '::/0',
    '1.2.3.4/ 8',
    '2001:db8::/129',
    'fe80::1%eth0',
    '1.2.3.4/24/1',
  ])
    assert.equal(parseTarget(bad), null, bad);
});

test('an address, its /24 or /64, or a wider prefix are each found by isBanned', () => {
  const clock = createManualClock();
  const t = new BanTable(clock);
  assert.equal(t.isBanned('203.0.113.7'), false);
  t.ban('203.0.113.7', 1000, 'test', '', 'operator:t');
  t.ban('198.51.100.0/24', 1000, 'test', '', 'operator:t');
  t.ban('2001:db8:1:2::/64', 1000, 'test', '', 'operator:t');
  t.ban('10.20.0.0/16', 1000, 'test', '', 'operator:t');
  assert.equal(t.isBanned('203.0.113.7'), true);
  assert.equal(t.isBanned('::ffff:203.0.113.7'), true);
  assert.equal(t.isBanned('203.0.113.8'), false);
  assert.equal(t.isBanned('198.51.100.200'), true);
  assert.equal(t.isBanned('198.51.101.1'), false);
  assert.equal(t.isBanned('2001:db8:1:2:aaaa::1'), true);
  assert.equal(t.isBanned('2001:db8:1:3::1'), false);
  assert.equal(t.isBanned('10.20.255.1'), true);
  assert.equal(t.isBanned('10.21.0.1'), false);
  assert.equal(t.unban('10.20.0.0/16', 'operator:t'), true);
  assert.equal(t.isBanned('10.20.255.1'), false);
});

test('bans expire with the clock', () => {
  const clock = createManualClock();
  const t = new BanTable(clock);
  t.ban('192.0.2.1', 60000, 'test', '', 'rule:x');
  clock.advance(59999);
  assert.equal(t.isBanned('192.0.2.1'), true);
  clock.advance(1);
  assert.equal(t.isBanned('192.0.2.1'), false);
  assert.equal(t.activeCount(), 0);
  assert.deepEqual(t.list(), []);
});

test('the gauges: rempart_bans_active counts bans in force, rempart_ban_entries the expired ones kept too', async () => {
  const clock = createManualClock();
  const metrics = createMetrics();
  const t = new BanTable(clock, { metrics, getRuntime: runtimeWith({ maxEntries: 16 }) });
  const ban = (k: number) => t.ban(`192.0.2.${k}`, 60000, 'test', '', 'rule:x');
  for (let k = 1; k <= 15; k++) ban(k);
  clock.advance(60000);
  ban(16);
  let text = await metrics.registry.metrics();
  assert.match(text, /^rempart_bans_active 1$/m);
  assert.match(text, /^rempart_ban_entries 16$/m, 'expired bans stay for escalation');
  // Full: a new ban takes an expired entry's place, the table stays at maxEntries.
  ban(17);
  text = await metrics.registry.metrics();
  assert.match(text, /^rempart_bans_active 2$/m);
  assert.match(text, /^rempart_ban_entries 16$/m);
});

test('offences past the threshold within the window make a ban; fewer, or spread out, never do', () => {
  const clock = createManualClock();
  const t = new BanTable(clock); // defaults: 20 offences in 2 s
  // An honest busy client: a 429 now and then, ten a second at most, for a minute: never banned.
  for (let i = 0; i < 600; i++) {
    t.offence('192.0.2.1', 'rate_limited', 'r');
    clock.advance(210);
  }
  assert.equal(t.isBanned('192.0.2.1'), false);
  for (let i = 0; i < 19; i++) t.offence('192.0.2.2', 'signature', 'r');
  assert.equal(t.isBanned('192.0.2.2'), false);
  t.offence('192.0.2.2', 'signature', 'r');
  assert.equal(t.isBanned('192.0.2.2'), true);
  const [view] = t.list();
  assert.equal(view!.target, '192.0.2.2');
  assert.equal(view!.reason, 'offences:signature');
  assert.equal(view!.rule, 'r');
  assert.equal(view!.by, 'offences');
  assert.equal(view!.ttlSec, 60);
});

test('rate-limit refusals: a burst counts once per 50 ms and once per 25; refused for a second, or 476 times at once, bans', () => {
  const clock = createManualClock(1000);
  const t = new BanTable(clock); // defaults: 20 offences in 2 s, spacing 50 ms, 25 refusals per offence
  // A heavy page's overflow: 60 refusals within 300 ms counts 6 + 2, then silence.
  for (let i = 0; i < 60; i++) {
    t.offence('192.0.2.20', 'rate_limited', 'r');
    clock.advance(5);
  }
  clock.advance(3000);
  assert.equal(t.isBanned('192.0.2.20'), false, 'a page load');
  // Refused every 10 ms: one offence per 50 ms, one more per 25 refusals: banned after about 850 ms.
  let at = -1;
  for (let ms = 0; ms < 2000 && at === -1; ms += 10) {
    t.offence('192.0.2.21', 'rate_limited', 'r');
    if (t.isBanned('192.0.2.21')) at = ms;
    clock.advance(10);
  }
  assert.ok(at >= 500 && at <= 1000, `banned after ${at} ms`);
  // A pulse of refusals all at once (as a client flooding in sub-second pulses sends): banned by
  // volume, the first counted and then one in 25, at the 1 + 19 x 25 = 476th.
  for (let i = 0; i < 475; i++) t.offence('192.0.2.22', 'rate_limited', 'r');
  assert.equal(t.isBanned('192.0.2.22'), false);
  t.offence('192.0.2.22', 'rate_limited', 'r');
  assert.equal(t.isBanned('192.0.2.22'), true, 'the 476th refusal');
  // A threshold the window cannot hold at that spacing shortens the spacing (2000 / 50 = 40 ms)
  // rather than making rate-limit bans impossible: refused every 40 ms, banned within the window.
  const raised = new BanTable(clock, { getRuntime: runtimeWith({ offences: { threshold: 50 } }) });
  for (let i = 0; i < 50; i++) {
    raised.offence('192.0.2.23', 'rate_limited', 'r');
    clock.advance(40);
  }
  assert.equal(raised.isBanned('192.0.2.23'), true);
});

test('repeat offenders are banned longer each time (60 s, 4 min, 16 min …), up to the cap', () => {
  const clock = createManualClock();
  const t = new BanTable(clock, { getRuntime: runtimeWith({ escalation: { factor: 4, maxTtlMs: 3600000 } }) });
  const expected = [60, 240, 960, 3600, 3600];
  for (const sec of expected) {
    for (let i = 0; i < 20; i++) t.offence('192.0.2.9', 'signature', 'r');
    assert.equal(t.list()[0]!.ttlSec, sec);
    clock.advance(sec * 1000 - 1);
    assert.equal(t.isBanned('192.0.2.9'), true);
    clock.advance(1);
    assert.equal(t.isBanned('192.0.2.9'), false);
  }
  // After a quiet escalation window, a new offence starts over at the first step.
  clock.advance(86400000 + 1);
  for (let i = 0; i < 20; i++) t.offence('192.0.2.9', 'signature', 'r');
  assert.equal(t.list()[0]!.ttlSec, 60);
  assert.equal(t.list()[0]!.count, 6);
});

test('offences while banned do not extend the ban; an operator ban sets exactly its TTL', () => {
  const clock = createManualClock();
  const t = new BanTable(clock);
  for (let i = 0; i < 100; i++) t.offence('192.0.2.3', 'signature', 'r');
  assert.equal(t.list()[0]!.ttlSec, 60);
  t.ban('192.0.2.3', 5000, 'manual', '', 'operator:alice');
  assert.equal(t.list()[0]!.ttlSec, 5);
  assert.equal(t.list()[0]!.by, 'operator:alice');
});

test('mode off makes no bans; observe records them but isBanned says no', () => {
  const clock = createManualClock();
  const off = new BanTable(clock, { getRuntime: runtimeWith({ mode: 'off' }) });
  for (let i = 0; i < 50; i++) off.offence('192.0.2.4', 'signature', 'r');
  off.ban('192.0.2.5', 1000, 'x', '', 'operator:a');
  assert.equal(off.size, 0);
  const observe = new BanTable(clock, { getRuntime: runtimeWith({ mode: 'observe' }) });
  for (let i = 0; i < 50; i++) observe.offence('192.0.2.4', 'signature', 'r');
  assert.equal(observe.isBanned('192.0.2.4'), false);
  assert.notEqual(observe.lookup('192.0.2.4'), null);
  assert.equal(observe.list().length, 1);
});

test('the table and the offence counters stay within their budgets whatever the number of addresses', () => {
  const clock = createManualClock();
  const t = new BanTable(clock, {
    getRuntime: runtimeWith({ maxEntries: 1000, offences: { threshold: 2, maxAddresses: 500 } }),
  });
  t.ban('192.0.2.200', 3600000, 'keep', '', 'operator:a');
  for (let i = 0; i < 200000; i++) {
    const a = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
    t.offence(a, 'signature', 'r');
    if (i % 3 === 0) t.offence(a, 'signature', 'r'); // a third become bans
    clock.advance(1);
    assert.ok(t.size <= 1000 && t.offenceCount <= 500);
  }
  assert.equal(t.isBanned('192.0.2.200'), true, 'an operator ban is not pushed out by automatic ones');
  assert.ok(t.activeCount() > 900);
});

test('nftables: the setup script, element lines with timeouts, and deletes', () => {
  const s = { family: 'inet', table: 'rempart', set: 'banned', dropRule: true } as const;
  assert.equal(
    setupScript(s, [80, 443, 80]),
    [
      'add table inet rempart',
      'add set inet rempart banned_v4 { type ipv4_addr; flags interval, timeout; }',
      'add set inet rempart banned_v6 { type ipv6_addr; flags interval, timeout; }',
      'add chain inet rempart input { type filter hook input priority -10; policy accept; }',
      'flush chain inet rempart input',
      'add rule inet rempart input ip saddr @banned_v4 tcp dport { 80, 443 } drop',
      'add rule inet rempart input ip6 saddr @banned_v6 tcp dport { 80, 443 } drop',
      '',
    ].join('\n'),
  );
  assert.equal(
    addLine(s, parseTarget('203.0.113.7')!, 60000),
    'add element inet rempart banned_v4 { 203.0.113.7 timeout 60s }',
  );
  assert.equal(
    addLine(s, parseTarget('2001:db8::/64')!, 1500),
    'add element inet rempart banned_v6 { 2001:db8::/64 timeout 2s }',
  );
  assert.equal(
    deleteLine(s, parseTarget('203.0.113.0/24')!),
    'delete element inet rempart banned_v4 { 203.0.113.0/24 }',
  );
  assert.equal(addLine({ ...s, family: 'ip' }, parseTarget('2001:db8::1')!, 1000), null, 'an ip table has no IPv6 set');
});

test('nftables: bans are mirrored in batches off the request path; a missing nft is logged once and given up', async () => {
  const clock = createManualClock();
  const scripts: string[] = [];
  const t = new BanTable(clock, {
    getRuntime: runtimeWith({ nftables: { enabled: true } }),
    nftRunner: async (script) => (scripts.push(script), { code: 0, stderr: '' }),
  });
  t.ban('203.0.113.7', 60000, 'x', '', 'operator:a');
  t.ban('203.0.113.8', 60000, 'x', '', 'operator:a');
  assert.equal(scripts.length, 0, 'nothing runs synchronously');
  await t.mirror!.settled();
  assert.equal(scripts.length, 2);
  assert.match(scripts[0]!, /^add table inet rempart\n/);
  assert.match(scripts[0]!, /tcp dport \{ 8080 \} drop/);
  assert.equal(
    scripts[1],
    'add element inet rempart banned_v4 { 203.0.113.7 timeout 60s }\nadd element inet rempart banned_v4 { 203.0.113.8 timeout 60s }\n',
  );
  t.unban('203.0.113.7', 'operator:a');
  await t.mirror!.settled();
  assert.equal(scripts[2], 'delete element inet rempart banned_v4 { 203.0.113.7 }\n');

  const warnings: unknown[] = [];
  const log = { warn: (o: unknown) => warnings.push(o) } as unknown as ConstructorParameters<typeof NftMirror>[2];
  const m = new NftMirror({ family: 'inet', table: 'rempart', set: 'banned', dropRule: false }, [], log, async () => ({
    code: 1,
    stderr: 'Error: Could not process rule: Operation not permitted',
  }));
  m.add(parseTarget('203.0.113.9')!, 1000, false);
  await m.settled();
  m.add(parseTarget('203.0.113.10')!, 1000, false);
  await m.settled();
  assert.equal(m.broken, true);
  assert.equal(warnings.length, 1);
});

const nftInNamespace = spawnSync('unshare', ['-rn', 'nft', 'list', 'ruleset'], { encoding: 'utf8' }).status === 0;

test('nftables: the generated scripts work with the real nft in a network namespace', {
  skip: nftInNamespace ? false : 'needs `unshare -rn` and the nft binary',
}, async () => {
  const clock = createManualClock();
  const scripts: string[] = [];
  const t = new BanTable(clock, {
    getRuntime: runtimeWith({ nftables: { enabled: true } }),
    nftRunner: async (script) => (scripts.push(script), { code: 0, stderr: '' }),
  });
  t.ban('203.0.113.7', 60000, 'x', '', 'operator:a');
  t.ban('198.51.100.0/24', 60000, 'x', '', 'operator:a');
  t.ban('2001:db8::/64', 60000, 'x', '', 'operator:a');
  await t.mirror!.settled();
  t.unban('203.0.113.7', 'operator:a');
  await t.mirror!.settled();
  // One namespace for the whole sequence, so the table persists between the scripts.
  const sh = `${scripts.map((s) => `nft -f - <<'EOF'\n${s}EOF`).join('\n')}\nnft list table inet rempart`;
  const out = spawnSync('unshare', ['-rn', 'sh', '-ec', sh], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  assert.match(out.stdout, /198\.51\.100\.0\/24 timeout 1m/);
  assert.match(out.stdout, /2001:db8::\/64 timeout 1m/);
  assert.doesNotMatch(out.stdout, /203\.0\.113\.7/);
  assert.match(out.stdout, /ip saddr @banned_v4 tcp dport 8080 drop/);
});

test('bans that keep knocking join the fast path (a BlockList for the listeners) soon, a later one too; an unban leaves it at once', async () => {
  const clock = createManualClock(0);
  const t = new BanTable(clock);
  const wait = (addr: string, want: boolean) =>
    waitFor(() => (t.fastPath?.check(addr, 'ipv4') === true) === want, {
      timeoutMs: 1000,
      message: `${addr} on the fast path: ${want}`,
    });
  t.ban('198.51.100.1', 60_000, 'test', '', 'operator:test');
  const fast = () => t.fastPath; // read afresh each time (no narrowing)
  assert.equal(fast(), undefined, 'not before it knocks');
  assert.equal(t.isBanned('198.51.100.1'), true);
  await wait('198.51.100.1', true);
  // A second ban knocking later is not kept waiting for the first one's expiry.
  t.ban('198.51.100.2', 60_000, 'test', '', 'operator:test');
  assert.equal(t.isBanned('198.51.100.2'), true);
  await wait('198.51.100.2', true);
  t.unban('198.51.100.1', 'operator:test');
  assert.equal(fast()?.check('198.51.100.1', 'ipv4'), false);
  assert.equal(fast()?.check('198.51.100.2', 'ipv4'), true);
});
