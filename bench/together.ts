// CPU per proxied request of nginx, the Node floor (bench/floor.ts) and Rempart, all loaded at the same
// time: every system pinned to CPU 1, each driven by its own wrk on CPU 0 with one shared origin, over
// windows of N seconds; per window, each system's utime+stime from /proc per 10,000 requests and its
// ratio to nginx's in that window. This machine is a shared VM whose speed drifts by a third from one
// minute to the next (the same build measured 0.33 and 0.44 CPU s/10k an hour apart on a quiet machine):
// bench/proxy.ts's sequential runs see different moments of it, while here every ratio is taken within one
// window, under the same interference. Latency is not measured here (the systems share a core): use
// bench/proxy.ts for that.
// usage: node bench/together.ts [--windows N] [--seconds S] [--warmup S] [--connections C] [--systems LIST]
//   LIST (default nginx,floor,lean,bare): nginx, floor, lean (the CLI defaults, rate limit and bans off, the
//   level pinned calm: see bench/proxy.ts), bare (lean with every optional phase off), node (the node engine),
//   bare+PHASE (bare with one optional phase back on: admission, cache, challenge, signatures)
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuDelta, snapshot } from './lib/cpu.ts';
import { ensureDebianTools, nginxVersion, originHttp, proxyHttp, startNginx } from './lib/nginx.ts';
import {
  canPin,
  freePort,
  installCleanupHandlers,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { OPTIONAL_PHASES, type OptionalPhase, passThroughConfig } from './lib/pass-through.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { runWrk } from './lib/wrk.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KNOWN = ['nginx', 'floor', 'lean', 'bare', 'node', ...OPTIONAL_PHASES.map((p) => `bare+${p}` as const)] as const;
type Sys = (typeof KNOWN)[number];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f = (x: number, d = 3) => x.toFixed(d);

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      windows: { type: 'string' },
      seconds: { type: 'string' },
      connections: { type: 'string' },
      systems: { type: 'string' },
      warmup: { type: 'string' },
    },
  });
  const windows = Number(values.windows ?? 6);
  const seconds = Number(values.seconds ?? 10);
  const connections = Number(values.connections ?? 64);
  const warmup = Number(values.warmup ?? 10);
  const systems = (values.systems ?? 'nginx,floor,lean,bare').split(',') as Sys[];
  for (const s of systems) if (!KNOWN.includes(s)) throw new Error(`--systems: unknown ${s} (${KNOWN.join(', ')})`);
  if (!systems.includes('nginx')) throw new Error('--systems: nginx is the reference, keep it in the list');
  if (!(windows >= 1 && seconds >= 1 && connections >= 1)) throw new Error('--windows, --seconds, --connections: >= 1');
  const say = (s: string) => process.stderr.write(`${s}\n`);
  installCleanupHandlers();
  ensureDebianTools({ wrk: 'wrk', nginx: 'nginx' }, say);
  const pin = canPin(2);
  const SUT = pin ? '1' : undefined;
  const LOAD = pin ? '0' : undefined;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-together-'));
  await chmod(tmp, 0o755);
  onCleanup(() => rm(tmp, { recursive: true, force: true }));

  const upPort = await freePort();
  const origin = await startNginx({
    name: 'origin',
    dir: path.join(tmp, 'origin'),
    port: upPort,
    cpu: LOAD,
    http: await originHttp(upPort, 100, path.join(tmp, 'origin', 'www')),
  });
  const running: Array<{ id: Sys; port: number; pid: number }> = [];
  for (const id of systems) {
    const port = await freePort();
    if (id === 'nginx') {
      const n = await startNginx({
        name: 'nginx',
        dir: path.join(tmp, 'nginx'),
        port,
        cpu: SUT,
        http: proxyHttp(port, upPort),
      });
      running.push({ id, port, pid: n.pid });
      continue;
    }
    let args: string[];
    if (id === 'floor') args = [path.join(ROOT, 'bench', 'floor.ts'), String(port), String(upPort)];
    else {
      const file = path.join(tmp, `${id}.json`);
      await writeFile(
        file,
        passThroughConfig({
          port,
          originPort: upPort,
          engine: id === 'node' ? 'node' : 'lean',
          bare: id.startsWith('bare'),
          with: id.startsWith('bare+') ? [id.slice(5) as OptionalPhase] : [],
          logLevel: 'warn',
        }),
      );
      args = [path.join(ROOT, 'bin', 'rempart.js'), '--config', file];
    }
    const proc = startProcess(id, process.execPath, args, { cpu: SUT, cwd: ROOT });
    await waitForPort(port, proc, 20_000);
    running.push({ id, port, pid: proc.pid });
  }
  const load = (secs: number) =>
    Promise.all(
      running.map((s) =>
        runWrk({ url: `http://127.0.0.1:${s.port}/`, connections, seconds: secs, cpu: LOAD, dir: tmp, seed: s.port }),
      ),
    );
  say(`warm-up ${warmup} s, then ${windows} windows of ${seconds} s, ${running.map((s) => s.id).join(', ')} at once`);
  await load(warmup);
  const per: Map<Sys, { cpu: number[]; user: number[]; ratio: number[]; rps: number[]; bad: number }> = new Map(
    running.map((s) => [s.id, { cpu: [], user: [], ratio: [], rps: [], bad: 0 }]),
  );
  for (let w = 1; w <= windows; w++) {
    const before = running.map((s) => snapshot([s.pid]));
    const results = await load(seconds);
    const after = running.map((s) => snapshot([s.pid]));
    const cpu10k = running.map((_, i) => {
      const d = cpuDelta(before[i]!, after[i]!);
      const n = results[i]!.requests;
      return { all: (d.cpuSeconds / n) * 1e4, user: (d.userSeconds / n) * 1e4 };
    });
    const ng = cpu10k[running.findIndex((s) => s.id === 'nginx')]!.all;
    const line: string[] = [];
    running.forEach((s, i) => {
      const p = per.get(s.id)!;
      p.cpu.push(cpu10k[i]!.all);
      p.user.push(cpu10k[i]!.user);
      p.ratio.push(cpu10k[i]!.all / ng);
      p.rps.push(results[i]!.rps);
      p.bad += results[i]!.errors.status;
      line.push(`${s.id} ${f(cpu10k[i]!.all)} (${f(cpu10k[i]!.all / ng, 2)}x)`);
    });
    say(`window ${w}: ${line.join('  ')}`);
  }
  const info = machineInfo();
  const out = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${info.nproc} CPUs, ${info.cpuModel}, Linux ${info.kernel} · Node ${info.node} · nginx ${nginxVersion()} · git ${gitCommit(ROOT)}`,
    `Command: \`node bench/together.ts ${process.argv.slice(2).join(' ')}\` · load average after ${info.loadavg}`,
    '',
    '| system | CPU s/10k, median [min–max] | user s/10k | / nginx, median of per-window ratios [min–max] | req/s (sharing one core) | non-2xx |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...running.map((s) => {
      const p = per.get(s.id)!;
      return `| ${s.id} | ${f(median(p.cpu))} [${f(Math.min(...p.cpu))}–${f(Math.max(...p.cpu))}] | ${f(median(p.user))} | ${f(median(p.ratio), 2)} [${f(Math.min(...p.ratio), 2)}–${f(Math.max(...p.ratio), 2)}] | ${Math.round(median(p.rps))} | ${p.bad} |`;
    }),
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  await origin.stop();
  return 0;
}

main()
  .then(async (code) => {
    await stopAll();
    process.exit(code);
  })
  .catch(async (err) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    await stopAll();
    process.exit(1);
  });
