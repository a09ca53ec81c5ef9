import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from './metrics.ts';

/** MAX_GUARD_CELLS in metrics.ts (written out: the test must also run against code without it). */
const MAX_GUARD_CELLS = 4096;

test('guard decisions keep a bounded number of label sets whatever the rule ids (mined rules come and go)', async () => {
  const metrics = createMetrics();
  // An attack rotating its user agent gets a new mined rule id per value, for as long as it lasts.
  const n = MAX_GUARD_CELLS * 3;
  for (let i = 0; i < n; i++)
    metrics.guardDecisions.inc(
      'signatures',
      'enforced',
      'RMP_ERR_SIGNATURE_BLOCKED',
      `sig-useragent-${i.toString(16).padStart(8, '0')}`,
    );
  const m = (await metrics.registry.getSingleMetric('rempart_guard_decisions_total')!.get()) as {
    values: { labels: Record<string, string>; value: number }[];
  };
  assert.ok(m.values.length <= MAX_GUARD_CELLS + 1, `${m.values.length} label sets`);
  // Nothing is lost: the rest is counted under rule="other".
  assert.equal(
    m.values.reduce((s, v) => s + v.value, 0),
    n,
  );
  assert.equal(m.values.find((v) => v.labels.rule === 'other')?.value, n - MAX_GUARD_CELLS);
  // Label sets seen before the cap keep counting under their own id.
  metrics.guardDecisions.inc('signatures', 'enforced', 'RMP_ERR_SIGNATURE_BLOCKED', 'sig-useragent-00000000');
  const again = (await metrics.registry.getSingleMetric('rempart_guard_decisions_total')!.get()) as {
    values: { labels: Record<string, string>; value: number }[];
  };
  assert.equal(again.values.find((v) => v.labels.rule === 'sig-useragent-00000000')?.value, 2);
});
