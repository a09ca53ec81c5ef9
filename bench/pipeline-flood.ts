// Pipeline flood: C connections each write N pipelined GETs in one write and never read a byte of
// the replies (issue 12, finding 1). The gateway runs in its own process (bin/rempart.js with a
// config file, default limits, request logs off); its heap and RSS are read from its /metrics while
// the flood holds, and the small origin here counts the requests that reached it.
// usage: node bench/pipeline-flood.ts [--connections 100] [--pipelined 1000] [--seconds 10] [--heap-mb 0] [--no-ratelimit]
//   --no-ratelimit turns the default rate limit off (its 429s are offences too, and ban the flood by
//   themselves): what is left bounding the flood is then the per-connection limit alone.
//   --heap-mb N runs the gateway with --max-old-space-size=N (the review used 1024: the process died).
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import { freePort, installCleanupHandlers, onCleanup, sleep, startProcess, stopAll, waitForPort } from './lib/procs.ts';
import { gitCommit } from './lib/sysinfo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

async function metric(adminPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string' },
      pipelined: { type: 'string' },
      seconds: { type: 'string' },
      'heap-mb': { type: 'string' },
      'no-ratelimit': { type: 'boolean' },
    },
  });
  const conns = Number(values.connections ?? 100);
  const perConn = Number(values.pipelined ?? 1000);
  const seconds = Number(values.seconds ?? 10);
  const heapMb = Number(values['heap-mb'] ?? 0);
  const say = (s: string) => process.stderr.write(`${s}\n`);
  installCleanupHandlers();

  let reached = 0;
  const body = Buffer.alloc(100, 'x');
  const origin = http.createServer((_req, res) => {
    reached++;
    res.end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  onCleanup(
    () =>
      new Promise<void>((r) => {
        origin.closeAllConnections();
        origin.close(() => r());
      }),
  );
  const originPort = (origin.address() as net.AddressInfo).port;

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-pipe-'));
  onCleanup(() => rm(tmp, { recursive: true, force: true }));
  const port = await freePort();
  const adminPort = await freePort();
  const file = path.join(tmp, 'rempart.json');
  await writeFile(
    file,
    JSON.stringify(
      benchGatewayConfig(
        port,
        adminPort,
        `http://127.0.0.1:${originPort}`,
        values['no-ratelimit'] ? { defense: { rateLimit: { mode: 'off' } } } : {},
      ),
    ),
  );
  const nodeArgs = heapMb > 0 ? [`--max-old-space-size=${heapMb}`] : [];
  const gw = startProcess(
    'rempart',
    process.execPath,
    [...nodeArgs, path.join(ROOT, 'bin', 'rempart.js'), '--config', file],
    { cwd: ROOT },
  );
  await waitForPort(port, gw, 20000);
  await sleep(500);
  const heap0 = await metric(adminPort, 'nodejs_heap_size_used_bytes');

  const request = Buffer.from('GET /item HTTP/1.1\r\nHost: bench.test\r\n\r\n'.repeat(perConn));
  const sockets: net.Socket[] = [];
  for (let i = 0; i < conns; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    s.on('connect', () => {
      s.write(request);
      s.pause(); // never read a reply
    });
    sockets.push(s);
  }
  let peakHeap = heap0;
  let peakRss = 0;
  let alive = true;
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) {
    await sleep(250);
    if (gw.child.exitCode !== null || gw.child.signalCode !== null) {
      alive = false;
      break;
    }
    try {
      peakHeap = Math.max(peakHeap, await metric(adminPort, 'nodejs_heap_size_used_bytes'));
      peakRss = Math.max(peakRss, await metric(adminPort, 'process_resident_memory_bytes'));
    } catch {
      // the admin listener may be slow under the flood; try again
    }
  }
  const heapEnd = await metric(adminPort, 'nodejs_heap_size_used_bytes').catch(() => NaN);
  const closedForPipelining = await metric(
    adminPort,
    'rempart_refusals_total\\{reason="RMP_ERR_EDGE_PIPELINE_LIMIT"\\}',
  ).catch(() => NaN);
  const bans = await metric(adminPort, 'rempart_bans_active').catch(() => NaN);
  const open = await metric(adminPort, 'rempart_connections_active').catch(() => NaN);
  for (const s of sockets) s.destroy();
  const mb = (b: number) => `${(b / 1048576).toFixed(0)} MB`;
  const result = {
    commit: gitCommit(ROOT),
    node: process.version,
    connections: conns,
    pipelinedPerConnection: perConn,
    seconds,
    rateLimit: values['no-ratelimit'] ? 'off' : 'default',
    gatewayAlive: alive,
    heapBefore: mb(heap0),
    peakHeap: mb(peakHeap),
    peakRss: mb(peakRss),
    heapAtEnd: mb(heapEnd),
    connectionsOpenAtEnd: open,
    closedForPipelining,
    bansActive: bans,
    requestsReachedOrigin: reached,
  };
  say(JSON.stringify(result, null, 2));
  if (!alive) say(gw.log.slice(-5).join('\n'));
  await stopAll();
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    await stopAll();
    process.exit(1);
  },
);
