// The drill matrix (`rempart drill matrix`, bench/matrix.ts; issue 13 point 5): N scenarios drawn from
// a seed over wide ranges, each run against a fresh origin model (src/drill/origins.ts) and a fresh
// gateway child process, for zero-config (`rempart --upstream`) and the demo config
// (examples/postal/rempart.yaml). It reports the distribution of real users served and of the attack
// reaching the origin, and lists the worst scenarios with every drawn parameter and the `seed:index`
// that draws them again. A scenario has no name: it is its parameters, and the gateway only ever sees
// traffic, so nothing can be tuned to a scenario but the traffic itself.
//
//   seed ─► draw(seed, i) ─► scenario i ─► for each config: origin model + gateway ─► run ─► outcome
//
// Replaying `seed:index` draws the same parameters (the per-request randomness, which path a bot
// picks, when a person clicks, is not seeded: the outcome is measured again, not copied).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { freePort } from './ports.ts';
import { tmpdir, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parse as parseYaml } from 'yaml';
import { ORIGIN_KINDS, type ModelStats, type OriginModel } from './origins.ts';
import {
  BOT_PATHS,
  BotAttack,
  SOLVE_HELD_MS,
  attackBotSec,
  generatorShortfall,
  type BotCaps,
  type BotPaths,
} from './bots.ts';
import { startLegit, type LegitCrowd } from './legit.ts';
import type { LegitPopulation } from './scenario.ts';
import { Recorder } from './stats.ts';
import type { RunContext } from './context.ts';
import { resolveTarget } from './safety.ts';
import { MetricsPoller } from './pollers.ts';
import { rng } from './rng.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(ROOT, 'bin/rempart.js');
export const DEMO_CONFIG = path.join(ROOT, 'examples/postal/rempart.yaml');

export const CONFIGS = ['zero', 'demo'] as const;
/** The gateway's HTTP/1.1 engine (`--engine`, config server.engine); unset: what the config says. */
export const ENGINES = ['node', 'lean'] as const;
export type Engine = (typeof ENGINES)[number];
export type ConfigName = (typeof CONFIGS)[number];
export const PROFILES = ['full', 'short'] as const;
export type Profile = (typeof PROFILES)[number];

// ---------------------------------------------------------------- the draw

/** The ranges a profile draws from. `full` is the issue's; `short` fits `npm test`. */
interface Ranges {
  calmSec: [number, number];
  attackSec: [number, number];
  tailSec: number;
  attackers: [number, number];
  maxPrefixes: number;
  ratePerAddress: [number, number];
  /** The generator's cap on the total attack rate: the draw never asks for more (see drawAttack). */
  maxTotalRate: number;
  calmUsers: [number, number];
  vaultUsers: [number, number];
  crowdMultiplier: [number, number];
  pauseMs: [number, number];
  /** Calm seconds a warm-up runs before the matrix (0: none), so the gateway has learned its baselines. */
  warmupSec: number;
  caps: BotCaps;
}

export const RANGES: Record<Profile, Ranges> = {
  full: {
    calmSec: [12, 20],
    attackSec: [20, 30],
    tailSec: 3,
    attackers: [10, 10_000],
    maxPrefixes: 5000,
    ratePerAddress: [0.05, 100],
    maxTotalRate: 800,
    calmUsers: [20, 50],
    vaultUsers: [0, 6],
    crowdMultiplier: [2, 6],
    pauseMs: [1000, 3000],
    warmupSec: 70,
    caps: { maxInFlight: 4000, connectionsPerAddress: 64, solveWorkers: 0, maxSolveQueueSec: 5 },
  },
  short: {
    calmSec: [2, 2],
    attackSec: [4, 4],
    tailSec: 1,
    attackers: [10, 200],
    maxPrefixes: 50,
    ratePerAddress: [0.05, 20],
    maxTotalRate: 150,
    calmUsers: [6, 10],
    vaultUsers: [0, 2],
    crowdMultiplier: [2, 3],
    pauseMs: [300, 800],
    warmupSec: 0,
    caps: { maxInFlight: 300, connectionsPerAddress: 16, solveWorkers: 0, maxSolveQueueSec: 5 },
  },
};

export interface DrawnAttack {
  addresses: number;
  prefixes: number;
  ratePerAddress: number;
  /** addresses × ratePerAddress at full onset. */
  totalRate: number;
  browser: boolean;
  rotateAgent: boolean;
  cookies: boolean;
  solve: boolean;
  paths: BotPaths;
  rampSec: number;
}

export interface DrawnCrowd {
  /** Crowd size as a multiple of the calm users. */
  multiplier: number;
  users: number;
  /** Share of the crowd never seen before (the rest visited once during the calm). */
  newShare: number;
  /** 0: one /24 each; else that many (carrier-NAT) prefixes for the whole crowd. */
  prefixes: number;
}

export interface MatrixScenario {
  /** `seed:index`: what `--replay` takes. */
  id: string;
  seed: number;
  index: number;
  profile: Profile;
  /** The control (index 0 with `control`): calm users only, no attack, no crowd. */
  control: boolean;
  origin: OriginModel;
  calmSec: number;
  attackSec: number;
  tailSec: number;
  calmUsers: number;
  vaultUsers: number;
  pauseMs: [number, number];
  crowd: DrawnCrowd | null;
  attack: DrawnAttack | null;
}

/** Draws scenario `index` of `seed`: the same arguments always give the same parameters. */
export function drawScenario(seed: number, index: number, profile: Profile, control = false): MatrixScenario {
  const r = rng(seed, index);
  const R = RANGES[profile];
  const uniform = (lo: number, hi: number) => lo + r() * (hi - lo);
  const int = (lo: number, hi: number) => Math.floor(uniform(lo, hi + 1));
  const logUniform = (lo: number, hi: number) => Math.exp(uniform(Math.log(lo), Math.log(hi)));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

  const calmUsers = int(...R.calmUsers);
  const vaultUsers = int(...R.vaultUsers);
  // Calm demand: a visit is 2 + 3.5 requests over 4.5 mean pauses, about 0.6 requests a second per
  // person at 1–3 s. The origin is drawn to carry it 3 times over at least, so a failure in calm is
  // the gateway's, never a scenario that could not work.
  const calmDemand = ((calmUsers + vaultUsers) * 2.44) / ((R.pauseMs[0] + R.pauseMs[1]) / 1000);
  const kind = pick(ORIGIN_KINDS);
  let origin: OriginModel;
  if (kind === 'slow') origin = { kind, workers: int(16, 64), serviceMs: int(150, 600), queue: 64 };
  else if (kind === 'queue')
    origin = { kind, workers: pick([4, 8, 16]), serviceMs: int(10, 40), queue: int(500, 5000) };
  else origin = { kind, workers: pick([4, 8, 16, 32]), serviceMs: int(10, 40), queue: int(0, 8) };
  while ((origin.workers * 1000) / origin.serviceMs < 3 * calmDemand) origin.workers *= 2;

  const base = {
    id: `${seed}:${index}`,
    seed,
    index,
    profile,
    origin,
    calmSec: int(...R.calmSec),
    attackSec: int(...R.attackSec),
    tailSec: R.tailSec,
    calmUsers,
    vaultUsers,
    pauseMs: R.pauseMs,
  };
  if (control) return { ...base, control: true, crowd: null, attack: null };
  // What happens after the calm: an attack (60 %), a crowd of real users alone (15 %), or both (25 %).
  const shape = r();
  let crowd: DrawnCrowd | null = null;
  if (shape >= 0.6) {
    const multiplier = Math.round(uniform(...R.crowdMultiplier) * 10) / 10;
    const users = Math.round(calmUsers * multiplier);
    const cgnat = r() < 0.3;
    crowd = {
      multiplier,
      users,
      newShare: Math.round(r() * 100) / 100,
      prefixes: cgnat ? Math.max(Math.ceil(users / 254), int(1, 4)) : 0,
    };
  }
  let attack: DrawnAttack | null = null;
  if (shape < 0.6 || shape >= 0.75) {
    const addresses = Math.round(logUniform(...R.attackers));
    // Per-address rates are drawn up to what the generator can send for that many addresses: the
    // space drawn is the wide one, cut at the generator's total (reported, never silently clamped).
    const maxRate = Math.min(R.ratePerAddress[1], R.maxTotalRate / addresses);
    let ratePerAddress =
      maxRate <= R.ratePerAddress[0] ? maxRate : Math.round(logUniform(R.ratePerAddress[0], maxRate) * 1000) / 1000;
    // Rounded up past the cap (0.1047 → 0.105 × 7,639 addresses): rounded down instead.
    if (addresses * ratePerAddress > R.maxTotalRate) ratePerAddress = Math.floor(maxRate * 1000) / 1000;
    const minPrefixes = Math.ceil(addresses / 254);
    const prefixes = Math.max(
      minPrefixes,
      Math.min(addresses, Math.round(logUniform(1, Math.min(R.maxPrefixes, addresses)))),
    );
    const browser = r() < 0.5;
    const solve = r() < 0.3;
    attack = {
      addresses,
      prefixes,
      ratePerAddress,
      totalRate: Math.round(addresses * ratePerAddress * 10) / 10,
      browser,
      rotateAgent: r() < 0.3,
      cookies: solve || r() < 0.5,
      solve,
      paths: pick(BOT_PATHS),
      rampSec: r() < 0.5 ? 0 : int(3, Math.max(3, Math.floor(base.attackSec / 2))),
    };
  }
  return { ...base, control: false, crowd, attack };
}

/** One line of parameters, for listings. */
export function describe(s: MatrixScenario): string {
  const o = s.origin;
  const parts = [
    `origin ${o.kind} ${o.workers}×${o.serviceMs}ms q${o.queue}`,
    `calm ${s.calmSec}s users ${s.calmUsers}+${s.vaultUsers} vault`,
  ];
  if (s.crowd)
    parts.push(
      `crowd ×${s.crowd.multiplier} (${s.crowd.users} users, ${Math.round(s.crowd.newShare * 100)} % new, ` +
        `${s.crowd.prefixes === 0 ? 'one /24 each' : `${s.crowd.prefixes} /24s`})`,
    );
  if (s.attack) {
    const a = s.attack;
    parts.push(
      `attack ${a.addresses} addr/${a.prefixes} /24s × ${a.ratePerAddress}/s = ${a.totalRate}/s ` +
        `${a.browser ? 'browser' : 'plain'}${a.rotateAgent ? '+ua-rotation' : ''}${a.cookies ? '+cookies' : ''}` +
        `${a.solve ? '+solver' : ''} paths=${a.paths} ${a.rampSec ? `ramp ${a.rampSec}s` : 'step'}`,
    );
  }
  if (s.control) parts.push('control: no attack, no crowd');
  parts.push(`${s.attackSec}s window`);
  return parts.join('; ');
}

// ---------------------------------------------------------------- addresses

/** Calm users (and the warm-up's): one /24 each in 127.1.0.0/16, the same for the same index. */
const calmAddress = (n: number) => `127.1.${1 + (n % 250)}.${1 + Math.floor(n / 250)}`;
/** Crowd: one /24 each (127.4.0.0 to 127.7.255.0), or packed in `prefixes` /24s of 127.8.0.0/16. */
function crowdAddress(prefixes: number): (n: number) => string {
  if (prefixes === 0) return (n) => `127.${4 + (n >> 8)}.${n & 255}.1`;
  return (n) => `127.8.${n % prefixes}.${1 + (Math.floor(n / prefixes) % 254)}`;
}
/** Bots: from 127.10.0.0 on (5000 /24s reach 127.29). */
const BOT_BLOCK = 10;

/** Who a client address is, by its second octet (the blocks above). */
function population(octet2: number): 'calm' | 'crowd' | 'attack' | 'other' {
  if (octet2 === 1) return 'calm';
  if (octet2 >= 4 && octet2 <= 8) return 'crowd';
  if (octet2 >= BOT_BLOCK && octet2 < BOT_BLOCK + 64) return 'attack';
  return 'other';
}

// ---------------------------------------------------------------- processes

/**
 * Whether the gateway answers 200 on its admin listener's /readyz: it opens that listener after every client
 * listener, and a TCP connect alone may land on the short-lived probe listener `listenOn` opens first (the
 * drill's first requests would then meet its close as resets, counted against the gateway).
 */
function ready(adminPort: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
    async (r) => (await r.arrayBuffer(), r.status === 200),
    () => false,
  );
}

/** Gateways running now: killed if this process exits first (Ctrl-C, a crash), never left behind. */
const live = new Set<ChildProcess>();
let exitHook = false;
function register(proc: ChildProcess): void {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
}

/** CPU seconds a process has used (Linux /proc), or null elsewhere. */
export function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (USER_HZ = 100)
  } catch {
    return null;
  }
}

export interface Gateway {
  port: number;
  adminPort: number;
  logFile: string;
  dir: string;
  proc: ChildProcess;
  /** SIGTERM (a graceful stop that writes the state file), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/** The demo config with its addresses replaced by free loopback ports and both upstreams by `originUrl`. */
export function demoConfig(originUrl: string, port: number, adminPort: number): Record<string, unknown> {
  const cfg = parseYaml(readFileSync(DEMO_CONFIG, 'utf8')) as Record<string, unknown>;
  cfg.listeners = [{ address: `127.0.0.1:${port}` }];
  for (const u of cfg.upstreams as Array<Record<string, unknown>>) u.url = originUrl;
  (cfg.admin as Record<string, unknown>).address = `127.0.0.1:${adminPort}`;
  return cfg;
}

/**
 * Starts `bin/rempart.js` for a config, its log (JSON lines) in `dir`, its state file from `stateFrom` if given,
 * on `engine` if given (`--engine`, over either config).
 */
export async function startGateway(
  config: ConfigName,
  originUrl: string,
  stateFrom: string | null,
  engine?: Engine,
): Promise<Gateway> {
  const dir = mkdtempSync(path.join(tmpdir(), `rempart-matrix-${config}-`));
  const [port, adminPort] = [await freePort(), await freePort()];
  const stateDir = path.join(dir, 'state');
  mkdirSync(stateDir);
  if (stateFrom !== null && existsSync(stateFrom)) copyFileSync(stateFrom, path.join(stateDir, 'rempart-state.db'));
  let args: string[];
  if (config === 'zero')
    args = ['--upstream', originUrl, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`];
  else {
    const file = path.join(dir, 'rempart.json');
    await writeFile(file, JSON.stringify(demoConfig(originUrl, port, adminPort), null, 2));
    args = ['--config', file];
  }
  if (engine !== undefined) args.push('--engine', engine);
  const logFile = path.join(dir, 'gateway.log');
  const fd = openSync(logFile, 'w');
  // The gateway sees no REMPART_* variable from this shell: only what the two configs say.
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REMPART_')) env[k] = v;
  env.STATE_DIRECTORY = stateDir;
  env.REMPART_ADMIN_TOKEN = randomBytes(18).toString('hex');
  const proc = spawn(process.execPath, [BIN, ...args, '--log-format', 'json'], {
    cwd: dir,
    env,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  register(proc);
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  void exit.then(() => {
    exited = true;
  });
  const until = Date.now() + 20_000;
  while (!(await ready(adminPort))) {
    if (exited || Date.now() > until) {
      proc.kill('SIGKILL');
      throw new Error(`gateway (${config}) did not start: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    adminPort,
    logFile,
    dir,
    proc,
    stop: async (graceMs = 2000) => {
      if (exited) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(t);
    },
  };
}

// ---------------------------------------------------------------- the origin, in a child process

export interface OriginProcess {
  url: string;
  model: OriginModel;
  /** Its counters (GET /__origin/stats); null when it does not answer within `tries` attempts. */
  stats(tries?: number): Promise<ModelStats | null>;
  close(): Promise<void>;
}

const ORIGIN_MODULE = fileURLToPath(new URL('./origins.ts', import.meta.url));

/** Starts an origin model in a child process (`node src/drill/origins.ts MODEL`): its answers and its
 *  health check are never held up by the generator's work in this process. */
export async function startOriginProcess(model: OriginModel): Promise<OriginProcess> {
  const proc = spawn(process.execPath, [ORIGIN_MODULE, JSON.stringify(model)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  register(proc);
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('origin model did not start')), 15_000);
    proc.stdout!.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        resolve((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
      }
    });
    proc.once('exit', (code) => reject(new Error(`origin model exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const exit = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    url,
    model,
    // On a loaded machine the origin's child can take seconds to answer: a missed read must not be
    // taken for "nothing reached the origin" (it read as 0 % of the attack before), so retry, and let
    // the caller report the figure as unknown when every try failed.
    stats: async (tries = 4) => {
      for (let attempt = 0; attempt < tries; attempt++) {
        try {
          const res = await fetch(`${url}/__origin/stats`, { signal: AbortSignal.timeout(5000) });
          return (await res.json()) as ModelStats;
        } catch {
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      return null;
    },
    close: async () => {
      proc.stdin!.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 2000);
      await exit;
      clearTimeout(t);
    },
  };
}

// ---------------------------------------------------------------- one run

export interface LogTally {
  /** population → `decision[:reason]` → requests (refusals are sampled in the log: lower bounds). */
  byPopulation: Record<string, Record<string, number>>;
  /** Attack requests forwarded, by route/class. */
  attackForwardedByRoute: Record<string, number>;
  /** Log lines about signatures and bans (first few), for the analysis. */
  events: string[];
  /** The level's changes, in seconds from the run's start, with the detector's reasons. */
  levelChanges: Array<{ atSec: number; from: string; to: string; reasons: string[] }>;
  suppressed: number;
}

export interface RunOutcome {
  config: ConfigName;
  /** Real users' requests answered 2xx/3xx within the deadline, from the attack's (or crowd's) start on. */
  servedPct: number | null;
  servedPctCalm: number | null;
  legitRequests: number;
  legitFailures: { status: number; challenge: number; timeout: number; error: number };
  legitP95Ms: number | null;
  /** People (calm + crowd) who met a challenge at least once, or a refused connection. */
  challengedUsers: number;
  refusedUsers: number;
  users: number;
  /** Share of attack requests sent that the origin received (counted at the origin). */
  attackReachPct: number | null;
  attack: {
    drawnRate: number;
    achievedRate: number;
    due: number;
    sent: number;
    notSent: number;
    passed: number;
    blocked: number;
    refused: number;
    timeout: number;
    other: number;
    challenged: number;
    solved: number;
    solveSkipped: number;
    /** Solves the generator held its bot for over SOLVE_HELD_MS (not the work: the wait for a thread or core). */
    solveHeld: number;
    /** Bot-seconds the generator held solving bots, as a % of the attack's (the rule: generatorShortfall). */
    solveHeldPct: number;
    /** Seconds solves waited for a thread, and threads for a core (summed over solves). */
    solveQueueSec: number;
    solveCoreWaitSec: number;
    /** What the generator added to a solve (ms): median, p90, max. */
    solveHeldMs: { p50: number; p90: number; max: number } | null;
    /** CPU seconds the solves took: the work the difficulty asked for. */
    solveCpuSec: number;
    /** Solve threads. */
    solveWorkers: number;
    sessions: number;
    receivedAtOrigin: number;
  } | null;
  /**
   * False when the generator, not the defence, kept the attack from being sent as drawn (the rule:
   * generatorShortfall in src/drill/bots.ts), or when its loop was a second late at p99.
   */
  produced: boolean;
  producedNote: string;
  origin: {
    received: { attack: number; legit: number };
    served: number;
    rejected: number;
    utilisationPct: number;
    sessions: number;
  };
  level: {
    max: number | null;
    underAttackAfterSec: number | null;
    elevatedAfterSec: number | null;
    timeline: Array<number | null>;
  };
  refusals: Record<string, number>;
  shed: Record<string, number>;
  log: LogTally;
  /** Real users' failures by what answered them (Rempart's error code, the origin's status, lateness). */
  legitReasons: Record<string, number>;
  /** Per second of the run: real users served and failed, attack and legit requests the origin received, its 503s. */
  series: {
    legitOk: number[];
    legitFail: number[];
    originAttack: number[];
    originLegit: number[];
    originRejected: number[];
  };
  /** CPU over the traffic, % of one core: the gateway (its process) and this process (generator + origin model). */
  cpu: { gatewayPct: number | null; generatorPct: number; generatorLagP99Ms: number; generatorLagMaxMs: number };
  /** Load average when the run ended. */
  load1: number;
  logFile: string;
}

export interface ScenarioResult {
  scenario: MatrixScenario;
  description: string;
  runs: RunOutcome[];
}

const pct = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 10_000) / 100 : null);

/** The solving bots' figures for a run's line ('' without solvers): the work, and what the generator added. */
export function solveText(o: RunOutcome): string {
  const a = o.attack;
  if (a === null || a.solveWorkers === 0) return '';
  const h = a.solveHeldMs;
  return (
    `; solves ${a.solved} (${a.solveCpuSec} CPU s on ${a.solveWorkers} threads; skipped ${a.solveSkipped}, ` +
    `held > ${SOLVE_HELD_MS / 1000} s ${a.solveHeld}${h ? `, held p50/p90/max ${h.p50}/${h.p90}/${h.max} ms` : ''}, ` +
    `${a.solveHeldPct} % of the attack's bot-time held; summed waits ${a.solveQueueSec} s for a thread, ` +
    `${a.solveCoreWaitSec} s for a core: a busy thread had ${speed(a.solveCpuSec, a.solveCoreWaitSec)} % of one)`
  );
}

/** CPU time over wall time on the solving threads, %: under 100 when the machine's other work had the cores. */
const speed = (cpuSec: number, coreWaitSec: number) =>
  cpuSec > 0 ? Math.round((cpuSec / (cpuSec + coreWaitSec)) * 100) : '-';

/** Median, p90 and max of a list of milliseconds (rounded), or null when empty. */
function quantiles(ms: number[]): { p50: number; p90: number; max: number } | null {
  if (ms.length === 0) return null;
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]!);
  return { p50: at(0.5), p90: at(0.9), max: Math.round(s[s.length - 1]!) };
}

function tallyLog(file: string, startWallMs: number): LogTally {
  const out: LogTally = { byPopulation: {}, attackForwardedByRoute: {}, events: [], levelChanges: [], suppressed: 0 };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (line.length === 0 || line[0] !== '{') continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (o.msg === 'request' && typeof o.client === 'string') {
      const octet2 = Number(o.client.split('.')[1]);
      const pop = population(octet2);
      const key = `${o.decision}${o.reason ? `:${o.reason}` : ''}`;
      const t = (out.byPopulation[pop] ??= {});
      t[key] = (t[key] ?? 0) + 1;
      if (pop === 'attack' && (o.decision === 'forwarded' || o.decision === 'forward')) {
        const k = `${o.route}/${o.class}${o.cache ? ` cache=${o.cache}` : ''}`;
        out.attackForwardedByRoute[k] = (out.attackForwardedByRoute[k] ?? 0) + 1;
      }
    } else if (typeof o.suppressed === 'number') out.suppressed += o.suppressed;
    else if (o.msg === 'attack level changed') {
      const atSec = Math.round((Date.parse(String(o.time)) - startWallMs) / 100) / 10;
      out.levelChanges.push({ atSec, from: String(o.from), to: String(o.to), reasons: o.reasons as string[] });
    } else if (typeof o.msg === 'string' && /signature|ban|level/i.test(o.msg) && out.events.length < 30) {
      const ev = o.evidence as { feature?: string; value?: string } | undefined;
      out.events.push(
        `${String(o.time ?? '').slice(11, 19)} ${o.msg}${o.rule ? ` ${o.rule}` : ''}${ev ? ` (${ev.feature}=${ev.value})` : ''}`,
      );
    }
  }
  return out;
}

export interface RunOptions {
  /** Per config: the warm state file to start from (null: a cold start). */
  warmState?: Partial<Record<ConfigName, string | null>>;
  /** Keep the gateway's log and dir (else removed after the tally). */
  keepLogs?: boolean;
  log?: (line: string) => void;
  /** Another gateway in front of the origin instead of Rempart (bench/seven.ts: nginx as a comparison). */
  startGateway?: (originUrl: string) => Promise<Gateway>;
  /** Rempart's HTTP/1.1 engine (unset: the config's own). */
  engine?: Engine;
}

/** Runs one drawn scenario against one config: a fresh origin, a fresh gateway, then the traffic. */
export async function runScenario(s: MatrixScenario, config: ConfigName, opts: RunOptions = {}): Promise<RunOutcome> {
  const R = RANGES[s.profile];
  const origin = await startOriginProcess(s.origin);
  let gw: Gateway | null = null;
  try {
    gw = opts.startGateway
      ? await opts.startGateway(origin.url)
      : await startGateway(config, origin.url, opts.warmState?.[config] ?? null, opts.engine);
    const target = await resolveTarget(`http://127.0.0.1:${gw.port}`, '--target');
    const totalSec = s.calmSec + s.attackSec + s.tailSec;
    const startMs = performance.now();
    const startWallMs = Date.now();
    const rec = new Recorder(startMs, totalSec + 2, 0);
    const ctx: RunContext = {
      target,
      dialOrigin: `http://127.0.0.1:${gw.port}`,
      hostHeader: target.url.host,
      deadlineMs: 5000,
      rec,
      stopped: false,
      closing: false,
      maxRequests: 5_000_000,
      onCap: () => {},
      warn: () => {},
    };
    const calmPops: LegitPopulation[] = [
      legitPop('browser', s.calmUsers, s.pauseMs, 0, false),
      legitPop('vault', s.vaultUsers, s.pauseMs, 0, false),
    ];
    const crowds: LegitCrowd[] = [startLegit(ctx, calmPops, calmAddress)];
    if (s.crowd) {
      const returning = Math.round(s.crowd.users * (1 - s.crowd.newShare));
      // Returning people visited once during the calm (their prefix and cookies were seen); new ones not.
      crowds.push(
        startLegit(
          ctx,
          [
            legitPop('browser', returning, s.pauseMs, s.calmSec, true),
            legitPop('browser', s.crowd.users - returning, s.pauseMs, s.calmSec, false),
          ],
          crowdAddress(s.crowd.prefixes),
        ),
      );
    }
    const a = s.attack;
    const bots = a
      ? new BotAttack(
          ctx,
          {
            addresses: a.addresses,
            prefixes: a.prefixes,
            ratePerAddress: a.ratePerAddress,
            browser: a.browser,
            rotateAgent: a.rotateAgent,
            cookies: a.cookies,
            solve: a.solve,
            paths: a.paths,
            rampSec: a.rampSec,
            startSec: s.calmSec,
            durationSec: s.attackSec,
          },
          R.caps,
          BOT_BLOCK,
          startMs,
        )
      : null;
    const metrics = new MetricsPoller(`http://127.0.0.1:${gw.adminPort}/metrics`);
    await metrics.poll(null);
    const ticker = bots ? setInterval(() => bots.tick(performance.now()), 10) : null;
    const series: RunOutcome['series'] = {
      legitOk: [],
      legitFail: [],
      originAttack: [],
      originLegit: [],
      originRejected: [],
    };
    const empty = { attack: 0, legit: 0, rejected: 0 };
    const stats0 = await origin.stats();
    let prev = stats0
      ? { attack: stats0.received.attack, legit: stats0.received.legit, rejected: stats0.rejected }
      : empty;
    // This process's event-loop delay: the generator and the origin model share it, so a busy loop
    // would delay the origin's answers and the users' clicks (reported: the run is then suspect).
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const gwCpu0 = cpuSeconds(gw.proc.pid);
    const cpu0 = process.cpuUsage();
    const everySecond = setInterval(() => {
      void metrics.poll(rec);
      void origin.stats(1).then((st) => {
        if (st === null) return;
        series.originAttack.push(st.received.attack - prev.attack);
        series.originLegit.push(st.received.legit - prev.legit);
        series.originRejected.push(st.rejected - prev.rejected);
        prev = { attack: st.received.attack, legit: st.received.legit, rejected: st.rejected };
      });
    }, 1000);
    await new Promise((r) => setTimeout(r, totalSec * 1000));
    const gwCpu1 = cpuSeconds(gw.proc.pid);
    lag.disable();
    const cpu1 = process.cpuUsage(cpu0);
    ctx.stopped = true;
    if (ticker) clearInterval(ticker);
    bots?.settle(performance.now());
    await Promise.race([Promise.all(crowds.map((c) => c.done)), new Promise((r) => setTimeout(r, 1500))]);
    clearInterval(everySecond);
    await metrics.poll(rec);
    ctx.closing = true;
    await Promise.all([...crowds.map((c) => c.close()), bots?.close(), metrics.close()]);
    const load1 = loadavg()[0]!;
    await gw.stop();

    // Real users from the attack's (or the crowd's) start: what the drawn event did to them.
    let ok = 0;
    let fail = 0;
    let okCalm = 0;
    let failCalm = 0;
    const timeline: Array<number | null> = [];
    rec.seconds.forEach((sec, i) => {
      timeline.push(sec.attackLevel);
      series.legitOk.push(sec.legitOk);
      series.legitFail.push(sec.legitFail);
      if (i >= s.calmSec) {
        ok += sec.legitOk;
        fail += sec.legitFail;
      } else {
        okCalm += sec.legitOk;
        failCalm += sec.legitFail;
      }
    });
    const log = tallyLog(gw.logFile, startWallMs);
    // From the gateway's own log lines: /metrics polls time out when its event loop is saturated.
    const rank: Record<string, number> = { calm: 0, elevated: 1, under_attack: 2 };
    const firstAt = (min: number) => {
      const c = log.levelChanges.find((x) => (rank[x.to] ?? 0) >= min); // negative: before the event
      return c ? Math.round((c.atSec - s.calmSec) * 10) / 10 : null;
    };
    const maxLevel = log.levelChanges.reduce((m, x) => Math.max(m, rank[x.to] ?? 0), 0);
    const stRead = await origin.stats();
    const st = stRead ?? {
      received: { attack: 0, legit: 0, other: 0 },
      served: 0,
      rejected: 0,
      sessions: 0,
      busyMs: 0,
    };
    const windowMs = totalSec * 1000;
    const failures = { status: 0, challenge: 0, timeout: 0, error: 0 };
    let legitRequests = 0;
    const p95 = rec.classes.home.hist;
    for (const c of Object.values(rec.classes)) {
      legitRequests += c.requests;
      failures.status += c.status;
      failures.challenge += c.challenge;
      failures.timeout += c.timeout;
      failures.error += c.error;
      if (c !== rec.classes.home) p95.merge(c.hist);
    }
    const t = metrics.totals();
    let attack: RunOutcome['attack'] = null;
    let produced = true;
    let producedNote = '';
    if (bots && a) {
      const c = bots.counts;
      const activeSec = s.attackSec - a.rampSec / 2;
      attack = {
        drawnRate: a.totalRate,
        achievedRate: Math.round((c.sent / Math.max(0.1, activeSec)) * 10) / 10,
        due: c.due,
        sent: c.sent,
        notSent: c.notSent,
        passed: c.passed,
        blocked: c.blocked,
        refused: c.refused,
        timeout: c.timeout,
        other: c.other,
        challenged: c.challenged,
        solved: c.solved,
        solveSkipped: c.solveSkipped,
        solveHeld: c.solveHeld,
        solveQueueSec: Math.round(c.solveQueueSec * 10) / 10,
        solveCoreWaitSec: Math.round(c.solveCoreWaitSec * 10) / 10,
        solveHeldPct: Math.round((c.solveHeldBotSec / attackBotSec({ ...a, durationSec: s.attackSec })) * 1000) / 10,
        solveHeldMs: quantiles(c.solveHeldMs),
        solveCpuSec: Math.round(c.solveCpuSec * 10) / 10,
        solveWorkers: bots.solver?.workers ?? 0,
        sessions: c.sessions,
        receivedAtOrigin: st.received.attack,
      };
      producedNote = generatorShortfall(c, R.caps, { ...a, durationSec: s.attackSec }, attack.solveWorkers);
      produced = producedNote === '';
    }
    // A starved generator (its loop a second late) stretches think times and the origin's service
    // times: what it measured is not the drawn scenario.
    const lagP99Ms = lag.percentile(99) / 1e6;
    if (produced && lagP99Ms > 1000) {
      produced = false;
      producedNote = `generator starved (event-loop delay p99 ${Math.round(lagP99Ms)} ms)`;
    }
    const outcome: RunOutcome = {
      config,
      servedPct: pct(ok, ok + fail),
      servedPctCalm: pct(okCalm, okCalm + failCalm),
      legitRequests,
      legitFailures: failures,
      legitP95Ms: p95.total > 0 ? Math.round((p95.percentileMs(95) ?? 0) * 10) / 10 : null,
      challengedUsers: crowds.reduce((n, c) => n + c.challengedUsers(), 0),
      refusedUsers: crowds.reduce((n, c) => n + c.refusedUsers(), 0),
      users: crowds.reduce((n, c) => n + c.users, 0),
      attackReachPct: attack && stRead ? pct(st.received.attack, attack.sent) : null,
      attack,
      produced,
      producedNote,
      origin: {
        received: { attack: st.received.attack, legit: st.received.legit },
        served: st.served,
        rejected: st.rejected,
        utilisationPct: Math.round((st.busyMs / (s.origin.workers * windowMs)) * 1000) / 10,
        sessions: st.sessions,
      },
      level: {
        max: Math.max(maxLevel, t.maxAttackLevel ?? 0),
        underAttackAfterSec: firstAt(2),
        elevatedAfterSec: firstAt(1),
        timeline,
      },
      refusals: t.refusals,
      shed: t.shed,
      log,
      legitReasons: rec.legitReasons,
      series,
      cpu: {
        gatewayPct: gwCpu0 !== null && gwCpu1 !== null ? Math.round(((gwCpu1 - gwCpu0) / totalSec) * 100) : null,
        generatorPct: Math.round(((cpu1.user + cpu1.system) / 1e6 / totalSec) * 100),
        generatorLagP99Ms: Math.round(lag.percentile(99) / 1e5) / 10,
        generatorLagMaxMs: Math.round(lag.max / 1e5) / 10,
      },
      load1: Math.round(load1 * 100) / 100,
      logFile: gw.logFile,
    };
    if (!opts.keepLogs) {
      rmSync(gw.dir, { recursive: true, force: true });
      outcome.logFile = '';
    }
    return outcome;
  } finally {
    await gw?.stop(500).catch(() => {});
    await origin.close();
  }
}

function legitPop(
  kind: 'browser' | 'vault',
  users: number,
  pauseMs: [number, number],
  startSec: number,
  previsit: boolean,
): LegitPopulation {
  return { kind, users, pauseMs, returningShare: 0.6, pagesPerVisit: [2, 5], startSec, previsit };
}

/**
 * A calm warm-up for one config: the gateway learns its baselines and the calm users' prefixes for
 * `seconds` (past defense.level.warmupSeconds, 60 s), then stops gracefully and leaves its state file,
 * which every scenario's gateway starts from (src/app/state-file.ts: no new warm-up after a restart).
 * Returns the state file's path. The warm-up's users are the calm users of every scenario (same
 * addresses: browsers first, then vault users), at the largest calm population a scenario draws.
 */
export async function warmUp(
  config: ConfigName,
  profile: Profile,
  dir: string,
  /** A fixed set (src/drill/seven.ts) warms up on its own origin with its own calm users. */
  own?: { origin: OriginModel; calmUsers: number; vaultUsers: number },
  engine?: Engine,
): Promise<string | null> {
  const R = RANGES[profile];
  if (R.warmupSec <= 0) return null;
  const origin = await startOriginProcess(own?.origin ?? { kind: 'slots', workers: 32, serviceMs: 10, queue: 8 });
  const gw = await startGateway(config, origin.url, null, engine);
  try {
    const target = await resolveTarget(`http://127.0.0.1:${gw.port}`, '--target');
    const rec = new Recorder(performance.now(), R.warmupSec + 2, 0);
    const ctx: RunContext = {
      target,
      dialOrigin: `http://127.0.0.1:${gw.port}`,
      hostHeader: target.url.host,
      deadlineMs: 5000,
      rec,
      stopped: false,
      closing: false,
      maxRequests: 5_000_000,
      onCap: () => {},
      warn: () => {},
    };
    // The most calm users a scenario draws: every scenario's calm users are then people seen before.
    const crowd = startLegit(
      ctx,
      [
        legitPop('browser', own?.calmUsers ?? R.calmUsers[1], R.pauseMs, 0, false),
        legitPop('vault', own?.vaultUsers ?? R.vaultUsers[1], R.pauseMs, 0, false),
      ],
      calmAddress,
    );
    await new Promise((r) => setTimeout(r, R.warmupSec * 1000));
    ctx.stopped = true;
    await Promise.race([crowd.done, new Promise((r) => setTimeout(r, 1500))]);
    ctx.closing = true;
    await crowd.close();
    await gw.stop(15_000);
    const file = path.join(gw.dir, 'state', 'rempart-state.db');
    if (!existsSync(file)) return null;
    const kept = path.join(dir, `warm-${config}.db`);
    copyFileSync(file, kept);
    return kept;
  } finally {
    await gw.stop(500).catch(() => {});
    await origin.close();
    rmSync(gw.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the matrix

export interface MatrixOptions {
  seed?: number;
  scenarios?: number;
  profile?: Profile;
  configs?: ConfigName[];
  /** Index 0 is a control: calm users only (reported apart, not in the distribution). */
  control?: boolean;
  /** Run only these indexes of the seed (`--replay seed:index`). */
  only?: number[];
  /** How many worst scenarios to list. */
  worst?: number;
  keepLogs?: boolean;
  log?: (line: string) => void;
  /** Rempart's HTTP/1.1 engine for every gateway (unset: the config's own). */
  engine?: Engine;
}

export interface Distribution {
  n: number;
  min: number | null;
  p10: number | null;
  median: number | null;
  max: number | null;
}

export interface ConfigSummary {
  config: ConfigName;
  /** Scenarios counted (produced by the generator, not the control). */
  counted: number;
  notProduced: number;
  served: Distribution;
  /** Attack reaching the origin, over scenarios with an attack (min = best case). */
  attackReach: Distribution;
  /** Real users challenged / refused over crowd-only scenarios, and over all counted. */
  crowdOnly: { scenarios: number; challengedUsers: number; refusedUsers: number };
  challengedUsers: number;
  refusedUsers: number;
  control: { servedPct: number | null; challengedUsers: number } | null;
  worst: Array<{ id: string; servedPct: number | null; attackReachPct: number | null; description: string }>;
}

export interface MatrixReport {
  version: 1;
  tool: 'rempart drill matrix';
  seed: number;
  profile: Profile;
  configs: ConfigName[];
  startedAt: string;
  durationSec: number;
  loadAverage: { start: number[]; end: number[] };
  replay: string;
  results: ScenarioResult[];
  summary: ConfigSummary[];
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.floor(q * (sorted.length - 1))));
  return sorted[i]!;
}

function distribution(values: number[]): Distribution {
  const s = [...values].sort((x, y) => x - y);
  return { n: s.length, min: quantile(s, 0), p10: quantile(s, 0.1), median: quantile(s, 0.5), max: quantile(s, 1) };
}

export function summarise(results: ScenarioResult[], configs: ConfigName[], worst = 5): ConfigSummary[] {
  return configs.map((config) => {
    const rows = results
      .map((r) => ({ r, o: r.runs.find((x) => x.config === config) }))
      .filter((x): x is { r: ScenarioResult; o: RunOutcome } => x.o !== undefined);
    const control = rows.find((x) => x.r.scenario.control);
    const counted = rows.filter((x) => !x.r.scenario.control && x.o.produced && x.o.servedPct !== null);
    const crowdOnly = counted.filter((x) => x.r.scenario.crowd && !x.r.scenario.attack);
    return {
      config,
      counted: counted.length,
      notProduced: rows.filter((x) => !x.r.scenario.control && !x.o.produced).length,
      served: distribution(counted.map((x) => x.o.servedPct!)),
      attackReach: distribution(counted.filter((x) => x.o.attackReachPct !== null).map((x) => x.o.attackReachPct!)),
      crowdOnly: {
        scenarios: crowdOnly.length,
        challengedUsers: crowdOnly.reduce((n, x) => n + x.o.challengedUsers, 0),
        refusedUsers: crowdOnly.reduce((n, x) => n + x.o.refusedUsers, 0),
      },
      challengedUsers: counted.reduce((n, x) => n + x.o.challengedUsers, 0),
      refusedUsers: counted.reduce((n, x) => n + x.o.refusedUsers, 0),
      control: control ? { servedPct: control.o.servedPct, challengedUsers: control.o.challengedUsers } : null,
      worst: [...counted]
        .sort((x, y) => x.o.servedPct! - y.o.servedPct! || (y.o.attackReachPct ?? 0) - (x.o.attackReachPct ?? 0))
        .slice(0, worst)
        .map((x) => ({
          id: x.r.scenario.id,
          servedPct: x.o.servedPct,
          attackReachPct: x.o.attackReachPct,
          description: x.r.description,
        })),
    };
  });
}

/** A random 32-bit seed: a new matrix every run unless one is given. */
export const newSeed = () => randomBytes(4).readUInt32BE(0);

export async function runMatrix(opts: MatrixOptions = {}): Promise<MatrixReport> {
  const seed = opts.seed ?? newSeed();
  const profile = opts.profile ?? 'full';
  const configs = opts.configs ?? [...CONFIGS];
  const n = opts.scenarios ?? 12;
  const control = opts.control ?? true;
  const log = opts.log ?? (() => {});
  const indexes = opts.only ?? Array.from({ length: n }, (_, i) => i);
  const startedAt = new Date();
  const t0 = performance.now();
  const loadStart = loadavg().map((x) => Math.round(x * 100) / 100);
  const dir = mkdtempSync(path.join(tmpdir(), 'rempart-matrix-warm-'));
  const warmState: Partial<Record<ConfigName, string | null>> = {};
  try {
    for (const c of configs) {
      if (RANGES[profile].warmupSec > 0) log(`warm-up ${c}: ${RANGES[profile].warmupSec} s of calm traffic`);
      warmState[c] = await warmUp(c, profile, dir, undefined, opts.engine);
    }
    const results: ScenarioResult[] = [];
    for (const i of indexes) {
      const scenario = drawScenario(seed, i, profile, control && i === 0);
      const description = describe(scenario);
      log(`[${scenario.id}] ${description}`);
      const runs: RunOutcome[] = [];
      for (const c of configs) {
        const o = await runScenario(scenario, c, { warmState, keepLogs: opts.keepLogs, engine: opts.engine });
        runs.push(o);
        log(
          `  ${c.padEnd(4)} served ${o.servedPct ?? '-'} % (calm ${o.servedPctCalm ?? '-'} %), challenged ${o.challengedUsers}, ` +
            `refused ${o.refusedUsers} of ${o.users} users; attack reaching origin ${o.attackReachPct ?? '-'} %` +
            `${o.attack ? ` (rate ${o.attack.achievedRate}/${o.attack.drawnRate}/s)` : ''}${solveText(o)}; ` +
            `level max ${o.level.max ?? '-'}` +
            `${o.produced ? '' : `; NOT PRODUCED: ${o.producedNote}`}; CPU gateway ${o.cpu.gatewayPct ?? '-'} %, ` +
            `generator ${o.cpu.generatorPct} % (loop delay p99 ${o.cpu.generatorLagP99Ms} ms); load ${o.load1}${o.logFile ? `; log ${o.logFile}` : ''}`,
        );
      }
      results.push({ scenario, description, runs });
    }
    return {
      version: 1,
      tool: 'rempart drill matrix',
      seed,
      profile,
      configs,
      startedAt: startedAt.toISOString(),
      durationSec: Math.round((performance.now() - t0) / 1000),
      loadAverage: { start: loadStart, end: loadavg().map((x) => Math.round(x * 100) / 100) },
      replay: `rempart drill matrix --profile ${profile} --replay ${seed}:<index>`,
      results,
      summary: summarise(results, configs, opts.worst ?? 5),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (v: number | null) => (v === null ? '-' : `${v}`);

/** The report as text: the distribution per config, then the worst scenarios with how to replay them. */
export function matrixText(report: MatrixReport): string {
  const lines = [
    `drill matrix: seed ${report.seed}, profile ${report.profile}, ${report.results.length} scenarios × ` +
      `${report.configs.join(', ')}, ${report.durationSec} s; load average ${report.loadAverage.start.join(' ')} → ` +
      `${report.loadAverage.end.join(' ')}`,
    '',
    '| config | counted | real users served % (min / p10 / median) | attack reaching origin % (median / max) | users challenged / refused (crowd-only scenarios) | not produced | control served % |',
    '|---|---:|---|---|---|---:|---:|',
  ];
  for (const s of report.summary)
    lines.push(
      `| ${s.config} | ${s.counted} | ${fmt(s.served.min)} / ${fmt(s.served.p10)} / ${fmt(s.served.median)} | ` +
        `${fmt(s.attackReach.median)} / ${fmt(s.attackReach.max)} | ${s.challengedUsers} / ${s.refusedUsers} ` +
        `(${s.crowdOnly.challengedUsers} / ${s.crowdOnly.refusedUsers} in ${s.crowdOnly.scenarios}) | ${s.notProduced} | ` +
        `${fmt(s.control?.servedPct ?? null)} |`,
    );
  for (const s of report.summary) {
    lines.push('', `worst for ${s.config} (replay: rempart drill matrix --profile ${report.profile} --replay <id>):`);
    for (const w of s.worst)
      lines.push(
        `  ${w.id}  served ${fmt(w.servedPct)} %, attack reaching origin ${fmt(w.attackReachPct)} %: ${w.description}`,
      );
  }
  return lines.join('\n');
}

/** Parses `seed:index[,index...]`. */
export function parseReplay(raw: string): { seed: number; indexes: number[] } | null {
  const m = /^(\d{1,10}):(\d{1,4}(?:,\d{1,4})*)$/.exec(raw.trim());
  if (!m) return null;
  const seed = Number(m[1]);
  if (seed > 0xffffffff) return null;
  return { seed, indexes: m[2]!.split(',').map(Number) };
}
