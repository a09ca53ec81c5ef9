// Graceful stop (config `shutdown`): on SIGTERM /readyz turns 503 at once so a load balancer stops
// sending, /healthz stays 200, a request in flight completes, then the process exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanup, sleep, startGateway, startUpstream, tempDir } from './helpers.ts';

const BIN = fileURLToPath(new URL('../bin/rempart.js', import.meta.url));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

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

test('SIGTERM: /readyz turns 503 at once, the request in flight completes, then the process exits', { timeout: 60_000 }, async (t) => {
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
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  const deadline = Date.now() + 20_000;
  while ((await get(`http://127.0.0.1:${port}/fast`).catch(() => null))?.body !== 'fast') {
    assert.equal(child.exitCode, null, out);
    assert.ok(Date.now() < deadline, `never started: ${out}`);
    await sleep(50);
  }
  assert.equal((await get(`http://127.0.0.1:${adminPort}/readyz`)).status, 200, 'ready while serving');

  let answeredAt = 0;
  const slow = get(`http://127.0.0.1:${port}/slow`).then((r) => {
    answeredAt = performance.now();
    return r;
  });
  while (!origin.requests.some((r) => r.url === '/slow')) await sleep(20);

  child.kill('SIGTERM');
  // Not ready within a few polls (no fixed sleep: the signal is handled as soon as the loop turns).
  let ready = 200;
  for (let i = 0; i < 200 && ready === 200; i++) {
    ready = (await get(`http://127.0.0.1:${adminPort}/readyz`)).status;
    if (ready === 200) await sleep(20);
  }
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

test('gateway.stop keeps /readyz 503 through readinessDelay while the listener still serves', { timeout: 30_000 }, async (t) => {
  const origin = await startUpstream(t);
  const gw = await startGateway(origin.url, {});
  assert.equal((await get(`${gw.adminUrl!}/readyz`)).status, 200);
  const stopping = gw.gateway.stop(1000, 3000);
  assert.equal((await get(`${gw.adminUrl!}/readyz`)).status, 503);
  // Still serving during the readiness delay: the balancer has not noticed yet.
  assert.equal((await get(`${gw.url}/x`)).status, 200);
  await stopping;
});
