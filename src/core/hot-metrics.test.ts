import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry, type Metric } from 'prom-client';
import { HotCounter, HotHistogram } from './hot-metrics.ts';

test('hot metrics render as standard Prometheus counters and cumulative histograms', async () => {
  const registry = new Registry();
  const c = new HotCounter({ name: 'x_requests_total', help: 'h', labelNames: ['route', 'code'] });
  const h = new HotHistogram({ name: 'x_duration_seconds', help: 'h', labelNames: ['route'], buckets: [0.1, 1] });
  registry.registerMetric(c as unknown as Metric);
  registry.registerMetric(h as unknown as Metric);
  const cell = c.cell('a', '200');
  cell.value += 3;
  assert.equal(c.cell('a', '200'), cell, 'one cell per label set');
  const hc = h.cell('a');
  for (const v of [0.05, 0.5, 0.7, 3]) h.observe(hc, v);
  const text = await registry.metrics();
  assert.match(text, /^x_requests_total\{route="a",code="200"\} 3$/m);
  assert.match(text, /^x_duration_seconds_bucket\{route="a",le="0.1"\} 1$/m);
  assert.match(text, /^x_duration_seconds_bucket\{route="a",le="1"\} 3$/m);
  assert.match(text, /^x_duration_seconds_bucket\{route="a",le="\+Inf"\} 4$/m);
  assert.match(text, /^x_duration_seconds_count\{route="a"\} 4$/m);
  assert.match(text, /^x_duration_seconds_sum\{route="a"\} 4.25$/m);
});
