// Every Prometheus metric Rempart exports, declared in this one file and listed in docs/metrics.md
// (generated; a test checks it). Base units, `rempart_` prefix, `_total` on counters, and labels that
// come from configuration only (route, class, upstream, reason, decision): never an address or raw path.
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { HotCounter, HotHistogram } from './hot-metrics.ts';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rempart_process_' });
  // Per-request metrics: hot cells (src/core/hot-metrics.ts), not prom-client children.
  const requests = new HotCounter({
    name: 'rempart_requests_total',
    help: 'Requests answered, by route, class, decision (forwarded, refused, upstream_error, aborted, cache_hit, stale) and status code.',
    labelNames: ['route', 'class', 'decision', 'code'],
  });
  const requestDuration = new HotHistogram({
    name: 'rempart_request_duration_seconds',
    help: 'Time from request head to the end of the response, by route and class.',
    labelNames: ['route', 'class'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const cacheLookups = new HotCounter({
    name: 'rempart_cache_lookups_total',
    help: 'Response cache look-ups on routes that cache, by route and result (hit, miss, stale, collapsed: answered from another request\u2019s fill, bypass: not cacheable).',
    labelNames: ['route', 'result'],
  });
  registry.registerMetric(requests as unknown as Metric);
  registry.registerMetric(requestDuration as unknown as Metric);
  registry.registerMetric(cacheLookups as unknown as Metric);
  const m = {
    registry,
    requests,
    requestDuration,
    cacheLookups,
    cacheBytes: new Gauge({
      name: 'rempart_cache_bytes',
      help: 'Bytes held by the response cache (bodies, headers, keys and a fixed per-entry overhead).',
      registers: [registry],
    }),
    cacheEntries: new Gauge({
      name: 'rempart_cache_entries',
      help: 'Responses held by the response cache (each Vary variant counts).',
      registers: [registry],
    }),
    cacheEvictions: new Counter({
      name: 'rempart_cache_evictions_total',
      help: 'Responses evicted from the response cache to stay within cache.maxBytes or the variants per key.',
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'rempart_refusals_total',
      help: 'Requests and connections refused by Rempart, by reason code (RMP_ERR_*).',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'rempart_upstream_errors_total',
      help: 'Failed exchanges with an upstream, by upstream and reason code.',
      labelNames: ['upstream', 'reason'] as const,
      registers: [registry],
    }),
    connectionsActive: new Gauge({
      name: 'rempart_connections_active',
      help: 'Client connections open now, all listeners together.',
      registers: [registry],
    }),
    connectionsAccepted: new Counter({
      name: 'rempart_connections_accepted_total',
      help: 'Client connections accepted and handed to the HTTP parser.',
      registers: [registry],
    }),
    configReloads: new Counter({
      name: 'rempart_config_reloads_total',
      help: 'Configuration reloads, by result (applied, rejected).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    websocketUpgrades: new Counter({
      name: 'rempart_websocket_upgrades_total',
      help: 'WebSocket (Upgrade) connections passed through, by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
