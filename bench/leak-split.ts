// Where the attack that reached the origin in one drill came from, by phase of the drill: before the
// level asked for a challenge, after it, per client. An instrument for issue 13 point 3 (drill 7, bots
// that solve): it runs one fixed drill against one config with the gateway's log kept, then splits the
// attack's forwarded log lines (every forwarded request is logged) by the level at that moment.
//
//   node bench/leak-split.ts [--config zero|demo] [--drill 7] [--warm /tmp/dir]
//
// The warm-up (70 s of calm) is kept in --warm and reused by the next run with the same config.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RANGES, runScenario, warmUp, type ConfigName } from '../src/drill/matrix.ts';
import { SEVEN_ORIGIN, runLine, sevenScenario } from '../src/drill/seven.ts';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'zero' },
    drill: { type: 'string', default: '7' },
    warm: { type: 'string', default: '/tmp/rempart-leak-warm' },
  },
});
const config = values.config as ConfigName;
const s = sevenScenario(Number(values.drill));
mkdirSync(values.warm, { recursive: true });
const warmDir = join(values.warm, config);
let warm = join(warmDir, `warm-${config}.db`);
if (!existsSync(warm)) {
  mkdirSync(warmDir, { recursive: true });
  process.stderr.write(`warm-up ${config}: ${RANGES.full.warmupSec} s\n`);
  warm = (await warmUp(config, 'full', warmDir, { origin: SEVEN_ORIGIN, calmUsers: 40, vaultUsers: 4 })) ?? '';
  process.stderr.write(`warm state: ${warm}\n`);
}
const startWall = Date.now();
const o = await runScenario(s, config, { warmState: { [config]: warm }, keepLogs: true });
process.stdout.write(`${runLine(o)}\nlog ${o.logFile}\n`);
const attackStart = startWall + s.calmSec * 1000;
const changes: Array<{ t: number; to: string }> = [];
const fwd: Array<{ t: number; client: string; path: string; reason: string }> = [];
const refusedBy: Record<string, number> = {};
for (const line of readFileSync(o.logFile, 'utf8').split('\n')) {
  if (line[0] !== '{') continue;
  const x = JSON.parse(line) as Record<string, unknown>;
  const t = (Date.parse(String(x.time)) - attackStart) / 1000;
  if (x.msg === 'attack level changed') changes.push({ t, to: String(x.to) });
  if (x.msg !== 'request' || typeof x.client !== 'string') continue;
  const o2 = Number(x.client.split('.')[1]);
  if (o2 < 10 || o2 >= 74) continue;
  if (x.decision === 'forwarded' || x.decision === 'forward')
    fwd.push({ t, client: x.client, path: String(x.path), reason: String(x.reason ?? '') });
  else refusedBy[`${x.decision}:${x.reason}`] = (refusedBy[`${x.decision}:${x.reason}`] ?? 0) + 1;
}
const levelAt = (t: number) => {
  let l = 'calm';
  for (const c of changes) if (c.t <= t) l = c.to;
  return l;
};
process.stdout.write(
  `level changes (s from attack start): ${changes.map((c) => `${c.t.toFixed(1)} ${c.to}`).join(', ')}\n`,
);
const sent = o.attack?.sent ?? 0;
const byLevel: Record<string, number> = {};
for (const f of fwd) byLevel[levelAt(f.t)] = (byLevel[levelAt(f.t)] ?? 0) + 1;
const p = (n: number) => `${n} (${((100 * n) / Math.max(1, sent)).toFixed(1)} % of ${sent} sent)`;
process.stdout.write(`attack forwarded (log): ${p(fwd.length)}; at origin ${o.attack?.receivedAtOrigin}\n`);
for (const [l, n] of Object.entries(byLevel)) process.stdout.write(`  at ${l}: ${p(n)}\n`);
// Per client, after the level first asked for a challenge (under_attack in both configs' defaults).
const ua = changes.find((c) => c.to === 'under_attack')?.t ?? Infinity;
const per = new Map<string, number[]>();
for (const f of fwd) if (f.t >= ua) (per.get(f.client) ?? per.set(f.client, []).get(f.client)!).push(f.t - ua);
const firstSec: number[] = [];
const buckets = [0, 0, 0, 0, 0];
for (const ts of per.values()) {
  ts.sort((a, b) => a - b);
  const t0 = ts[0]!;
  firstSec.push(t0);
  for (const t of ts) {
    const d = t - t0;
    buckets[d < 1 ? 0 : d < 3 ? 1 : d < 6 ? 2 : d < 12 ? 3 : 4]! += 1;
  }
}
firstSec.sort((a, b) => a - b);
process.stdout.write(
  `after under_attack: ${per.size} clients; their first forward at +${firstSec[0]?.toFixed(1)}..+${firstSec.at(-1)?.toFixed(1)} s; ` +
    `by time since each one's first: <1 s ${buckets[0]}, 1-3 s ${buckets[1]}, 3-6 s ${buckets[2]}, 6-12 s ${buckets[3]}, ≥12 s ${buckets[4]}\n`,
);
const perSec: number[] = [];
for (const f of fwd) {
  const i = Math.floor(f.t + 2);
  if (i >= 0) perSec[i] = (perSec[i] ?? 0) + 1;
}
process.stdout.write(`forwarded per second from -2 s: ${Array.from(perSec, (x) => x ?? 0).join(' ')}\n`);
process.stdout.write(`refused (sampled lines): ${JSON.stringify(refusedBy)}\n`);
process.stdout.write(
  `bots: ${JSON.stringify(o.attack)}\nrefusals: ${JSON.stringify(o.refusals)} shed ${JSON.stringify(o.shed)}\n`,
);
