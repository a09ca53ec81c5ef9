// The short run of bench/memory-bounds.ts: every table keyed by what a client sends, its cap set small
// so that a few thousand distinct keys fill it, driven through real sockets at a gateway in a child
// process (PROXY v1/v2 from trusted 127/8 peers, pipelined keep-alive requests). Each table must stay
// at or under its cap, reach it (the bound is really exercised), and the gateway's heap must grow by
// no more than the table's budget (docs/memory-budgets.md). Keys sit among 12 KB of other cookies or
// at the end of a 12 KB X-Forwarded-For line: a table keeping a view of the header instead of its own
// copy of the key holds the header (2,000 keys × 12 KB = 24 MB against budgets under 1 MB + 4 MB).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEAP_NOISE, runScenario, scenarios } from '../bench/memory-bounds.ts';
import { TEST_ENGINE } from './helpers.ts';

/** Past each cap (1,000 to 2,000 at this scale), few enough to run in seconds. */
const KEYS: Record<string, number> = {
  'rate-limit-address': 1500,
  'rate-limit-session': 1500,
  offences: 1500,
  bans: 1500,
  sessions: 1500,
  replay: 1200,
  exfiltration: 1500,
  cache: 2000,
  signatures: 1000,
};

for (const sc of scenarios({ scale: 0.01, padBytes: 12_000 })) {
  if (KEYS[sc.name] === undefined) continue; // the bench's control run (no table)
  test(`memory bound: ${sc.table} (${sc.key}) stays at its cap and within its budget`, async () => {
    const keys = KEYS[sc.name]!;
    const r = await runScenario(sc, keys, { concurrency: 4, heapMiB: 512, engine: TEST_ENGINE });
    const detail = `${sc.name}: ${r.maxSize}/${r.cap}, heap +${(r.peakHeapGrowth / 1048576).toFixed(1)} MiB, budget ${(r.budget / 1048576).toFixed(2)} MiB, statuses ${JSON.stringify(r.statuses)}`;
    assert.ok(r.maxSize <= r.cap, `over its cap: ${detail}`);
    // Filled: the test drives past the cap (the signature sketches fill at 15 × k values).
    assert.ok(r.maxSize >= Math.min(sc.fillAt ?? r.cap, keys) * 0.9, `the bound was not reached: ${detail}`);
    assert.ok(r.peakHeapGrowth <= r.budget + HEAP_NOISE, `heap over budget: ${detail}`);
    assert.ok(r.ok, `${r.why.join('; ')} (${detail})`);
  });
}
