// The drill's solve pool (src/drill/solve-pool.ts): solving bots' proof of work runs on worker
// threads, so the generator's event loop (which times arrivals, real users' clicks and the origin's
// answers) stays free. It solves real challenges from a real gateway; a batch of solves leaves the
// loop responsive (loosely: a blocking test, not a speed test); its cap is queued work; a closed or
// forgotten pool leaves no thread keeping the process alive; and the "not produced" rule holds the
// generator's delays against it, never the work the difficulty asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { challengeFrom } from '../src/client/index.ts';
import { SolvePool } from '../src/drill/solve-pool.ts';
import { attackBotSec, emptyBotCounts, generatorShortfall, type BotCaps, type BotCounts } from '../src/drill/bots.ts';
import { startGateway, startUpstream, tempDir } from './helpers.ts';

const POOL_URL = new URL('../src/drill/solve-pool.ts', import.meta.url).href;

const zeroBits = (s: string) => {
  const d = createHash('sha256').update(s).digest();
  let n = 0;
  for (const b of d) {
    if (b !== 0) return n + Math.clz32(b) - 24;
    n += 8;
  }
  return n;
};

test('the pool solves real challenges from a real gateway under attack; the retries reach the origin', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    defense: { level: { override: 'under_attack' }, challenge: { difficultyBits: { elevated: 10, underAttack: 12 } } },
  });
  const pool = new SolvePool({ workers: 2 });
  t.after(() => pool.close());
  // Four clients (one user agent each: a challenge is bound to its client), solved together.
  const agents = ['bot-a/1', 'bot-b/1', 'bot-c/1', 'bot-d/1'];
  const solutions = await Promise.all(
    agents.map(async (ua) => {
      const res = await fetch(`${gw.url}/p`, { headers: { 'user-agent': ua } });
      const c = challengeFrom(res.status, res.headers, await res.json());
      assert.ok(c, `${ua} was challenged`);
      assert.equal(c.bits, 12);
      const r = await pool.solve(c.token, c.bits);
      assert.ok(r?.solution);
      assert.ok(r.solution.startsWith(`${c.token}.`) && zeroBits(r.solution) >= 12);
      assert.ok(r.hashes > 0 && r.cpuMs >= 0 && r.heldMs >= r.waitMs);
      return { ua, solution: r.solution };
    }),
  );
  assert.equal(up.requests.length, 0, 'nothing reached the origin before a solution');
  for (const { ua, solution } of solutions) {
    const ok = await fetch(`${gw.url}/p`, { headers: { 'user-agent': ua, 'rempart-solution': solution } });
    assert.equal(ok.status, 200);
    assert.ok(ok.headers.get('rempart-clearance'));
    await ok.text();
  }
  assert.equal(up.requests.length, 4);
});

test("a batch of solves leaves the generator's event loop responsive (the work is on the threads)", async (t) => {
  const pool = new SolvePool({ workers: 2 });
  t.after(() => pool.close());
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  // 2^19 hashes each, about 0.3 s of one core: on this loop, each would stall it for that long.
  const jobs = Array.from({ length: 6 }, (_, i) => pool.solve(`v1.k.19.1.2.batch${i}.b.m`, 19));
  const results = await Promise.all(jobs);
  lag.disable();
  let cpuMs = 0;
  for (const r of results) {
    assert.ok(r?.solution && zeroBits(r.solution) >= 19);
    cpuMs += r.cpuMs;
  }
  assert.ok(cpuMs > 300, `the batch was real work (${Math.round(cpuMs)} ms of CPU)`);
  if (process.platform === 'linux') {
    // Each thread that solved runs below the gateway's priority (nice is per thread on Linux).
    const niced = readdirSync('/proc/self/task').filter((tid) => {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16] === '10';
    });
    assert.equal(niced.length, 2, 'both solving threads niced, and nothing else');
  }
  // Loose: a busy shared machine delays timers, but not by a solve's length while solves run.
  assert.ok(
    lag.max / 1e6 < 250,
    `event-loop delay max ${Math.round(lag.max / 1e6)} ms during ${Math.round(cpuMs)} ms of solving`,
  );
});

test('the cap is queued work: a job waits only while the work ahead drains in time; too hard is refused', async () => {
  const pool = new SolvePool({ workers: 1, maxQueueSec: 0.5 });
  try {
    assert.equal(pool.solve('v1.k.29.1.2.r.b.m', 29), null, 'past what a client solves');
    const long = pool.solve('v1.k.26.1.2.long.b.m', 26); // the only thread: ~30 s of work
    const queued = pool.solve('v1.k.22.1.2.q.b.m', 22); // nothing queued ahead of it: taken
    assert.ok(long && queued);
    assert.equal(pool.queued, 1);
    // 2^22 hashes ahead take seconds at any rate a thread achieves: past 0.5 s, even for an easy job.
    assert.equal(pool.solve('v1.k.8.1.2.e.b.m', 8), null);
    assert.ok(pool.expectedWaitSec > 0.5);
    await new Promise((r) => setTimeout(r, 200));
    await pool.close();
    const [a, b] = await Promise.all([long, queued]);
    assert.equal(a?.solution, null, 'closed mid-job: no solution');
    assert.equal(b?.solution, null);
    assert.ok(b!.waitMs >= 150 && b!.heldMs >= b!.waitMs, 'the wait for a thread is held against the generator');
    assert.equal(pool.solve('v1.k.8.1.2.e.b.m', 8), null, 'closed');
  } finally {
    await pool.close();
  }
});

test('a closed pool, even mid-job, and a forgotten idle one leave no thread: the process exits', (t) => {
  const dir = tempDir(t);
  const script = join(dir, 'pool.mjs');
  writeFileSync(
    script,
    `import { SolvePool } from ${JSON.stringify(POOL_URL)};
const closed = new SolvePool({ workers: 2 });
const job = closed.solve('v1.k.27.1.2.x.b.m', 27); // a minute of work, ended by close()
await new Promise((r) => setTimeout(r, 300));
await closed.close();
console.log('closed', (await job).solution);
const forgotten = new SolvePool({ workers: 2 });
console.log('solved', (await forgotten.solve('v1.k.8.1.2.y.b.m', 8)).solution !== null);
// forgotten is never closed: its idle threads must not keep the process alive
`,
  );
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, `exited by itself (stderr: ${r.stderr})`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'closed null\nsolved true\n');
});

test('"not produced" holds what the generator added against it, never the work the difficulty asked', () => {
  const caps: BotCaps = { maxInFlight: 100, connectionsPerAddress: 4, solveWorkers: 1, maxSolveQueueSec: 5 };
  // 30 bots over a 20 s step: 600 bot-seconds; 6,000 requests sent.
  const spec = { addresses: 30, durationSec: 20, rampSec: 0 };
  assert.equal(attackBotSec(spec), 600);
  assert.equal(attackBotSec({ ...spec, rampSec: 10 }), 450, 'a ramp counts half');
  const counts = (over: Partial<BotCounts>): BotCounts => ({
    ...emptyBotCounts(),
    due: 6000,
    sent: 6000,
    answered: 6000,
    challenged: 500,
    solved: 100,
    ...over,
  });
  const solves = Array(100).fill(50);
  // 100 solves of hard work (60 CPU s: the difficulty rose), each held 50 ms: produced as drawn.
  assert.equal(
    generatorShortfall(counts({ solveCpuSec: 60, solveHeldMs: solves, solveHeldBotSec: 5 }), caps, spec, 1),
    '',
  );
  // Held 59 bot-seconds of 600 (9.8 %): produced; 61 (10.2 %): not, and the note says why.
  assert.equal(generatorShortfall(counts({ solveHeldMs: solves, solveHeldBotSec: 59 }), caps, spec, 1), '');
  assert.match(
    generatorShortfall(counts({ solveHeldMs: solves, solveHeldBotSec: 61 }), caps, spec, 1),
    /held 10.2 % of the attack's bot-time .* skipped 0 solves/,
  );
  // Skipped solves are requests refused for the generator: 700 of 6,000 (11.7 %) is past the share, and
  // they add to the bot-time held (5 % + 5.8 %).
  assert.match(generatorShortfall(counts({ solveSkipped: 700, solveHeldMs: solves }), caps, spec, 1), /skipped 700/);
  assert.notEqual(
    generatorShortfall(counts({ solveSkipped: 350, solveHeldMs: solves, solveHeldBotSec: 30 }), caps, spec, 1),
    '',
  );
  // Too few solves to judge; and arrivals not sent count first.
  assert.equal(generatorShortfall(counts({ solveSkipped: 9, solveHeldMs: Array(10).fill(9000) }), caps, spec, 1), '');
  assert.match(generatorShortfall(counts({ sent: 4000 }), caps, spec, 1), /sent 4000 of 6000 arrivals/);
});
