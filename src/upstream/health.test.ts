import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { HealthCheck } from './health.ts';
import { cleanup, waitFor } from '../../test/helpers.ts';

const settings = { path: '/healthz', intervalMs: 50, timeoutMs: 500, healthyThreshold: 2, unhealthyThreshold: 2 };

test('health turns unhealthy after unhealthyThreshold failures and healthy after healthyThreshold successes', () => {
  const check = new HealthCheck('postal', settings, null as unknown as Pool);
  const seen: string[] = [];
  check.onResult = (_c, result, changed) => seen.push(`${result}${changed ? '!' : ''}`);
  check.record('failure');
  assert.equal(check.healthy, true);
  check.record('failure');
  assert.equal(check.healthy, false);
  check.record('success');
  check.record('failure');
  check.record('success');
  assert.equal(check.healthy, false);
  check.record('success');
  assert.equal(check.healthy, true);
  assert.deepEqual(seen, ['failure', 'failure!', 'success', 'failure', 'success', 'success!']);
});

test('a running health check probes the upstream path through the pool and stops cleanly', async (t) => {
  let down = false;
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url!);
    res.statusCode = down ? 503 : 200;
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const pool = new Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const check = new HealthCheck('origin', settings, pool);
  cleanup(t, async () => {
    check.stop();
    await pool.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  check.start();
  down = true;
  const deadline = Date.now() + 5000;
  await waitFor(() => !check.healthy, { timeoutMs: 5000, intervalMs: 20, message: 'the check to turn unhealthy' });
  down = false;
  // As before: five seconds past the first wait's bound.
  await waitFor(() => check.healthy, {
    timeoutMs: deadline + 5000 - Date.now(),
    intervalMs: 20,
    message: 'the check to recover',
  });
  assert.ok(paths.every((p) => p === '/healthz'));
});

test('a check that fails for want of a descriptor on the gateway (EMFILE) records nothing against the upstream', async () => {
  const emfile = Object.assign(new Error('connect EMFILE 127.0.0.1:3000 - Local'), { code: 'EMFILE' });
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3000'), { code: 'ECONNREFUSED' });
  let next: Error = emfile;
  const pool = { request: () => Promise.reject(next) } as unknown as Pool;
  const check = new HealthCheck('origin', settings, pool);
  const seen: string[] = [];
  check.onResult = (_c, result) => seen.push(result);
  for (let i = 0; i < 3; i++) await check.checkOnce();
  assert.deepEqual(seen, [], 'nothing recorded');
  assert.equal(check.healthy, true);
  next = refused;
  for (let i = 0; i < 2; i++) await check.checkOnce();
  assert.equal(check.healthy, false, 'a refused connection is the upstream’s');
});
