// Store benchmark: throughput and CPU of one gateway with the memory store against the Valkey/Redis
// store, side by side, and the store operations each proxied request costs. The gateway runs in its
// own process (bin/rempart.js --config), pinned to CPU 1 when possible; wrk, the origin (nginx, else
// Node) and redis-server share CPU 0. Variants:
//   memory        cluster.store memory, one per-address rule (scope node)
//   redis         cluster.store redis, same rule (the store only sees the heartbeat and resyncs)
//   redis-global  cluster.store redis, the rule with scope global (token leases from redis)
// usage: node bench/store.ts [--seconds N] [--connections C] [--rounds R] [--no-pin]
import http from 'node:http';
import type net from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { processCpu } from './lib/cpu.ts';
import {
  canPin,
  freePort,
  have,
  installCleanupHandlers,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { runWrk } from './lib/wrk.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
type Variant = 'memory' | 'redis' | 'redis-global';
const VARIANTS: Variant[] = ['memory', 'redis', 'redis-global'];

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      connections: { type: 'string' },
      rounds: { type: 'string' },
      'no-pin': { type: 'boolean' },
    },
  });
  const seconds = Number(values.seconds ?? 10);
  const connections = Number(values.connections ?? 64);
  const rounds = Number(values.rounds ?? 1);
  const say = (s: string) => process.stderr.write(`${s}\n`);
  installCleanupHandlers();
  if (!have('wrk')) throw new Error('wrk is needed (apt-get install wrk)');
  const redisBin = ['/usr/bin/redis-server', '/usr/bin/valkey-server'].find((p) => have(p));
  if (redisBin === undefined) throw new Error('redis-server is needed (apt-get install redis-server)');
  const pin = !values['no-pin'] && canPin(2);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-store-'));
  onCleanup(() => rm(tmp, { recursive: true, force: true }));

  const body = Buffer.alloc(100, 'x');
  const origin = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  onCleanup(() => new Promise<void>((r) => origin.close(() => r())));
  const originPort = (origin.address() as net.AddressInfo).port;

  const redisPort = await freePort();
  const redis = startProcess(
    'redis',
    redisBin,
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { cpu: pin ? '0' : undefined },
  );
  await waitForPort(redisPort, redis, 10000);

  const results: Array<{
    variant: Variant;
    round: number;
    rps: number;
    cpuPer10k: number;
    opsPerRequest: number;
    non2xx: number;
  }> = [];
  for (let round = 1; round <= rounds; round++) {
    for (const variant of VARIANTS) {
      const port = await freePort();
      const adminPort = await freePort();
      const config = benchGatewayConfig(port, adminPort, `http://127.0.0.1:${originPort}`, {
        // One key (wrk's address) under a limit it never reaches: what is measured is the counting.
        defense: {
          rateLimit: {
            rules: [
              {
                id: 'per-address',
                key: 'address',
                ratePerSec: 100000,
                burst: 10000,
                scope: variant === 'redis-global' ? 'global' : 'node',
              },
            ],
          },
        },
        cluster: {
          store: variant === 'memory' ? 'memory' : 'redis',
          nodeName: 'bench',
          redis: { keyPrefix: `bench${round}${variant}:` },
        },
      });
      const file = path.join(tmp, `${variant}.json`);
      await writeFile(file, JSON.stringify(config));
      const gw = startProcess('rempart', process.execPath, [path.join(ROOT, 'bin', 'rempart.js'), '--config', file], {
        cwd: ROOT,
        env: { ...process.env, REMPART_REDIS_URL: `redis://127.0.0.1:${redisPort}` },
        cpu: pin ? '1' : undefined,
      });
      await waitForPort(port, gw, 20000);
      const ops = async () => {
        const text = await fetch(`http://127.0.0.1:${adminPort}/metrics`).then((r) => r.text());
        return Number(/^rempart_cluster_store_operations_total (\d+)/m.exec(text)?.[1] ?? 0);
      };
      await runWrk({ url: `http://127.0.0.1:${port}/`, connections, seconds: 2, dir: tmp, cpu: pin ? '0' : undefined }); // warm-up
      const c0 = processCpu(gw.pid);
      const o0 = await ops();
      const r = await runWrk({
        url: `http://127.0.0.1:${port}/`,
        connections,
        seconds,
        dir: tmp,
        cpu: pin ? '0' : undefined,
      });
      const c1 = processCpu(gw.pid);
      const o1 = await ops();
      const cpu = c1.user + c1.sys - (c0.user + c0.sys);
      results.push({
        variant,
        round,
        rps: r.rps,
        cpuPer10k: (cpu / r.requests) * 10000,
        opsPerRequest: (o1 - o0) / r.requests,
        non2xx: r.errors.status,
      });
      say(`${variant} round ${round}: ${Math.round(r.rps)} req/s, non-2xx ${r.errors.status}`);
      await gw.stop();
    }
  }
  const info = machineInfo();
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const lines = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${info.cpuModel} × ${info.nproc} · Node ${info.node} · git ${gitCommit(ROOT)}${pin ? ' · gateway pinned to CPU 1; wrk, origin and redis-server on CPU 0' : ''}`,
    `Command: \`node bench/store.ts --seconds ${seconds} --connections ${connections} --rounds ${rounds}${values['no-pin'] ? ' --no-pin' : ''}\` (wrk, 1 thread, keep-alive, GET /; medians over rounds)`,
    '',
    '| variant | req/s | CPU s/10k req | store ops per request | non-2xx |',
    '|---|---:|---:|---:|---:|',
    ...VARIANTS.map((v) => {
      const rs = results.filter((x) => x.variant === v);
      return `| ${v} | ${Math.round(median(rs.map((x) => x.rps)))} | ${median(rs.map((x) => x.cpuPer10k)).toFixed(3)} | ${median(rs.map((x) => x.opsPerRequest)).toFixed(5)} | ${rs.reduce((s, x) => s + x.non2xx, 0)} |`;
    }),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

main().then(
  async (code) => {
    await stopAll();
    process.exit(code);
  },
  async (err: unknown) => {
    process.stderr.write(`bench/store: ${(err as Error).stack ?? String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
