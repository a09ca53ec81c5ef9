import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../src/core/clock.ts';
import { validateConfig, ConfigError } from '../src/config/load.ts';
import { startGateway, startUpstream, type Teardown, type TestGateway } from './helpers.ts';

type Clock = ReturnType<typeof createManualClock>;

/** A gateway on a manual clock in front of a fresh upstream, both stopped when `t` ends. */
async function startLimitedGateway(
  t: Teardown,
  partial: Record<string, unknown>,
): Promise<{ gw: TestGateway; clock: Clock }> {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const gw = await startGateway(t, up.url, partial, { clock });
  return { gw, clock };
}

const tight = (extra: Record<string, unknown> = {}) => ({
  id: 'tight',
  key: 'address',
  ratePerSec: 1,
  burst: 2,
  ...extra,
});

test('past its burst a client gets 429 with Retry-After, RateLimit-Policy and RateLimit, and is served again once the interval passed', async (t) => {
  const { gw, clock } = await startLimitedGateway(t, { defense: { rateLimit: { rules: [tight()] } } });
  assert.equal((await fetch(`${gw.url}/a`)).status, 200);
  assert.equal((await fetch(`${gw.url}/a`)).status, 200);
  const res = await fetch(`${gw.url}/a`);
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '1');
  assert.equal(res.headers.get('ratelimit-policy'), '"tight";q=2;w=2');
  assert.equal(res.headers.get('ratelimit'), '"tight";r=0;t=1');
  const body = (await res.json()) as { error: { code: string } };
  assert.equal(body.error.code, 'RMP_ERR_RATE_LIMITED');
  clock.advance(999);
  assert.equal((await fetch(`${gw.url}/a`)).status, 429);
  clock.advance(1);
  assert.equal((await fetch(`${gw.url}/a`)).status, 200);
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.match(
    metrics,
    /rempart_guard_decisions_total\{guard="rateLimit",action="enforced",reason="RMP_ERR_RATE_LIMITED",rule="tight"\} 2/,
  );
  assert.match(metrics, /rempart_rate_limit_keys\{rule="tight"\} 1/);
});

test('observe mode lets the request through but counts it and says so in the decision header', async (t) => {
  const { gw } = await startLimitedGateway(t, {
    defense: { decisionHeader: true, rateLimit: { mode: 'observe', rules: [tight()] } },
  });
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${gw.url}/`)).status, 200);
  const res = await fetch(`${gw.url}/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('rempart-decision'), 'observed=RMP_ERR_RATE_LIMITED; rule=tight');
  assert.equal(res.headers.get('retry-after'), null);
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.match(
    metrics,
    /rempart_guard_decisions_total\{guard="rateLimit",action="observed",reason="RMP_ERR_RATE_LIMITED",rule="tight"\} 1/,
  );
  assert.equal(gw.gateway.defense.bans.isBanned('127.0.0.1'), false);
});

test('an apiKey rule counts per key and leaves requests without the header to the other rules', async (t) => {
  const rules = [{ id: 'per-key', key: 'apiKey', ratePerSec: 1, burst: 1 }];
  const { gw } = await startLimitedGateway(t, { defense: { rateLimit: { apiKeyHeader: 'X-Api-Key', rules } } });
  for (let i = 0; i < 5; i++) assert.equal((await fetch(`${gw.url}/`)).status, 200, 'no key: not counted');
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-api-key': 'k1' } })).status, 200);
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-api-key': 'k1' } })).status, 429);
  assert.equal(
    (await fetch(`${gw.url}/`, { headers: { 'x-api-key': 'k2' } })).status,
    200,
    'another key has its own budget',
  );
});

test('a session rule counts by the session cookie', async (t) => {
  const rules = [{ id: 'per-session', key: 'session', ratePerSec: 1, burst: 1 }];
  const { gw } = await startLimitedGateway(t, { defense: { rateLimit: { sessionCookie: 'sid', rules } } });
  assert.equal((await fetch(`${gw.url}/`, { headers: { cookie: 'a=1; sid=s1' } })).status, 200);
  assert.equal((await fetch(`${gw.url}/`, { headers: { cookie: 'sid=s1' } })).status, 429);
  assert.equal((await fetch(`${gw.url}/`, { headers: { cookie: 'sid=s2' } })).status, 200);
  assert.equal((await fetch(`${gw.url}/`)).status, 200);
});

test('rules apply only to their classes and routes, and `per: route` gives each route its own budget', async (t) => {
  const partial = {
    routes: [
      { name: 'login', path: '/login', upstream: 'origin', class: 'critical' },
      { name: 'search', path: '/search', upstream: 'origin', class: 'public' },
      { name: 'default', path: '/*', upstream: 'origin', class: 'public' },
    ],
    defense: {
      rateLimit: {
        rules: [
          {
            id: 'pages',
            key: 'prefix',
            classes: ['public'],
            routes: ['search', 'default'],
            per: 'route',
            ratePerSec: 1,
            burst: 1,
          },
        ],
      },
    },
  };
  const { gw } = await startLimitedGateway(t, partial);
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`${gw.url}/login`)).status, 200, 'critical: not covered');
  assert.equal((await fetch(`${gw.url}/search`)).status, 200);
  assert.equal((await fetch(`${gw.url}/search`)).status, 429);
  assert.equal((await fetch(`${gw.url}/other`)).status, 200, 'another route: its own budget');
  assert.equal((await fetch(`${gw.url}/other`)).status, 429);
});

test('without rules the default per-address rule limits the public classes', async (t) => {
  const { gw } = await startLimitedGateway(t, {});
  const phase = gw.gateway.defense.getRuntime().config.defense.rateLimit;
  // The second default rule counts only unsafe methods from unknown clients (test/defaults.test.ts).
  assert.deepEqual(
    phase.rules.map((r) => r.id),
    ['per-address', 'unsafe-all', 'unsafe-unknown'],
  );
  const rule = phase.rules[0]!;
  assert.deepEqual([rule.ratePerSec, rule.burst, rule.maxDelayMs], [50, 100, 3000]);
  // On the manual clock (no refill): the burst passes at once, the next 150 wait for their turn (3 s
  // at 50/s), the rest are refused.
  const statuses = await Promise.all(
    Array.from({ length: rule.burst + 150 + 5 }, () =>
      fetch(`${gw.url}/`).then(async (r) => (await r.arrayBuffer(), r.status)),
    ),
  );
  assert.equal(statuses.filter((s) => s === 429).length, 5);
  assert.equal(statuses.filter((s) => s === 200).length, rule.burst + 150);
});

test('the limiter of a rule survives a reload that keeps the rule, and starts afresh when its rate changes', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: up.url }],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
    admin: { address: 'off' },
  };
  const gw = await startGateway(t, up.url, { defense: { rateLimit: { rules: [tight()] } } }, { clock });
  assert.equal((await fetch(`${gw.url}/`)).status, 200);
  assert.equal((await fetch(`${gw.url}/`)).status, 200);
  assert.equal((await fetch(`${gw.url}/`)).status, 429);
  await gw.gateway.reload(
    validateConfig({ ...base, logging: { level: 'warn' }, defense: { rateLimit: { rules: [tight()] } } }),
  );
  assert.equal((await fetch(`${gw.url}/`)).status, 429, 'same rule: same state');
  await gw.gateway.reload(validateConfig({ ...base, defense: { rateLimit: { rules: [tight({ burst: 3 })] } } }));
  assert.equal((await fetch(`${gw.url}/`)).status, 200, 'changed rule: fresh state');
});

test('a rule naming an unknown route, or a repeated rule id, is refused at load', () => {
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:1' }],
    routes: [{ name: 'default', path: '/*', upstream: 'o' }],
  };
  assert.throws(
    () => validateConfig({ ...base, defense: { rateLimit: { rules: [tight({ routes: ['nope'] }), tight()] } } }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /no route named "nope"/.test(err.message) &&
      /duplicate rate-limit rule id "tight"/.test(err.message),
  );
  assert.throws(
    () => validateConfig({ ...base, defense: { rateLimit: { rules: [tight({ ratePerSec: 0 })] } } }),
    ConfigError,
  );
  // A global rule's wait would apply only while the cluster store is gone: refused, not half-honoured.
  assert.throws(
    () =>
      validateConfig({
        ...base,
        defense: { rateLimit: { rules: [tight({ scope: 'global', maxDelayMs: 1000 })] } },
      }),
    (err: unknown) => err instanceof ConfigError && /scope: global never waits/.test(err.message),
  );
  validateConfig({ ...base, defense: { rateLimit: { rules: [tight({ scope: 'global', maxDelayMs: 0 })] } } });
});
