// The seven fixed drills of issue 13 (`rempart drill matrix --set seven`, bench/seven.ts): our own
// equivalents of the drills whose table opens the issue, each a fixed parameter set run by the matrix's
// machinery (runScenario, warmUp, the origin models, the bots, the real users). They are an instrument:
// the gateway sees only their traffic, and nothing in src/ outside src/drill/ may refer to them.
//
//   warm-up (70 s of calm on the same origin, per config) ─► state file ─► for each run, each drill,
//   each config: a fresh origin + a fresh gateway from that state ─► 10 s calm ─► 20 s event ─► 3 s tail
//
// Sizes are what a 2-core machine shared by the gateway, the origin and the generator can produce
// (the report prints the achieved against the drawn rate of every run): about 300 req/s of attack. The
// origin is the `login` model: 4 slots × 20 ms (200 req/s), a queue of 4, a 503 at once past it, and a
// session for any POST /login. Calm demand (40 people + 4 vault users at 1–3 s pauses) is about
// 27 req/s; the 5× crowd brings it to about 150 req/s (the origin can carry it, not with the attack).
import { loadavg } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  RANGES,
  describe,
  runScenario,
  solveText,
  warmUp,
  type ConfigName,
  type DrawnAttack,
  type Engine,
  type Gateway,
  type MatrixScenario,
  type RunOutcome,
} from './matrix.ts';
import type { OriginModel } from './origins.ts';

export const SEVEN_ORIGIN: OriginModel = { kind: 'login', workers: 4, serviceMs: 20, queue: 4 };
const CALM_USERS = 40;
const VAULT_USERS = 4;

const attack = (a: Omit<DrawnAttack, 'totalRate'>): DrawnAttack => ({
  ...a,
  totalRate: Math.round(a.addresses * a.ratePerAddress * 10) / 10,
});

const BOTNET = attack({
  addresses: 1000,
  prefixes: 500,
  ratePerAddress: 0.3,
  browser: false,
  rotateAgent: false,
  cookies: false,
  solve: false,
  paths: 'random',
  rampSec: 0,
});
const CROWD = { multiplier: 5, users: 5 * CALM_USERS, newShare: 0.5, prefixes: 0 };

/** The seven drills, in the issue's order: [the issue's row label, what runs]. */
export const SEVEN: Array<{ label: string; crowd: MatrixScenario['crowd']; attack: DrawnAttack | null }> = [
  { label: 'botnet of browser-less clients at a human pace', crowd: null, attack: BOTNET },
  {
    label: 'flood from a few addresses',
    crowd: null,
    attack: attack({ ...BOTNET, addresses: 5, prefixes: 5, ratePerAddress: 60 }),
  },
  {
    label: 'login flood from many addresses',
    crowd: null,
    // Scripted clients POSTing /login, keeping the session cookie the origin grants to any of them.
    attack: attack({ ...BOTNET, addresses: 750, prefixes: 250, ratePerAddress: 0.4, cookies: true, paths: 'login' }),
  },
  {
    label: 'browser-like bots keeping cookies',
    crowd: null,
    attack: attack({ ...BOTNET, addresses: 300, prefixes: 100, ratePerAddress: 1, browser: true, cookies: true }),
  },
  { label: '5× crowd of real users, no attacker', crowd: CROWD, attack: null },
  { label: 'crowd and botnet together', crowd: CROWD, attack: BOTNET },
  {
    label: 'bots that solve the proof of work, then 10 req/s each',
    crowd: null,
    attack: attack({
      ...BOTNET,
      addresses: 30,
      prefixes: 15,
      ratePerAddress: 10,
      browser: true,
      cookies: true,
      solve: true,
    }),
  },
];

/** The event's length of the seven drills; `--attack-sec` runs them longer (a sustained attack). */
export const SEVEN_ATTACK_SEC = 20;

/** Drill n (1 to 7) as a scenario the matrix runs; its id is `seven:n`. */
export function sevenScenario(n: number, attackSec = SEVEN_ATTACK_SEC): MatrixScenario {
  const d = SEVEN[n - 1];
  if (d === undefined) throw new Error(`no drill ${n} in the seven (1 to ${SEVEN.length})`);
  return {
    id: `seven:${n}`,
    seed: 0,
    index: n,
    profile: 'full',
    control: false,
    origin: { ...SEVEN_ORIGIN },
    calmSec: 10,
    attackSec,
    tailSec: 3,
    calmUsers: CALM_USERS,
    vaultUsers: VAULT_USERS,
    pauseMs: RANGES.full.pauseMs,
    crowd: d.crowd ? { ...d.crowd } : null,
    attack: d.attack ? { ...d.attack } : null,
  };
}

/** A gateway under test: one of Rempart's configs, or another proxy started by `start` (bench/seven.ts). */
export interface SevenGateway {
  name: string;
  config: ConfigName;
  start?: (originUrl: string) => Promise<Gateway>;
}

export interface SevenRun {
  drill: number;
  run: number;
  gateway: string;
  outcome: RunOutcome;
}

export interface SevenReport {
  tool: 'rempart drill matrix --set seven';
  startedAt: string;
  durationSec: number;
  loadAverage: { start: number[]; end: number[] };
  gateways: string[];
  runs: SevenRun[];
}

export interface SevenOptions {
  gateways: SevenGateway[];
  /** Drills to run (1 to 7), default all. */
  drills?: number[];
  /** Runs of each drill per gateway (default 2). */
  runs?: number;
  log?: (line: string) => void;
  /** Rempart's HTTP/1.1 engine for its gateways (unset: the config's own). */
  engine?: Engine;
  /** The event's length in seconds (default SEVEN_ATTACK_SEC): the same drills as a sustained attack. */
  attackSec?: number;
}

/** One line per run, as the matrix prints them. */
export function runLine(o: RunOutcome): string {
  return (
    `served ${o.servedPct ?? '-'} % (calm ${o.servedPctCalm ?? '-'} %), challenged ${o.challengedUsers}, ` +
    `refused ${o.refusedUsers} of ${o.users} users; attack reaching origin ${o.attackReachPct ?? '-'} %` +
    `${o.attack ? ` (rate ${o.attack.achievedRate}/${o.attack.drawnRate}/s)` : ''}${solveText(o)}; ` +
    `origin 503s ${o.origin.rejected}; ` +
    `level max ${o.level.max ?? '-'}${o.produced ? '' : `; NOT PRODUCED: ${o.producedNote}`}; ` +
    `CPU gateway ${o.cpu.gatewayPct ?? '-'} %, generator ${o.cpu.generatorPct} % ` +
    `(loop delay p99 ${o.cpu.generatorLagP99Ms} ms); load ${o.load1}`
  );
}

/** Warms each Rempart config up once (70 s of calm on the drills' origin), then runs every drill
 *  `runs` times on every gateway, gateways interleaved within a drill so they share the same load. */
export async function runSeven(opts: SevenOptions): Promise<SevenReport> {
  const log = opts.log ?? (() => {});
  const drills = opts.drills ?? SEVEN.map((_, i) => i + 1);
  const runs = opts.runs ?? 2;
  const startedAt = new Date();
  const t0 = performance.now();
  const loadStart = loadavg().map((x) => Math.round(x * 100) / 100);
  const dir = mkdtempSync(path.join(tmpdir(), 'rempart-seven-warm-'));
  const warmState: Partial<Record<ConfigName, string | null>> = {};
  const out: SevenRun[] = [];
  try {
    for (const g of opts.gateways) {
      if (g.start || g.config in warmState) continue;
      log(`warm-up ${g.config}: ${RANGES.full.warmupSec} s of calm traffic on the drills' origin`);
      warmState[g.config] = await warmUp(
        g.config,
        'full',
        dir,
        { origin: SEVEN_ORIGIN, calmUsers: CALM_USERS, vaultUsers: VAULT_USERS },
        opts.engine,
      );
    }
    for (let run = 1; run <= runs; run++)
      for (const n of drills) {
        const s = sevenScenario(n, opts.attackSec);
        log(`[${s.id} run ${run}] ${SEVEN[n - 1]!.label}: ${describe(s)}`);
        for (const g of opts.gateways) {
          const outcome = await runScenario(s, g.config, { warmState, startGateway: g.start, engine: opts.engine });
          out.push({ drill: n, run, gateway: g.name, outcome });
          log(`  ${g.name.padEnd(5)} ${runLine(outcome)}`);
        }
      }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    tool: 'rempart drill matrix --set seven',
    startedAt: startedAt.toISOString(),
    durationSec: Math.round((performance.now() - t0) / 1000),
    loadAverage: { start: loadStart, end: loadavg().map((x) => Math.round(x * 100) / 100) },
    gateways: opts.gateways.map((g) => g.name),
    runs: out,
  };
}

const GATEWAY_TITLES: Record<string, string> = {
  zero: 'zero-config (`rempart --upstream …`)',
  demo: 'demo config (examples/postal/rempart.yaml)',
  nginx: 'nginx, limit_req + proxy_cache (bench/nginx-seven.conf)',
};

const v = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${x}`);

/** The issue's table: one row per drill, one column per gateway; each cell gives every run, worst first. */
export function sevenTable(report: SevenReport): string {
  const lines = [
    `| drill (runs: worst first) | ${report.gateways.map((g) => GATEWAY_TITLES[g] ?? g).join(' | ')} |`,
    `|---|${report.gateways.map(() => '---').join('|')}|`,
  ];
  const drills = [...new Set(report.runs.map((r) => r.drill))].sort((a, b) => a - b);
  for (const n of drills) {
    const cells = report.gateways.map((g) => {
      const rs = report.runs
        .filter((r) => r.drill === n && r.gateway === g)
        .map((r) => r.outcome)
        .sort((a, b) => (a.servedPct ?? 0) - (b.servedPct ?? 0) || (b.attackReachPct ?? 0) - (a.attackReachPct ?? 0));
      if (rs.length === 0) return '-';
      const served = rs.map((o) => v(o.servedPct)).join(' / ');
      const challenged = rs.map((o) => o.challengedUsers).join(' / ');
      const reach = rs.some((o) => o.attackReachPct !== null)
        ? `; attack reaching the origin ${rs.map((o) => v(o.attackReachPct)).join(' / ')} %`
        : '';
      const notProduced = rs.some((o) => !o.produced) ? ' (**not produced**: see the runs)' : '';
      return `**${served} %** served; ${challenged} real users challenged${reach}${notProduced}`;
    });
    lines.push(`| ${n}. ${SEVEN[n - 1]!.label} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** Every run: what the table sums up, with the rates achieved and what failed. */
export function sevenRunsTable(report: SevenReport): string {
  const rows = [
    '| drill | run | gateway | served % (calm %) | users challenged / refused | attack reaching origin % | rate achieved / drawn req/s | origin 503s / util % | level max | gateway CPU % | generator loop p99 ms | load | real users failures |',
    '|---|---:|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const top = (t: Record<string, number>) =>
    Object.entries(t)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  for (const r of [...report.runs].sort((a, b) => a.drill - b.drill || a.run - b.run)) {
    const o = r.outcome;
    rows.push(
      `| ${r.drill} | ${r.run} | ${r.gateway} | ${v(o.servedPct)} (${v(o.servedPctCalm)}) | ` +
        `${o.challengedUsers} / ${o.refusedUsers} of ${o.users} | ${v(o.attackReachPct)} | ` +
        `${o.attack ? `${o.attack.achievedRate} / ${o.attack.drawnRate}` : '-'}${o.produced ? '' : ` **not produced** (${o.producedNote})`} | ` +
        `${o.origin.rejected} / ${o.origin.utilisationPct} | ${v(o.level.max)} | ${v(o.cpu.gatewayPct)} | ` +
        `${o.cpu.generatorLagP99Ms} | ${o.load1} | ${top(o.legitReasons)} |`,
    );
  }
  return rows.join('\n');
}

/** The parameters of each drill, for the report. */
export function sevenParameters(attackSec = SEVEN_ATTACK_SEC): string {
  return SEVEN.map((d, i) => `${i + 1}. ${d.label}: ${describe(sevenScenario(i + 1, attackSec))}`).join('\n');
}
