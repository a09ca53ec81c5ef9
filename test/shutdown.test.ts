// Graceful stop (config `shutdown`): on SIGTERM /readyz turns 503 at once so a load balancer stops
// sending, /healthz stays 200, a request in flight completes, then the process exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import {
  BIN,
  cleanup,
  ENGINE_FLAGS,
  freePort,
  sleep,
  startGateway,
  startUpstream,
  tempDir,
  waitFor,
} from './helpers.ts';

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      })
      .on('error', reject);
  });
}

test('SIGTERM: /readyz turns 503 at once, the request in flight completes, then the process exits', {
  timeout: 60_000,
}, async (t) => {
  let release: () => void = () => {};
  const released = new Promise<void>((r) => (release = r));
  const origin = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') void released.then(() => res.end('slow done'));
    else res.end('fast');
  });
  const dir = tempDir(t, 'rempart-drain-');
  const file = join(dir, 'rempart.yaml');
  const [port, adminPort] = [await freePort(), await freePort()];
  writeFileSync(
    file,
    `version: 1
listeners: [{ address: 127.0.0.1:${port} }]
upstreams: [{ name: origin, url: ${origin.url} }]
routes: [{ name: all, path: /*, upstream: origin }]
admin: { address: 127.0.0.1:${adminPort} }
shutdown: { drainSeconds: 30s }
logging: { requests: false }
`,
  );
  const child = spawn(process.execPath, [BIN, '--config', file, ...ENGINE_FLAGS], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c));
  child.stderr!.on('data', (c: Buffer) => (out += c));
  let exitedAt = 0;
  const exited = new Promise<number | null>((r) =>
    child.on('exit', (code) => {
      exitedAt = performance.now();
      r(code);
    }),
  );
  cleanup(t, () => {
    release();
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await waitFor(
    async () => {
      assert.equal(child.exitCode, null, out);
      return (await get(`http://127.0.0.1:${port}/fast`).catch(() => null))?.body === 'fast';
    },
    { timeoutMs: 20_000, intervalMs: 50, message: () => `the gateway to serve; never started: ${out}` },
  );
  assert.equal((await get(`http://127.0.0.1:${adminPort}/readyz`)).status, 200, 'ready while serving');

  let answeredAt = 0;
  const slow = get(`http://127.0.0.1:${port}/slow`).then((r) => {
    answeredAt = performance.now();
    return r;
  });
  await waitFor(() => origin.requests.some((r) => r.url === '/slow'), 'the slow request at the origin');

  child.kill('SIGTERM');
  // Not ready within a few polls (no fixed sleep: the signal is handled as soon as the loop turns).
  const ready = await waitFor(
    async () => {
      const { status } = await get(`http://127.0.0.1:${adminPort}/readyz`);
      return status === 200 ? 0 : status;
    },
    { timeoutMs: 4000, intervalMs: 20, message: '/readyz to stop saying 200' },
  );
  assert.equal(ready, 503, '/readyz says 503 during the drain');
  assert.equal((await get(`http://127.0.0.1:${adminPort}/healthz`)).status, 200, '/healthz stays 200 (alive)');
  assert.equal(child.exitCode, null, 'still draining while the request is in flight');
  // New connections are no longer accepted by the client listener.
  await assert.rejects(get(`http://127.0.0.1:${port}/fast`));

  release();
  const r = await slow;
  assert.deepEqual(r, { status: 200, body: 'slow done' }, 'the request in flight completes');
  const code = await Promise.race([exited, sleep(20_000).then(() => 'timeout' as const)]);
  assert.equal(code, 0, out);
  assert.ok(exitedAt >= answeredAt, 'the process exits after the answer');
});

test('gateway.stop keeps /readyz 503 through readinessDelay while the listener still serves', {
  timeout: 30_000,
}, async (t) => {
  const origin = await startUpstream(t);
  const gw = await startGateway(t, origin.url, {});
  assert.equal((await get(`${gw.adminUrl!}/readyz`)).status, 200);
  const stopping = gw.gateway.stop(1000, 3000);
  assert.equal((await get(`${gw.adminUrl!}/readyz`)).status, 503);
  // Still serving during the readiness delay: the balancer has not noticed yet.
  assert.equal((await get(`${gw.url}/x`)).status, 200);
  await stopping;
});
