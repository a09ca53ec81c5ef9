// A binary upgrade drops nothing: the new process starts with --upgrade on the same addresses
// (SO_REUSEPORT) while the old one serves 20 keep-alive clients, then the old one gets SIGUSR2: it
// stops accepting, tells its keep-alive clients Connection: close, lets a 3 s request in flight finish
// and exits. Also: without --upgrade a second process on a held address is refused as before, and a
// request still in flight at the end of the drain is logged as cut, not as an upstream failure.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchGatewayConfig } from '../bench/lib/gateway-config.ts';
import { freePort, getOnce, sleep, spawnRempart, startLoad, startOrigin } from '../bench/lib/zero-drop.ts';

async function setup(t: { after(fn: () => unknown): void }, shutdown: Record<string, unknown>) {
  const origin = await startOrigin();
  const dir = mkdtempSync(join(tmpdir(), 'rempart-upgrade-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  t.after(() => origin.close());
  const file = join(dir, 'rempart.yaml');
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = benchGatewayConfig(port, adminPort, origin.url, {
    logging: { level: 'info', requests: true, format: 'json' },
    defense: { rateLimit: { mode: 'off' } },
    shutdown,
  });
  writeFileSync(file, JSON.stringify(config));
  return { origin, file, port, adminPort };
}

/** `workers`: both generations run under `--workers N` (each primary passes SIGUSR2 to its workers). */
async function upgradeUnderLoad(t: TestContext, workers = 1): Promise<void> {
  const { origin, file, port, adminPort } = await setup(t, { drainSeconds: 20 });
  const flags = workers > 1 ? ['--workers', String(workers)] : [];
  const old = spawnRempart(['--config', file, ...flags]);
  t.after(() => old.kill('SIGKILL'));
  await old.waitFor(/"rempart started"/, 30_000, workers);

  const load = startLoad({ port, connections: 20 });
  while (load.counts.answered < 500) await sleep(10);
  // A request on a connection of its own, sent before the successor exists: it is in the old process.
  // The origin holds it until 3 s after the signal.
  let slowDoneAt = 0;
  const slow = getOnce(port, '/hold/slow').then((r) => {
    slowDoneAt = performance.now();
    return r;
  });
  while (origin.held() === 0) await sleep(10);

  const successor = spawnRempart(['--config', file, '--upgrade', ...flags]);
  t.after(() => successor.kill('SIGKILL'));
  await successor.waitFor(/"rempart started"/, 30_000, workers);
  const before = load.counts.answered;
  while (load.counts.answered < before + 300) await sleep(10);

  old.kill('SIGUSR2');
  await old.waitFor(/"handing over"/, 20_000, workers);
  await sleep(3000);
  assert.equal(old.child.exitCode, null, 'the old process waits for the request in flight');
  origin.release();
  const oldExit = await old.exited;
  const oldExitAt = performance.now();
  // The successor serves alone now: the load goes on.
  const after = load.counts.answered;
  while (load.counts.answered < after + 1000) await sleep(10);
  const counts = await load.stop();

  assert.equal(oldExit, 0, old.out());
  assert.deepEqual(await slow, { status: 200, body: 'ok /hold/slow' }, 'the request in flight completed');
  assert.ok(slowDoneAt <= oldExitAt, 'the old process exited after answering it');
  assert.deepEqual(counts.errors, {}, 'no connection error, no reset');
  assert.deepEqual(counts.statuses, { 200: counts.sent }, 'every request answered by the origin');
  // Both processes answered part of the load (their request logs name the paths), and each keep-alive
  // client moved to the successor once, on a Connection: close.
  assert.match(old.out(), /"path":"\/load\//);
  assert.match(successor.out(), /"path":"\/load\//);
  assert.ok(counts.connections >= 20 && counts.connections <= 40, `connections opened: ${counts.connections}`);
  const ready = await getOnce(adminPort, '/readyz');
  assert.ok('status' in ready && ready.status === 200, 'the successor answers /readyz');
  successor.kill('SIGTERM');
  assert.equal(await successor.exited, 0);
}

test(
  'upgrade: a new process on the same addresses, the old one drained on SIGUSR2, drops nothing',
  {
    timeout: 90_000,
  },
  (t) => upgradeUnderLoad(t),
);

test(
  'upgrade with --workers 2: the new primary and workers bind beside the old, which hand over',
  {
    timeout: 120_000,
  },
  (t) => upgradeUnderLoad(t, 2),
);

test('without --upgrade, a second gateway on a held address is refused as before', {
  timeout: 60_000,
}, async (t) => {
  const { file } = await setup(t, {});
  const first = spawnRempart(['--config', file]);
  t.after(() => first.kill('SIGKILL'));
  await first.waitFor(/"rempart started"/);
  const second = spawnRempart(['--config', file]);
  t.after(() => second.kill('SIGKILL'));
  assert.equal(await second.exited, 1);
  assert.match(second.out(), /cannot listen: listen EADDRINUSE/);
  first.kill('SIGTERM');
  assert.equal(await first.exited, 0);
});

test('a request still in flight at the end of the drain is logged as cut (RMP_ERR_SHUTDOWN_CUT), not a 502', {
  timeout: 60_000,
}, async (t) => {
  const { file, port } = await setup(t, { drainSeconds: 1 });
  const gw = spawnRempart(['--config', file]);
  t.after(() => gw.kill('SIGKILL'));
  await gw.waitFor(/"rempart started"/);
  const slow = getOnce(port, '/slow/5000');
  await sleep(200);
  gw.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  assert.deepEqual(await slow, { error: 'ECONNRESET' });
  const line = gw
    .out()
    .split('\n')
    .find((l) => l.includes('"path":"/slow/5000"'));
  assert.ok(line !== undefined, gw.out());
  const logged = JSON.parse(line) as Record<string, unknown>;
  assert.equal(logged.decision, 'aborted');
  assert.equal(logged.reason, 'RMP_ERR_SHUTDOWN_CUT');
  assert.doesNotMatch(gw.out(), /upstream error/, 'not taken for an upstream failure');
  assert.match(gw.out(), /drain time over: requests in flight were cut/);
});
