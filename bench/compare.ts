// Drill comparison: the same scenarios against the bare reference origin, nginx, HAProxy and
// Rempart, each in front of a fresh bounded origin; prints a markdown table and updates bench/RESULTS.md.
// usage: node bench/compare.ts [--seconds 10] [--scenarios a,b] [--systems origin,nginx,haproxy,rempart,rempart-demo]
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, writeFile, rm, mkdir } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { runDrill } from '../src/drill/engine.ts';
import { listBuiltins } from '../src/drill/scenario.ts';
import type { DrillReport } from '../src/drill/report.ts';
import { ensureDebianTools, nginxBin } from './lib/nginx.ts';
import { freePort, have as haveCmd } from './lib/procs.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ORIGIN_WORKERS = 8;
const ORIGIN_SERVICE_MS = 20;
const ORIGIN_QUEUE = 64;
const SYSTEMS = ['origin', 'nginx', 'haproxy', 'rempart', 'rempart-demo'] as const;
type System = (typeof SYSTEMS)[number];
const DEMO_CONFIG = path.join(ROOT, 'examples/postal/rempart.yaml');

async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`);
}

interface Proc {
  child: ChildProcess;
  log: string[];
}

function start(cmd: string, args: string[], name: string): Proc {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const keep = (b: Buffer) => {
    if (log.length < 200) log.push(`${name}: ${b.toString().trimEnd()}`);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (e) => log.push(`${name}: ${e.message}`));
  return { child, log };
}

async function stop(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.child.once('exit', () => r()));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

async function fill(template: string, vars: Record<string, string | number>): Promise<string> {
  let text = await readFile(path.join(ROOT, 'bench/compare', template), 'utf8');
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{{${k}}}`, String(v));
  return text;
}

interface Front {
  proc?: Proc;
  targetPort: number;
  metricsUrl?: string;
  note?: string;
}

async function startFront(system: System, originPort: number, smsPort: number, dir: string): Promise<Front> {
  if (system === 'origin') return { targetPort: originPort };
  const port = await freePort();
  if (system === 'nginx') {
    await writeFile(
      path.join(dir, 'nginx.conf'),
      await fill('nginx.conf', { DIR: dir, PORT: port, ORIGIN_PORT: originPort }),
    );
    const proc = start('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], 'nginx');
    await waitForPort(port, proc.child, 'nginx').catch(async (e) => {
      await stop(proc);
      throw new Error(`${e.message}\n${proc.log.join('\n')}`);
    });
    return { proc, targetPort: port };
  }
  if (system === 'haproxy') {
    await writeFile(path.join(dir, 'haproxy.cfg'), await fill('haproxy.cfg', { PORT: port, ORIGIN_PORT: originPort }));
    const proc = start('haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')], 'haproxy');
    await waitForPort(port, proc.child, 'haproxy').catch(async (e) => {
      await stop(proc);
      throw new Error(`${e.message}\n${proc.log.join('\n')}`);
    });
    return { proc, targetPort: port };
  }
  const admin = await freePort();
  let args: string[];
  if (system === 'rempart') {
    // Defaults, except request logs (--quiet): piping a JSON line per request would measure the pipe.
    args = [
      'bin/rempart.js',
      '--upstream',
      `http://127.0.0.1:${originPort}`,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin',
      `127.0.0.1:${admin}`,
      '--quiet',
    ];
  } else {
    // The demo config as written, re-pointed at this run's ports (--config cannot be combined with flags).
    const cfg = parseYaml(await readFile(DEMO_CONFIG, 'utf8')) as Record<string, any>;
    const first = { ...(cfg.listeners?.[0] ?? {}), address: `127.0.0.1:${port}` };
    delete first.tls;
    cfg.listeners = [first];
    for (const u of cfg.upstreams ?? [])
      u.url = `http://127.0.0.1:${/sms/i.test(String(u.name)) ? smsPort : originPort}`;
    cfg.admin = { ...(cfg.admin ?? {}), address: `127.0.0.1:${admin}` };
    cfg.logging = { ...(cfg.logging ?? {}), requests: false };
    const file = path.join(dir, 'rempart.yaml');
    await writeFile(file, stringifyYaml(cfg));
    args = ['bin/rempart.js', '--config', file];
  }
  const proc = start(process.execPath, args, system);
  await waitForPort(port, proc.child, system).catch(async (e) => {
    await stop(proc);
    throw new Error(`${e.message}\n${proc.log.slice(0, 20).join('\n')}`);
  });
  return { proc, targetPort: port, metricsUrl: `http://127.0.0.1:${admin}/metrics` };
}

interface Row {
  scenario: string;
  system: System;
  report?: DrillReport;
  note?: string;
}

function cell(r: Row): string[] {
  if (!r.report) return ['–', '–', '–', '–'];
  const rep = r.report;
  const reach = rep.attack.reachingOriginPct;
  const approx = rep.attack.reachingOriginSource === 'x-origin-header' ? '~' : '';
  const util = rep.origin.available ? rep.origin.utilisationPct : null;
  return [
    rep.legit.total.successPct === null ? '–' : rep.legit.total.successPct.toFixed(1),
    rep.legit.total.p95Ms === null ? '–' : rep.legit.total.p95Ms.toFixed(0),
    reach === null ? 'no attack' : `${approx}${reach.toFixed(1)}`,
    util === null ? '–' : util.toFixed(0),
  ];
}

function table(rows: Row[]): string {
  const lines = [
    '| scenario | system | legit success % | legit p95 ms | attack reaching origin % | origin utilisation % |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const r of rows)
    lines.push(`| ${r.scenario} | ${r.system}${r.note ? ` (${r.note})` : ''} | ${cell(r).join(' | ')} |`);
  return lines.join('\n');
}

function machine(): string {
  const cpu =
    /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? 'unknown CPU';
  let commit = 'uncommitted';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    /* no commit yet */
  }
  return `${os.cpus().length} CPUs (nproc), ${cpu}; Node ${process.version}; git ${commit}`;
}

async function writeResults(markdown: string): Promise<void> {
  const file = path.join(ROOT, 'bench/RESULTS.md');
  const old = existsSync(file) ? await readFile(file, 'utf8') : '# Benchmark results\n';
  const start = old.indexOf('## Drill comparison');
  let next = start >= 0 ? old.indexOf('\n## ', start + 1) : -1;
  if (next < 0) next = old.length;
  const updated =
    start >= 0 ? `${old.slice(0, start)}${markdown}${old.slice(next)}` : `${old.trimEnd()}\n\n${markdown}`;
  await writeFile(file, updated.endsWith('\n') ? updated : `${updated}\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      seconds: { type: 'string', default: '10' },
      scenarios: { type: 'string' },
      systems: { type: 'string' },
      'no-write': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node bench/compare.ts [--seconds 10] [--scenarios a,b] [--systems origin,nginx,haproxy,rempart,rempart-demo] [--no-write]\n',
    );
    return 0;
  }
  const seconds = Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 2 || seconds > 600)
    throw new Error('--seconds must be an integer in [2, 600]');
  const scenarios = values.scenarios
    ? values.scenarios
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : listBuiltins();
  const systems = (values.systems ? values.systems.split(',').map((s) => s.trim()) : [...SYSTEMS]) as System[];
  for (const s of systems)
    if (!SYSTEMS.includes(s)) throw new Error(`unknown system ${s} (known: ${SYSTEMS.join(', ')})`);
  const notes: string[] = [];
  // The comparison is the point: install the proxies from Debian packages when they are missing.
  const wanted: Record<string, string> = {};
  if (systems.includes('nginx')) wanted.nginx = 'nginx';
  if (systems.includes('haproxy')) wanted.haproxy = 'haproxy';
  try {
    ensureDebianTools(wanted);
  } catch (err) {
    notes.push(`apt-get install failed: ${(err as Error).message.split('\n')[0]}`);
  }
  const have = (bin: string) => (bin === 'nginx' ? existsSync(nginxBin()) || haveCmd('nginx') : haveCmd(bin));
  const usable = systems.filter((s) => {
    if ((s === 'nginx' || s === 'haproxy') && !have(s)) {
      notes.push(`${s}: not installed and could not be installed; skipped`);
      return false;
    }
    if (s === 'rempart-demo' && !existsSync(DEMO_CONFIG)) {
      notes.push('rempart-demo: examples/postal/rempart.yaml missing; skipped');
      return false;
    }
    if ((s === 'rempart' || s === 'rempart-demo') && !existsSync(path.join(ROOT, 'bin/rempart.js'))) {
      notes.push(`${s}: bin/rempart.js missing; skipped`);
      return false;
    }
    return true;
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = path.join(ROOT, 'bench/out', `compare-${stamp}`);
  await mkdir(outDir, { recursive: true });
  const rows: Row[] = [];
  let interrupted = false;
  const controller = new AbortController();
  process.on('SIGINT', () => {
    interrupted = true;
    controller.abort();
  });

  for (const scenario of scenarios) {
    for (const system of usable) {
      if (interrupted) break;
      const dir = await mkdtemp(path.join(os.tmpdir(), `compare-${system}-`));
      const originPort = await freePort();
      const smsPort = await freePort(); // the demo config's SMS approvals fallback upstream
      const origin = start(
        process.execPath,
        [
          'examples/postal/origin.ts',
          '--port',
          String(originPort),
          '--workers',
          String(ORIGIN_WORKERS),
          '--service-ms',
          String(ORIGIN_SERVICE_MS),
          '--queue',
          String(ORIGIN_QUEUE),
          '--sms-port',
          String(smsPort),
        ],
        'origin',
      );
      let front: Front | undefined;
      const row: Row = { scenario, system };
      try {
        await waitForPort(originPort, origin.child, 'origin');
        front = await startFront(system, originPort, smsPort, dir);
        process.stderr.write(`${scenario} × ${system}: ${seconds}s… `);
        row.report = await runDrill({
          scenario,
          target: `http://127.0.0.1:${front.targetPort}`,
          seconds,
          quiet: true,
          signal: controller.signal,
          originUrl: `http://127.0.0.1:${originPort}`,
          originWorkers: ORIGIN_WORKERS,
          metricsUrl: front.metricsUrl,
          reportDir: path.join(outDir, `${scenario}-${system}`),
        });
        const c = cell(row);
        process.stderr.write(
          `legit ${c[0]}% p95 ${c[1]} ms, attack→origin ${c[2]}${c[2] === 'no attack' ? '' : '%'}, origin util ${c[3]}%\n`,
        );
      } catch (e) {
        row.note = 'failed';
        notes.push(`${scenario} × ${system}: ${(e as Error).message.split('\n').slice(0, 6).join(' / ')}`);
        process.stderr.write(`failed: ${(e as Error).message.split('\n')[0]}\n`);
      } finally {
        await stop(front?.proc);
        await stop(origin);
        await rm(dir, { recursive: true, force: true });
      }
      rows.push(row);
    }
  }

  const md = [
    '## Drill comparison',
    '',
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${machine()}.`,
    `Reference origin: ${ORIGIN_WORKERS} workers × ${ORIGIN_SERVICE_MS} ms (≈${(ORIGIN_WORKERS * 1000) / ORIGIN_SERVICE_MS} req/s), queue ${ORIGIN_QUEUE}; ` +
      `each run ${seconds} s (scenario attack windows scaled to it), fresh origin and proxy per run; drill, origin and proxy share this machine.`,
    'nginx and HAProxy configurations: bench/compare/. Generated by `node bench/compare.ts' +
      `${values.seconds !== '10' ? ` --seconds ${seconds}` : ''}${values.scenarios ? ` --scenarios ${values.scenarios}` : ''}${values.systems ? ` --systems ${values.systems}` : ''}\`.`,
    '"attack reaching origin" = attack requests the origin counted (x-drill-kind header) / attack requests sent; "~" = origin did not count them, so the share answered with X-Origin (includes proxy cache hits). Slow attacks count connections.',
    '',
    table(rows),
    '',
    ...(notes.length ? ['Notes:', ...notes.map((n) => `- ${n}`), ''] : []),
  ].join('\n');
  process.stdout.write(`\n${md}\n`);
  if (!values['no-write'] && !interrupted) await writeResults(md);
  process.stderr.write(`per-run reports: ${outDir}\n`);
  return rows.some((r) => r.report) ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`compare: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 2;
  },
);
