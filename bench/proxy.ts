// Pass-through benchmark: the same wrk load against the bare origin, nginx as a plain reverse proxy and
// Rempart in pass-through with each of its HTTP/1.1 engines (lean and node), in one run, interleaved.
// Prints req/s, CPU seconds per 10,000 requests, p50/p99 at peak, p99 at one common fixed rate (half of
// the slowest Rempart engine's peak) and the p99 each proxy adds over the bare origin at that rate, plus
// each engine's ratios to nginx against the targets; writes the table to bench/RESULTS.md.
// usage: node bench/proxy.ts [--seconds N] [--connections C] [--size BYTES] [--warmup N] [--rate R]
//        [--rounds K] [--engines lean,node] [--floor] [--bare] [--no-write] [--no-pin] [--keep] [--baseline DIR]
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuBusy, cpuDelta, cpuTimes, snapshot } from './lib/cpu.ts';
import { ensureDebianTools, nginxVersion, originHttp, proxyHttp, startNginx } from './lib/nginx.ts';
import {
  canPin,
  freePort,
  have,
  installCleanupHandlers,
  isStopping,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
  type Managed,
} from './lib/procs.ts';
import { passThroughConfig } from './lib/pass-through.ts';
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { pacingFor, runWrk, wrkVersion, type WrkResult } from './lib/wrk.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
const HEADING = '## Pass-through proxy';
const CPU_TARGET = 1.3; // Rempart CPU per request ≤ 1.3 × nginx's (issue 17)
const ADDED_P99_TARGET_MS = 1; // Rempart adds < 1 ms at p99 at half of peak throughput

const USAGE = `usage: node bench/proxy.ts [options]   (also: npm run bench -- [options])
  --seconds N       length of each measured run (default 10)
  --warmup N        closed-loop warm-up before each peak run, seconds (default 2)
  --connections C   wrk connections (default 64)
  --size BYTES      origin response body size (default 100)
  --rate R          fixed rate for the latency runs (default: half of the slowest engine's measured peak)
  --rounds K        repeat every run K times, systems interleaved, and report medians (default 1)
  --engines LIST    Rempart engines to measure, each its own process (default lean,node)
  --floor           also measure bench/floor.ts: the least a Node proxy on the public socket API spends
                    (no parsing to speak of, no checks, no phases), to split Rempart's cost into Node's and its own
  --bare            also measure the lean engine with every optional phase off (no admission, cache, challenge,
                    signatures; level pinned calm): what the engine and the pipeline cost without the defences
  --no-pin          do not pin processes to CPUs with taskset
  --no-write        do not update bench/RESULTS.md
  --keep            keep the temp dir (nginx configs, logs, wrk scripts)
  --baseline DIR    also measure the Rempart of another checkout (e.g. a git worktree of an older
                    commit), interleaved in the same rounds, for a before/after in one run
`;

type Engine = 'lean' | 'node';
type SystemId = 'origin' | 'nginx' | 'rempart-lean' | 'rempart-node' | 'baseline' | 'floor' | 'rempart-bare';
const ENGINES: readonly Engine[] = ['lean', 'node'];
interface RunFigures {
  wrk: WrkResult;
  /** CPU seconds of the measured system (origin for 'origin', proxy otherwise). */
  cpu: number;
  /** User and system parts of `cpu`. */
  user: number;
  sys: number;
  wall: number;
  /** CPU seconds of the upstream origin during the run (proxies only). */
  upstreamCpu: number;
  busy: Map<number, number>;
}
interface SystemResult {
  id: SystemId;
  label: string;
  peaks: RunFigures[];
  paceds: RunFigures[];
}

function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

function num(v: string | undefined, name: string, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number (got ${v})`);
  return n;
}

const f = (n: number, d: number) => (Number.isFinite(n) ? n.toFixed(d) : '—');
const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US').replace(/,/g, ' ') : '—');

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      size: { type: 'string' },
      rate: { type: 'string' },
      rounds: { type: 'string' },
      'no-pin': { type: 'boolean' },
      'no-write': { type: 'boolean' },
      keep: { type: 'boolean' },
      floor: { type: 'boolean' },
      bare: { type: 'boolean' },
      baseline: { type: 'string' },
      engines: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const seconds = num(values.seconds, 'seconds', 10);
  const warmup = values.warmup === '0' ? 0 : num(values.warmup, 'warmup', 2);
  const connections = Math.round(num(values.connections, 'connections', 64));
  const size = Math.round(num(values.size, 'size', 100));
  const rounds = Math.round(num(values.rounds, 'rounds', 1));
  const fixedRate = values.rate === undefined ? undefined : num(values.rate, 'rate', 1);
  const engines = (values.engines ?? 'lean,node').split(',').map((e) => e.trim());
  for (const e of engines)
    if (!ENGINES.includes(e as Engine)) throw new Error(`--engines: unknown engine ${e} (lean or node)`);
  if (engines.length === 0 || new Set(engines).size !== engines.length)
    throw new Error('--engines: one or both of lean,node, each once');
  const command = ['node bench/proxy.ts', ...process.argv.slice(2)].join(' ');
  const say = (s: string) => process.stderr.write(`${s}\n`);

  installCleanupHandlers();
  ensureDebianTools({ wrk: 'wrk', nginx: 'nginx' }, say);
  if (!have('wrk')) throw new Error('wrk is not available');

  // CPU layout: the system under test alone on CPU 1; wrk and the upstream origin share CPU 0.
  const pin = !values['no-pin'] && canPin(2);
  const SUT_CPU = pin ? '1' : undefined;
  const LOAD_CPU = pin ? '0' : undefined;
  if (!values['no-pin'] && !pin) say('note: taskset missing or fewer than 2 CPUs: running unpinned');

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-proxy-'));
  await chmod(tmp, 0o755); // nginx workers run as an unprivileged user when started as root
  if (!values.keep) onCleanup(() => rm(tmp, { recursive: true, force: true }));
  else say(`keeping ${tmp}`);

  const info = machineInfo();
  const loadBefore = info.loadavg;
  // how busy the machine is before we add anything (other sessions share it)
  const idle0 = cpuTimes();
  await new Promise((r) => setTimeout(r, 1000));
  const busyBefore = cpuBusy(idle0, cpuTimes());
  const busyBeforeText = [...busyBefore].map(([c, b]) => `CPU${c} ${f(b * 100, 0)}%`).join(', ');
  say(`load average before: ${loadBefore}; busy before start: ${busyBeforeText}`);

  // Upstream origin used by both proxies (CPU 0, with wrk) and an identical origin measured bare (CPU 1).
  const upPort = await freePort();
  const upstream = await startNginx({
    name: 'origin',
    dir: path.join(tmp, 'origin'),
    port: upPort,
    cpu: LOAD_CPU,
    http: await originHttp(upPort, size, path.join(tmp, 'origin', 'www')),
  });
  const barePort = await freePort();
  const bare = await startNginx({
    name: 'origin-bare',
    dir: path.join(tmp, 'origin-bare'),
    port: barePort,
    cpu: SUT_CPU,
    http: await originHttp(barePort, size, path.join(tmp, 'origin-bare', 'www')),
  });
  const nginxPort = await freePort();
  const nginx = await startNginx({
    name: 'nginx-proxy',
    dir: path.join(tmp, 'nginx-proxy'),
    port: nginxPort,
    cpu: SUT_CPU,
    http: proxyHttp(nginxPort, upPort),
  });
  const rempartConfig = (port: number, engine?: Engine, bare = false) =>
    passThroughConfig({ port, originPort: upPort, engine, bare });
  const commitLabel = gitCommit(ROOT);
  const systems: Array<SystemResult & { port: number; pid: number; proc: Managed }> = [
    { id: 'origin', label: 'origin (bare)', port: barePort, pid: bare.pid, proc: bare.proc, peaks: [], paceds: [] },
    { id: 'nginx', label: 'nginx proxy', port: nginxPort, pid: nginx.pid, proc: nginx.proc, peaks: [], paceds: [] },
  ];
  for (const engine of engines as Engine[]) {
    // one process per engine, both idle while the other is measured
    const port = await freePort();
    const file = path.join(tmp, `rempart-${engine}.json`);
    await writeFile(file, rempartConfig(port, engine));
    const proc = startProcess(
      `rempart-${engine}`,
      process.execPath,
      [path.join(ROOT, 'bin', 'rempart.js'), '--config', file],
      { cpu: SUT_CPU, cwd: ROOT },
    );
    await waitForPort(port, proc, 20_000);
    systems.push({
      id: `rempart-${engine}`,
      label: `rempart ${engine} @ ${commitLabel}`,
      port,
      pid: proc.pid,
      proc,
      peaks: [],
      paceds: [],
    });
  }
  if (values.bare) {
    const port = await freePort();
    const file = path.join(tmp, 'rempart-bare.json');
    await writeFile(file, rempartConfig(port, 'lean', true));
    const proc = startProcess(
      'rempart-bare',
      process.execPath,
      [path.join(ROOT, 'bin', 'rempart.js'), '--config', file],
      {
        cpu: SUT_CPU,
        cwd: ROOT,
      },
    );
    await waitForPort(port, proc, 20_000);
    systems.push({
      id: 'rempart-bare',
      label: `rempart lean, optional phases off @ ${commitLabel}`,
      port,
      pid: proc.pid,
      proc,
      peaks: [],
      paceds: [],
    });
  }
  if (values.floor) {
    const port = await freePort();
    const proc = startProcess(
      'floor',
      process.execPath,
      [path.join(ROOT, 'bench', 'floor.ts'), String(port), String(upPort)],
      { cpu: SUT_CPU, cwd: ROOT },
    );
    await waitForPort(port, proc, 20_000);
    systems.push({
      id: 'floor',
      label: 'node floor (bench/floor.ts)',
      port,
      pid: proc.pid,
      proc,
      peaks: [],
      paceds: [],
    });
  }
  if (values.baseline !== undefined) {
    // The same config, run by another checkout's CLI: before/after of a change, in the same rounds.
    const dir = path.resolve(values.baseline);
    const basePort = await freePort();
    const baseConfig = path.join(tmp, 'rempart-baseline.json');
    // no server.engine: an older checkout may not know it; it runs its own default engine
    await writeFile(baseConfig, rempartConfig(basePort));
    const base = startProcess(
      'rempart-baseline',
      process.execPath,
      [path.join(dir, 'bin', 'rempart.js'), '--config', baseConfig],
      { cpu: SUT_CPU, cwd: dir },
    );
    await waitForPort(basePort, base, 20_000);
    systems.push({
      id: 'baseline',
      label: `rempart @ ${gitCommit(dir)} (baseline)`,
      port: basePort,
      pid: base.pid,
      proc: base,
      peaks: [],
      paceds: [],
    });
  }

  // sanity: every system answers 200 with the origin's body
  for (const s of systems) {
    const res = await fetch(`http://127.0.0.1:${s.port}/`);
    const body = await res.arrayBuffer();
    if (res.status !== 200 || body.byteLength !== size)
      throw new Error(`${s.label}: expected 200 with ${size} bytes, got ${res.status} with ${body.byteLength} bytes`);
  }

  const measure = async (
    s: (typeof systems)[number],
    run: { connections: number; periodMs?: number },
  ): Promise<RunFigures> => {
    const roots = [s.pid];
    const b = snapshot(roots);
    const bu = snapshot([upstream.pid]);
    const bt = cpuTimes();
    const wrk = await runWrk({
      url: `http://127.0.0.1:${s.port}/`,
      connections: run.connections,
      seconds,
      cpu: LOAD_CPU,
      dir: tmp,
      periodMs: run.periodMs,
    });
    const at = cpuTimes();
    const a = snapshot(roots);
    const au = snapshot([upstream.pid]);
    const d = cpuDelta(b, a);
    for (const p of [s.proc, upstream.proc]) {
      if (p.child.exitCode !== null || p.child.signalCode !== null)
        throw new Error(
          `${p.name} exited (${p.child.exitCode ?? p.child.signalCode}) during the run\n${p.log.slice(-20).join('\n')}`,
        );
    }
    return {
      wrk,
      cpu: d.cpuSeconds,
      user: d.userSeconds,
      sys: d.sysSeconds,
      wall: d.wallSeconds,
      upstreamCpu: s.id === 'origin' ? 0 : cpuDelta(bu, au).cpuSeconds,
      busy: cpuBusy(bt, at),
    };
  };

  const tag = (k: number) => (rounds > 1 ? ` (round ${k + 1}/${rounds})` : '');
  // 1. peak: closed loop, after a warm-up (also warms V8's JIT for Rempart); rounds interleave the systems
  for (let k = 0; k < rounds; k++) {
    for (const s of systems) {
      if (warmup > 0 && k === 0) {
        say(`${s.label}: warm-up ${warmup} s`);
        await runWrk({ url: `http://127.0.0.1:${s.port}/`, connections, seconds: warmup, cpu: LOAD_CPU, dir: tmp });
      }
      say(`${s.label}: peak, ${connections} connections, ${seconds} s${tag(k)}`);
      const r = await measure(s, { connections });
      s.peaks.push(r);
      say(`  ${int(r.wrk.rps)} req/s, p99 ${f(r.wrk.latency.p99, 2)} ms`);
    }
  }

  // 2. latency at one fixed rate for all: half of the slowest Rempart engine's (median) peak, so that
  // rate is at most half of every engine's peak
  const rempartPeak = Math.min(
    ...systems.filter((s) => s.id.startsWith('rempart-')).map((s) => median(s.peaks.map((r) => r.wrk.rps))),
  );
  const rate = fixedRate ?? rempartPeak / 2;
  const pacing = pacingFor(rate, connections);
  for (let k = 0; k < rounds; k++) {
    for (const s of systems) {
      say(
        `${s.label}: fixed rate ≈${int(rate)} req/s (${pacing.connections} connections × 1 request per ${pacing.periodMs} ms + latency), ${seconds} s${tag(k)}`,
      );
      const r = await measure(s, pacing);
      s.paceds.push(r);
      say(`  ${int(r.wrk.rps)} req/s, p99 ${f(r.wrk.latency.p99, 2)} ms`);
      // A gateway answering itself (a challenge, a refusal) is not a pass-through figure: say what it
      // logged (its level changes and refusals are warnings, kept in its last 400 log lines).
      if (r.wrk.errors.status > r.wrk.requests / 100) {
        say(`  ${r.wrk.errors.status} of ${r.wrk.requests} answers not 2xx; the gateway's last warnings:`);
        for (const line of s.proc.log
          .filter((l) => l.includes('"level":"warn"') || l.includes('"level":"error"'))
          .slice(-8))
          say(`    ${line.slice(0, 600)}`);
      }
    }
  }
  const loadAfter = machineInfo().loadavg;

  // ---- report
  const per10k = (r: RunFigures, cpu = r.cpu) => (cpu / r.wrk.requests) * 10_000;
  // per system: medians over rounds (a single round: its own figures)
  const fig = (s: SystemResult) => ({
    rps: median(s.peaks.map((r) => r.wrk.rps)),
    cpu10k: median(s.peaks.map((r) => per10k(r))),
    p50: median(s.peaks.map((r) => r.wrk.latency.p50)),
    p99: median(s.peaks.map((r) => r.wrk.latency.p99)),
    pacedP99: median(s.paceds.map((r) => r.wrk.latency.p99)),
  });
  const figs = new Map(systems.map((s) => [s.id, fig(s)]));
  const originPaced = figs.get('origin')!.pacedP99;
  const rateLabel = int(rate);
  const header = [
    'system',
    'req/s',
    'CPU s/10k req',
    'p50 ms',
    'p99 ms',
    `p99 @ ${rateLabel} req/s`,
    'added p99 vs origin',
  ];
  const rows = systems.map((s) => {
    const g = figs.get(s.id)!;
    const add = g.pacedP99 - originPaced;
    return [
      s.label,
      int(g.rps),
      f(g.cpu10k, 3),
      f(g.p50, 2),
      f(g.p99, 2),
      f(g.pacedP99, 2),
      s.id === 'origin' ? '—' : `${add >= 0 ? '+' : ''}${f(add, 2)} ms`,
    ];
  });
  const table = markdownTable(header, rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);

  const ng = figs.get('nginx')!;
  // the added-latency verdict compares two runs: unreliable when either lost much of CPU 1 to other work
  const otherShare = (r: RunFigures) => (r.busy.get(1) ?? 0) - r.cpu / r.wall;
  const ratios: string[] = [];
  for (const engine of engines) {
    const s = systems.find((x) => x.id === `rempart-${engine}`)!;
    const rp = figs.get(s.id)!;
    const thrRatio = rp.rps / ng.rps;
    const cpuRatio = rp.cpu10k / ng.cpu10k;
    const added = rp.pacedP99 - originPaced;
    const pacedNoise = Math.max(...[systems[0]!, s].flatMap((x) => x.paceds).map(otherShare));
    const addedCaveat =
      pin && (pacedNoise > 0.2 || added < 0)
        ? ` (unreliable: up to ${f(Math.max(0, pacedNoise) * 100, 0)}% of CPU 1 went to other processes during these runs${added < 0 ? '; a negative value means the bare origin run was disturbed more' : ''})`
        : '';
    ratios.push(
      `- Rempart ${engine}/nginx throughput: ${f(thrRatio, 2)}× (${int(rp.rps)} vs ${int(ng.rps)} req/s)`,
      `- Rempart ${engine}/nginx CPU per request: ${f(cpuRatio, 2)}× (${f(rp.cpu10k, 3)} vs ${f(ng.cpu10k, 3)} CPU s/10k) — target ≤ ${CPU_TARGET}×: **${cpuRatio <= CPU_TARGET ? 'met' : 'not met'}**`,
      `- Rempart ${engine} added p99 at ${rateLabel} req/s (${fixedRate ? 'fixed by --rate' : "half of the slowest engine's peak"}): ${f(added, 2)} ms — target < ${ADDED_P99_TARGET_MS} ms: **${added < ADDED_P99_TARGET_MS ? 'met' : 'not met'}**${addedCaveat}`,
    );
  }
  const lean = figs.get('rempart-lean');
  const node = figs.get('rempart-node');
  if (lean !== undefined && node !== undefined)
    ratios.push(
      `- lean/node engine: CPU per request ${f(lean.cpu10k / node.cpu10k, 2)}×, throughput ${f(lean.rps / node.rps, 2)}×`,
    );
  const rp = lean ?? node!;
  for (const id of ['rempart-bare', 'floor'] as const) {
    const x = figs.get(id);
    if (x === undefined) continue;
    const name = id === 'floor' ? 'Node floor (bench/floor.ts)' : 'Rempart lean, optional phases off';
    ratios.push(
      `- ${name}/nginx CPU per request: ${f(x.cpu10k / ng.cpu10k, 2)}× (${f(x.cpu10k, 3)} vs ${f(ng.cpu10k, 3)} CPU s/10k); Rempart ${lean !== undefined ? 'lean' : 'node'}/${id === 'floor' ? 'floor' : 'this'}: ${f(rp.cpu10k / x.cpu10k, 2)}×`,
    );
  }
  const bl = figs.get('baseline');
  if (bl !== undefined)
    ratios.push(
      `- Rempart ${lean !== undefined ? 'lean' : 'node'} against the baseline checkout: CPU per request ${f(rp.cpu10k / bl.cpu10k, 2)}× (${f(rp.cpu10k, 3)} vs ${f(bl.cpu10k, 3)} CPU s/10k), throughput ${f(rp.rps / bl.rps, 2)}× (${int(rp.rps)} vs ${int(bl.rps)} req/s)`,
    );

  // details: achieved rates, errors, CPU use per run
  const dHeader = [
    'system',
    'run',
    ...(rounds > 1 ? ['round'] : []),
    'req/s',
    'requests',
    'non-2xx',
    'socket errors c/r/w/t',
    'SUT CPU % of a core',
    'CPU s/10k',
    'user/sys s/10k',
    'upstream CPU s/10k',
    'CPU0 busy %',
    'CPU1 busy %',
    'p50 ms',
    'p90 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
  ];
  const dRows: string[][] = [];
  const notes: string[] = [];
  for (const s of systems) {
    const runs = [
      ...s.peaks.map((r, k) => ['peak', r, k] as const),
      ...s.paceds.map((r, k) => [`@${rateLabel}`, r, k] as const),
    ];
    for (const [name, r, k] of runs) {
      const e = r.wrk.errors;
      const where = `${s.label} ${name}${rounds > 1 ? ` round ${k + 1}` : ''}`;
      dRows.push([
        s.label,
        name,
        ...(rounds > 1 ? [String(k + 1)] : []),
        int(r.wrk.rps),
        String(r.wrk.requests),
        String(e.status),
        `${e.connect}/${e.read}/${e.write}/${e.timeout}`,
        f((r.cpu / r.wall) * 100, 0),
        f(per10k(r), 3),
        `${f(per10k(r, r.user), 3)}/${f(per10k(r, r.sys), 3)}`,
        s.id === 'origin' ? '—' : f(per10k(r, r.upstreamCpu), 3),
        f((r.busy.get(0) ?? NaN) * 100, 0),
        f((r.busy.get(1) ?? NaN) * 100, 0),
        f(r.wrk.latency.p50, 2),
        f(r.wrk.latency.p90, 2),
        f(r.wrk.latency.p99, 2),
        f(r.wrk.latency.p999, 2),
        f(r.wrk.latency.max, 1),
      ]);
      if (e.status > 0) notes.push(`${where}: ${e.status} non-2xx/3xx responses`);
      if (e.connect + e.read + e.write + e.timeout > 0)
        notes.push(
          `${where}: socket errors connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}`,
        );
      if (pin) {
        const own = r.cpu / r.wall;
        const other = (r.busy.get(1) ?? 0) - own;
        if (other > 0.1)
          notes.push(
            `${where}: ~${f(other * 100, 0)}% of CPU 1 (the system under test's core) went to other processes on the machine (or interrupt work) during the run`,
          );
        if (name === 'peak' && own < 0.9) {
          const cpu0 = r.busy.get(0) ?? 0;
          const cpu1 = r.busy.get(1) ?? 0;
          if (cpu1 > 0.95)
            notes.push(
              `${where}: the system under test got only ${f(own * 100, 0)}% of its core while CPU 1 was ${f(cpu1 * 100, 0)}% busy: this peak is limited by contention from other processes, not by the system alone`,
            );
          else if (cpu0 > 0.95)
            notes.push(
              `${where}: the system under test used ${f(own * 100, 0)}% of its core while CPU 0 (wrk + upstream origin) was saturated: the load side limited this peak`,
            );
        }
      }
    }
  }
  const details = markdownTable(dHeader, dRows, ['l', 'l', ...dHeader.slice(2).map(() => 'r' as const)]);
  const maxOther = Math.max(...systems.flatMap((s) => [...s.peaks, ...s.paceds]).map(otherShare));
  const noisy =
    pin && maxOther > 0.2
      ? `**Noisy machine:** up to ${f(maxOther * 100, 0)}% of CPU 1 went to other processes during some runs (see the details); latency and throughput figures are disturbed, CPU per request much less so.${rounds > 1 ? '' : ' Repeat with `--rounds 3` for medians.'}`
      : '';
  const summaryNote =
    rounds > 1
      ? `Figures in the main table are medians over ${rounds} rounds (systems interleaved in each round); every run is in the details.`
      : '';

  const date = new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
  const commit = commitLabel;
  const setup = [
    `${date} · ${info.nproc} CPUs (nproc), ${info.cpuModel}, Linux ${info.kernel} · Node ${info.node} · nginx ${nginxVersion()} · wrk ${wrkVersion()} · git ${commit}`,
    `Command: \`${command}\` · load average before ${loadBefore}, after ${loadAfter} · CPUs busy with other work in the second before the start: ${busyBeforeText}`,
    '',
    `Load: wrk, 1 thread, ${connections} connections, ${seconds} s per run on \`GET /\`; peak runs are closed-loop after a ${warmup} s warm-up; ` +
      `the fixed-rate runs hold ≈${rateLabel} req/s (${pacing.connections} connections, each pausing ${pacing.periodMs} ms between a response and its next request — a wrk Lua delay(), so latency is measured per request without coordinated-omission correction).`,
    `Origin: nginx, 1 worker, ${size <= 2048 ? '`return 200`' : 'a static file'} with a ${size}-byte body. "origin (bare)" is that origin measured directly; both proxies forward to an identical origin instance.`,
    `nginx proxy: 1 worker, \`proxy_pass\` to an upstream with \`keepalive 64\`, \`proxy_http_version 1.1\`, \`Connection ""\`. ` +
      `Rempart: one process per engine (\`server.engine: lean\` / \`node\`, both started at once, each idle while another system is measured), the CLI's default config (\`--upstream … --admin off --quiet\`) written as a file with \`defense.rateLimit.mode: off\`, \`defense.bans.mode: off\` and \`defense.level.override: calm\` (wrk is one address far above the default 50 req/s per address, and a flood to the level detector once its 60 s warm-up is over; the detector still observes every request and every other defence phase still runs on every request: this is the "every defence phase on" configuration). Request logging off on both sides (nginx \`access_log off\`, Rempart \`--quiet\`); keep-alive up to 1,000,000 requests per connection on every nginx.`,
    pin
      ? "CPU pinning (taskset): the system under test (bare origin, nginx proxy or Rempart, with all its threads) alone on CPU 1; wrk and the proxies' upstream origin share CPU 0. All systems stay running during the whole benchmark; only the one under load is busy. Pinning does not keep other processes on the machine off CPU 1: the details show how busy each CPU was."
      : 'No CPU pinning: all processes share all CPUs.',
    ...(values.bare
      ? [
          '"optional phases off": the same lean gateway with upstream admission off, the route\'s cache off, challenges and signatures off and the level pinned calm; identification, routing, the edge checks, the level\'s observation, exfiltration and failover bookkeeping still run.',
        ]
      : []),
    ...(values.floor
      ? [
          '"node floor": bench/floor.ts, the least a proxy on Node\'s public socket API spends (net streams, one `data` event per client read, upstream reads through `onread` into one buffer, one write per message, the origin\'s Content-Length trusted, nothing checked): what Node and the kernel cost before any gateway logic.',
        ]
      : []),
    'CPU s/10k req = utime+stime from /proc of the system under test (nginx master + workers; the Rempart process, all threads; the bare origin\'s nginx) during the run, per 10,000 requests. "added p99" = p99 through the proxy minus the bare origin\'s p99 at the same rate.',
  ];

  const body = [
    ...setup,
    '',
    table,
    ...(summaryNote ? ['', summaryNote] : []),
    ...(noisy ? ['', noisy] : []),
    '',
    ...ratios,
    '',
    'Per-run details:',
    '',
    details,
    ...(notes.length ? ['', 'Notes:', ...notes.map((n) => `- ${n}`)] : []),
  ].join('\n');

  process.stdout.write(`\n${HEADING}\n\n${body}\n`);
  if (!values['no-write']) {
    upsertSection(RESULTS, HEADING, body);
    say(`\nwrote ${path.relative(ROOT, RESULTS)} (section "${HEADING}")`);
  }
  return 0;
}

main().then(
  async (code) => {
    await stopAll();
    process.exit(code);
  },
  async (err) => {
    if (isStopping()) return; // interrupted: the signal handler stops children and exits
    process.stderr.write(`bench/proxy: ${err?.stack ?? err}\n`);
    await stopAll();
    process.exit(1);
  },
);
