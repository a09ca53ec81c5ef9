// Who a request is counted as (issue 12, findings 7 and 8): an IPv6 client is its /64 for rate limits,
// offences and bans, and the addresses of an IPv4 /24 share a second-level budget; an identity cookie
// or header sent with several values is counted against every one of them. Many source addresses come
// from X-Forwarded-For sent by a trusted peer (127.0.0.1), as a load balancer in front would send it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { createManualClock } from '../src/core/clock.ts';
import { validateConfig } from '../src/config/load.ts';
import { compileRuntime } from '../src/pipeline/runtime.ts';
import { BanTable } from '../src/phases/ban/table.ts';
import { DEFAULT_RATE_LIMIT_RULE } from '../src/phases/ratelimit/schema.ts';
import { addressKey, cookieValues, networkKey, prefixKey, v6PrefixKey } from '../src/core/client-key.ts';
import {
  errorCodeOf,
  rawRequest,
  startGateway,
  startUpstream,
  statusOf,
  type Teardown,
  type TestGateway,
} from './helpers.ts';

type Clock = ReturnType<typeof createManualClock>;

const TRUSTED = { clientAddress: { trustedProxies: ['127.0.0.1/32'] } };

/** A gateway behind a trusted proxy on a frozen clock, in front of a fresh upstream; both stopped when `t` ends. */
async function startGw(
  t: Teardown,
  partial: Record<string, unknown>,
  handler?: http.RequestListener,
): Promise<{ gw: TestGateway; clock: Clock }> {
  const up = await startUpstream(t, handler);
  // A frozen clock: no budget refills while the test sends, so the counts are exact on a loaded machine.
  const clock = createManualClock(1000);
  const gw = await startGateway(t, up.url, { ...TRUSTED, ...partial }, { clock });
  return { gw, clock };
}

/** Statuses of GET / sent from each address in turn (`times` each), `parallel` at a time. */
async function fromEach(gw: TestGateway, addresses: readonly string[], times = 1, parallel = 8): Promise<number[]> {
  const jobs: string[] = [];
  for (const a of addresses) for (let i = 0; i < times; i++) jobs.push(a);
  const out = new Array<number>(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const res = await fetch(`${gw.url}/p${i}`, { headers: { 'x-forwarded-for': jobs[i]! } });
      await res.arrayBuffer();
      out[i] = res.status;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out;
}

const count = (xs: readonly number[], s: number) => xs.filter((x) => x === s).length;

/** Every 429 counts as an offence, however close together (the default counts one per 50 ms). */
const EVERY_REFUSAL = { defense: { bans: { offences: { refusalSpacingMs: 0 } } } };

test('client keys: IPv6 by its /64 (or the configured length), IPv4-mapped as IPv4, every spelling alike', () => {
  assert.equal(addressKey('2001:db8:1:2::7', prefixKey('2001:db8:1:2::7'), 64), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:DB8:1:2:0:0:0:99', '', 64), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:db8:1:2::7', '', 48), '2001:db8:1::/48');
  assert.equal(addressKey('2001:db8:1:2::7', '', 128), '2001:db8:1:2::7');
  assert.equal(addressKey('::ffff:198.51.100.9', '198.51.100', 64), '198.51.100.9');
  assert.equal(addressKey('198.51.100.9', '198.51.100', 64), '198.51.100.9');
  assert.equal(v6PrefixKey('2001:db8:1:ab42::1', 56), '2001:db8:1:ab00::/56');
  // An embedded dotted quad is two hextets.
  assert.equal(v6PrefixKey('1:2::3:4:5:1.2.3.4', 64), '1:2:0:3::/64');
  // The network of a key (the attack level's parts): IPv4 /24, IPv6 /48 whatever the key's spelling.
  assert.equal(networkKey('198.51.100.9'), '198.51.100');
  assert.equal(networkKey('198.51.100'), '198.51.100');
  assert.equal(networkKey('2001:db8:1:2::/64'), '2001:db8:1::/48');
  assert.equal(networkKey(addressKey('2001:db8:1:ffff::7', '', 128)), '2001:db8:1::/48');
  assert.equal(networkKey('2001:db8::/32'), '2001:db8:0::/48');
  assert.equal(networkKey('s:2001:db8:1:2::1.2.3.4'), 's:2001:db8:1:2::1.2.3.4', 'a session key is its own');
  const out: string[] = [];
  assert.equal(cookieValues('a=1; sid=x1; sid = "x2"; sidx=3; sid=%78%31; sid=', 'sid', out), 2);
  assert.deepEqual(out, ['x1', 'x2']);
  assert.equal(cookieValues('sid=1; sid=2; sid=3; sid=4; sid=5', 'sid', out), -1);
});

test('300 requests from 300 addresses of one IPv6 /64 meet the per-address limit as one client, and the /64 is banned', async (t) => {
  // The default rules: per-address, 50/s with a burst of 100, then 150 places to wait (3 s at 50/s).
  // Every refusal an offence (on the frozen clock they all come at once, which the default spacing
  // counts as one: test/heavy-page-ban.test.ts). 200 at a time: the 150 waiting hold 150 connections.
  const { gw } = await startGw(t, EVERY_REFUSAL);
  const addrs = Array.from({ length: 300 }, (_, i) => `2001:db8:7:9::${(i + 1).toString(16)}`);
  const statuses = await fromEach(gw, addrs, 1, 200);
  // One set of places for the whole /64: 100 at once, 150 wait. The 50 past them are refused, which
  // bans the /64 within milliseconds, so the waiting ones whose turn comes after the ban are refused
  // too (403) instead of forwarded.
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.match(metrics, /guard="rateLimit",action="delayed",reason="RMP_ERR_RATE_LIMITED",rule="per-address"\} 150\n/);
  assert.ok(count(statuses, 200) >= 100 && count(statuses, 200) <= 250, `served: ${count(statuses, 200)}`);
  assert.equal(count(statuses, 200) + count(statuses, 429) + count(statuses, 403), 300);
  const bans = gw.gateway.defense.bans;
  assert.equal(bans.isBanned('2001:db8:7:9:abcd::1'), true, 'its offences banned the /64');
  assert.equal(bans.isBanned('2001:db8:7:a::1'), false, 'not the next /64');
  // Another /64 has its own budget.
  assert.deepEqual(await fromEach(gw, ['2001:db8:7:a::1']), [200]);
});

test('defense.ipv6PrefixLength: 128 counts single IPv6 addresses again', async (t) => {
  const { gw } = await startGw(t, {
    defense: { ipv6PrefixLength: 128, rateLimit: { rules: [{ id: 'a', key: 'address', ratePerSec: 1, burst: 1 }] } },
  });
  const statuses = await fromEach(gw, ['2001:db8::1', '2001:db8::2', '2001:db8::3']);
  assert.deepEqual(statuses, [200, 200, 200]);
});

test('254 addresses of one IPv4 /24 meet the default /24 budget (16 x per-address), and their offences ban the /24', async (t) => {
  // The default rule without its wait (2 400 places for the /24: 4 000 requests to fill, each place a
  // held connection), so that the /24's burst alone is counted; the wait: test/heavy-page-*.ts.
  const { gw } = await startGw(t, {
    ...EVERY_REFUSAL,
    defense: { ...EVERY_REFUSAL.defense, rateLimit: { rules: [{ ...DEFAULT_RATE_LIMIT_RULE, maxDelayMs: 0 }] } },
  });
  const addrs = Array.from({ length: 254 }, (_, i) => `198.51.100.${i + 1}`);
  // 7 each (below the per-address burst of 100): 1778 requests, 1600 of which fit the /24's burst.
  const statuses = await fromEach(gw, addrs, 7);
  assert.equal(count(statuses, 200), 1600);
  assert.ok(count(statuses, 429) >= 100, `${count(statuses, 429)} refused by the /24 budget`);
  const bans = gw.gateway.defense.bans;
  assert.equal(bans.isBanned('198.51.100.250'), true, 'the /24 is banned');
  assert.equal(bans.isBanned('198.51.101.1'), false);
  // An address of another /24 still has its whole budget.
  assert.equal(count(await fromEach(gw, ['203.0.113.5'], 100), 200), 100);
});

test('offences: 20 from 20 addresses of one /64 ban the /64; one IPv4 address alone never bans its /24', () => {
  const clock = createManualClock(1000);
  const t = new BanTable(clock);
  // Signature blocks: each one counts (rate-limit refusals at one instant would count once).
  for (let i = 1; i <= 20; i++) t.offence(`2001:db8:5:6::${i}`, 'signature', 'r');
  assert.equal(t.isBanned('2001:db8:5:6::ffff'), true);
  assert.equal(t.list()[0]!.target, '2001:db8:5:6::/64');
  for (let i = 0; i < 500; i++) t.offence('192.0.2.3', 'signature', 'r');
  assert.equal(t.isBanned('192.0.2.3'), true);
  assert.equal(t.isBanned('192.0.2.4'), false, 'an address banned does not add to its /24');
  // Five addresses of a /24 at 20 offences each: the /24 (offences.prefixThreshold 100).
  for (let a = 10; a < 15; a++) for (let i = 0; i < 20; i++) t.offence(`198.51.100.${a}`, 'signature', 'r');
  assert.equal(t.isBanned('198.51.100.200'), true);
  // A configured length bans that length; the ban is found with a Map look-up (kind prefix).
  const rt = compileRuntime(
    validateConfig({
      version: 1,
      listeners: [{ address: '127.0.0.1:8080' }],
      upstreams: [{ name: 'o', url: 'http://127.0.0.1:1' }],
      routes: [{ name: 'default', path: '/*', upstream: 'o' }],
      defense: { ipv6PrefixLength: 48 },
    }),
  ).runtime;
  const t48 = new BanTable(clock, { getRuntime: () => rt });
  for (let i = 1; i <= 20; i++) t48.offence(`2001:db8:9:${i}::1`, 'signature', 's');
  assert.equal(t48.isBanned('2001:db8:9:ffff::1'), true);
  assert.equal(t48.entryFor('2001:db8:9::/48')?.target.kind, 'prefix');
  assert.equal(t48.isBanned('2001:db8:a::1'), false);
});

// --- finding 7: one identity cookie or header, several values ---------------------------------------

/** A vault that serves a document to any request with a `sid` cookie. */
function vault(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (!/(?:^|;\s*)sid=/.test(req.headers.cookie ?? '')) {
    res.writeHead(401).end();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private, no-store' }).end('document');
}

const sensitive = {
  routes: [
    {
      name: 'vault',
      path: '/vault/*',
      upstream: 'origin',
      class: 'authenticated',
      sensitive: { documentsPerHour: 3, identity: 'session' },
    },
    { name: 'default', path: '/*', upstream: 'origin' },
  ],
};

function raw(gw: TestGateway, path: string, headerLines: string[]): Promise<string> {
  return rawRequest(
    gw.port,
    `GET ${path} HTTP/1.1\r\nHost: x\r\n${headerLines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`,
  );
}

test('exfiltration: a duplicate session cookie is counted against every value (sid=x1; sid=<real> does not escape the quota)', async (t) => {
  const { gw } = await startGw(t, sensitive, vault);
  const get = async (cookie: string) => {
    const res = await fetch(`${gw.url}/vault/d`, { headers: { cookie } });
    await res.arrayBuffer();
    return res.status;
  };
  for (let i = 0; i < 3; i++) assert.equal(await get('sid=real'), 200);
  assert.equal(await get('sid=real'), 429, 'the quota');
  assert.equal(await get('sid=x1; sid=real'), 429, 'a fresh first value does not escape it');
  assert.equal(await get('sid=real; sid=x2'), 429);
  assert.equal(await get('sid="real"'), 429, 'nor quotes');
  assert.equal(await get('sid=%72eal'), 429, 'nor percent-encoding');
  // Two Cookie fields (Node joins them): still every value.
  assert.equal(statusOf(await raw(gw, '/vault/d', ['Cookie: sid=x3', 'Cookie: sid=real'])), 429);
  // Spending under a pair counts for both: x4 took one document with the pair, so two remain.
  assert.equal(await get('sid=x4; sid=x5'), 200);
  assert.equal(await get('sid=x4'), 200);
  assert.equal(await get('sid=x4'), 200);
  assert.equal(await get('sid=x4'), 429);
  // More values than any browser holds: refused.
  const many = await raw(gw, '/vault/d', ['Cookie: sid=a; sid=b; sid=c; sid=d; sid=e']);
  assert.equal(statusOf(many), 400);
  assert.equal(errorCodeOf(many), 'RMP_ERR_EDGE_AMBIGUOUS_IDENTITY');
});

test('rate limits: a session cookie or API key sent twice is counted against both values (also a repeated Authorization)', async (t) => {
  const rules = [
    { id: 'per-session', key: 'session', ratePerSec: 1, burst: 1 },
    { id: 'per-key', key: 'apiKey', ratePerSec: 1, burst: 1 },
  ];
  const { gw } = await startGw(t, {
    defense: { rateLimit: { sessionCookie: 'sid', apiKeyHeader: 'x-api-key', rules } },
  });
  assert.equal(statusOf(await raw(gw, '/', ['Cookie: sid=s1'])), 200);
  assert.equal(statusOf(await raw(gw, '/', ['Cookie: a=1; sid=fresh; sid=s1'])), 429);
  assert.equal(statusOf(await raw(gw, '/', ['X-Api-Key: k1'])), 200);
  assert.equal(
    statusOf(await raw(gw, '/', ['X-Api-Key: fresh', 'X-Api-Key: k1'])),
    429,
    'Node would join them into "fresh, k1"',
  );
  const { gw: byToken } = await startGw(t, {
    defense: {
      rateLimit: {
        apiKeyHeader: 'authorization',
        rules: [{ id: 'per-token', key: 'apiKey', ratePerSec: 1, burst: 1 }],
      },
    },
  });
  assert.equal(statusOf(await raw(byToken, '/', ['Authorization: Bearer t1'])), 200);
  // Node keeps only the first Authorization field; an origin may read the second.
  assert.equal(statusOf(await raw(byToken, '/', ['Authorization: Bearer fresh', 'Authorization: Bearer t1'])), 429);
});
