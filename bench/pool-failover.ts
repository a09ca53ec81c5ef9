// Pool failover drill (issue 16): three origin processes (bench/pool-origin.ts) behind Rempart (a child
// process, `rempart --config`), an open-loop GET load at --rate, and one origin SIGKILLed at --kill-at.
// Prints what the users saw: requests sent, answered per status, failed (5xx or no answer), the share
// each origin served before and after the kill, latency around it, and Rempart's own counts (retries,
// the killed server's state) from its /metrics.
//
//   node bench/pool-failover.ts [--seconds 20] [--kill-at 7] [--rate 600] [--connections 32] [--delay-ms 10]
//     [--balance least_request|round_robin|hash]
import http from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import { machineInfo } from './lib/sysinfo.ts';
import { freePort, sleep, spawnRempart } from './lib/zero-drop.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    'kill-at': { type: 'string', default: '7' },
    rate: { type: 'string', default: '600' },
    connections: { type: 'string', default: '32' },
    'delay-ms': { type: 'string', default: '10' },
    balance: { type: 'string', default: 'least_request' },
  },
});
const seconds = Number(values.seconds);
const killAt = Number(values['kill-at']);
const rate = Number(values.rate);
const connections = Number(values.connections);

const ORIGIN = fileURLToPath(new URL('./pool-origin.ts', import.meta.url));
async function spawnOrigin(name: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [ORIGIN, '--name', name, '--delay-ms', values['delay-ms']], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c));
  for (let i = 0; i < 500 && !/listening \d+/.test(out); i++) await sleep(20);
  const port = /listening (\d+)/.exec(out)?.[1];
  if (port === undefined) throw new Error(`origin ${name} did not start`);
  return { child, url: `http://127.0.0.1:${port}` };
}

const origins = await Promise.all(['a', 'b', 'c'].map(spawnOrigin));
const dir = mkdtempSync(join(tmpdir(), 'rempart-pool-'));
const file = join(dir, 'rempart.yaml');
const [port, adminPort] = [await freePort(), await freePort()];
const config = benchGatewayConfig(port, adminPort, origins[0]!.url, {
  defense: { rateLimit: { mode: 'off' } },
  logging: { level: 'info', requests: false },
  upstreams: [
    {
      name: 'origin',
      servers: origins.map((o) => o.url),
      balance: values.balance,
      healthCheck: { path: '/healthz', intervalMs: 1000, timeoutMs: 500 },
      connectTimeoutMs: 1000,
    },
  ],
});
writeFileSync(file, JSON.stringify(config));
const rempart = spawnRempart(['--config', file]);
// Whatever happens, no child outlives the drill.
process.on('exit', () => {
  rempart.kill('SIGKILL');
  for (const o of origins) o.child.kill('SIGKILL');
});
await rempart.waitFor(/rempart started/);

interface Window {
  sent: number;
  ok: number;
  failed: number;
  byOrigin: Record<string, number>;
  latencies: number[];
}
const fresh = (): Window => ({ sent: 0, ok: 0, failed: 0, byOrigin: {}, latencies: [] });
const before = fresh();
const around = fresh(); // the 2 s from the kill on
const after = fresh();
const statuses: Record<string, number> = {};
const errors: Record<string, number> = {};
const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
const began = performance.now();
const killMs = killAt * 1000;
let inFlight = 0;

function windowAt(t: number): Window {
  if (t < killMs) return before;
  return t < killMs + 2000 ? around : after;
}

function one(): void {
  const start = performance.now();
  const w = windowAt(start - began);
  w.sent++;
  inFlight++;
  const req = http.get({ host: '127.0.0.1', port, path: `/page/${w.sent}`, agent }, (res) => {
    const origin = String(res.headers['x-origin'] ?? '-');
    res.resume();
    res.on('end', () => {
      inFlight--;
      statuses[res.statusCode!] = (statuses[res.statusCode!] ?? 0) + 1;
      if (res.statusCode === 200) {
        w.ok++;
        w.byOrigin[origin] = (w.byOrigin[origin] ?? 0) + 1;
        w.latencies.push(performance.now() - start);
      } else w.failed++;
    });
  });
  req.on('error', (err: NodeJS.ErrnoException) => {
    inFlight--;
    w.failed++;
    errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
  });
}

let killed = false;
const interval = 1000 / rate;
let next = performance.now();
while (performance.now() - began < seconds * 1000) {
  const now = performance.now();
  if (!killed && now - began >= killMs) {
    killed = true;
    origins[1]!.child.kill('SIGKILL');
  }
  while (next <= now) {
    one();
    next += interval;
  }
  await sleep(Math.max(1, next - performance.now()));
}
for (let i = 0; i < 500 && inFlight > 0; i++) await sleep(10);

const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
const grepMetric = (re: RegExp) =>
  metrics
    .split('\n')
    .filter((l) => re.test(l))
    .join('\n');
rempart.kill('SIGTERM');
await rempart.exited;
for (const o of origins) o.child.kill('SIGTERM');
agent.destroy();
rmSync(dir, { recursive: true, force: true });

const pct = (xs: number[], q: number) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const show = (name: string, w: Window) =>
  `${name}: sent ${w.sent}, 200 ${w.ok}, failed ${w.failed}, by origin ${JSON.stringify(w.byOrigin)}, ` +
  `p50 ${pct(w.latencies, 0.5).toFixed(1)} ms, p99 ${pct(w.latencies, 0.99).toFixed(1)} ms, max ${pct(w.latencies, 1).toFixed(1)} ms`;
const m = machineInfo();
console.log(
  `pool-failover: ${seconds} s at ${rate} req/s open loop, ${connections} keep-alive connections, ` +
    `origin b SIGKILLed at ${killAt} s; balance ${values.balance}; ${m.nproc} CPUs, Node ${m.node}, load ${m.loadavg}`,
);
console.log(show('before the kill', before));
console.log(show('kill + 2 s', around));
console.log(show('after', after));
console.log(`statuses ${JSON.stringify(statuses)}, errors ${JSON.stringify(errors)}`);
const total = before.sent + around.sent + after.sent;
const failed = before.failed + around.failed + after.failed;
console.log(`users: ${total} requests, ${failed} failed (${((100 * failed) / total).toFixed(3)} %)`);
console.log(grepMetric(/^rempart_upstream_(retries_total|server_state\{.*\} 1$)/));
