// The soak's load generator (bench/soak.ts) is only worth its figures if the million addresses it names
// are a million clients to the gateway: distinct, spread over many /24s and /64s, and read from its
// PROXY v1 and v2 headers as the client address. Checked here on a few hundred through a real gateway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { anonymousByOwner, freshAddress, proxyHeader, ResponseCounter, soakConfig, tableCaps } from '../bench/soak.ts';
import { parseConfig } from '../src/config/load.ts';
import { rawRequest, startGatewayAndUpstream, statusOf } from './helpers.ts';

/** Canonical text of an address (IPv6 compressed as the gateway writes it). */
const canonical = (a: string) => (a.includes(':') ? new URL(`http://[${a}]/`).hostname.slice(1, -1) : a);

test('soak addresses are distinct and spread over many /24s and /64s', () => {
  const n = 300_000;
  const all = new Set<string>();
  const v4Prefixes = new Set<string>();
  const v6Prefixes = new Set<string>();
  for (let i = 0; i < n; i++) {
    const a = freshAddress(i);
    all.add(a.text);
    if (a.v6) v6Prefixes.add(a.text.split('::')[0]!);
    else v4Prefixes.add(a.text.split('.').slice(0, 3).join('.'));
  }
  assert.equal(all.size, n);
  // 200,000 IPv4 addresses over the 65,536 /24s of 11/8 (nearly all of them), IPv6 one to a /64.
  assert.ok(v4Prefixes.size > 60_000, `${v4Prefixes.size} /24s`);
  assert.equal(v6Prefixes.size, n / 3);
});

test('the gateway reads each soak address from its PROXY v1 or v2 header as the client', async (t) => {
  const cfg = {
    listeners: [{ address: '127.0.0.1:0', proxyProtocol: true }],
    clientAddress: { trustedProxies: ['127.0.0.0/8'] },
    logging: { level: 'warn', requests: false },
  };
  const { gw, up } = await startGatewayAndUpstream(t, cfg);
  {
    const sent: string[] = [];
    // Indexes far apart, so IPv4 and IPv6, v1 and v2 headers all occur.
    for (let k = 0; k < 60; k++) {
      const i = k * 3000 + (k % 3);
      const a = freshAddress(i);
      sent.push(canonical(a.text));
      const head = proxyHeader(a, 1024 + k, gw.port, k % 2 === 1);
      const req = Buffer.from(`GET /s${k} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`);
      const raw = await rawRequest(gw.port, Buffer.concat([head, req]), { localAddress: '127.2.0.1' });
      assert.equal(statusOf(raw), 200, `${a.text}: ${raw.slice(0, 200)}`);
    }
    const seen = sent.map((_, k) => up.requests.find((r) => r.url === `/s${k}`)?.headers['x-forwarded-for']);
    assert.deepEqual(seen, sent);
    assert.ok(sent.some((a) => a.includes(':')) && sent.some((a) => !a.includes(':')));
  }
});

test('the soak counts pipelined responses split anywhere, with length and chunked bodies', () => {
  const stream =
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' +
    'HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n' +
    'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';
  for (const cut of [1, 17, 40, 60, 100]) {
    const c = new ResponseCounter();
    c.feed(Buffer.from(stream.slice(0, cut), 'latin1'));
    c.feed(Buffer.from(stream.slice(cut), 'latin1'));
    assert.equal(c.count, 3);
    assert.deepEqual(c.statuses, [200, 429, 403]);
  }
});

test("the soak splits a process's anonymous memory between malloc's arenas and the rest", () => {
  const map = (range: string, perm: string, name: string, anonKiB: number) =>
    `${range} ${perm} 00000000 00:00 0${name ? `    ${name}` : ''}\nSize: 4 kB\nRss: ${anonKiB} kB\nAnonymous: ${anonKiB} kB\n`;
  const smaps = [
    map('55d4c8a00000-55d4c8b00000', 'r-xp', '/usr/bin/node', 0),
    map('55d4ca000000-55d4cc000000', 'rw-p', '[heap]', 20_480), // main arena (brk)
    // A thread arena: a 64 MiB-aligned reservation, its used start read-write, the rest ---p.
    map('7f3c24000000-7f3c24800000', 'rw-p', '', 4_096),
    map('7f3c24800000-7f3c28000000', '---p', '', 0),
    map('7f3c30000000-7f3c34000000', 'rw-p', '', 1_024), // a whole 64 MiB arena
    // V8 pages (256 KiB, not arena-aligned), a large object, a stack.
    map('1f0cb8a80000-1f0cb8ac0000', 'rw-p', '', 256),
    map('1f0cb8b00000-1f0cb8b40000', 'rw-p', '', 128),
    map('7f3c10000000-7f3c10400000', 'rw-p', '', 2_048), // 64 MiB-aligned but neither: not an arena
    map('7ffd3c000000-7ffd3c021000', 'rw-p', '[stack]', 132),
    map('7f3c40000000-7f3c40100000', 'rw-p', '/usr/lib/libc.so.6', 8), // file-backed: neither
  ].join('');
  const { malloc, other } = anonymousByOwner(smaps);
  assert.equal(malloc, (20_480 + 4_096 + 1_024) / 1024);
  assert.equal(other, (256 + 128 + 2_048 + 132) / 1024);
});

test('--cap-scale reaches every capped table the soak fills, and each has a size gauge', async (t) => {
  // A scale that left one table at its default cap would leave it filling for hours (the ban table and
  // the audit trail fill at the rate of bans): the soak's "no growth once full" would not hold.
  const caps = tableCaps(0.02);
  const ports = { port: 1, proxyPort: 2, adminPort: 3, originPort: 4 };
  const c = parseConfig(JSON.stringify(soakConfig(ports, 0.02)));
  const d = c.defense;
  for (const r of d.rateLimit.rules) assert.equal(r.maxKeys, caps.rateLimitKeys, r.id);
  assert.deepEqual(
    [
      c.cache.maxBytes,
      d.bans.maxEntries,
      d.bans.offences.maxAddresses,
      d.familiarity.maxSessions,
      d.exfiltration.maxIdentities,
      d.challenge.replayCapacity,
      d.challenge.difficultyRise.maxPrefixes,
      c.audit.maxRows,
    ],
    [
      caps.cacheBytes,
      caps.banEntries,
      caps.offences,
      caps.sessions,
      caps.identities,
      caps.replay,
      caps.prefixWork,
      caps.auditRows,
    ],
  );
  assert.ok(caps.banEntries < 100_000 && caps.auditRows < 100_000 && caps.replay < 200_000);
  // At scale 1 the defaults stay (no audit.maxRows: 100,000 in memory).
  assert.equal(parseConfig(JSON.stringify(soakConfig(ports, 1))).audit.maxRows, undefined);

  const { gw } = await startGatewayAndUpstream(t, { logging: { level: 'warn', requests: false } });
  const metrics = await gw.gateway.metrics.registry.metrics();
  for (const table of [
    'sessions',
    'clearance_usage',
    'address_pace',
    'jwt_usage',
    'prefix_work',
    'replay_guard',
    'exfiltration_identities',
    'ban_offences',
    'audit_rows',
  ])
    assert.match(metrics, new RegExp(`rempart_table_entries\\{table="${table}"\\} 0`), table);
});
