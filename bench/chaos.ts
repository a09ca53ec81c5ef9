// Chaos drills: each fault of issue 18 injected into real processes on loopback while clients keep
// asking, with what the clients saw (answers by kind, the slowest one), when service came back, and a
// verdict. The gateway is `bin/rempart.js --config` in its own process, the origin is the reference
// postal origin (examples/postal/origin.ts) in its own, the store a throw-away redis-server.
//   origin-killed   SIGKILL of the origin with requests in flight, restarted 2 s later
//   origin-hang     SIGSTOP of the origin (it accepts, never answers) for 4 s, then SIGCONT
//   store-restart   redis-server SIGKILLed under load on two nodes, a ban made meanwhile, restarted
//   audit-full      the gateway under `ulimit -f` (writes past 32 KB fail, EFBIG: a full disk for it)
//   audit-readonly  the audit database and its journal made immutable (`chattr +i`, root on ext4) at run time
//   audit-shm       every file of it, a WAL's `-shm` index if there is one (what a file system turned
//                   read-only on error does): with WAL the process died of SIGBUS; a rollback journal has none
//   state-readonly  the same for the state file
//   disk-shutdown   both files on an ext4 file system (a loop device) shut down under the gateway as the
//                   kernel does after a disk error (EXT4_IOC_SHUTDOWN: every I/O fails from then on)
//   fd-exhaustion   the gateway under `ulimit -n 256`, 400 idle connections opened then closed
//   loop-stall      the gateway SIGSTOPped 1 s under load (an event loop blocked: GC, a sync call)
// usage: node bench/chaos.ts [--only a,b] [--write]   (--write replaces "## Chaos drills" in bench/RESULTS.md)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  ChaosLoad,
  type ChaosRequest,
  failedAfter,
  recoveryMs,
  SERVED,
  type Shot,
  sleep,
  summarize,
} from './lib/chaos-load.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import {
  freePort,
  have,
  installCleanupHandlers,
  type Managed,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'rempart.js');
const ORIGIN = path.join(ROOT, 'examples', 'postal', 'origin.ts');
const TOKEN = 'chaos-drill-token-0123456789abcdef';
let tmp = '';

interface Row {
  scenario: string;
  load: string;
  shots: Shot[];
  recovery: string;
  verdict: boolean;
  /** What was measured beyond the answers (logs, metrics, the process). */
  notes: string[];
}

interface Gw {
  proc: Managed;
  port: number;
  admin: number;
  /** How many log records had this message. */
  count(msg: string): number;
  /** Its warn and error records (the first 500). */
  lines: Array<Record<string, unknown>>;
}

/** The gateway in its own process; `shell` is a prefix run before exec (a ulimit). */
async function startGateway(
  name: string,
  originUrl: string,
  extra: Record<string, unknown>,
  opts: { shell?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Gw> {
  return retryOnAddrInUse(() => startGatewayOnce(name, originUrl, extra, opts));
}

/** A port free a moment ago can be taken meanwhile as the local port of some outgoing connection. */
async function retryOnAddrInUse<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++)
    try {
      return await start();
    } catch (err) {
      if (attempt === 3 || !String(err).includes('EADDRINUSE')) throw err;
    }
}

async function startGatewayOnce(
  name: string,
  originUrl: string,
  extra: Record<string, unknown>,
  opts: { shell?: string; env?: NodeJS.ProcessEnv },
): Promise<Gw> {
  const port = await freePort();
  const admin = await freePort();
  // The load comes from one address (a load balancer's, in effect): no rate limit, no automatic ban.
  const quiet = { rateLimit: { mode: 'off' }, bans: { offences: { threshold: 1_000_000 } } };
  const config = benchGatewayConfig(port, admin, originUrl, {
    logging: { level: 'info', requests: false },
    ...extra,
    defense: { ...quiet, ...(extra.defense as object | undefined) },
  });
  const file = path.join(tmp, `${name}.json`);
  await writeFile(file, JSON.stringify(config));
  const env = { ...process.env, REMPART_ADMIN_TOKEN: TOKEN, ...opts.env };
  const cmd = `${opts.shell ?? ''} exec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} --config ${JSON.stringify(file)}`;
  const proc = startProcess(name, 'bash', ['-c', cmd], { cwd: ROOT, env });
  const lines: Array<Record<string, unknown>> = [];
  const counts = new Map<string, number>();
  for (const stream of [proc.child.stdout, proc.child.stderr])
    if (stream)
      createInterface({ input: stream }).on('line', (l) => {
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(l) as Record<string, unknown>;
        } catch {
          return;
        }
        const msg = String(rec.msg);
        counts.set(msg, (counts.get(msg) ?? 0) + 1);
        if ((rec.level === 'error' || rec.level === 'warn') && lines.length < 500) lines.push(rec);
      });
  await waitForPort(port, proc, 20_000);
  return { proc, port, admin, lines, count: (msg) => counts.get(msg) ?? 0 };
}

function startOrigin(name: string, args: string[]): Promise<{ proc: Managed; port: number; url: string }> {
  return retryOnAddrInUse(async () => {
    const port = await freePort();
    const proc = startProcess(name, process.execPath, [ORIGIN, '--port', String(port), ...args], { cwd: ROOT });
    await waitForPort(port, proc);
    return { proc, port, url: `http://127.0.0.1:${port}` };
  });
}

function alive(m: Managed): boolean {
  return m.child.exitCode === null && m.child.signalCode === null;
}

function adminCall(gw: Gw, method: string, p: string, body?: unknown): Promise<Response> {
  return fetch(`http://127.0.0.1:${gw.admin}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
}

async function metric(gw: Gw, name: string): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${gw.admin}/metrics`, {
    headers: { authorization: `Bearer ${TOKEN}` },
    signal: AbortSignal.timeout(5000),
  }).then((r) => r.text());
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN);
}

const fmtMs = (ms: number | null) =>
  ms === null ? 'never' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
/** The mix a postal visitor makes: the home page (not cached), a parcel (cached), an approval (fallback). */
const VISITOR =
  (withApprovals: boolean) =>
  (i: number, n: number): ChaosRequest => {
    const k = (i + n) % (withApprovals ? 3 : 2);
    if (k === 0) return { path: '/' };
    if (k === 1) return { path: `/track/6A1000000000${i % 8}` };
    return { method: 'POST', path: '/payments/approve', body: JSON.stringify({ paymentId: `p${i}-${n}` }) };
  };
const POSTAL_ROUTES = [
  { name: 'approvals', path: '/payments/approve', methods: ['POST'], upstream: 'postal', class: 'critical' },
  { name: 'tracking', path: '/track/*', methods: ['GET', 'HEAD'], upstream: 'postal', class: 'cacheable' },
  { name: 'site', path: '/*', upstream: 'postal', class: 'public' },
];

// ---- 1. the origin killed mid-response ----------------------------------------------------------
async function originKilled(): Promise<Row> {
  // 100 ms a request, 16 slots: at any instant about 16 requests are inside the origin.
  const origin = await startOrigin('origin', ['--workers', '16', '--service-ms', '100', '--queue', '256']);
  const gw = await startGateway('gw-killed', origin.url, {
    upstreams: [
      {
        name: 'postal',
        url: origin.url,
        connectTimeoutMs: 500,
        headersTimeoutMs: 3000,
        circuitBreaker: { consecutiveFailures: 3, openMs: 1000 },
        healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 150 },
      },
    ],
    routes: POSTAL_ROUTES.filter((r) => r.name !== 'approvals'),
  });
  const load = new ChaosLoad({ port: gw.port, clients: 24, periodMs: 20, request: VISITOR(false) });
  await sleep(1500);
  const killedAt = load.now();
  origin.proc.child.kill('SIGKILL');
  await origin.proc.exited;
  await sleep(2000);
  const back = startProcess(
    'origin',
    process.execPath,
    [ORIGIN, '--port', String(origin.port), ...['--workers', '16']],
    {
      cwd: ROOT,
    },
  );
  await waitForPort(origin.port, back);
  const backAt = load.now();
  await sleep(3500);
  await load.stop();
  const s = summarize(load.shots);
  const inFlight = load.shots.filter((x) => x.start < killedAt && x.end > killedAt).length;
  const rec = recoveryMs(load.shots, backAt);
  const bad = s.kinds.filter(([k]) => !SERVED.has(k) && !/^50[234] /.test(k));
  await gw.proc.stop();
  await back.stop();
  return {
    scenario: 'origin-killed',
    load: '24 clients: home page, 8 cached parcels',
    shots: load.shots,
    recovery: `${fmtMs(rec)} after the origin restarted`,
    verdict:
      s.hangs === 0 && bad.length === 0 && rec !== null && rec < 5000 && failedAfter(load.shots, backAt + 3000) === 0,
    notes: [
      `${inFlight} requests in flight at the SIGKILL; every client got an answer, none waited past ${fmtMs(s.maxLatencyMs)}`,
      `answers other than 5xx or served: ${bad.length === 0 ? 'none' : bad.map(([k, n]) => `${k} ×${n}`).join(', ')}`,
    ],
  };
}

// ---- 2. the origin hanging ----------------------------------------------------------------------
async function originHang(): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '5']);
  const unused = await freePort();
  const sms = await startOrigin('sms', ['--sms-port', String(unused)]);
  // startOrigin waited on its postal port; the SMS service listens on --sms-port.
  const smsUrl = `http://127.0.0.1:${unused}`;
  await waitForPort(unused, sms.proc);
  const gw = await startGateway('gw-hang', origin.url, {
    upstreams: [
      {
        name: 'postal',
        url: origin.url,
        connectTimeoutMs: 500,
        headersTimeoutMs: 1000,
        circuitBreaker: { consecutiveFailures: 3, openMs: 1000 },
        healthCheck: { path: '/healthz', intervalMs: 200, timeoutMs: 150 },
      },
      { name: 'sms-approvals', url: smsUrl, connectTimeoutMs: 500, headersTimeoutMs: 1000 },
    ],
    routes: POSTAL_ROUTES.map((r) => (r.name === 'approvals' ? { ...r, fallback: 'sms-approvals' } : r)),
  });
  const load = new ChaosLoad({ port: gw.port, clients: 24, periodMs: 20, request: VISITOR(true) });
  await sleep(1500);
  const stoppedAt = load.now();
  origin.proc.child.kill('SIGSTOP');
  await sleep(4000);
  origin.proc.child.kill('SIGCONT');
  const backAt = load.now();
  await sleep(4500);
  await load.stop();
  const s = summarize(load.shots);
  const during = load.shots.filter((x) => x.start >= stoppedAt && x.start < backAt);
  const fallback = during.filter((x) => x.kind === 'fallback').length;
  const firstFallback = during.find((x) => x.kind === 'fallback');
  const rec = recoveryMs(load.shots, backAt);
  await gw.proc.stop();
  await origin.proc.stop();
  await sms.proc.stop();
  return {
    scenario: 'origin-hang',
    load: '24 clients: home, parcels, approvals',
    shots: load.shots,
    recovery: `${fmtMs(rec)} after SIGCONT`,
    // undici's timeouts tick every 0.5 s: a 1 s headersTimeout fires within 1 to 1.5 s.
    verdict:
      s.hangs === 0 &&
      s.maxLatencyMs < 2000 &&
      fallback > 0 &&
      rec !== null &&
      failedAfter(load.shots, backAt + 3000) === 0,
    notes: [
      `slowest answer ${fmtMs(s.maxLatencyMs)} (headersTimeoutMs 1000, enforced by undici to within 0.5 s): nobody waits on a silent origin past its timeout`,
      `approvals on the SMS fallback from ${fmtMs(firstFallback ? firstFallback.start - stoppedAt : null)} after the stop (${fallback} of them)`,
    ],
  };
}

// ---- 3. the store killed and restarted under load -----------------------------------------------
async function storeRestart(redisBin: string): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '1']);
  const redisPort = await freePort();
  const redisArgs = ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const redisDir = path.join(tmp, 'redis');
  execFileSync('mkdir', ['-p', redisDir]);
  let redis = startProcess('redis', redisBin, ['--dir', redisDir, ...redisArgs]);
  await waitForPort(redisPort, redis);
  const extra = (node: string) => ({
    defense: {
      // A global limit far above the load: every admitted request takes a leased token from the store.
      rateLimit: {
        mode: 'enforce',
        rules: [{ id: 'global', key: 'address', ratePerSec: 100000, burst: 100000, scope: 'global' }],
      },
    },
    cluster: { store: 'redis', nodeName: node, resyncMs: 500, levelHeartbeatMs: 250, redis: { keyPrefix: 'chaos:' } },
  });
  const env = { REMPART_REDIS_URL: `redis://127.0.0.1:${redisPort}` };
  const a = await startGateway('gw-a', origin.url, extra('a'), { env });
  const b = await startGateway('gw-b', origin.url, extra('b'), { env });
  const req = () => ({ path: '/' });
  const la = new ChaosLoad({ port: a.port, clients: 8, periodMs: 10, request: req });
  const lb = new ChaosLoad({ port: b.port, clients: 8, periodMs: 10, request: req });
  await sleep(1500);
  const killAt = la.now();
  redis.child.kill('SIGKILL');
  await redis.exited;
  await sleep(500);
  const banned = (await adminCall(a, 'POST', '/api/bans', { target: '127.0.0.41', ttlSec: 600, reason: 'chaos' }))
    .status;
  await sleep(1500);
  redis = startProcess('redis', redisBin, ['--dir', redisDir, ...redisArgs]);
  await waitForPort(redisPort, redis);
  const restartAt = performance.now();
  const restartT = la.now();
  // When does B, which never heard of it, refuse the address banned on A during the outage?
  let synced: number | null = null;
  while (performance.now() - restartAt < 15_000) {
    if (!(await answers(b.port, '127.0.0.41'))) {
      synced = performance.now() - restartAt;
      break;
    }
    await sleep(50);
  }
  await sleep(1000);
  await Promise.all([la.stop(), lb.stop()]);
  const shots = [...la.shots, ...lb.shots];
  const s = summarize(shots);
  const failures = [
    await metric(a, 'rempart_cluster_store_failures_total'),
    await metric(b, 'rempart_cluster_store_failures_total'),
  ];
  const up = [await metric(a, 'rempart_cluster_store_up'), await metric(b, 'rempart_cluster_store_up')];
  await a.proc.stop();
  await b.proc.stop();
  await redis.stop();
  await origin.proc.stop();
  return {
    scenario: 'store-restart',
    load: '2 nodes × 8 clients, a global rate limit (leases)',
    shots,
    recovery: `ban made during the outage on A refused by B ${fmtMs(synced)} after the restart`,
    verdict: s.failed === 0 && banned === 201 && synced !== null && up.every((x) => x === 1),
    notes: [
      `every request answered from local state while redis-server was down (store failures counted: A ${failures[0]}, B ${failures[1]}; store_up after: ${up.join(', ')})`,
      `POST /api/bans on A during the outage: ${banned}`,
      ...unserved(shots, [
        ['kill', killAt],
        ['restart', restartT],
      ]),
    ],
  };
}

/** Where the unserved answers fell, relative to the drill's events (e.g. "429 RATE_LIMITED 120 ms after restart"). */
function unserved(shots: Shot[], events: Array<[string, number]>): string[] {
  const out = shots
    .filter((x) => !SERVED.has(x.kind))
    .slice(0, 5)
    .map((x) => {
      const [name, at] = events.reduce((best, e) => (x.start >= e[1] ? e : best), ['start', 0] as [string, number]);
      return `${x.kind} sent ${fmtMs(x.start - at)} after the ${name}`;
    });
  return out.length > 0 ? [`unserved: ${out.join('; ')}`] : [];
}

/** Whether the gateway answers a request from `localAddress` (false: refused on accept or 403). */
function answers(port: number, localAddress: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    let data = '';
    const t = setTimeout(() => s.destroy(), 2000);
    s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'));
    s.on('data', (c) => (data += c.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve(/^HTTP\/1\.1 2/.test(data));
    });
  });
}

// ---- 4. the audit database's or the state file's disk full, or read-only ----------------------------
/** The files of a SQLite database that exist now: the database, its journal (or a WAL and its index). */
function sqliteFiles(file: string): string[] {
  return [file, `${file}-journal`, `${file}-wal`, `${file}-shm`].filter((f) => existsSync(f));
}

async function diskDrill(kind: 'full' | 'readonly' | 'shm' | 'state'): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '1']);
  const dir = path.join(tmp, `disk-${kind}`);
  execFileSync('mkdir', ['-p', dir]);
  const audit = path.join(dir, 'audit.db');
  const state = path.join(dir, 'rempart-state.db');
  // `ulimit -f 32`: no file of this process may grow past 32 KB (EFBIG, SIGXFSZ ignored by Node): the
  // trail (20 KB empty, ~0.4 KB a row here) reaches it after a few batches, as it would fill the last
  // free blocks of a disk.
  const gw = await startGateway(
    `gw-disk-${kind}`,
    origin.url,
    kind === 'state' ? { state: { file: state } } : { audit: { file: audit }, state: { file: 'off' } },
    { shell: kind === 'full' ? 'ulimit -f 32;' : undefined },
  );
  const load = new ChaosLoad({ port: gw.port, clients: 8, periodMs: 10, request: () => ({ path: '/' }) });
  const target = kind === 'state' ? state : audit;
  let frozen: string[] = [];
  // Best effort: a file may be gone once the gateway closed the database.
  const unfreeze = () => {
    for (const f of frozen) spawnSync('chattr', ['-i', f], { stdio: 'ignore' });
  };
  if (kind !== 'full') {
    await adminCall(gw, 'POST', '/api/bans', { target: '192.0.2.1', ttlSec: 600, reason: 'before' });
    await sleep(kind === 'state' ? 2500 : 700); // written (the state file every 2 s, the trail every 0.5 s)
    // readonly: the database and its journal (or WAL); shm and state: every file of it there is. With
    // WAL, the `-shm` index is mapped into memory and a refused write to it was SIGBUS.
    frozen = sqliteFiles(target).filter((f) => kind !== 'readonly' || !f.endsWith('-shm'));
    execFileSync('chattr', ['+i', ...frozen]);
    onCleanup(unfreeze);
  }
  // Operator bans, one every 50 ms: each an audit row (written every 0.5 s) and a state-file row (2 s).
  let bans = 0;
  let refused = 0;
  for (let i = 0; i < 60; i++) {
    const st = await adminCall(gw, 'POST', '/api/bans', {
      target: `198.51.100.${i}`,
      ttlSec: 600,
      reason: `chaos ${'x'.repeat(190)}`,
    }).then(
      (r) => r.status,
      () => 0, // the gateway is gone
    );
    if (st === 201) bans++;
    else refused++;
    await sleep(50);
  }
  await sleep(kind === 'state' ? 2500 : 1000);
  await load.stop();
  const s = summarize(load.shots);
  const failMsg =
    kind === 'state'
      ? 'state file: writing failed; the request path is not affected, state since the last write would not survive a crash'
      : 'audit: writing the trail failed; these events are lost';
  const failedWrites = gw.count(failMsg);
  const errs = [
    ...new Set(
      gw.lines
        .filter((l) => String(l.msg) === failMsg)
        .map((l) => String((l.err as { message?: string } | undefined)?.message ?? l.err)),
    ),
  ];
  // Before the fix, SQLite's own rollback made ours throw "cannot rollback", hiding the cause.
  const masked = errs.some((e) => e.includes('cannot rollback'));
  const up = alive(gw.proc);
  const death = up ? '' : ` (${gw.proc.child.signalCode ?? `exit ${gw.proc.child.exitCode}`})`;
  const metric = up ? await scrape(gw, 'rempart_disk_write_failures_total') : '';
  unfreeze();
  await gw.proc.stop();
  await origin.proc.stop();
  const what = kind === 'state' ? 'state file' : 'audit';
  return {
    scenario: kind === 'state' ? 'state-readonly' : `audit-${kind}`,
    load: `8 clients + 60 operator bans (${kind === 'state' ? 'state-file rows' : 'audit rows'})`,
    shots: load.shots,
    recovery: 'n/a (the fault stays)',
    verdict: up && s.failed === 0 && failedWrites > 0 && !masked && bans === 60,
    notes: [
      `gateway ${up ? 'alive' : `DEAD${death}`}; ${bans} bans applied, ${refused} refused; ${s.failed === 0 ? 'every request served' : `${s.failed} requests not served`}`,
      ...(frozen.length > 0 ? [`frozen: ${frozen.map((f) => path.basename(f)).join(', ')}`] : []),
      `"${failMsg.split(';')[0]}" logged ${failedWrites}× (error: ${errs.join(', ') || 'none'})`,
      ...(metric !== '' ? [`${what}: ${metric}`] : []),
    ],
  };
}

/**
 * Both files on a file system of their own (a 64 MB ext4 image on a loop device), shut down under the
 * running gateway the way ext4 does after a disk error (`errors=` handling, or EXT4_IOC_SHUTDOWN, here
 * from python3 since Node has no ioctl): every read and write of it fails with EIO from then on.
 */
async function diskShutdown(): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '1']);
  const img = path.join(tmp, 'disk.img');
  const mnt = path.join(tmp, 'disk');
  execFileSync('mkdir', ['-p', mnt]);
  execFileSync('truncate', ['-s', '64M', img]);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  onCleanup(() => void spawnSync('umount', ['-l', mnt], { stdio: 'ignore' }));
  const audit = path.join(mnt, 'audit.db');
  const state = path.join(mnt, 'rempart-state.db');
  const gw = await startGateway('gw-disk-shutdown', origin.url, { audit: { file: audit }, state: { file: state } });
  const load = new ChaosLoad({ port: gw.port, clients: 8, periodMs: 10, request: () => ({ path: '/' }) });
  await adminCall(gw, 'POST', '/api/bans', { target: '192.0.2.1', ttlSec: 600, reason: 'before' });
  await sleep(2500); // both written once
  const shutdown = `import fcntl,os,struct; fd=os.open(${JSON.stringify(mnt)},os.O_RDONLY); fcntl.ioctl(fd,0x8004587D,struct.pack('I',2))`;
  execFileSync('python3', ['-c', shutdown]);
  let bans = 0;
  for (let i = 0; i < 60; i++) {
    const st = await adminCall(gw, 'POST', '/api/bans', {
      target: `198.51.100.${i}`,
      ttlSec: 600,
      reason: 'chaos',
    }).then(
      (r) => r.status,
      () => 0,
    );
    if (st === 201) bans++;
    await sleep(50);
  }
  await sleep(2500);
  await load.stop();
  const s = summarize(load.shots);
  const auditFailed = gw.count('audit: writing the trail failed; these events are lost');
  const stateFailed = gw.count(
    'state file: writing failed; the request path is not affected, state since the last write would not survive a crash',
  );
  const errs = [
    ...new Set(
      gw.lines
        .filter((l) => /writing (the trail )?failed/.test(String(l.msg)))
        .map((l) => String((l.err as { message?: string } | undefined)?.message ?? l.err)),
    ),
  ];
  const up = alive(gw.proc);
  const death = up ? '' : ` (${gw.proc.child.signalCode ?? `exit ${gw.proc.child.exitCode}`})`;
  const metric = up ? await scrape(gw, 'rempart_disk_write_failures_total') : '';
  await gw.proc.stop();
  await origin.proc.stop();
  return {
    scenario: 'disk-shutdown',
    load: '8 clients + 60 operator bans (audit and state-file rows)',
    shots: load.shots,
    recovery: 'n/a (the fault stays)',
    verdict: up && s.failed === 0 && auditFailed > 0 && stateFailed > 0 && bans === 60,
    notes: [
      `gateway ${up ? 'alive' : `DEAD${death}`}; ${bans} bans applied; ${s.failed === 0 ? 'every request served' : `${s.failed} requests not served`}`,
      `audit batches failed ${auditFailed}×, state-file writes ${stateFailed}× (errors: ${errs.join(', ') || 'none'})`,
      ...(metric !== '' ? [metric] : []),
    ],
  };
}

/** The sample lines of one metric from the admin listener's /metrics ('' if none). */
async function scrape(gw: Gw, name: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${gw.admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } }).then(
    (x) => x.text(),
    () => '',
  );
  return r
    .split('\n')
    .filter((l) => l.startsWith(name))
    .join(', ');
}

// ---- 5. file descriptors exhausted --------------------------------------------------------------
async function fdExhaustion(): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '1']);
  // No idle upstream connection is kept (keepAliveTimeoutMs 1): every request needs a new descriptor
  // towards the origin too, as a pool growing under load does.
  const gw = await startGateway(
    'gw-fd',
    origin.url,
    { upstreams: [{ name: 'origin', url: origin.url, keepAliveTimeoutMs: 1 }] },
    { shell: 'ulimit -n 256;' },
  );
  const req = () => ({ path: '/' });
  const kept = new ChaosLoad({ port: gw.port, clients: 4, periodMs: 20, request: req });
  const fresh = new ChaosLoad({ port: gw.port, clients: 2, periodMs: 50, request: req, fresh: true, hangMs: 5000 });
  await sleep(1000);
  const hogAt = fresh.now();
  const hog: net.Socket[] = [];
  const opened = await Promise.all(
    Array.from(
      { length: 400 },
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect({ port: gw.port, host: '127.0.0.1' }, () => resolve(true));
          s.on('error', () => resolve(false));
          hog.push(s);
        }),
    ),
  );
  await sleep(2000);
  const closedAt = fresh.now();
  for (const s of hog) s.destroy();
  await sleep(3000);
  await Promise.all([kept.stop(), fresh.stop()]);
  const duringFresh = fresh.shots.filter((x) => x.start >= hogAt && x.start < closedAt);
  const rec = recoveryMs(fresh.shots, closedAt);
  const shots = [...kept.shots, ...fresh.shots];
  const s = summarize(shots);
  const up = alive(gw.proc);
  const listenerErrors = gw.count('listener error');
  const breaker = gw.count('circuit breaker state changed');
  await gw.proc.stop();
  await origin.proc.stop();
  return {
    scenario: 'fd-exhaustion',
    load: '4 keep-alive clients + 2 new-connection clients; 400 idle connections at `ulimit -n 256`',
    shots,
    recovery: `${fmtMs(rec)} after the idle connections closed (new connections)`,
    verdict: up && s.hangs === 0 && rec !== null && rec < 2000 && failedAfter(shots, closedAt + 2000) === 0,
    notes: [
      `${opened.filter(Boolean).length} of 400 idle connections completed the TCP handshake; gateway ${up ? 'alive' : 'DEAD'}`,
      `new connections while exhausted: ${summarize(duringFresh)
        .kinds.map(([k, n]) => `${k} ×${n}`)
        .join(', ')}; "listener error" logged ${listenerErrors}×; origin's breaker changed state ${breaker}×`,
    ],
  };
}

// ---- 6. the event loop blocked 1 s --------------------------------------------------------------
async function loopStall(): Promise<Row> {
  const origin = await startOrigin('origin', ['--workers', '64', '--service-ms', '1']);
  const gw = await startGateway('gw-stall', origin.url, {});
  const req = () => ({ path: '/' });
  const kept = new ChaosLoad({ port: gw.port, clients: 16, periodMs: 10, request: req });
  const fresh = new ChaosLoad({ port: gw.port, clients: 4, periodMs: 20, request: req, fresh: true });
  await sleep(1500);
  // The whole process frozen for 1 s: no timer, no accept, no read — what a 1 s synchronous call does.
  const gwPid = gw.proc.pid;
  process.kill(gwPid, 'SIGSTOP');
  await sleep(1000);
  process.kill(gwPid, 'SIGCONT');
  const contAt = kept.now();
  await sleep(1500);
  await Promise.all([kept.stop(), fresh.stop()]);
  const shots = [...kept.shots, ...fresh.shots];
  const s = summarize(shots);
  const rec = recoveryMs(kept.shots, contAt);
  const waited = shots.filter((x) => x.end - x.start > 900).length;
  await gw.proc.stop();
  await origin.proc.stop();
  return {
    scenario: 'loop-stall',
    load: '16 keep-alive + 4 new-connection clients',
    shots,
    recovery: `${fmtMs(rec)} after SIGCONT`,
    verdict: s.failed === 0 && s.maxLatencyMs < 2000,
    notes: [`${waited} requests waited out the stall and were answered; none lost`],
  };
}

const SCENARIOS = [
  'origin-killed',
  'origin-hang',
  'store-restart',
  'audit-full',
  'audit-readonly',
  'audit-shm',
  'state-readonly',
  'disk-shutdown',
  'fd-exhaustion',
  'loop-stall',
] as const;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, write: { type: 'boolean' } } });
  const only = values.only?.split(',') ?? [...SCENARIOS];
  for (const o of only) if (!(SCENARIOS as readonly string[]).includes(o)) throw new Error(`unknown scenario ${o}`);
  installCleanupHandlers();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-chaos-'));
  onCleanup(() => rm(tmp, { recursive: true, force: true }));
  const say = (s: string) => process.stderr.write(`${s}\n`);
  const redisBin = ['/usr/bin/redis-server', '/usr/bin/valkey-server'].find((p) => have(p));
  const rows: Row[] = [];
  const skipped: string[] = [];
  for (const name of only) {
    say(`${name}…`);
    let row: Row | null = null;
    if (name === 'origin-killed') row = await originKilled();
    else if (name === 'origin-hang') row = await originHang();
    else if (name === 'store-restart')
      if (redisBin === undefined) skipped.push('store-restart (no redis-server)');
      else row = await storeRestart(redisBin);
    else if (name === 'audit-full') row = await diskDrill('full');
    else if (name === 'audit-readonly' || name === 'audit-shm' || name === 'state-readonly')
      if (process.getuid?.() !== 0 || !have('chattr')) skipped.push(`${name} (needs root and chattr)`);
      else row = await diskDrill(name === 'audit-shm' ? 'shm' : name === 'state-readonly' ? 'state' : 'readonly');
    else if (name === 'disk-shutdown')
      if (process.getuid?.() !== 0 || !have('mkfs.ext4') || !have('python3'))
        skipped.push(`${name} (needs root, mount, mkfs.ext4 and python3)`);
      else row = await diskShutdown();
    else if (name === 'fd-exhaustion') row = await fdExhaustion();
    else if (name === 'loop-stall') row = await loopStall();
    if (row === null) continue;
    rows.push(row);
    const s = summarize(row.shots);
    say(
      `  ${row.verdict ? 'PASS' : 'FAIL'} ${s.sent} sent, ${s.failed} failed, max ${fmtMs(s.maxLatencyMs)}; ${row.recovery}`,
    );
    for (const n of row.notes) say(`  ${n}`);
  }
  const info = machineInfo();
  const table = markdownTable(
    ['scenario', 'load during it', 'sent', 'served', 'answers by kind', 'max latency', 'recovery', 'verdict'],
    rows.map((r) => {
      const s = summarize(r.shots);
      const span = Math.max(...r.shots.map((x) => x.end)) - Math.min(...r.shots.map((x) => x.start));
      return [
        r.scenario,
        `${r.load}, ${Math.round((s.sent * 1000) / span)} req/s`,
        String(s.sent),
        String(s.served),
        s.kinds.map(([k, n]) => `${k} ×${n}`).join(', '),
        fmtMs(s.maxLatencyMs),
        r.recovery,
        r.verdict ? 'pass' : '**FAIL**',
      ];
    }),
    ['l', 'l', 'r', 'r', 'l', 'r', 'l', 'l'],
  );
  const body = [
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${info.cpuModel} × ${info.nproc} · Node ${info.node} · git ${gitCommit(ROOT)}`,
    `Command: \`node bench/chaos.ts${values.only ? ` --only ${values.only}` : ''}\` (every process on loopback; "served" = the origin's 200, a cache hit, a stale copy or the fallback upstream; a hang is a request without an answer after 10 s)`,
    '',
    table,
    '',
    ...rows.map((r) => `- **${r.scenario}**: ${r.notes.join('; ')}.`),
    ...(skipped.length > 0 ? ['', `Skipped: ${skipped.join(', ')}.`] : []),
  ].join('\n');
  process.stdout.write(`${body}\n`);
  if (values.write) upsertSection(path.join(ROOT, 'bench', 'RESULTS.md'), '## Chaos drills', body);
  return rows.every((r) => r.verdict) ? 0 : 1;
}

main().then(
  async (code) => {
    await stopAll();
    process.exit(code);
  },
  async (err: unknown) => {
    process.stderr.write(`bench/chaos: ${(err as Error).stack ?? String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
