// The dashboard's once-a-second picture of the gateway, built from aggregates only: the hot metric
// cells (differences between two readings give rates), the live admission gates, breakers and
// health checks of the runtime, the scrape-time gauge readers, and the defence state read through
// the admin API's own GET handlers (so whatever a guard exposes at /api/level, /api/bans,
// /api/signatures lights up here once it is registered; until then that part is null). Nothing
// here is per request, so its cost does not grow with an attack.
import type { Gauge } from 'prom-client';
import type { Metrics } from '../core/metrics.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import { ATTACK_LEVEL_NAMES } from '../pipeline/env.ts';
import type { AdminApi } from './api.ts';

/** What a refused request counts as on the dashboard, by reason code. */
export function refusalCategory(reason: string): string {
  if (reason === 'RMP_ERR_RATE_LIMITED') return 'rate_limited';
  if (reason === 'RMP_ERR_CHALLENGE' || reason === 'RMP_ERR_CHALLENGE_FAILED') return 'challenged';
  if (reason.startsWith('RMP_ERR_ADMISSION_')) return 'shed';
  if (reason === 'RMP_ERR_BANNED') return 'banned';
  if (reason === 'RMP_ERR_WAITING_ROOM') return 'waiting_room';
  if (reason === 'RMP_ERR_SIGNATURE_BLOCKED') return 'blocked';
  if (reason === 'RMP_ERR_EXFILTRATION') return 'exfiltration';
  if (reason.startsWith('RMP_ERR_EDGE_')) return 'edge';
  return 'refused_other';
}

/** Series of the "requests per second by decision" chart, in drawing order. */
export const DECISION_SERIES = [
  'forwarded',
  'answered',
  'cache_hit',
  'stale',
  'upstream_error',
  'aborted',
  'rate_limited',
  'challenged',
  'shed',
  'banned',
  'waiting_room',
  'blocked',
  'exfiltration',
  'edge',
  'refused_other',
] as const;

export interface UpstreamView {
  name: string;
  admission: string;
  limit: number | null;
  inFlight: number;
  breaker: string;
  healthy: boolean | null;
  /** Response-time percentiles over the last few seconds, ms; null without answers. */
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  /** Its servers (one for `url`): state, requests in flight, response-time percentiles (ms). */
  servers: ServerView[];
}

export interface ServerView {
  /** host:port */
  name: string;
  /** up, ejected (out for failures in real traffic) or unhealthy (failing its health check). */
  state: string;
  inFlight: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface Snapshot {
  /** Wall-clock ms. */
  t: number;
  node: string;
  rps: { total: number; byDecision: Record<string, number>; byClass: Record<string, number> };
  upstreams: UpstreamView[];
  /** Whether any upstream has admission control (`upstreams[].admission.mode` not `off`): without it nothing queues. */
  admissionOn: boolean;
  /** Upstreams whose admission is off: the queue-depth chart names them. */
  admissionOff: string[];
  queueDepth: Record<string, number>;
  cache: { lookupsPerSec: number; hitRatio: number | null; staleRatio: number | null };
  routes: {
    name: string;
    class: string;
    upstream: string;
    fallback: string | null;
    serving: 'primary' | 'fallback' | 'unavailable';
  }[];
  waitingRoom: Record<string, number>;
  level: { value: number; name: string; detail: unknown };
  bans: unknown;
  signatures: unknown;
  guards: unknown;
  statusPage: unknown;
  /** Guard decisions per second (top by rate). */
  guardDecisions: { guard: string; action: string; reason: string; rule: string; perSec: number }[];
  connections: number;
  /** Audit events recorded so far in this process: the page refetches the trail when it moves. */
  auditSeq: number;
}

/** Percentile windows: this many one-second readings of the response-time histograms. */
const LATENCY_WINDOW = 5;
const MAX_BANS_SHOWN = 25;
const MAX_RULES_SHOWN = 30;

export interface SnapshotDeps {
  readonly metrics: Metrics;
  readonly getRuntime: () => Runtime;
  readonly api: AdminApi;
  readonly node: () => string;
  readonly auditSeq: () => number;
}

export class SnapshotBuilder {
  readonly #d: SnapshotDeps;
  #lastAt = 0;
  #baseline = true;
  readonly #prev = new Map<string, number>();
  /** Per upstream and per server of a pool, the last LATENCY_WINDOW cumulative bucket arrays. */
  readonly #latency = new Map<string, Float64Array[]>();

  constructor(deps: SnapshotDeps) {
    this.#d = deps;
  }

  /**
   * The difference since the last reading of this key. The first build only takes the baseline; a
   * key that appears later (a cell created since) counts from 0.
   */
  #delta(key: string, value: number): number {
    const before = this.#prev.get(key);
    this.#prev.set(key, value);
    if (before === undefined) return this.#baseline ? 0 : value;
    return Math.max(0, value - before);
  }

  /** Percentiles over the last LATENCY_WINDOW readings of a latency histogram cell (kept under `key`). */
  #percentiles(key: string, cell: { counts: Float64Array } | undefined, bounds: readonly number[]) {
    if (cell === undefined) return { p50Ms: null, p90Ms: null, p99Ms: null };
    const ring = this.#latency.get(key) ?? [];
    // A cell created since the last reading: everything in it is new.
    if (ring.length === 0 && !this.#baseline) ring.push(new Float64Array(cell.counts.length));
    ring.push(Float64Array.from(cell.counts));
    if (ring.length > LATENCY_WINDOW + 1) ring.shift();
    this.#latency.set(key, ring);
    const first = ring[0]!;
    const window = ring[ring.length - 1]!.map((v, i) => v - first[i]!);
    return {
      p50Ms: percentile(window, bounds, 0.5),
      p90Ms: percentile(window, bounds, 0.9),
      p99Ms: percentile(window, bounds, 0.99),
    };
  }

  async build(nowMs = Date.now()): Promise<Snapshot> {
    const { metrics, getRuntime, api } = this.#d;
    const rt = getRuntime();
    const seconds = this.#lastAt === 0 ? 1 : Math.max(0.2, (nowMs - this.#lastAt) / 1000);
    this.#baseline = this.#lastAt === 0;
    this.#lastAt = nowMs;
    const rate = (n: number) => Math.round((n / seconds) * 10) / 10;

    // Requests by decision (refused split by reason) and by class.
    const byDecision: Record<string, number> = Object.fromEntries(DECISION_SERIES.map((d) => [d, 0]));
    const byClass: Record<string, number> = {};
    let total = 0;
    const totals = new Map<string, number>();
    for (const { labels, cell } of metrics.requests.entries())
      totals.set(`${labels.route}\u0001${labels.class}\u0001${labels.decision}\u0001${labels.code}`, cell.value);
    for (const [key, value] of totals) {
      const d = this.#delta(`req\u0001${key}`, value);
      if (d === 0) continue;
      const [, cls, decision] = key.split('\u0001') as [string, string, string];
      total += d;
      if (cls !== '-') byClass[cls] = (byClass[cls] ?? 0) + d;
      if (decision !== 'refused') byDecision[decision] = (byDecision[decision] ?? 0) + d;
    }
    // Refusals (requests and connections refused on accept), by category of reason.
    for (const { labels, cell } of hotEntries(metrics, 'rempart_refusals_total')) {
      const d = this.#delta(`ref\u0001${labels.reason}`, cell.value);
      if (d === 0) continue;
      const cat = refusalCategory(labels.reason ?? '');
      byDecision[cat] = (byDecision[cat] ?? 0) + d;
    }
    for (const k of Object.keys(byDecision)) byDecision[k] = rate(byDecision[k]!);
    for (const k of Object.keys(byClass)) byClass[k] = rate(byClass[k]!);

    // Upstreams: admission gate, breaker, health, response-time percentiles.
    const hist = new Map<string, { counts: Float64Array }>();
    for (const { labels, cell } of metrics.upstreamResponse.entries()) hist.set(labels.upstream ?? '', cell);
    const bounds = metrics.upstreamResponse.upperBounds;
    const upstreams: UpstreamView[] = [];
    const serverHist = new Map<string, { counts: Float64Array }>();
    for (const { labels, cell } of metrics.upstreamServerResponse.entries())
      serverHist.set(`${labels.upstream}\u0001${labels.server}`, cell);
    for (const u of rt.upstreams.values()) {
      const lim = u.admission.limiter;
      const p = this.#percentiles(u.name, hist.get(u.name), bounds);
      const one = u.pool.servers.length === 1;
      const servers: ServerView[] = u.pool.servers.map((sv) => {
        const key = `${u.name}\u0001${sv.label}`;
        // A one-server upstream has no histogram of its own server: it is the upstream's.
        const q = one ? p : this.#percentiles(key, serverHist.get(key), metrics.upstreamServerResponse.upperBounds);
        return { name: sv.label, state: sv.state, inFlight: sv.inFlight, p50Ms: q.p50Ms, p99Ms: q.p99Ms };
      });
      upstreams.push({
        name: u.name,
        admission: lim.mode,
        limit: lim.mode === 'off' ? null : lim.limit,
        inFlight: lim.inFlight,
        breaker: u.breaker.state,
        healthy: u.pool.healthChecks.length === 0 ? null : u.pool.usable,
        ...p,
        servers,
      });
    }

    const queueDepth = await gaugeByLabel(metrics.admissionQueueDepth, 'class');
    const waitingRoom = await gaugeByLabel(metrics.waitingRoomLength, 'route');

    // Cache: hit and stale shares of the look-ups of this second.
    let lookups = 0;
    let hits = 0;
    let stale = 0;
    for (const { labels, cell } of metrics.cacheLookups.entries()) {
      const d = this.#delta(`cache\u0001${labels.route}\u0001${labels.result}`, cell.value);
      if (labels.result === 'bypass') continue;
      lookups += d;
      if (labels.result === 'hit' || labels.result === 'collapsed') hits += d;
      else if (labels.result === 'stale') stale += d;
    }

    const usable = (u: Runtime['routes'][number]['upstream']) => u.pool.usable && u.breaker.state !== 'open';
    const routes = rt.routes.map((r) => ({
      name: r.name,
      class: r.class,
      upstream: r.upstream.name,
      fallback: r.fallback?.name ?? null,
      serving: usable(r.upstream)
        ? ('primary' as const)
        : r.fallback !== null && usable(r.fallback)
          ? ('fallback' as const)
          : ('unavailable' as const),
    }));

    // Guard decisions per second, top 12.
    const guardDecisions: Snapshot['guardDecisions'] = [];
    for (const { labels, cell } of hotEntries(metrics, 'rempart_guard_decisions_total')) {
      const d = this.#delta(
        `guard\u0001${labels.guard}\u0001${labels.action}\u0001${labels.reason}\u0001${labels.rule}`,
        cell.value,
      );
      if (d > 0)
        guardDecisions.push({
          guard: labels.guard!,
          action: labels.action!,
          reason: labels.reason!,
          rule: labels.rule!,
          perSec: rate(d),
        });
    }
    guardDecisions.sort((a, b) => b.perSec - a.perSec);
    guardDecisions.length = Math.min(guardDecisions.length, 12);

    const levelGauge = await metrics.attackLevel.get();
    const levelValue = levelGauge.values[0]?.value ?? 0;
    const connections = (await metrics.connectionsActive.get()).values[0]?.value ?? 0;

    return {
      t: nowMs,
      node: this.#d.node(),
      rps: { total: rate(total), byDecision, byClass },
      upstreams,
      admissionOn: upstreams.some((u) => u.admission !== 'off'),
      admissionOff: upstreams.filter((u) => u.admission === 'off').map((u) => u.name),
      queueDepth,
      cache: {
        lookupsPerSec: rate(lookups),
        hitRatio: lookups > 0 ? round3(hits / lookups) : null,
        staleRatio: lookups > 0 ? round3(stale / lookups) : null,
      },
      routes,
      waitingRoom,
      level: {
        value: levelValue,
        name: ATTACK_LEVEL_NAMES[levelValue as 0 | 1 | 2] ?? String(levelValue),
        detail: await read(api, '/api/level'),
      },
      bans: await read(api, '/api/bans', { limit: String(MAX_BANS_SHOWN) }),
      signatures: trimRules(await read(api, '/api/signatures')),
      guards: await read(api, '/api/guards'),
      statusPage: await read(api, '/api/status-page'),
      guardDecisions,
      connections,
      auditSeq: this.#d.auditSeq(),
    };
  }
}

/** The cells of a hot counter that is registered but not exposed on Metrics (refusals, guard decisions). */
function hotEntries(
  metrics: Metrics,
  name: string,
): Iterable<{ labels: Record<string, string>; cell: { value: number } }> {
  const hot = metrics.registry.getSingleMetric(name) as unknown as
    | { entries?(): IterableIterator<{ labels: Record<string, string>; cell: { value: number } }> }
    | undefined;
  return hot?.entries?.() ?? [];
}

/** A GET handler's body, or null when the endpoint is not registered or fails. */
async function read(api: AdminApi, path: string, query?: Record<string, string>): Promise<unknown> {
  try {
    const r = await api.get(path, query);
    return r !== null && r.status === 200 ? r.body : null;
  } catch {
    return null;
  }
}

function trimRules(body: unknown): unknown {
  if (body === null || typeof body !== 'object') return body;
  const b = body as { rules?: unknown[] };
  if (Array.isArray(b.rules) && b.rules.length > MAX_RULES_SHOWN)
    return { ...b, rules: b.rules.slice(0, MAX_RULES_SHOWN), rulesOmitted: b.rules.length - MAX_RULES_SHOWN };
  return body;
}

async function gaugeByLabel(g: Gauge<string>, label: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await g.get()).values) out[String(v.labels[label] ?? '')] = v.value;
  return out;
}

/** The upper bound (ms) of the bucket holding quantile q of these per-bucket counts (last slot +Inf). */
export function percentile(counts: ArrayLike<number>, bounds: readonly number[], q: number): number | null {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i]!;
  if (n === 0) return null;
  const want = q * n;
  let acc = 0;
  for (let i = 0; i < counts.length; i++) {
    acc += counts[i]!;
    if (acc >= want) {
      // Interpolate inside the bucket, as Prometheus' histogram_quantile does.
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      const hi = i < bounds.length ? bounds[i]! : bounds[bounds.length - 1]!;
      const inBucket = counts[i]!;
      const frac = inBucket === 0 ? 1 : (want - (acc - inBucket)) / inBucket;
      return Math.round((lo + (hi - lo) * frac) * 1e4) / 10;
    }
  }
  return null;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
