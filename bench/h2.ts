// HTTP/2 to clients: h2load against nginx (`http2 on`, TLS) and Rempart (TLS listener, h2 by ALPN),
// both in front of the same nginx origin over HTTP/1.1 keep-alive, in one run, interleaved (nginx,
// Rempart, Rempart, nginx per round). Prints req/s and CPU per 10,000 requests of each proxy (from
// /proc, the proxy's process and its children), and the Rempart/nginx ratios; writes the table to
// bench/RESULTS.md under its own heading.
// usage: node bench/h2.ts [--requests N] [--clients C] [--streams M] [--rounds K] [--no-pin] [--no-write]
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuDelta, snapshot } from './lib/cpu.ts';
import { nginxVersion, originHttp, startNginx } from './lib/nginx.ts';
import {
  canPin,
  freePort,
  have,
  installCleanupHandlers,
  onCleanup,
  pinPrefix,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
const HEADING = '## HTTP/2 to clients (issue 16)';

interface Run {
  reqPerSec: number;
  succeeded: number;
  failed: number;
  cpu: number;
}

function h2load(url: string, requests: number, clients: number, streams: number, cpu: string | undefined): Run {
  const args = [...pinPrefix(cpu), 'h2load', '-n', String(requests), '-c', String(clients), '-m', String(streams), url];
  const out = execFileSync(args[0]!, args.slice(1), { encoding: 'utf8', maxBuffer: 16 << 20 });
  const rate = out.match(/finished in [\d.]+\w+, ([\d.]+) req\/s/);
  const counts = out.match(/requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/);
  if (rate === null || counts === null || !/Application protocol: h2/.test(out)) throw new Error(`h2load: ${out}`);
  return { reqPerSec: Number(rate[1]), succeeded: Number(counts[1]), failed: Number(counts[2]), cpu: 0 };
}

const median = (xs: number[]) => {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string' },
      clients: { type: 'string' },
      streams: { type: 'string' },
      rounds: { type: 'string' },
      'no-pin': { type: 'boolean' },
      'no-write': { type: 'boolean' },
    },
  });
  const requests = Number(values.requests ?? 60000);
  const clients = Number(values.clients ?? 16);
  const streams = Number(values.streams ?? 10);
  const rounds = Number(values.rounds ?? 2);
  const command = ['node bench/h2.ts', ...process.argv.slice(2)].join(' ');
  const say = (s: string) => process.stderr.write(`${s}\n`);
  installCleanupHandlers();
  if (!have('h2load') || !have('nginx')) throw new Error('h2load (nghttp2-client) and nginx are needed');
  // The proxy under test alone on CPU 1; h2load and the origin share CPU 0.
  const pin = !values['no-pin'] && canPin(2);
  const SUT = pin ? '1' : undefined;
  const LOAD = pin ? '0' : undefined;

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-h2-'));
  await chmod(tmp, 0o755);
  onCleanup(() => rm(tmp, { recursive: true, force: true }));
  const cert = path.join(tmp, 'cert.pem');
  const key = path.join(tmp, 'key.pem');
  const subj = ['-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', ...subj], {
    stdio: 'ignore',
  });
  await chmod(key, 0o644);

  const [upPort, nginxPort, rempartPort] = await Promise.all([freePort(), freePort(), freePort()]);
  await startNginx({
    name: 'origin',
    dir: path.join(tmp, 'origin'),
    port: upPort,
    cpu: LOAD,
    http: await originHttp(upPort, 100, path.join(tmp, 'origin', 'www')),
  });
  const nginx = await startNginx({
    name: 'nginx',
    dir: path.join(tmp, 'nginx'),
    port: nginxPort,
    cpu: SUT,
    http: `upstream origin { server 127.0.0.1:${upPort}; keepalive 64; keepalive_requests 1000000; }
server {
  listen 127.0.0.1:${nginxPort} ssl http2 backlog=4096;
  ssl_certificate ${cert};
  ssl_certificate_key ${key};
  location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
}`,
  });
  const config = benchGatewayConfig(rempartPort, 'off', `http://127.0.0.1:${upPort}`, {
    defense: { rateLimit: { mode: 'off' } },
  });
  (config.listeners as Record<string, unknown>[])[0]!.tls = { certFile: cert, keyFile: key };
  const configFile = path.join(tmp, 'rempart.json');
  await writeFile(configFile, JSON.stringify(config));
  const rempart = startProcess(
    'rempart',
    process.execPath,
    [path.join(ROOT, 'bin', 'rempart.js'), '--config', configFile],
    {
      cpu: SUT,
    },
  );
  await waitForPort(rempartPort, rempart, 20_000);

  const systems = [
    { id: 'nginx', pid: nginx.pid, url: `https://127.0.0.1:${nginxPort}/`, runs: [] as Run[] },
    { id: 'rempart', pid: rempart.pid, url: `https://127.0.0.1:${rempartPort}/`, runs: [] as Run[] },
  ];
  // Warm-up (JIT, TLS session caches, upstream pools), not measured.
  for (const s of systems) h2load(s.url, Math.min(requests, 20000), clients, streams, LOAD);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? [0, 1, 1, 0] : [1, 0, 0, 1];
    for (const i of order) {
      const s = systems[i]!;
      const before = snapshot([s.pid]);
      const run = h2load(s.url, requests, clients, streams, LOAD);
      run.cpu = cpuDelta(before, snapshot([s.pid])).cpuSeconds;
      s.runs.push(run);
      say(
        `${s.id}: ${run.reqPerSec.toFixed(0)} req/s, ${((run.cpu / run.succeeded) * 1e4).toFixed(3)} CPU s / 10k, ${run.failed} failed`,
      );
    }
  }
  const fig = systems.map((s) => ({
    id: s.id,
    rps: median(s.runs.map((x) => x.reqPerSec)),
    cpu10k: median(s.runs.map((x) => (x.cpu / x.succeeded) * 1e4)),
    failed: s.runs.reduce((a, x) => a + x.failed, 0),
  }));
  const [n, rp] = fig as [(typeof fig)[0], (typeof fig)[0]];
  const info = machineInfo();
  const table = markdownTable(
    ['proxy (TLS, h2 to clients, HTTP/1.1 to the origin)', 'req/s (median)', 'CPU s / 10k req', 'failed'],
    [
      [
        `nginx ${nginxVersion()} (\`listen … ssl http2\`, 1 worker)`,
        n.rps.toFixed(0),
        n.cpu10k.toFixed(3),
        String(n.failed),
      ],
      [`Rempart @ ${gitCommit(ROOT)} (node:http2)`, rp.rps.toFixed(0), rp.cpu10k.toFixed(3), String(rp.failed)],
      ['Rempart / nginx', (rp.rps / n.rps).toFixed(2), (rp.cpu10k / n.cpu10k).toFixed(2), ''],
    ],
    ['l', 'r', 'r', 'r'],
  );
  const body = `\`${command}\`: h2load \`-n ${requests} -c ${clients} -m ${streams}\` (h2 by ALPN, TLS 1.3, ECDSA P-256), ${rounds} round(s) of nginx and Rempart interleaved (ABBA), medians; the proxy pinned alone on CPU ${SUT ?? '(unpinned)'}, h2load and the nginx origin (100-byte answers) on CPU ${LOAD ?? '(unpinned)'}. CPU from /proc (the proxy and its children). ${info.nproc} CPUs, ${info.cpuModel}, Node ${info.node}, load before ${info.loadavg} (the machine is shared: ratios, not absolutes).

${table}
`;
  process.stdout.write(`\n${HEADING}\n\n${body}\n`);
  if (!values['no-write']) upsertSection(RESULTS, HEADING, body);
  return 0;
}

main()
  .then(async (code) => {
    await stopAll();
    process.exit(code);
  })
  .catch(async (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : err}\n`);
    await stopAll();
    process.exit(1);
  });
