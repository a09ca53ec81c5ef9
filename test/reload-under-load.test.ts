// SIGHUP under load drops nothing: a real `rempart --config FILE` in front of a local origin, 20
// keep-alive clients sending a few thousand requests, and four reloads meanwhile that add a route and
// an upstream, change a limit and retire the upstream's connection pool. Every request must get the
// origin's answer: no connection error, no reset, no 5xx.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchGatewayConfig } from '../bench/lib/gateway-config.ts';
import { freePort, getOnce, sleep, spawnRempart, startLoad, startOrigin } from '../bench/lib/zero-drop.ts';
import { withEngine } from './helpers.ts';

/** The config of the n-th reload (0: the start). Each step changes what a reload can change. */
function configAt(step: number, port: number, origin: string): Record<string, unknown> {
  const base = benchGatewayConfig(port, 'off', origin, {
    logging: { level: 'info', requests: false },
    // One client address sends it all: the per-address limit would refuse it (not what is measured).
    defense: { rateLimit: { mode: 'off' } },
  });
  const upstream = {
    name: 'origin',
    url: origin,
    // Steps 2 and 3 change a pool setting: the pool in use is retired while requests ride on it.
    headersTimeoutMs: step === 2 || step === 3 ? 20_000 : 30_000,
    // Step 3 changes the admission limit (a limit changed under load).
    admission: { mode: 'static', staticLimit: step >= 3 ? 48 : 64 },
  };
  const upstreams: Record<string, unknown>[] = [upstream];
  const routes: Record<string, unknown>[] = [];
  // Step 1 adds a route; step 2 sends it to a new upstream (a new pool).
  if (step >= 1) {
    if (step >= 2) upstreams.push({ name: 'extra', url: origin });
    routes.push({ name: 'extra', path: '/extra/*', upstream: step >= 2 ? 'extra' : 'origin', class: 'public' });
  }
  routes.push({ name: 'default', path: '/*', upstream: 'origin', class: 'public' });
  return { ...base, upstreams, routes };
}

/** `workers`: run under `--workers N` (the primary passes SIGHUP to each worker). */
async function reloadUnderLoad(t: TestContext, workers = 1): Promise<void> {
  const origin = await startOrigin();
  const dir = mkdtempSync(join(tmpdir(), 'rempart-reload-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  t.after(() => origin.close());
  const file = join(dir, 'rempart.yaml');
  const port = await freePort();
  writeFileSync(file, JSON.stringify(withEngine(configAt(0, port, origin.url))));
  const gw = spawnRempart(['--config', file, ...(workers > 1 ? ['--workers', String(workers)] : [])]);
  t.after(() => gw.kill('SIGKILL'));
  await gw.waitFor(/"rempart started"/, 30_000, workers);

  // Half the requests go to the route the first reload adds (the catch-all answers them before it);
  // one in 25 takes 200 ms at the origin, so reloads find requests in flight on the pools they retire.
  const load = startLoad({
    port,
    connections: 20,
    path: (n) => (n % 25 === 1 ? `/slow/200/${n}` : n % 2 === 0 ? `/extra/${n}` : `/load/${n}`),
  });
  for (let step = 1; step <= 4; step++) {
    // Spread the reloads over the load's run (a few hundred requests between them).
    const target = step * 700;
    const deadline = Date.now() + 30_000;
    while (load.counts.sent < target && Date.now() < deadline) await sleep(5);
    writeFileSync(file, JSON.stringify(withEngine(configAt(step === 4 ? 1 : step, port, origin.url))));
    gw.kill('SIGHUP');
    await gw.waitFor(/"configuration reloaded"/, 20_000, step * workers);
  }
  // A few hundred more after the last reload, bounded in time.
  const end = load.counts.sent + 500;
  const deadline = Date.now() + 30_000;
  while (load.counts.sent < end && Date.now() < deadline) await sleep(5);
  const counts = await load.stop();
  const routed = await getOnce(port, '/extra/check');
  assert.deepEqual(routed, { status: 200, body: 'ok /extra/check' });
  assert.doesNotMatch(gw.out(), /reload rejected/);
  assert.ok(counts.sent >= 3300, `requests sent: ${counts.sent}`);
  assert.deepEqual(counts.errors, {}, 'no connection error, no reset');
  assert.deepEqual(counts.statuses, { 200: counts.sent }, 'every request answered by the origin');
  assert.equal(counts.failed, 0);
  // Keep-alive held across the reloads: no client had to reconnect.
  assert.equal(counts.connections, 20);
  gw.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
}

test(
  'SIGHUP under load: four reloads while 20 keep-alive clients send thousands of requests drop none',
  {
    timeout: 90_000,
  },
  (t) => reloadUnderLoad(t),
);

test(
  'SIGHUP under load with --workers 2: every worker reloads, none drops a request',
  {
    timeout: 90_000,
  },
  (t) => reloadUnderLoad(t, 2),
);
