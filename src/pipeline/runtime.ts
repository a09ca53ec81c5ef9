// A compiled configuration snapshot: routes turned into matchers and upstreams into keep-alive
// pools. Built once per load or reload, never mutated; the gateway swaps whole snapshots.
import { BlockList, isIPv6 } from 'node:net';
import { Pool } from 'undici';
import type { Config, RouteConfig, UpstreamConfig } from '../config/schema.ts';
import { TRAFFIC_CLASSES, type TrafficClass } from '../config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { AdmissionGate } from '../upstream/gate.ts';
import type { RequestContext } from './context.ts';
import { routeSlot, type LimiterSettings } from '../upstream/limiter.ts';
import type { QueueSettings } from '../upstream/queue.ts';
import { CircuitBreaker } from '../upstream/breaker.ts';
import { HealthCheck } from '../upstream/health.ts';
import { H1Pool } from '../upstream/h1-pool.ts';

export interface CompiledUpstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** `http://host:port`, the key pools are shared under across reloads. */
  readonly origin: string;
  readonly pool: Pool;
  /**
   * With `server.engine: lean` and a plain-http upstream, the raw keep-alive pool forward.ts sends
   * through instead of `pool` (upstream/h1-pool.ts); null otherwise. Lives and retires with `pool`.
   */
  readonly h1: H1Pool | null;
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** Concurrency limiter and priority queue; the same object across reloads while name and URL hold. */
  readonly admission: AdmissionGate<RequestContext>;
  /** Passive failover; the same object across reloads while name and URL hold. */
  readonly breaker: CircuitBreaker;
  /** Active health check, or null; kept across reloads while name, URL, pool and settings hold. The gateway starts and stops it. */
  readonly health: HealthCheck | null;
}

export interface CompiledRoute {
  readonly name: string;
  readonly index: number;
  /** The route's slot for per-route latency baselines in admission limiters (routeSlot: stable across reloads). */
  readonly rttSlot: number;
  readonly class: TrafficClass;
  readonly upstream: CompiledUpstream;
  /** Used while `upstream` is unusable (src/phases/failover), or null. */
  readonly fallback: CompiledUpstream | null;
  readonly maxBodyBytes: number;
  /** Lower-cased host to match, '' for any; wildcard means "this host or any subdomain suffix". */
  readonly host: string;
  readonly hostSuffix: string;
  /** Exact path, or the prefix before a trailing '*', lower-cased (paths match ignoring ASCII case). */
  readonly path: string;
  readonly isPrefix: boolean;
  /** Allowed methods, or null for any. */
  readonly methods: ReadonlySet<string> | null;
  /** Response cache settings, or null when the route does not cache. */
  readonly cache: CompiledRouteCache | null;
  /** Whether WebSocket upgrades may open a tunnel on this route (routes[].websocket). */
  readonly websocket: boolean;
}

export interface CompiledRouteCache {
  readonly queryParams: readonly string[];
  readonly staleWhileRevalidateMs: number;
  readonly staleIfErrorMs: number;
}

/** Cache on for `cacheable` routes unless switched off, off for others unless switched on. */
function compileRouteCache(r: RouteConfig): CompiledRouteCache | null {
  const enabled = r.cache?.enabled ?? r.class === 'cacheable';
  if (!enabled) return null;
  return {
    queryParams: r.cache?.queryParams ?? [],
    staleWhileRevalidateMs: r.cache?.staleWhileRevalidateMs ?? 10000,
    staleIfErrorMs: r.cache?.staleIfErrorMs ?? 86400000,
  };
}

export interface Runtime {
  readonly config: Config;
  readonly routes: readonly CompiledRoute[];
  readonly upstreams: ReadonlyMap<string, CompiledUpstream>;
  readonly trustedProxies: BlockList | null;
  /**
   * The first route for this method, host name (normalised by `identify`: lower-case, no port) and
   * path (normalised, without `;parameters`); null if none.
   */
  matchRoute(method: string, hostName: string, path: string): CompiledRoute | null;
  /** Whether any route allows WebSocket tunnels (the upgrade check stops here for most configs). */
  readonly websocket: boolean;
}

function poolKey(u: UpstreamConfig): string {
  return JSON.stringify([
    u.url,
    u.connections,
    u.connectTimeoutMs,
    u.headersTimeoutMs,
    u.bodyTimeoutMs,
    u.keepAliveTimeoutMs,
  ]);
}

function createPool(u: UpstreamConfig): Pool {
  return new Pool(new URL(u.url).origin, {
    connections: u.connections,
    pipelining: 1,
    keepAliveTimeout: u.keepAliveTimeoutMs,
    keepAliveMaxTimeout: u.keepAliveTimeoutMs,
    headersTimeout: u.headersTimeoutMs,
    bodyTimeout: u.bodyTimeoutMs,
    connect: { timeout: u.connectTimeoutMs },
    // Response heads from a misbehaving upstream stay bounded too.
    maxHeaderSize: 65536,
  });
}

/** The lean engine's pool beside each undici pool (kept and retired with it: h1PoolOf). */
const H1_POOLS = new WeakMap<Pool, H1Pool>();

export function h1PoolOf(pool: Pool): H1Pool | undefined {
  return H1_POOLS.get(pool);
}

function h1PoolFor(pool: Pool, u: UpstreamConfig, url: URL): H1Pool {
  let h1 = H1_POOLS.get(pool);
  if (h1 === undefined) {
    h1 = new H1Pool({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port ? Number(url.port) : 80,
      authority: url.host,
      connections: u.connections,
      connectTimeoutMs: u.connectTimeoutMs,
      headersTimeoutMs: u.headersTimeoutMs,
      bodyTimeoutMs: u.bodyTimeoutMs,
      keepAliveTimeoutMs: u.keepAliveTimeoutMs,
    });
    H1_POOLS.set(pool, h1);
  }
  return h1;
}

function queueSettings(config: Config): QueueSettings {
  const a = config.admission;
  return {
    classOrder: a.classOrder,
    maxEntries: a.queue.maxEntries,
    maxEntriesPerClass: a.queue.maxEntriesPerClass,
    timeoutMs: a.queue.timeoutMs,
    maxSharePercent: a.fairness.maxSharePercent,
    reservePercent: TRAFFIC_CLASSES.map((c) => a.reservePercent[c]),
  };
}

/**
 * Compile a validated config. `previous` lends its pools to upstreams whose settings did not change,
 * so a reload does not drop warm connections; the returned `retired` pools are the ones to close.
 * Admission gates are kept by upstream name and URL, so a reload keeps the learned limit, the
 * in-flight count and the waiting queue.
 */
export function compileRuntime(
  config: Config,
  previous?: Runtime,
  clock: Clock = systemClock,
): { runtime: Runtime; retired: Pool[] } {
  const queue = queueSettings(config);
  const reusable = new Map<string, Pool>();
  if (previous) for (const u of previous.upstreams.values()) reusable.set(poolKey(u.config), u.pool);

  const upstreams = new Map<string, CompiledUpstream>();
  for (const u of config.upstreams) {
    const key = poolKey(u);
    const pool = reusable.get(key) ?? createPool(u);
    reusable.delete(key);
    const url = new URL(u.url);
    const tls = url.protocol === 'https:';
    const limiter: LimiterSettings = u.admission;
    const kept = previous?.upstreams.get(u.name)?.admission;
    let admission: AdmissionGate<RequestContext>;
    if (kept !== undefined && kept.url === u.url) {
      admission = kept;
      admission.reconfigure(limiter, queue);
    } else admission = new AdmissionGate(u.name, u.url, limiter, queue, clock);
    const prev = previous?.upstreams.get(u.name);
    let breaker: CircuitBreaker;
    if (prev !== undefined && prev.config.url === u.url) {
      breaker = prev.breaker;
      breaker.reconfigure(u.circuitBreaker);
    } else breaker = new CircuitBreaker(u.name, u.circuitBreaker, clock);
    let health: HealthCheck | null = null;
    if (u.healthCheck !== undefined) {
      const same =
        prev?.health != null &&
        prev.config.url === u.url &&
        prev.pool === pool &&
        JSON.stringify(prev.health.settings) === JSON.stringify(u.healthCheck);
      health = same ? prev!.health : new HealthCheck(u.name, u.healthCheck, pool);
    }
    upstreams.set(u.name, {
      name: u.name,
      config: u,
      origin: url.origin,
      pool,
      h1: config.server.engine === 'lean' && !tls ? h1PoolFor(pool, u, url) : null,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port ? Number(url.port) : tls ? 443 : 80,
      tls,
      admission,
      breaker,
      health,
    });
  }

  const routes = config.routes.map((r: RouteConfig, index): CompiledRoute => {
    const host = (r.host ?? '').toLowerCase();
    const isPrefix = r.path.endsWith('*');
    return {
      name: r.name,
      index,
      rttSlot: routeSlot(r.name),
      class: r.class,
      upstream: upstreams.get(r.upstream)!,
      fallback: r.fallback !== undefined ? upstreams.get(r.fallback)! : null,
      maxBodyBytes: r.maxBodyBytes ?? config.limits.maxBodyBytes,
      host: host.startsWith('*.') ? '' : host,
      hostSuffix: host.startsWith('*.') ? host.slice(1) : '',
      path: (isPrefix ? r.path.slice(0, -1) : r.path).toLowerCase(),
      isPrefix,
      methods: r.methods ? new Set(r.methods) : null,
      cache: compileRouteCache(r),
      websocket: r.websocket,
    };
  });

  let trustedProxies: BlockList | null = null;
  if (config.clientAddress.trustedProxies.length > 0) {
    trustedProxies = new BlockList();
    for (const cidr of config.clientAddress.trustedProxies) {
      const [addr, bits] = cidr.split('/') as [string, string | undefined];
      const family = isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (bits === undefined) trustedProxies.addAddress(addr, family);
      else trustedProxies.addSubnet(addr, Number(bits), family);
    }
  }

  const runtime: Runtime = {
    config,
    routes,
    upstreams,
    trustedProxies,
    websocket: routes.some((r) => r.websocket),
    matchRoute(method, host, path) {
      for (let i = 0; i < routes.length; i++) {
        const r = routes[i]!;
        if (r.host !== '' && r.host !== host) continue;
        if (r.hostSuffix !== '' && !host.endsWith(r.hostSuffix)) continue;
        if (!pathMatches(r, path)) continue;
        if (r.methods !== null && !r.methods.has(method)) continue;
        return r;
      }
      return null;
    },
  };
  return { runtime, retired: [...reusable.values()] };
}

/**
 * Does `path` meet the route's path? ASCII case is ignored and an exact path also meets itself with
 * one trailing slash: Express (by default), ASP.NET and IIS route `/LOGIN` and `/login/` to the
 * `/login` handler, and a prefix route `/admin/*` also meets `/admin`, so a route that told them
 * apart would let them walk past its limits. Matching
 * more widely is the safe direction: a path that met a route before still meets it. No allocation.
 */
function pathMatches(r: CompiledRoute, path: string): boolean {
  const want = r.path;
  let n = want.length;
  if (r.isPrefix) {
    // `/admin/*` also meets the bare `/admin`: frameworks serve the directory's index there too.
    if (path.length === n - 1 && n > 1 && want.charCodeAt(n - 1) === 0x2f /* / */) n--;
    else if (path.length < n) return false;
  } else if (path.length !== n && !((path.length === n + 1 && path.charCodeAt(n) === 0x2f) /* / */)) return false;
  for (let i = 0; i < n; i++) {
    let c = path.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== want.charCodeAt(i)) return false;
  }
  return true;
}

/** Is this address one of the trusted proxies? Handles IPv4-mapped IPv6 (`::ffff:a.b.c.d`). */
export function isTrusted(list: BlockList | null, address: string): boolean {
  if (list === null || address === '') return false;
  if (address.startsWith('::ffff:') && address.indexOf('.') !== -1) return list.check(address.slice(7), 'ipv4');
  return list.check(address, address.indexOf(':') === -1 ? 'ipv4' : 'ipv6');
}
