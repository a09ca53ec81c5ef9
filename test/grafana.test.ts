// docs/grafana-dashboard.json reads only metrics Rempart exports, so it cannot drift from
// src/core/metrics.ts unnoticed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createMetrics } from '../src/core/metrics.ts';

test('every metric the Grafana dashboard queries is declared in src/core/metrics.ts, and every panel has a query', async () => {
  const dash = JSON.parse(await readFile(new URL('../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    annotations: { list: { expr?: string }[] };
  };
  const declared = new Set(createMetrics().registry.getMetricsAsArray().map((m) => m.name));
  const exprs = [...dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)), ...dash.annotations.list.flatMap((a) => (a.expr ? [a.expr] : []))];
  const used = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(/\brempart_[a-z_]+/g)) used.add(m[0]);
  assert.ok(used.size >= 15, `the dashboard reads the main metrics (${used.size})`);
  const unknown = [...used].filter((n) => !declared.has(n) && !declared.has(n.replace(/_(bucket|sum|count)$/, '')));
  assert.deepEqual(unknown, [], 'metrics the dashboard reads but Rempart does not export');
  for (const p of dash.panels) assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`);
});
