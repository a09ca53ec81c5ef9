// Failover with the real postal origin and SMS approvals service behind a gateway configured like
// examples/postal/rempart.yaml: approvals fall over to SMS and come back, the status page when both
// are down, stale tracking copies while the whole origin is down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostalOrigin, startSmsApprovals, type RunningOrigin } from '../examples/postal/origin.ts';
import { startGateway, startUpstream, type Teardown, type TestGateway, track, waitFor } from './helpers.ts';
import { createManualClock, type Clock } from '../src/core/clock.ts';
import { validateConfig, ConfigError } from '../src/config/load.ts';

const MESSAGE = 'Our teams are mobilised to restore the service. Please try again in a few minutes.';

/** The postal origin, the SMS approvals fallback and a gateway in front of both, stopped when `t` ends. */
async function setup(
  t: Teardown,
  clock?: Clock,
): Promise<{ gw: TestGateway; postal: RunningOrigin; sms: RunningOrigin }> {
  const postal = track(t, await startPostalOrigin());
  const sms = track(t, await startSmsApprovals());
  const breaker = { consecutiveFailures: 2, openMs: 1000 };
  const gw = await startGateway(
    t,
    postal.url,
    {
      upstreams: [
        {
          name: 'postal',
          url: postal.url,
          connectTimeoutMs: 1000,
          headersTimeoutMs: 3000,
          circuitBreaker: breaker,
          healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 500 },
        },
        {
          name: 'sms-approvals',
          url: sms.url,
          connectTimeoutMs: 1000,
          headersTimeoutMs: 3000,
          circuitBreaker: breaker,
          // As in examples/postal/rempart.yaml. A "down" origin here accepts, then resets: a reset may be
          // the request's doing, so the breaker alone waits for failures from several clients and paths,
          // which one test client posting to one path never gives (test/breaker.test.ts covers that).
          healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 500 },
        },
      ],
      routes: [
        {
          name: 'approvals',
          path: '/payments/approve',
          methods: ['POST'],
          upstream: 'postal',
          fallback: 'sms-approvals',
          class: 'critical',
          maxBodyBytes: 4096,
        },
        {
          name: 'tracking',
          path: '/track/*',
          methods: ['GET', 'HEAD'],
          upstream: 'postal',
          class: 'cacheable',
          maxBodyBytes: 0,
        },
        { name: 'site', path: '/*', upstream: 'postal', class: 'public' },
      ],
      statusPage: { message: MESSAGE, retryAfterSec: 30 },
      // The tests poll the approval POST every 50 ms from one address until the route switches: past
      // 20 of them the default `unsafe-unknown` limit (1/s, burst 20) answers 429, as it should for a
      // client that posts like that (seen in CI when a recovery took a few seconds). Failover is the
      // subject here; test/ratelimit*.test.ts cover the limits.
      defense: { rateLimit: { mode: 'off' } },
    },
    clock ? { clock } : {},
  );
  return { gw, postal, sms };
}

async function approve(
  gw: TestGateway,
  accept = 'application/json',
): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`${gw.url}/payments/approve`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept },
    body: JSON.stringify({ paymentId: 'PAY-2025-12-24-001' }),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

function channelOf(r: { status: number; body: string }): string {
  if (r.status !== 200) return `status ${r.status} ${r.body.slice(0, 300)}`;
  return (JSON.parse(r.body) as { channel: string }).channel;
}

test('approvals fall over to the SMS upstream within 2 s of the primary dying and return within 10 s of its recovery, counted and logged', async (t) => {
  const { gw, postal } = await setup(t);
  assert.equal(channelOf(await approve(gw)), 'app');
  postal.setDown(true);
  await waitFor(async () => channelOf(await approve(gw)) === 'sms', {
    timeoutMs: 2000,
    intervalMs: 50,
    message: 'approvals answered through the SMS fallback within 2 s',
  });
  // Stays on the fallback while the primary is down.
  for (let i = 0; i < 3; i++) assert.equal(channelOf(await approve(gw)), 'sms');
  postal.setDown(false);
  await waitFor(async () => channelOf(await approve(gw)) === 'app', {
    timeoutMs: 10000,
    intervalMs: 50,
    message: 'approvals back on the primary within 10 s of its recovery',
  });
  // The first answer back may be the half-open probe; the route counts as back once the breaker closed.
  for (let i = 0; i < 3; i++) assert.equal(channelOf(await approve(gw)), 'app');

  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const counted = (from: string, to: string) =>
    Number(
      new RegExp(`rempart_failover_total\\{route="approvals",from="${from}",to="${to}"\\} (\\d+)\n`).exec(
        metrics,
      )?.[1] ?? 0,
    );
  assert.match(metrics, /rempart_health_checks_total\{upstream="postal",result="failure"\} [1-9]/);
  assert.match(metrics, /rempart_upstream_state\{upstream="postal",state="closed"\} 1\n/);
  // One line and one count per switch of the route, not per request (dozens of requests went by):
  // on a quiet machine exactly one each way; a slow health check could add a pair, never one per request.
  const switches = gw.logs
    .filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('failover:'))
    .map((l) => [l.msg, l.route, l.from, l.to]);
  const away = ['failover: route switched to its fallback upstream', 'approvals', 'postal', 'sms-approvals'];
  const home = ['failover: route back on its upstream', 'approvals', 'sms-approvals', 'postal'];
  assert.ok(switches.length >= 2 && switches.length <= 4, JSON.stringify(switches));
  switches.forEach((s, i) => {
    assert.deepEqual(s, i % 2 === 0 ? away : home);
  });
  assert.equal(counted('postal', 'sms-approvals'), switches.length / 2);
  assert.equal(counted('sms-approvals', 'postal'), switches.length / 2);
});

test('with the primary and its fallback both down, approvals get the status page: 503, the operator message, RMP_ERR_UPSTREAM_UNAVAILABLE, Retry-After', async (t) => {
  const { gw, postal, sms } = await setup(t);
  postal.setDown(true);
  sms.setDown(true);
  let last = { status: 0, body: '', headers: new Headers() };
  await waitFor(
    async () => {
      last = await approve(gw);
      return last.status === 503;
    },
    { timeoutMs: 5000, intervalMs: 50, message: () => `status page within 5 s (last: ${last.status} ${last.body})` },
  );
  const body = JSON.parse(last.body) as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'RMP_ERR_UPSTREAM_UNAVAILABLE');
  assert.equal(body.error.message, MESSAGE);
  assert.equal(last.headers.get('retry-after'), '30');
  assert.match(last.headers.get('content-type') ?? '', /application\/json/);

  const page = await approve(gw, 'text/html,application/xhtml+xml;q=0.9');
  assert.equal(page.status, 503);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.equal(page.headers.get('retry-after'), '30');
  assert.ok(page.body.includes(MESSAGE));
  assert.ok(page.body.includes('RMP_ERR_UPSTREAM_UNAVAILABLE'));
  const line = gw.logs.findLast((l) => l.msg === 'request' && l.route === 'approvals');
  assert.equal(line?.reason, 'RMP_ERR_UPSTREAM_UNAVAILABLE');
});

test('with the whole origin down, a tracking page cached before is answered stale while the home page gets the status page', async (t) => {
  const clock = createManualClock();
  const { gw, postal } = await setup(t, clock);
  const first = await fetch(`${gw.url}/track/6A12345678901`);
  assert.equal(first.status, 200);
  const tracked = await first.text();
  // Past max-age=30 and the route's 10 s stale-while-revalidate: only stale-if-error may answer now.
  clock.advance(60_000);
  postal.setDown(true);
  let home = { status: 0, body: '', type: '', retryAfter: '' };
  await waitFor(
    async () => {
      const res = await fetch(`${gw.url}/`, { headers: { accept: 'text/html' }, signal: AbortSignal.timeout(5000) });
      home = {
        status: res.status,
        body: await res.text(),
        type: res.headers.get('content-type') ?? '',
        retryAfter: res.headers.get('retry-after') ?? '',
      };
      return home.status === 503;
    },
    {
      timeoutMs: 5000,
      intervalMs: 50,
      message: () => `home page got the status page within 5 s (last: ${home.status})`,
    },
  );
  assert.match(home.type, /text\/html/);
  assert.ok(home.body.includes(MESSAGE));
  assert.equal(home.retryAfter, '30');

  const stale = await fetch(`${gw.url}/track/6A12345678901`);
  assert.equal(stale.status, 200);
  assert.equal(stale.headers.get('x-cache'), 'STALE');
  assert.equal(await stale.text(), tracked);

  // A tracking page never cached has no stale copy: the status page.
  const uncached = await fetch(`${gw.url}/track/6A99999999999`);
  assert.equal(uncached.status, 503);
  assert.equal(((await uncached.json()) as { error: { code: string } }).error.code, 'RMP_ERR_UPSTREAM_UNAVAILABLE');
});

test('a route fallback naming no upstream, or the route\u2019s own upstream, is refused by the config check', () => {
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'postal', url: 'http://127.0.0.1:3000' }],
  };
  for (const [fallback, message] of [
    ['nope', /no upstream named "nope"/],
    ['postal', /must differ/],
  ] as const) {
    let err: unknown;
    try {
      validateConfig({ ...base, routes: [{ name: 'approvals', path: '/*', upstream: 'postal', fallback }] }, '(test)');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError, `fallback ${fallback} refused`);
    assert.equal(err.problems.length, 1);
    assert.equal(err.problems[0]!.path, 'routes[0].fallback');
    assert.match(err.problems[0]!.message, message);
  }
});

test('an upstream that refuses the connection gets the status page with its own code and status kept, and opens its breaker', async (t) => {
  // Port 1: nobody listens there (a closed upstream's port may be taken by another test file meanwhile).
  const gone = { url: 'http://127.0.0.1:1' };
  const gw = await startGateway(t, gone.url, {
    upstreams: [{ name: 'origin', url: gone.url, circuitBreaker: { consecutiveFailures: 2, openMs: 60000 } }],
    statusPage: { message: MESSAGE },
  });
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${gw.url}/x`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 502);
    assert.ok(res.headers.get('retry-after'));
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'RMP_ERR_UPSTREAM_CONNECT');
    assert.equal(body.error.message, MESSAGE);
  }
  // Two failures in a row: open. The next request fails fast without trying the upstream.
  const fast = await fetch(`${gw.url}/x`, { signal: AbortSignal.timeout(5000) });
  assert.equal(fast.status, 503);
  assert.equal(((await fast.json()) as { error: { code: string } }).error.code, 'RMP_ERR_UPSTREAM_UNAVAILABLE');
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'open');
  // A reload that keeps the upstream keeps its breaker, open.
  await gw.gateway.reload(
    validateConfig(
      {
        version: 1,
        listeners: [{ address: '127.0.0.1:0' }],
        upstreams: [{ name: 'origin', url: gone.url, circuitBreaker: { consecutiveFailures: 2, openMs: 60000 } }],
        routes: [{ name: 'default', path: '/*', upstream: 'origin' }],
        admin: { address: '127.0.0.1:0' },
      },
      '(test)',
    ),
  );
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'open');
  assert.equal((await fetch(`${gw.url}/x`, { signal: AbortSignal.timeout(5000) })).status, 503);
});

test('health checks run while the gateway runs: a reload that changes one replaces it, and stop() stops it', async (t) => {
  const up = await startUpstream(t);
  const cfg = (intervalMs: number) => ({
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: up.url, healthCheck: { path: '/healthz', intervalMs } }],
    routes: [{ name: 'default', path: '/*', upstream: 'origin' }],
    admin: { address: '127.0.0.1:0' },
  });
  const gw = await startGateway(t, up.url, { upstreams: cfg(100).upstreams });
  const first = gw.gateway.runtime().upstreams.get('origin')!.pool.servers[0]!.health!;
  assert.equal(first.running, true);
  await gw.gateway.reload(validateConfig(cfg(100), '(test)'));
  assert.equal(
    gw.gateway.runtime().upstreams.get('origin')!.pool.servers[0]!.health,
    first,
    'an unchanged check is kept',
  );
  await gw.gateway.reload(validateConfig(cfg(150), '(test)'));
  const second = gw.gateway.runtime().upstreams.get('origin')!.pool.servers[0]!.health!;
  assert.notEqual(second, first);
  assert.equal(first.running, false);
  assert.equal(second.running, true);
  await waitFor(() => up.requests.some((r) => r.url === '/healthz'), 'the check reached the upstream');
  await gw.close();
  assert.equal(second.running, false);
});

test('an origin shedding its surplus with 503 is not cut off: the breaker stays closed and every request still reaches it', async (t) => {
  const up = await startUpstream(t, (_req, res) =>
    res.writeHead(503, { 'retry-after': '1', 'content-length': '0' }).end(),
  );
  const gw = await startGateway(t, up.url, {
    upstreams: [{ name: 'origin', url: up.url, circuitBreaker: { consecutiveFailures: 2, openMs: 10000 } }],
  });
  for (let i = 0; i < 10; i++) assert.equal((await fetch(`${gw.url}/busy/${i}`)).status, 503);
  assert.equal(up.requests.length, 10, 'no request was failed fast by an open breaker');
});
