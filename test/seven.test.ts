// Issue 13's seven fixed drills (src/drill/seven.ts): each is a well-formed scenario of the matrix,
// sized within what the generator can send, on the capacity-limited `login` origin, and the table
// lists every run of a cell worst first. The drills themselves run in bench/seven.ts (minutes each).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RANGES, type RunOutcome } from '../src/drill/matrix.ts';
import { SEVEN, sevenScenario, sevenTable, type SevenReport } from '../src/drill/seven.ts';

const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

test('seven drills: fixed scenarios within the generator caps, in the issue order', () => {
  assert.equal(SEVEN.length, 7);
  for (let n = 1; n <= 7; n++) {
    const s = sevenScenario(n);
    assert.deepEqual(s, sevenScenario(n), 'fixed: the same parameters every time');
    assert.equal(s.id, `seven:${n}`);
    assert.equal(s.origin.kind, 'login', 'a login that grants a session to any POST');
    assert.ok(s.origin.queue <= 8, 'a small queue: 503 at once when full');
    assert.ok(s.calmUsers <= RANGES.full.calmUsers[1] && s.calmSec > 0);
    if (s.attack) {
      assert.ok(s.attack.totalRate <= RANGES.full.maxTotalRate, `drill ${n}: ${s.attack.totalRate}/s`);
      if (s.attack.solve) assert.ok(s.attack.cookies);
    }
  }
  assert.equal(sevenScenario(5).attack, null, 'the crowd alone has no attacker');
  assert.ok(sevenScenario(5).crowd && sevenScenario(5).crowd!.multiplier === 5);
  assert.ok(sevenScenario(6).crowd && sevenScenario(6).attack, 'crowd and botnet together');
  assert.equal(sevenScenario(7).attack?.solve, true);
  assert.equal(sevenScenario(7).attack?.ratePerAddress, 10);
  assert.equal(sevenScenario(3).attack?.paths, 'login');
  assert.throws(() => sevenScenario(0));
  assert.throws(() => sevenScenario(8));
});

test('seven drills: each cell of the table gives every run, worst first', () => {
  const outcome = (servedPct: number, attackReachPct: number, challengedUsers: number) =>
    ({ servedPct, attackReachPct, challengedUsers, produced: true }) as RunOutcome;
  const report: SevenReport = {
    tool: 'rempart drill matrix --set seven',
    startedAt: new Date().toISOString(),
    durationSec: 1,
    loadAverage: { start: [0], end: [0] },
    gateways: ['zero'],
    runs: [
      { drill: 1, run: 1, gateway: 'zero', outcome: outcome(99.5, 3, 0) },
      { drill: 1, run: 2, gateway: 'zero', outcome: outcome(91.25, 14, 12) },
    ],
  };
  const row = sevenTable(report).split('\n')[2]!;
  assert.match(row, /^\| 1\. botnet/);
  assert.match(
    row,
    /\*\*91\.25 \/ 99\.5 %\*\* served; 12 \/ 0 real users challenged; attack reaching the origin 14 \/ 3 %/,
  );
});

test('rempart drill matrix --set: only the seven, with no draw options', () => {
  for (const args of [
    ['--set', 'eight'],
    ['--set', 'seven', '--seed', '1'],
    ['--runs', '2'],
  ]) {
    const r = spawnSync(process.execPath, [CLI, 'drill', 'matrix', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  }
});
