// When is an honest browser, or a flooder, first banned by the default per-address rule? A model on a
// manual clock: the real GcraLimiter (50/s, burst 100, with or without its wait) feeding the real ban
// table (defaults: 20 offences in 2 s, a 429 counted once per 50 ms and once per 25). Requests arrive
// open-loop at the times each pattern says (a browser that waits sends its next request later, so
// this is the harsher case for the wait). Seeded (src/drill/rng.ts); nothing on the network.
//
//   node bench/ban-model.ts [--seed 29]
import { parseArgs } from 'node:util';
import { createManualClock } from '../src/core/clock.ts';
import { rng } from '../src/drill/rng.ts';
import { BanTable } from '../src/phases/ban/table.ts';
import { GcraLimiter } from '../src/phases/ratelimit/gcra.ts';
import { DEFAULT_RATE_LIMIT_RULE as R } from '../src/phases/ratelimit/schema.ts';

const { values } = parseArgs({ options: { seed: { type: 'string', default: '29' } } });
const seed = Number(values.seed);

/** `n` requests spread evenly over `ms` from `at`. */
const spread = (at: number, n: number, ms: number): number[] =>
  Array.from({ length: n }, (_, i) => at + (n === 1 ? 0 : (i * ms) / n));

/** Pages of 60 requests over 300 ms arriving as a Poisson process, `perSec` requests a second on average, for `sec`. */
function people(perSec: number, sec: number, index: number): number[] {
  const r = rng(seed, index);
  const out: number[] = [];
  const pagesPerMs = perSec / 60 / 1000;
  for (let t = -Math.log(1 - r()) / pagesPerMs; t < sec * 1000; t += -Math.log(1 - r()) / pagesPerMs)
    out.push(...spread(t, 60, 300));
  return out.sort((a, b) => a - b);
}

const PATTERNS: [string, () => number[]][] = [
  ['one page, 150 requests in 300 ms', () => spread(0, 150, 300)],
  ['two such pages 1 s apart', () => [...spread(0, 150, 300), ...spread(1000, 150, 300)]],
  ['300 requests over 1 s', () => spread(0, 300, 1000)],
  ['three such pages 0.5 s apart', () => [0, 500, 1000].flatMap((at) => spread(at, 150, 300))],
  ['15 tabs restored, 750 requests over 3 s', () => spread(0, 750, 3000)],
  ['15 tabs restored, 750 requests over 1 s', () => spread(0, 750, 1000)],
  ['gallery scrolling at 80 req/s, 60 s', () => spread(0, 4800, 60_000)],
  ['CGNAT address, pages at 18 req/s on average, 10 min', () => people(18, 600, 1)],
  ['CGNAT address, pages at 30 req/s on average, 10 min', () => people(30, 600, 2)],
  ['CGNAT address, pages at 42 req/s on average, 10 min', () => people(42, 600, 3)],
  ['flood at 60 req/s, 60 s', () => spread(0, 3600, 60_000)],
  ['flood at 100 req/s, 60 s', () => spread(0, 6000, 60_000)],
  ['flood at 300 req/s, 60 s', () => spread(0, 18_000, 60_000)],
  [
    'pulses of 500 at once every second, 60 s',
    () => Array.from({ length: 60 }, (_, s) => spread(s * 1000, 500, 1)).flat(),
  ],
];

interface Outcome {
  bannedAtMs: number | null;
  allowed: number;
  refused: number;
  delayed: number;
  maxDelayMs: number;
}

function run(times: number[], maxDelayMs: number): Outcome {
  const clock = createManualClock(0);
  const bans = new BanTable(clock);
  const limiter = new GcraLimiter(R.ratePerSec, R.burst, R.maxKeys, maxDelayMs);
  const o: Outcome = { bannedAtMs: null, allowed: 0, refused: 0, delayed: 0, maxDelayMs: 0 };
  const address = '198.51.100.7';
  let now = 0;
  for (const t of times) {
    clock.advance(t - now);
    now = t;
    if (bans.isBanned(address)) {
      o.bannedAtMs = t;
      break;
    }
    if (limiter.check(address, t)) {
      o.allowed++;
      if (limiter.result.delayMs > 0) o.delayed++;
      if (limiter.result.delayMs > o.maxDelayMs) o.maxDelayMs = limiter.result.delayMs;
    } else {
      o.refused++;
      bans.offence(address, 'rate_limited', R.id);
    }
  }
  return o;
}

const cell = (o: Outcome) =>
  `${o.bannedAtMs === null ? 'never' : `${(o.bannedAtMs / 1000).toFixed(2)} s`}; ${o.allowed} passed${
    o.delayed > 0 ? ` (${o.delayed} waited, ≤ ${Math.round(o.maxDelayMs)} ms)` : ''
  }, ${o.refused} × 429`;

console.log(`seed ${seed}; per-address ${R.ratePerSec}/s, burst ${R.burst}; bans: the schema's defaults`);
console.log('| pattern | without the wait: first banned; passed, 429s | with maxDelayMs 3000 |');
console.log('|---|---|---|');
for (const [name, make] of PATTERNS) {
  const times = make();
  console.log(`| ${name} | ${cell(run(times, 0))} | ${cell(run(times, 3000))} |`);
}
