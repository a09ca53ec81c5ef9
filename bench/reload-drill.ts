// The zero-drop drill (issue 18): load at a fixed rate near capacity for --seconds (30), a SIGHUP with a
// changed config every 5 s, and one binary upgrade in the middle (a new `rempart --upgrade` on the same
// addresses, then SIGUSR2 to the old one). Prints requests sent / answered / failed.
//
//   node bench/reload-drill.ts [--seconds 30] [--rate RPS] [--ratio 0.8] [--connections 20] [--close]
//                              [--tcp-migrate-req 0|1]
//
// --close: a new connection per request (Connection: close) instead of keep-alive; the upgrade then
// meets connections arriving at every moment (the kernel's accept-queue gap, docs/operations.md).
// --tcp-migrate-req: set net.ipv4.tcp_migrate_req for the run (root, Linux 5.14+), put back after; the
// value in force is printed either way.
// Without --rate, capacity is measured first (5 s of closed-loop load on the same 20 keep-alive
// connections) and the drill runs at --ratio of it. Everything is on 127.0.0.1: one origin and the load
// in this process, Rempart in child processes (bench/lib/zero-drop.ts).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import { machineInfo } from './lib/sysinfo.ts';
import { freePort, sleep, spawnRempart, startLoad, startOrigin, type RempartProcess } from './lib/zero-drop.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    rate: { type: 'string' },
    ratio: { type: 'string', default: '0.8' },
    connections: { type: 'string', default: '20' },
    close: { type: 'boolean', default: false },
    'tcp-migrate-req': { type: 'string' },
  },
});
const MIGRATE = '/proc/sys/net/ipv4/tcp_migrate_req';
const readMigrate = (): string => {
  try {
    return readFileSync(MIGRATE, 'utf8').trim();
  } catch {
    return 'absent (kernel < 5.14)';
  }
};
const migrateBefore = readMigrate();
const migrateWanted = values['tcp-migrate-req'];
if (migrateWanted !== undefined) {
  if (migrateWanted !== '0' && migrateWanted !== '1') throw new Error('--tcp-migrate-req takes 0 or 1');
  writeFileSync(MIGRATE, migrateWanted);
}
const restoreMigrate = () => {
  if (migrateWanted !== undefined && migrateWanted !== migrateBefore) writeFileSync(MIGRATE, migrateBefore);
};
process.once('SIGINT', () => {
  restoreMigrate();
  process.exit(130);
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const keepAlive = !values.close;

const origin = await startOrigin();
const dir = mkdtempSync(join(tmpdir(), 'rempart-drill-'));
const file = join(dir, 'rempart.yaml');
const [port, adminPort] = [await freePort(), await freePort()];

/**
 * The n-th config: every reload adds a route and changes the upstream's connection limit, which retires
 * the pool in use. Admission is off: what is counted is what a reload or the upgrade drops, not what the
 * gateway sheds by design when the machine (shared, here) falls behind.
 */
function writeConfig(n: number): void {
  const routes = [];
  for (let i = 0; i < n; i++) routes.push({ name: `r${i}`, path: `/r${i}/*`, upstream: 'origin', class: 'public' });
  routes.push({ name: 'default', path: '/*', upstream: 'origin', class: 'public' });
  const config = benchGatewayConfig(port, adminPort, origin.url, {
    defense: { rateLimit: { mode: 'off' } },
    upstreams: [{ name: 'origin', url: origin.url, connections: 64 + n, admission: { mode: 'off' } }],
    routes,
    shutdown: { drainSeconds: 20 },
    // `rempart started` and `configuration reloaded` are info lines; no line per request.
    logging: { level: 'info', requests: false },
  });
  writeFileSync(file, JSON.stringify(config));
}

/** `{"17": 40, ...}`: how many of `times` (seconds) fall in each second. */
function bySecond(times: number[]): string {
  const seconds: Record<string, number> = {};
  for (const t of times) seconds[Math.floor(t)] = (seconds[Math.floor(t)] ?? 0) + 1;
  return JSON.stringify(seconds);
}

let current: RempartProcess | null = null;
const processes: RempartProcess[] = [];
try {
  writeConfig(0);
  current = spawnRempart(['--config', file]);
  processes.push(current);
  await current.waitFor(/"rempart started"/, 60_000);

  let rate = Number(values.rate);
  let capacity = NaN;
  if (values.rate === undefined) {
    const probe = startLoad({ port, connections, keepAlive });
    await sleep(1000);
    const from = probe.counts.answered;
    await sleep(5000);
    capacity = (probe.counts.answered - from) / 5;
    await probe.stop();
    rate = Math.round(capacity * Number(values.ratio));
  }
  process.stderr.write(
    `capacity ${Number.isNaN(capacity) ? '-' : capacity.toFixed(0)} req/s, drill at ${rate} req/s\n`,
  );

  const load = startLoad({ port, connections, rate, keepAlive, path: (n) => `/r${n % 4}/drill/${n}` });
  const started = performance.now();
  const at = () => (performance.now() - started) / 1000;
  let reloads = 0;
  let upgrade = '';
  const events: string[] = [];
  let nextReload = 5;
  let upgraded = false;
  while (at() < seconds) {
    if (!upgraded && at() >= seconds / 2) {
      // The upgrade: the successor binds beside the running process, then the old one hands over.
      upgraded = true;
      const t0 = at();
      const successor = spawnRempart(['--config', file, '--upgrade']);
      await successor.waitFor(/"rempart started"/, 60_000);
      const t1 = at();
      const old = current;
      processes.push(successor);
      old.kill('SIGUSR2');
      current = successor;
      void old.exited.then((code) => {
        upgrade = `successor started in ${(t1 - t0).toFixed(1)} s, old process exited ${code} ${(at() - t1).toFixed(1)} s after SIGUSR2`;
        events.push(`${at().toFixed(1)} s: old process exited (${code})`);
      });
      events.push(`${t0.toFixed(1)} s: successor spawned; ${t1.toFixed(1)} s: it serves, SIGUSR2 to the old one`);
    }
    if (at() >= nextReload) {
      nextReload += 5;
      reloads++;
      writeConfig(reloads);
      current.kill('SIGHUP');
      events.push(`${at().toFixed(1)} s: SIGHUP ${reloads}`);
    }
    await sleep(20);
  }
  const counts = await load.stop();
  const elapsed = at();
  await sleep(500);
  const applied = processes.reduce((n, p) => n + (p.out().match(/"configuration reloaded"/g)?.length ?? 0), 0);
  const info = machineInfo();
  const lines = [
    `machine: ${info.nproc} CPUs (${info.cpuModel}), Node ${info.node}, Linux ${info.kernel}, load ${info.loadavg}`,
    `rate: ${rate} req/s over ${elapsed.toFixed(1)} s on ${connections} ${keepAlive ? 'keep-alive connections' : 'clients, a connection per request'}` +
      (Number.isNaN(capacity) ? '' : ` (${values.ratio} of a measured capacity of ${capacity.toFixed(0)} req/s)`),
    `reloads (SIGHUP): ${reloads} sent, ${applied} applied; upgrade: ${upgrade || 'old process still draining'}`,
    `net.ipv4.tcp_migrate_req: ${readMigrate()}`,
    `requests sent: ${counts.sent}, answered: ${counts.answered}, failed: ${counts.failed}`,
    `answers by status: ${JSON.stringify(counts.statuses)}; errors: ${JSON.stringify(counts.errors)}`,
    `client connections opened: ${counts.connections}`,
    ...(counts.failed > 0 ? [`failures by second of the run: ${bySecond(counts.failedAt)}`] : []),
    ...events.map((e) => `  ${e}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  // What the gateways warned about (a drain cut short, an upstream error), the start-up key notice aside.
  for (const p of processes)
    for (const l of p.out().split('\n'))
      if (/"level":"(warn|error)"/.test(l) && !l.includes('REMPART_CHALLENGE_KEY')) process.stdout.write(`${l}\n`);
  process.exitCode = counts.failed === 0 && counts.answered === counts.sent ? 0 : 1;
} finally {
  restoreMigrate();
  current?.kill('SIGTERM');
  if (current !== null) await current.exited;
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
}
