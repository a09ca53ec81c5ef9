// A short fuzzing run (the full campaign is bench/fuzz.ts, 1 million requests): hostile HTTP/1.1 from
// the grammar in test/fuzz/grammar.ts through a real gateway in a child process. A random seed each
// run, printed: `node bench/fuzz.ts --seed S --requests N` replays the same bytes, and
// `node bench/fuzz.ts --seed S --replay K --first-id I` prints one connection's bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz, summary } from './fuzz/harness.ts';

const REQUESTS = 6_000;

test(`fuzz: ${REQUESTS} generated requests: no crash, bounded memory, nothing refused reaches the upstream`, async (t) => {
  const seed =
    process.env.REMPART_FUZZ_SEED !== undefined
      ? Number(process.env.REMPART_FUZZ_SEED) >>> 0
      : (Math.random() * 2 ** 32) >>> 0;
  t.diagnostic(`fuzz seed ${seed} (replay: node bench/fuzz.ts --seed ${seed} --requests ${REQUESTS})`);
  const r = await runFuzz({ requests: REQUESTS, seed, concurrency: 32, maxRssMb: 600, cycleMs: 500, reloadMs: 3000 });
  const text = summary(r);
  t.diagnostic(text);
  assert.equal(r.childExited, null, `the gateway exited (seed ${seed})\n${text}`);
  assert.ok(r.requests >= REQUESTS, `only ${r.requests} requests were sent`);
  // The run must exercise both sides: requests forwarded and requests Rempart answered itself.
  assert.ok(r.forwardedSeen > 100 && r.localAnswers > 500, `too little coverage\n${text}`);
  assert.ok(r.ok, `findings (seed ${seed}):\n${text}`);
});
