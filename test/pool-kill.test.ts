// The done-means of issue 16's pools: three origin processes behind Rempart, one SIGKILLed in the
// middle of a load, and no real user refused. Requests in flight on the killed server are GETs, retried
// once on another server (src/pipeline/forward.ts's retry rule); new ones stop going there as soon as
// its failures eject it (outlier detection) or its health check fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startGateway, stopChild, type Teardown, waitFor } from './helpers.ts';

const ORIGIN = fileURLToPath(new URL('../bench/pool-origin.ts', import.meta.url));

/** An origin server in its own process; resolves with its URL once it listens. */
async function spawnOrigin(t: Teardown, name: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [ORIGIN, '--name', name, '--delay-ms', '20'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => stopChild(child, 1000));
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c));
  const port = await waitFor(() => /listening (\d+)/.exec(out)?.[1], {
    message: `${name} to listen`,
    timeoutMs: 15000,
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

test('a pool of three origin processes survives one SIGKILLed under load: every request answered 200', async (t) => {
  const origins = await Promise.all(['a', 'b', 'c'].map((n) => spawnOrigin(t, n)));
  const gw = await startGateway(t, origins[0]!.url, {
    upstreams: [
      {
        name: 'origin',
        servers: origins.map((o) => o.url),
        healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 200 },
        connectTimeoutMs: 500,
      },
    ],
    defense: { rateLimit: { mode: 'off' } },
    limits: { maxConnectionsPerAddress: 10000, maxConnections: 20000 },
    logging: { level: 'warn', requests: false },
  });
  const pool = gw.gateway.runtime().upstreams.get('origin')!.pool;
  const served: Record<string, number> = {};
  const failures: string[] = [];
  let running = true;
  let sent = 0;
  const client = async () => {
    while (running) {
      sent++;
      try {
        const res = await fetch(`${gw.url}/page/${sent}`);
        const body = await res.text();
        if (res.status !== 200) failures.push(`${res.status} ${body.slice(0, 120)}`);
        else served[body.trim()] = (served[body.trim()] ?? 0) + 1;
      } catch (err) {
        failures.push(String((err as Error).cause ?? err));
      }
    }
  };
  const clients = Array.from({ length: 12 }, client);
  // Kill b while it holds requests (each takes 20 ms at the origin).
  await waitFor(() => (served.b ?? 0) > 50 && pool.servers[1]!.inFlight > 0, 'b serving, with requests in flight');
  const inFlightAtKill = pool.servers[1]!.inFlight;
  origins[1]!.child.kill('SIGKILL');
  const servedAtKill = served.b ?? 0;
  const sentAtKill = sent;
  await waitFor(() => sent > sentAtKill + 600, { message: 'load to go on after the kill', timeoutMs: 30000 });
  running = false;
  await Promise.all(clients);
  assert.deepEqual(failures, [], 'no request refused or failed');
  assert.ok(inFlightAtKill > 0);
  assert.ok((served.a ?? 0) > 0 && (served.c ?? 0) > 0);
  assert.ok((served.b ?? 0) <= servedAtKill + 12, 'nothing more from b once it was dead (bar replies on their way)');
  assert.notEqual(pool.servers[1]!.state, 'up', 'b is out of the pool');
  assert.equal(gw.gateway.runtime().upstreams.get('origin')!.breaker.state, 'closed', 'no failover for one server');
});
