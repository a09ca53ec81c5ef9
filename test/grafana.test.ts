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
  const declared = new Set(
    createMetrics()
      .registry.getMetricsAsArray()
      .map((m) => m.name),
  );
  const exprs = [
    ...dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ...dash.annotations.list.flatMap((a) => (a.expr ? [a.expr] : [])),
  ];
  const used = new Set<string>();
  // Rempart's own metrics and the standard process ones (process_*, nodejs_*: no rempart_ prefix).
  for (const e of exprs) for (const m of e.matchAll(/\b(rempart|process|nodejs)_[a-z0-9_]+/g)) used.add(m[0]);
  assert.ok(used.size >= 15, `the dashboard reads the main metrics (${used.size})`);
  const unknown = [...used].filter((n) => !declared.has(n) && !declared.has(n.replace(/_(bucket|sum|count)$/, '')));
  assert.deepEqual(unknown, [], 'metrics the dashboard reads but Rempart does not export');
  for (const p of dash.panels) assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`);
  for (const name of [
    'process_cpu_seconds_total',
    'process_resident_memory_bytes',
    'nodejs_eventloop_lag_p99_seconds',
    'rempart_build_info',
  ])
    assert.ok(used.has(name), `the dashboard reads ${name}`);
});

test('process metrics carry their standard names, and rempart_build_info says the version and Node.js', async () => {
  const text = await createMetrics().registry.metrics();
  for (const name of [
    'process_cpu_seconds_total',
    'process_resident_memory_bytes',
    'process_start_time_seconds',
    'nodejs_eventloop_lag_seconds',
    'nodejs_heap_size_used_bytes',
  ])
    assert.match(text, new RegExp(`^${name} `, 'm'), name);
  assert.doesNotMatch(text, /rempart_process_/);
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.ok(
    text.includes(`rempart_build_info{version="${pkg.version}",node="${process.versions.node}"} 1\n`),
    text.match(/^rempart_build_info.*$/m)?.[0],
  );
});
