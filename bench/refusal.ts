// The cost of a request Rempart answers itself, against one it proxies (issue 17: a refused request
// should cost at most 0.2× a proxied one, in-process). For each engine (lean, node), one Rempart process
// per kind, all started at once and measured in interleaved rounds under the same wrk load, pinned:
//   proxied  bench/proxy.ts's config (every defence phase on, rate limit and bans off): 200 from the origin
//   429      a rate-limit rule on the address at 0.001/s, burst 1: every request of the load is refused
//   403      the attack level pinned to under_attack (defense.level.override): wrk is an unknown client,
//            every request gets the proof-of-work challenge page
//   503      admission static, 1 slot, a queue of 1 entry, in front of an origin that accepts and never
//            answers: one wrk connection holds the slot, one waits in the queue, the rest are shed
// Bans are off everywhere: with them the refused address would be banned and dropped at accept, which
// is another (cheaper) cost. CPU s per 10,000 responses of the Rempart process (utime+stime from /proc).
//
// "In-process" (issue 17's goal, refused ≤ 0.2× proxied) is read two ways, both in the table: the CPU of
// the gateway process per response, kernel included (utime+stime: what a core spends for it; wrk and the
// origin are other processes and not counted), and its user CPU alone (utime: Rempart's JS, V8, GC and
// libuv, without the socket syscalls, which cost nginx the same). A --cpu-prof of one system splits the
// user part further (socket write, engine, phases, crypto).
//
// What the ratio can be: per request on a keep-alive connection, a refusal costs the kernel one read
// and one write on the client socket; a proxied request two of each (client and origin sockets). The
// `nginx` engine measures that floor with the same load: nginx proxying (keep-alive upstream) against
// nginx refusing with `limit_req` (429), so the table says what ratio the same syscalls allow.
// `--pipeline N` sends N requests per write on each connection (what an attacker does: the syscalls
// are then shared by N answers and the process's own work per request is what is left).
// `--trees a,b` runs the Rempart systems of each checkout side by side in the same rounds (before/after).
// usage: node bench/refusal.ts [--seconds N] [--warmup N] [--connections C] [--rounds K]
//        [--engines lean,node,nginx] [--pipeline N] [--trees dir,dir] [--no-pin] [--no-write] [--keep]
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuBusy, cpuDelta, cpuTimes, snapshot } from './lib/cpu.ts';
import { ensureDebianTools, originHttp, proxyHttp, startNginx } from './lib/nginx.ts';
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
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { runWrk, wrkVersion, type WrkResult } from './lib/wrk.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
const HEADING = '## Cost of a refused request';
const TARGET = 0.2; // refused/proxied CPU per request

type Engine = 'lean' | 'node' | 'nginx';
type Kind = 'proxied' | '429' | '403' | '403-page' | '503';
const KINDS: readonly Kind[] = ['proxied', '429', '403', '403-page', '503'];
// The 403 answer is JSON unless the request accepts text/html (core/html.ts wantsHtml): wrk sends no
// Accept, so the page is measured with a browser's Accept on every request of that load.
const HTML_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const headersFor = (kind: Kind) => (kind === '403-page' ? { accept: HTML_ACCEPT } : undefined);
const EXPECT: Record<Kind, { status: number; code: string }> = {
  proxied: { status: 200, code: '' },
  '429': { status: 429, code: 'RMP_ERR_RATE_LIMITED' },
  '403': { status: 403, code: 'RMP_ERR_CHALLENGE' },
  '403-page': { status: 403, code: '' },
  '503': { status: 503, code: 'RMP_ERR_ADMISSION_SHED' },
};

interface Run {
  wrk: WrkResult;
  cpu: number;
  /** User-mode CPU seconds (the process's own code: JS, V8, GC, libuv), without the kernel's socket work. */
  user: number;
  wall: number;
  busy1: number;
}
interface System {
  /** The checkout it runs from (its short name in labels; '' for nginx). */
  tree: string;
  engine: Engine;
  kind: Kind;
  label: string;
  port: number;
  proc: Managed;
  runs: Run[];
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

const NGINX_KINDS: readonly Kind[] = ['proxied', '429'];

/** nginx as bench/proxy.ts runs it (proxyHttp), and for `429` the same with limit_req refusing every request. */
function nginxHttp(port: number, upstreamPort: number, kind: Kind): string {
  if (kind !== '429') return proxyHttp(port, upstreamPort);
  return `limit_req_zone $binary_remote_addr zone=bench:1m rate=1r/m;
upstream origin {
  server 127.0.0.1:${upstreamPort};
  keepalive 64;
  keepalive_requests 1000000;
}
server {
  listen 127.0.0.1:${port} backlog=4096;
  location / {
    limit_req zone=bench nodelay;
    limit_req_status 429;
    limit_req_log_level info;
    proxy_pass http://origin;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
  }
}`;
}

// An origin that accepts connections and never answers (the 503 case's held upstream).
const HOLDING_ORIGIN = `const net = require('node:net');
net.createServer((s) => { s.on('error', () => {}); s.resume(); }).listen(Number(process.argv[1]), '127.0.0.1');`;

/** One GET; resolves with status, body and the error code header, or a timeout. */
async function probe(
  port: number,
  headers?: Record<string, string>,
  ms = 3000,
): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(ms), headers });
  return { status: res.status, body: await res.text() };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      rounds: { type: 'string' },
      engines: { type: 'string' },
      pipeline: { type: 'string' },
      trees: { type: 'string' },
      'no-pin': { type: 'boolean' },
      'no-write': { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node bench/refusal.ts [--seconds N (10)] [--warmup N (2)] [--connections C (64)] [--rounds K (3)]\n' +
        '       [--engines lean,node,nginx] [--pipeline N (1)] [--trees dir,dir (this one)] [--no-pin] [--no-write] [--keep]\n',
    );
    return 0;
  }
  const seconds = num(values.seconds, 'seconds', 10);
  const warmup = values.warmup === '0' ? 0 : num(values.warmup, 'warmup', 2);
  const connections = Math.round(num(values.connections, 'connections', 64));
  const rounds = Math.round(num(values.rounds, 'rounds', 3));
  const engines = (values.engines ?? 'lean,node,nginx').split(',').map((e) => e.trim()) as Engine[];
  for (const e of engines)
    if (e !== 'lean' && e !== 'node' && e !== 'nginx') throw new Error(`--engines: unknown engine ${e}`);
  const pipeline = Math.round(num(values.pipeline, 'pipeline', 1));
  const trees = (values.trees ?? ROOT).split(',').map((t) => path.resolve(t.trim()));
  const treeName = (t: string) => (trees.length === 1 ? '' : `${path.basename(t)} `);
  const command = ['node bench/refusal.ts', ...process.argv.slice(2)].join(' ');
  const say = (s: string) => process.stderr.write(`${s}\n`);

  installCleanupHandlers();
  ensureDebianTools({ wrk: 'wrk', nginx: 'nginx' }, say);
  if (!have('wrk')) throw new Error('wrk is not available');
  const pin = !values['no-pin'] && canPin(2);
  const SUT_CPU = pin ? '1' : undefined;
  const LOAD_CPU = pin ? '0' : undefined;

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-refusal-'));
  await chmod(tmp, 0o755);
  if (!values.keep) onCleanup(() => rm(tmp, { recursive: true, force: true }));
  else say(`keeping ${tmp}`);
  const info = machineInfo();
  const loadBefore = info.loadavg;
  say(`load average before: ${loadBefore}`);

  const upPort = await freePort();
  const upstream = await startNginx({
    name: 'origin',
    dir: path.join(tmp, 'origin'),
    port: upPort,
    cpu: LOAD_CPU,
    http: await originHttp(upPort, 100, path.join(tmp, 'origin', 'www')),
  });
  const holdPort = await freePort();
  const holding = startProcess('holding-origin', process.execPath, ['-e', HOLDING_ORIGIN, String(holdPort)], {
    cpu: LOAD_CPU,
  });
  await waitForPort(holdPort, holding);

  const config = (port: number, engine: Engine, kind: Kind) => {
    const defense: Record<string, unknown> = { rateLimit: { mode: 'off' }, bans: { mode: 'off' } };
    const upstreams: Array<Record<string, unknown>> = [{ name: 'origin', url: `http://127.0.0.1:${upPort}` }];
    const extra: Record<string, unknown> = {};
    if (kind === '429')
      defense.rateLimit = {
        mode: 'enforce',
        rules: [{ id: 'bench-all', key: 'address', ratePerSec: 0.001, burst: 1 }],
      };
    // The others pin the level calm: a load of tens of thousands of requests a second from one address is
    // a surge to the detector, which raised the level of the proxied gateway between two rounds (its
    // requests then got the challenge). Every phase still runs; only the level stays where it is.
    defense.level = { override: kind === '403' || kind === '403-page' ? 'under_attack' : 'calm' };
    if (kind === '503') {
      upstreams[0] = {
        name: 'origin',
        url: `http://127.0.0.1:${holdPort}`,
        admission: { mode: 'static', staticLimit: 1 },
        headersTimeoutMs: 3_600_000,
      };
      extra.admission = { queue: { maxEntries: 1 } };
    }
    return JSON.stringify({
      version: 1,
      listeners: [{ address: `127.0.0.1:${port}` }],
      upstreams,
      // 503: no cache on the route, or every miss of `/` would wait on the held one's fill (collapsed)
      routes: [
        {
          name: 'default',
          path: '/*',
          upstream: 'origin',
          class: 'public',
          ...(kind === '503' ? { cache: { enabled: false } } : {}),
        },
      ],
      admin: { address: 'off' },
      logging: { level: 'info', requests: false },
      defense,
      server: { engine },
      state: { file: 'off' }, // one process per answer: no shared state file beside the configs
      ...extra,
    });
  };

  const systems: System[] = [];
  for (const engine of engines) {
    if (engine === 'nginx') {
      // nginx's own refusal against its own proxying, same origin, same load: the floor of the ratio.
      for (const kind of NGINX_KINDS) {
        const port = await freePort();
        const ng = await startNginx({
          name: `nginx-${kind}`,
          dir: path.join(tmp, `nginx-${kind}`),
          port,
          cpu: SUT_CPU,
          http: nginxHttp(port, upPort, kind),
        });
        systems.push({ tree: '', engine, kind, label: `nginx ${kind}`, port, proc: ng.proc, runs: [] });
      }
      continue;
    }
    // Kind by kind, each tree's system in turn: the two checkouts' runs of one answer are neighbours.
    for (const kind of KINDS) {
      for (const tree of trees) {
        const port = await freePort();
        const name = `${treeName(tree).trim() || 'rempart'}-${engine}-${kind}`;
        const file = path.join(tmp, `${name}.json`);
        await writeFile(file, config(port, engine, kind));
        const proc = startProcess(name, process.execPath, [path.join(tree, 'bin', 'rempart.js'), '--config', file], {
          cpu: SUT_CPU,
          cwd: tree,
        });
        await waitForPort(port, proc, 20_000);
        systems.push({ tree, engine, kind, label: `${treeName(tree)}${engine} ${kind}`, port, proc, runs: [] });
      }
    }
  }

  // The 503 gateways: one request holds the only slot at the silent origin, one waits in the queue;
  // only then is the answer a shed. Primed again before each run (the previous run's wrk connections,
  // gone, gave their places back), the primers are dropped after it.
  const primers = new Map<System, AbortController[]>();
  const prime = async (s: System) => {
    for (const ac of primers.get(s) ?? []) ac.abort();
    await new Promise((r) => setTimeout(r, 200));
    const list: AbortController[] = [];
    for (let i = 0; i < 2; i++) {
      const ac = new AbortController();
      list.push(ac);
      fetch(`http://127.0.0.1:${s.port}/`, { signal: ac.signal }).catch(() => {});
      await new Promise((r) => setTimeout(r, 100));
    }
    primers.set(s, list);
  };
  const release = (s: System) => {
    for (const ac of primers.get(s) ?? []) ac.abort();
    primers.delete(s);
  };
  const check = async (s: System) => {
    const want = EXPECT[s.kind];
    // a 429 gateway lets its burst (1) through first
    const h = headersFor(s.kind);
    const got = await (s.kind === '429' ? probe(s.port).then(() => probe(s.port)) : probe(s.port, h)).catch((e) => {
      throw new Error(`${s.label}: ${e}`);
    });
    const okBody =
      s.kind === '403-page'
        ? /<html/i.test(got.body)
        : want.code === '' || s.engine === 'nginx' || got.body.includes(want.code);
    if (got.status !== want.status || !okBody)
      throw new Error(`${s.label}: expected ${want.status} ${want.code}, got ${got.status}: ${got.body.slice(0, 300)}`);
  };
  for (const s of systems) {
    if (s.kind === '503') await prime(s);
    await check(s);
    if (s.kind === '503') release(s);
  }

  // With two trees, every other round runs each kind's systems in the reverse order (ABBA).
  const roundOrder = (k: number): System[] => {
    if (k % 2 === 0 || trees.length < 2) return systems;
    const out: System[] = [];
    for (let i = 0; i < systems.length; ) {
      let j = i;
      while (j < systems.length && systems[j]!.engine === systems[i]!.engine && systems[j]!.kind === systems[i]!.kind)
        j++;
      out.push(...systems.slice(i, j).reverse());
      i = j;
    }
    return out;
  };
  for (let k = 0; k < rounds; k++) {
    for (const s of roundOrder(k)) {
      if (k === 0 && warmup > 0 && s.kind !== '503')
        await runWrk({
          url: `http://127.0.0.1:${s.port}/`,
          connections,
          seconds: warmup,
          cpu: LOAD_CPU,
          dir: tmp,
          headers: headersFor(s.kind),
          pipeline,
        });
      if (s.kind === '503') await prime(s);
      await check(s);
      const b = snapshot([s.proc.pid]);
      const bt = cpuTimes();
      const wrk = await runWrk({
        url: `http://127.0.0.1:${s.port}/`,
        connections,
        seconds,
        cpu: LOAD_CPU,
        dir: tmp,
        headers: headersFor(s.kind),
        pipeline,
      });
      const busy = cpuBusy(bt, cpuTimes());
      const d = cpuDelta(b, snapshot([s.proc.pid]));
      for (const p of [s.proc, upstream.proc, holding]) {
        if (p.child.exitCode !== null || p.child.signalCode !== null)
          throw new Error(`${p.name} exited during the run\n${p.log.slice(-20).join('\n')}`);
      }
      // still answering the expected kind (no level change, ban or breaker in between)
      if (s.kind === '503') release(s);
      else await check(s);
      s.runs.push({ wrk, cpu: d.cpuSeconds, user: d.userSeconds, wall: d.wallSeconds, busy1: busy.get(1) ?? NaN });
      const per = (d.cpuSeconds / wrk.requests) * 10_000;
      say(
        `${s.label} (round ${k + 1}/${rounds}): ${int(wrk.rps)} resp/s, ${f(per, 3)} CPU s/10k, non-2xx ${wrk.errors.status}`,
      );
    }
  }
  const loadAfter = machineInfo().loadavg;

  const per10k = (r: Run) => (r.cpu / r.wrk.requests) * 10_000;
  const user10k = (r: Run) => (r.user / r.wrk.requests) * 10_000;
  const header = [
    'engine',
    'answer',
    'resp/s',
    'bytes/resp',
    'CPU s/10k',
    'µs CPU per response',
    'refused/proxied CPU',
    `≤ ${TARGET}×`,
    'µs user CPU per response',
    'refused/proxied user CPU',
  ];
  const rows: string[][] = [];
  const verdicts: string[] = [];
  const groups = new Map<string, System[]>();
  for (const s of systems) {
    const key = `${s.tree}|${s.engine}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const group of groups.values()) {
    const engine = `${treeName(group[0]!.tree)}${group[0]!.engine}`;
    const proxied = median(group.find((s) => s.kind === 'proxied')!.runs.map(per10k));
    const proxiedUser = median(group.find((s) => s.kind === 'proxied')!.runs.map(user10k));
    for (const s of group) {
      const c = median(s.runs.map(per10k));
      const ratio = c / proxied;
      const u = median(s.runs.map(user10k));
      rows.push([
        engine,
        s.kind === 'proxied'
          ? '200 proxied'
          : s.kind === '403-page'
            ? '403 challenge page (HTML)'
            : s.kind === '403'
              ? '403 challenge (JSON)'
              : s.engine === 'nginx'
                ? `${s.kind} refused (limit_req)`
                : `${s.kind} refused`,
        int(median(s.runs.map((r) => r.wrk.rps))),
        int(median(s.runs.map((r) => r.wrk.bytes / r.wrk.requests))),
        f(c, 3),
        f(c * 100, 1),
        s.kind === 'proxied' ? '1' : `${f(ratio, 2)}×`,
        s.kind === 'proxied' ? '—' : ratio <= TARGET ? 'met' : 'not met',
        f(u * 100, 1),
        s.kind === 'proxied' ? '1' : `${f(u / proxiedUser, 2)}×`,
      ]);
      if (s.kind !== 'proxied') verdicts.push(`${engine} ${s.kind}: ${f(ratio, 2)}× (user ${f(u / proxiedUser, 2)}×)`);
    }
  }
  const table = markdownTable(header, rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'l', 'r', 'r']);

  const dHeader = [
    'system',
    'round',
    'resp/s',
    'responses',
    'non-2xx',
    'socket errors c/r/w/t',
    'CPU s/10k',
    'SUT % core',
    'CPU1 busy %',
  ];
  const dRows: string[][] = [];
  for (const s of systems)
    s.runs.forEach((r, k) => {
      const e = r.wrk.errors;
      dRows.push([
        s.label,
        String(k + 1),
        int(r.wrk.rps),
        String(r.wrk.requests),
        String(e.status),
        `${e.connect}/${e.read}/${e.write}/${e.timeout}`,
        f(per10k(r), 3),
        f((r.cpu / r.wall) * 100, 0),
        f(r.busy1 * 100, 0),
      ]);
    });
  const details = markdownTable(dHeader, dRows, ['l', ...dHeader.slice(1).map(() => 'r' as const)]);

  const date = `${new Date().toISOString().replace('T', ' ').slice(0, 16)} UTC`;
  const body = [
    `${date} · ${info.nproc} CPUs (nproc), ${info.cpuModel}, Linux ${info.kernel} · Node ${info.node} · wrk ${wrkVersion()} · git ${gitCommit(ROOT)}`,
    `Command: \`${command}\` · load average before ${loadBefore}, after ${loadAfter}`,
    '',
    `Load: wrk, 1 thread, ${connections} connections, closed loop, ${pipeline > 1 ? `${pipeline} requests pipelined per write on each connection, ` : ''}${seconds} s per run on \`GET /\` after a ${warmup} s warm-up, ${rounds} round(s) with every system in turn (medians); ` +
      (pin ? 'each Rempart alone on CPU 1 (taskset), wrk and the origins on CPU 0. ' : 'no CPU pinning. ') +
      'One Rempart process per engine and answer, all running throughout, only the one under load busy. ' +
      'CPU s/10k = utime+stime of the Rempart process (all threads) per 10,000 responses, in-process only (wrk and the origin not counted). ' +
      "User CPU = utime alone: the process's own code (JS, V8, GC, libuv) without the kernel's socket work, which a refusal costs nginx too.",
    "proxied: bench/proxy.ts's config (every defence phase on; rate limit and bans off), 200 with 100 bytes from an nginx origin. " +
      '429: a rule `{key: address, ratePerSec: 0.001, burst: 1}` (RMP_ERR_RATE_LIMITED with Retry-After and RateLimit headers). ' +
      "403: `defense.level.override: under_attack`, wrk is an unknown client: the challenge, as JSON (wrk sends no Accept) and as the HTML page (every request with a browser's `Accept: text/html,…`). " +
      '503: route cache off (else misses of `/` collapse onto the held fill), admission `static` with `staticLimit: 1` and `admission.queue.maxEntries: 1` in front of an origin that accepts and never answers: one connection holds the slot, one waits (its 503 is a queue timeout after the class deadline), the rest are shed (RMP_ERR_ADMISSION_SHED). ' +
      "nginx (engine `nginx`, 1 worker): `proxy_pass` to the same origin with upstream keep-alive (bench/proxy.ts's nginx) against the same with `limit_req` at 1 r/m (no burst), `limit_req_status 429`, its log level below the error log's: nginx's own refused/proxied ratio, the floor the same syscalls allow. " +
      'Bans off in all (a ban would drop the address at accept instead); the attack level pinned `calm` except for the 403s (unpinned, the detector read the proxied load as a surge and raised it between rounds: its requests then got the challenge). Every refusal here keeps the connection open (no body to drain). Each gateway is probed after every run and must still give its answer.',
    '',
    table,
    '',
    `Refused/proxied CPU per request (goal ≤ ${TARGET}×): ${verdicts.join(', ')}.`,
    '',
    'Per-run details:',
    '',
    details,
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
    if (isStopping()) return;
    process.stderr.write(`bench/refusal: ${err?.stack ?? err}\n`);
    await stopAll();
    process.exit(1);
  },
);
