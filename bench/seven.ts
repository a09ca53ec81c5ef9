// Issue 13's seven drills, our own equivalents (src/drill/seven.ts), for bench/RESULTS.md and the
// README: each drill against zero-config, the demo config and, as the comparison column,
// nginx with limit_req and proxy_cache (bench/nginx-seven.conf), two runs each, on the `login` origin
// model after a 70 s calm warm-up. Everything on loopback; it stops by itself.
//
//   node bench/seven.ts [--runs 2] [--drills 1,2,...,7] [--gateways zero,demo,nginx] [--engine node|lean]
//                       [--out bench/results]
// --engine: Rempart's HTTP/1.1 engine for zero and demo (rempart --engine; default: each config's own).
//
// About 33 min for 7 drills × 3 gateways × 2 runs on a 2-core machine (each run ~40 s, plus 2 × 70 s
// of warm-up). Writes bench/results/seven-<UTC stamp>.{md,json}: the table, every run, the parameters.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ENGINES, type Engine, type Gateway } from '../src/drill/matrix.ts';
import { SEVEN, runSeven, sevenParameters, sevenRunsTable, sevenTable, type SevenGateway } from '../src/drill/seven.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NGINX_CONF = join(ROOT, 'bench/nginx-seven.conf');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const c = connect({ port, host: '127.0.0.1' });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });

/** nginx in the foreground (`daemon off`) from bench/nginx-seven.conf, in its own temporary prefix. */
async function startNginx(originUrl: string): Promise<Gateway> {
  const dir = mkdtempSync(join(tmpdir(), 'rempart-seven-nginx-'));
  // Its workers run as `nobody` when started by root: they must reach the cache and temp folders.
  chmodSync(dir, 0o777);
  const port = await freePort();
  // Nothing listens there: the drill's /metrics polls fail fast (nginx has no Rempart metrics).
  const adminPort = await freePort();
  const conf = readFileSync(NGINX_CONF, 'utf8')
    .replaceAll('@DIR@', dir)
    .replaceAll('@PORT@', String(port))
    .replaceAll('@ORIGIN@', new URL(originUrl).host);
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const proc = spawn('nginx', ['-p', dir, '-c', file, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  let exited = false;
  // If this process exits first (Ctrl-C, a crash), nginx goes with it, never left behind.
  const killNginx = () => proc.kill('SIGTERM'); // the master stops its worker; a SIGKILL would orphan it
  process.once('exit', killNginx);
  const exit = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  void exit.then(() => {
    exited = true;
    process.off('exit', killNginx);
  });
  const until = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > until) {
      proc.kill('SIGKILL');
      throw new Error(`nginx did not start: ${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    adminPort,
    logFile: join(dir, 'error.log'),
    dir,
    proc,
    stop: async (graceMs = 5000) => {
      if (exited) return;
      proc.kill('SIGTERM'); // fast shutdown
      const t = setTimeout(() => {
        // Its workers first (Linux lists a process's children in /proc), so none is orphaned.
        try {
          const pids = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/);
          for (const pid of pids) if (pid) process.kill(Number(pid), 'SIGKILL');
        } catch {}
        proc.kill('SIGKILL');
      }, graceMs);
      await exit;
      clearTimeout(t);
    },
  };
}

async function main(): Promise<void> {
  // Ctrl-C or SIGTERM: exit, so the exit hooks kill the gateway and origin running now.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '2' },
      drills: { type: 'string', default: SEVEN.map((_, i) => i + 1).join(',') },
      gateways: { type: 'string', default: 'zero,demo,nginx' },
      engine: { type: 'string' },
      // The event's length (default 20 s): the same drills as a longer, sustained attack.
      'attack-sec': { type: 'string', default: '20' },
      out: { type: 'string', default: join(ROOT, 'bench/results') },
    },
  });
  const drills = values.drills.split(',').map(Number);
  if (drills.some((n) => !Number.isInteger(n) || n < 1 || n > SEVEN.length))
    throw new Error(`--drills: numbers from 1 to ${SEVEN.length}`);
  const engine = values.engine as Engine | undefined;
  if (engine !== undefined && !ENGINES.includes(engine)) throw new Error(`--engine: ${ENGINES.join(' or ')}`);
  const attackSec = Number(values['attack-sec']);
  if (!Number.isInteger(attackSec) || attackSec < 5 || attackSec > 600) throw new Error('--attack-sec: 5 to 600');
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 10) throw new Error('--runs: 1 to 10');
  const gateways: SevenGateway[] = [];
  for (const g of values.gateways.split(',')) {
    if (g === 'zero' || g === 'demo') gateways.push({ name: g, config: g });
    else if (g === 'nginx') {
      const ok = spawnSync('nginx', ['-v']).status === 0;
      if (!ok) throw new Error('--gateways nginx: no nginx on PATH (apt-get install nginx)');
      gateways.push({ name: 'nginx', config: 'zero', start: startNginx });
    } else throw new Error(`--gateways: zero, demo or nginx (got "${g}")`);
  }
  // The code measured: read before the runs (a commit made meanwhile must not relabel them).
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  const report = await runSeven({
    gateways,
    drills,
    runs,
    engine,
    attackSec,
    log: (line) => process.stderr.write(`[seven ${new Date().toISOString().slice(11, 19)}] ${line}\n`),
  });
  // nginx runs as a master and a worker: the master's CPU (what the drill reads) says nothing.
  for (const r of report.runs) if (r.gateway === 'nginx') r.outcome.cpu.gatewayPct = null;
  const command = `node bench/seven.ts ${process.argv.slice(2).join(' ')}`.trim();
  const head =
    `\`${command}\` on git ${rev || '?'}, ${report.startedAt.slice(0, 16)}Z, ${report.durationSec} s; ` +
    `load average ${report.loadAverage.start.join(' ')} → ${report.loadAverage.end.join(' ')}`;
  const table = sevenTable(report);
  mkdirSync(values.out, { recursive: true });
  const base = join(values.out, `seven-${report.startedAt.slice(0, 16).replace(/[-:]/g, '')}`);
  writeFileSync(`${base}.json`, `${JSON.stringify({ ...report, command, rev }, null, 1)}\n`);
  writeFileSync(
    `${base}.md`,
    `# Seven drills (issue 13)\n\n${head}\n\n${table}\n\n## Every run\n\n${sevenRunsTable(report)}\n\n` +
      `## Parameters\n\n${sevenParameters(attackSec)}\n`,
  );
  process.stdout.write(`${head}\n\n${table}\n\nwritten: ${base}.json, ${base}.md\n`);
}

main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
