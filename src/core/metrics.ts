// Every Prometheus metric Rempart exports, declared in this one file and listed in docs/metrics.md
// (generated; a test checks it). Base units, `rempart_` prefix, `_total` on counters, and labels that
// come from configuration only (route, class, upstream, reason, decision): never an address or raw path.
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { HotCounter, HotHistogram } from './hot-metrics.ts';
import { VERSION } from './version.ts';

/** Most label sets of rempart_guard_decisions_total (see guardDecisions.inc). */
export const MAX_GUARD_CELLS = 4096;

export function createMetrics() {
  const registry = new Registry();
  // Standard names, no prefix (process_cpu_seconds_total, process_resident_memory_bytes,
  // nodejs_eventloop_lag_seconds, …): the Node.js dashboards and alerts people already run match them.
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'rempart_build_info',
    help: 'Always 1; its labels say which Rempart and which Node.js run (join on it to split a graph by version).',
    labelNames: ['version', 'node'],
    registers: [registry],
  }).set({ version: VERSION, node: process.versions.node }, 1);
  // Per-request metrics: hot cells (src/core/hot-metrics.ts), not prom-client children.
  const requests = new HotCounter({
    name: 'rempart_requests_total',
    help: 'Requests answered, by route, class, decision (forwarded, answered: a clearance for a solved challenge, refused, upstream_error, aborted, cache_hit, stale) and status code.',
    labelNames: ['route', 'class', 'decision', 'code'],
  });
  const requestsByProtocol = new HotCounter({
    name: 'rempart_requests_by_protocol_total',
    help: 'Requests answered, by the protocol they came on (h1: HTTP/1.x, h2: an HTTP/2 stream).',
    labelNames: ['protocol'],
  });
  const requestDuration = new HotHistogram({
    name: 'rempart_request_duration_seconds',
    help: 'Time from request head to the end of the response, by route and class.',
    labelNames: ['route', 'class'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const upstreamResponse = new HotHistogram({
    name: 'rempart_upstream_response_seconds',
    help: 'Time from sending a request to its upstream to the end of the answer, by upstream (forwarded requests that got an answer head).',
    labelNames: ['upstream'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  const cacheLookups = new HotCounter({
    name: 'rempart_cache_lookups_total',
    help: 'Response cache look-ups on routes that cache, by route and result (hit, miss, stale, collapsed: answered from another request\u2019s fill, bypass: not cacheable).',
    labelNames: ['route', 'result'],
  });
  registry.registerMetric(cacheLookups as unknown as Metric);
  // Admission (src/phases/admission): counters per upstream and class, touched per request.
  const admissionAdmitted = new HotCounter({
    name: 'rempart_admission_admitted_total',
    help: 'Requests admitted to their upstream by admission control, at once or after queueing, by upstream and class.',
    labelNames: ['upstream', 'class'],
  });
  const admissionQueued = new HotCounter({
    name: 'rempart_admission_queued_total',
    help: 'Requests that had to wait in the admission queue, by upstream and class.',
    labelNames: ['upstream', 'class'],
  });
  const admissionShed = new HotCounter({
    name: 'rempart_admission_shed_total',
    help: 'Requests shed with 503 by admission control, by upstream, class and reason (queue-full, evicted, fairness, queue-timeout).',
    labelNames: ['upstream', 'class', 'reason'],
  });
  const admissionWait = new HotHistogram({
    name: 'rempart_admission_wait_seconds',
    help: 'Time admitted requests waited for a slot (0 when admitted at once), by class.',
    labelNames: ['class'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  // Scrape-time readers for the admission gauges, installed by the admission phase (it sees the live gates).
  const admissionReaders = {
    limit: (_g: Gauge<'upstream'>): void => {},
    inFlight: (_g: Gauge<'upstream'>): void => {},
    queueDepth: (_g: Gauge<'class'>): void => {},
  };
  // Upstream pools (src/upstream/pool.ts): per server, labels from configuration (at most 256 servers
  // an upstream). Latency is observed by the forward path; the gauges are read at scrape time.
  const upstreamServerResponse = new HotHistogram({
    name: 'rempart_upstream_server_response_seconds',
    help: 'Time from sending a request to one server of a pool (an upstream with two servers or more) to the end of its answer, by upstream and server (host:port).',
    labelNames: ['upstream', 'server'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  registry.registerMetric(upstreamServerResponse as unknown as Metric);
  const serverReaders = {
    state: (_g: Gauge<'upstream' | 'server' | 'state'>): void => {},
    inFlight: (_g: Gauge<'upstream' | 'server'>): void => {},
  };
  // Scrape-time reader for the waiting-room gauge, installed by the waiting-room phase.
  const waitingRoomReaders = { length: (_g: Gauge<'route'>): void => {} };
  registry.registerMetric(requests as unknown as Metric);
  registry.registerMetric(requestsByProtocol as unknown as Metric);
  registry.registerMetric(requestDuration as unknown as Metric);
  registry.registerMetric(upstreamResponse as unknown as Metric);
  for (const hot of [admissionAdmitted, admissionQueued, admissionShed, admissionWait])
    registry.registerMetric(hot as unknown as Metric);
  // Refusals can come at attack rate: a hot counter, one cell per reason code (a bounded set).
  const refusalCounter = new HotCounter({
    name: 'rempart_refusals_total',
    help: 'Requests and connections refused by Rempart, by reason code (RMP_ERR_*).',
    labelNames: ['reason'],
  });
  registry.registerMetric(refusalCounter as unknown as Metric);
  const refusalCells = new Map<string, { value: number }>();
  const refusals = {
    inc(labels: { reason: string }, by = 1): void {
      let cell = refusalCells.get(labels.reason);
      if (cell === undefined) {
        cell = refusalCounter.cell(labels.reason);
        refusalCells.set(labels.reason, cell);
      }
      cell.value += by;
    },
  };
  // Defence guards (src/phases/{ban,ratelimit,challenge,signatures,exfiltration}): one hot counter for
  // every decision. Rule ids come from configuration or from the bounded list of mined rules.
  const guardCounter = new HotCounter({
    name: 'rempart_guard_decisions_total',
    help: 'Decisions of the defence guards, by guard, action (enforced, observed: what observe mode would have done, marked: a signature rule sent the request to the challenge phase, delayed: a rate-limit rule held a request past its burst for its turn), reason code and rule id.',
    labelNames: ['guard', 'action', 'reason', 'rule'],
  });
  registry.registerMetric(guardCounter as unknown as Metric);
  const guardCells = new Map<string, { value: number }>();
  const guardDecisions = {
    inc(guard: string, action: string, reason: string, rule: string): void {
      let key = `${guard}\0${action}\0${reason}\0${rule}`;
      let cell = guardCells.get(key);
      if (cell === undefined) {
        // Mined rules come and go (a new id per value an attack rotates through, for as long as it
        // lasts): past MAX_GUARD_CELLS label sets, new ones share the rule label "other", so neither
        // this map nor /metrics grows without end.
        if (guardCells.size >= MAX_GUARD_CELLS) {
          rule = 'other';
          key = `${guard}\0${action}\0${reason}\0${rule}`;
          cell = guardCells.get(key);
        }
        if (cell === undefined) {
          cell = guardCounter.cell(guard, action, reason, rule);
          guardCells.set(key, cell);
        }
      }
      cell.value++;
    },
    /** Label sets held (tests). */
    get size(): number {
      return guardCells.size;
    },
  };
  // Scrape-time readers for defence gauges, installed by the phase that owns the state.
  const defenseReaders = {
    attackLevel: (_g: Gauge): void => {},
    bansActive: (_g: Gauge): void => {},
    banEntries: (_g: Gauge): void => {},
    rateLimitKeys: (_g: Gauge<'rule'>): void => {},
    signatures: (_g: Gauge): void => {},
  };
  // Sizes of the other tables keyed by client input (docs/memory-budgets.md), by name: each owner sets
  // its own reader (a Map look-up at scrape time), so a soak can tell when each one reached its cap.
  const tableSizes = new Map<string, () => number>();
  const m = {
    registry,
    guardDecisions,
    defenseReaders,
    tableSizes,
    attackLevel: new Gauge({
      name: 'rempart_attack_level',
      help: 'The attack level in force: 0 calm, 1 elevated, 2 under attack.',
      registers: [registry],
      collect() {
        defenseReaders.attackLevel(this);
      },
    }),
    attackLevelChanges: new Counter({
      name: 'rempart_attack_level_changes_total',
      help: 'Changes of the attack level, by level left and level entered (calm, elevated, under_attack).',
      labelNames: ['from', 'to'] as const,
      registers: [registry],
    }),
    bansActive: new Gauge({
      name: 'rempart_bans_active',
      help: 'Addresses and prefixes banned now.',
      registers: [registry],
      collect() {
        defenseReaders.bansActive(this);
      },
    }),
    banEntries: new Gauge({
      name: 'rempart_ban_entries',
      help: 'Ban table entries: active bans and expired ones remembered for escalation (≤ defense.bans.maxEntries).',
      registers: [registry],
      collect() {
        defenseReaders.banEntries(this);
      },
    }),
    bans: new Counter({
      name: 'rempart_bans_total',
      help: 'Bans made, by source (offences, rule, operator).',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    rateLimitKeys: new Gauge({
      name: 'rempart_rate_limit_keys',
      help: 'Client keys tracked by each rate-limit rule now (bounded by its budget).',
      labelNames: ['rule'] as const,
      registers: [registry],
      collect() {
        defenseReaders.rateLimitKeys(this);
      },
    }),
    tableEntries: new Gauge({
      name: 'rempart_table_entries',
      help: 'Entries held by each table keyed by client input that has no gauge of its own (bounded by its cap).',
      labelNames: ['table'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [table, size] of tableSizes) this.set({ table }, size());
      },
    }),
    challenges: new Counter({
      name: 'rempart_challenges_total',
      help: 'Proof-of-work challenges, by door (html, nojs, api) and result (issued, solved, failed).',
      labelNames: ['door', 'result'] as const,
      registers: [registry],
    }),
    signatures: new Gauge({
      name: 'rempart_signature_rules',
      help: 'Rules proposed by signature mining and not expired.',
      registers: [registry],
      collect() {
        defenseReaders.signatures(this);
      },
    }),
    exfiltrationAlerts: new Counter({
      name: 'rempart_exfiltration_alerts_total',
      help: 'Identities that went past a quota on a sensitive route, by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    alerts: new Counter({
      name: 'rempart_alerts_total',
      help: 'Alerts raised, by kind and webhook delivery result (logged, delivered, failed, dropped).',
      labelNames: ['kind', 'result'] as const,
      registers: [registry],
    }),
    requests,
    requestsByProtocol,
    requestDuration,
    upstreamResponse,
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
    admissionAdmitted,
    admissionQueued,
    admissionShed,
    admissionWait,
    admissionReaders,
    admissionLimit: new Gauge({
      name: 'rempart_admission_limit',
      help: 'Current concurrency limit per upstream (adaptive: as learned from latency; static: as configured).',
      labelNames: ['upstream'] as const,
      registers: [registry],
      collect() {
        admissionReaders.limit(this);
      },
    }),
    admissionInFlight: new Gauge({
      name: 'rempart_admission_in_flight',
      help: 'Requests holding an admission slot per upstream now.',
      labelNames: ['upstream'] as const,
      registers: [registry],
      collect() {
        admissionReaders.inFlight(this);
      },
    }),
    admissionQueueDepth: new Gauge({
      name: 'rempart_admission_queue_depth',
      help: 'Requests waiting in admission queues now, all upstreams together, by class.',
      labelNames: ['class'] as const,
      registers: [registry],
      collect() {
        admissionReaders.queueDepth(this);
      },
    }),
    refusals,
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
    failovers: new Counter({
      name: 'rempart_failover_total',
      help: 'Switches of a route between its upstream and its fallback (counted once per switch, not per request), by route, from and to upstream.',
      labelNames: ['route', 'from', 'to'] as const,
      registers: [registry],
    }),
    upstreamState: new Gauge({
      name: 'rempart_upstream_state',
      help: 'Circuit breaker state per upstream: 1 for the current state among closed, open, half_open.',
      labelNames: ['upstream', 'state'] as const,
      registers: [registry],
    }),
    healthChecks: new Counter({
      name: 'rempart_health_checks_total',
      help: 'Active health checks, by upstream and result (success, failure).',
      labelNames: ['upstream', 'result'] as const,
      registers: [registry],
    }),
    upstreamServerResponse,
    serverReaders,
    upstreamServerState: new Gauge({
      name: 'rempart_upstream_server_state',
      help: 'State of each server of an upstream: 1 for the current one among up, ejected (out for failures in real traffic) and unhealthy (failing its health check).',
      labelNames: ['upstream', 'server', 'state'] as const,
      registers: [registry],
      collect() {
        serverReaders.state(this);
      },
    }),
    upstreamServerInFlight: new Gauge({
      name: 'rempart_upstream_server_in_flight',
      help: 'Requests sent to each server of an upstream and not over yet (what least_request balances on).',
      labelNames: ['upstream', 'server'] as const,
      registers: [registry],
      collect() {
        serverReaders.inFlight(this);
      },
    }),
    upstreamEjections: new Counter({
      name: 'rempart_upstream_ejections_total',
      help: 'Servers taken out of their pool for failing in real traffic (outlier detection), by upstream and server.',
      labelNames: ['upstream', 'server'] as const,
      registers: [registry],
    }),
    upstreamRetries: new Counter({
      name: 'rempart_upstream_retries_total',
      help: 'Requests sent again to another server of their pool after a failure before any answer (connection refused, or a reset of a GET/HEAD), by upstream and the first failure\u2019s code.',
      labelNames: ['upstream', 'reason'] as const,
      registers: [registry],
    }),
    waitingRoomLength: new Gauge({
      name: 'rempart_waiting_room_length',
      help: 'Visitors holding a ticket and not yet let in, per route with a waiting room (tickets issued minus tickets admitted).',
      labelNames: ['route'] as const,
      registers: [registry],
      collect() {
        waitingRoomReaders.length(this);
      },
    }),
    waitingRoomReaders,
    waitingRoomAdmitted: new Counter({
      name: 'rempart_waiting_room_admitted_total',
      help: 'Passes issued by a waiting room (visitors let in, at once or after waiting), by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    waitingRoomTickets: new Counter({
      name: 'rempart_waiting_room_tickets_total',
      help: 'Tickets issued by a waiting room (new places in line), by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    waitingRoomTicketsRefused: new Counter({
      name: 'rempart_waiting_room_tickets_refused_total',
      help: 'Requests for a new place in line answered without one: the client address (an IPv6 /64) took ticketsPerAddressPerMinute already, by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    diskWriteFailures: new Counter({
      name: 'rempart_disk_write_failures_total',
      help: 'Writes to the audit trail or the state file that failed (disk full, read-only, I/O error: the gateway keeps serving, the write is logged), by file (audit: a batch of events lost; state: an attempt, retried 30 s later).',
      labelNames: ['file'] as const,
      registers: [registry],
    }),
    websocketUpgrades: new Counter({
      name: 'rempart_websocket_upgrades_total',
      help: 'WebSocket (Upgrade) connections passed through, by route.',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    cluster: clusterMetrics(registry),
  };
  return m;
}

/** Cluster mode (src/app/cluster.ts): the store's health and cost. Readers are installed by the cluster layer. */
function clusterMetrics(registry: Registry) {
  const readers = {
    storeUp: (_g: Gauge): void => {},
    operations: (): number => 0,
    localDecisions: (): number => 0,
  };
  // Counters read from a running total at scrape time.
  const fromTotal = (name: string, help: string, read: () => number) => {
    let last = 0;
    return new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const now = read();
        if (now > last) this.inc(now - last);
        last = now;
      },
    });
  };
  return {
    readers,
    storeUp: new Gauge({
      name: 'rempart_cluster_store_up',
      help: 'Whether the cluster store (memory, or Valkey/Redis) answers: 1 yes, 0 no (the node then decides locally).',
      registers: [registry],
      collect() {
        readers.storeUp(this);
      },
    }),
    storeFailures: new Counter({
      name: 'rempart_cluster_store_failures_total',
      help: 'Times the cluster store became unreachable or too slow (each outage counts once).',
      registers: [registry],
    }),
    operations: fromTotal(
      'rempart_cluster_store_operations_total',
      'Commands sent to the cluster store (leases, ban and level writes and reads, publishes).',
      () => readers.operations(),
    ),
    localDecisions: fromTotal(
      'rempart_cluster_local_decisions_total',
      'Requests of `scope: global` rate limits decided by the local limiter because the store was unusable (failMode open).',
      () => readers.localDecisions(),
    ),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
