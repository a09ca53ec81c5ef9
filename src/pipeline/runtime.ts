// A compiled configuration snapshot: routes turned into matchers and upstreams into pools of servers,
// each with its keep-alive client. Built once per load or reload, never mutated; the gateway swaps
// whole snapshots.
import { BlockList, isIPv6 } from 'node:net';
import type { Dispatcher } from 'undici';
import type { Config, RouteConfig, UpstreamConfig } from '../config/schema.ts';
import { TRAFFIC_CLASSES, type TrafficClass } from '../config/schema.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { AdmissionGate } from '../upstream/gate.ts';
import type { RequestContext } from './context.ts';
import { routeSlot, type LimiterSettings } from '../upstream/limiter.ts';
import type { QueueSettings } from '../upstream/queue.ts';
import { CircuitBreaker } from '../upstream/breaker.ts';
import {
  ServerPool,
  UpstreamServer,
  clientKey,
  createUndiciPool,
  serverHealthCheck,
  type DispatcherFactory,
  type ServerClientSettings,
} from '../upstream/pool.ts';
import { H1Pool } from '../upstream/h1-pool.ts';
import { serverUrls } from '../upstream/schema.ts';
import { NO_UPSTREAM_TLS, type UpstreamTlsFiles } from '../upstream/tls.ts';

/** What `balance: hash` hashes a request on (upstreams[].hashKey, compiled). */
export interface HashOn {
  readonly kind: 'path' | 'client' | 'header' | 'cookie';
  /** The header name (lower case) or the cookie name; '' for path and client. */
  readonly name: string;
}

export interface CompiledUpstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** Its servers, their clients, health and balancing (src/upstream/pool.ts). */
  readonly pool: ServerPool;
  /** With `balance: hash`, what a request is hashed on; null otherwise. */
  readonly hashOn: HashOn | null;
  /** Whether its servers speak TLS (one scheme for all, checked at load). */
  readonly tls: boolean;
  /** Concurrency limiter and priority queue; the same object across reloads while name and servers hold. */
  readonly admission: AdmissionGate<RequestContext>;
  /** Passive failover of the upstream as a whole; the same object across reloads while name and servers hold. */
  readonly breaker: CircuitBreaker;
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

/** The route classes whose routes cache unless `cache.enabled: false` (docs/cache.md, docs/defaults.md). */
export const CACHED_BY_DEFAULT: ReadonlySet<string> = new Set(['cacheable', 'public', 'static']);

export interface CompiledRouteCache {
  /** Query parameters in the key (the rest dropped), or null: the target is keyed and forwarded whole. */
  readonly queryParams: readonly string[] | null;
  readonly staleWhileRevalidateMs: number;
  readonly staleIfErrorMs: number;
  /**
   * On only by its class's default (CACHED_BY_DEFAULT, `cache.enabled` not written, class not `cacheable`):
   * such a route stores only what the origin addressed to shared caches, and never from a request with
   * credentials or a cookie (docs/cache.md "Routes cached by default").
   */
  readonly byDefault: boolean;
  /**
   * Lower-cased request fields that name a person, treated as Authorization is (RFC 9111 §3.5):
   * `authorization` and the API-key headers Rempart is configured with (rate limits, exfiltration).
   */
  readonly credentialHeaders: readonly string[];
}

/**
 * Cache on by default for the classes anonymous, shared content uses (`cacheable`, `public`, `static`):
 * only what the origin marks storable by a shared cache is kept (phases/cache/policy.ts), so a page
 * without an explicit lifetime, or with a cookie either way, is never stored. `authenticated` and
 * `critical` routes cache only when switched on: their answers are one person's.
 */
function compileRouteCache(r: RouteConfig, config: Config): CompiledRouteCache | null {
  const enabled = r.cache?.enabled ?? CACHED_BY_DEFAULT.has(r.class);
  if (!enabled) return null;
  const credentialHeaders = ['authorization'];
  const d = config.defense;
  for (const h of [d.rateLimit.apiKeyHeader, d.exfiltration.apiKeyHeader, r.sensitive?.apiKeyHeader]) {
    const lower = h?.toLowerCase();
    if (lower !== undefined && !credentialHeaders.includes(lower)) credentialHeaders.push(lower);
  }
  return {
    // `cacheable` was the one class that cached before the default (its operator chose it): explicit.
    byDefault: r.cache?.enabled === undefined && r.class !== 'cacheable',
    credentialHeaders,
    // A `cacheable` route's class says its answers do not depend on the query; any other route that
    // caches without listing parameters keys its whole target and sends it on unchanged.
    queryParams: r.cache?.queryParams ?? (r.class === 'cacheable' ? [] : null),
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

function clientSettings(u: UpstreamConfig, tlsFiles: UpstreamTlsFiles): ServerClientSettings {
  const files = u.tls === undefined ? null : (tlsFiles.get(u.name) ?? null);
  // The caller reads the files first (src/upstream/tls.ts): compiling without them would trust the system's authorities.
  if (u.tls !== undefined && files === null) throw new Error(`upstreams ${u.name}: its tls files were not read`);
  return {
    connections: u.connections,
    connectTimeoutMs: u.connectTimeoutMs,
    headersTimeoutMs: u.headersTimeoutMs,
    bodyTimeoutMs: u.bodyTimeoutMs,
    keepAliveTimeoutMs: u.keepAliveTimeoutMs,
    tlsServerName: u.tlsServerName ?? null,
    tlsFiles: files,
  };
}

function compileHashOn(u: UpstreamConfig): HashOn | null {
  if (u.balance !== 'hash') return null;
  const k = u.hashKey;
  if (k === 'path' || k === 'client') return { kind: k, name: '' };
  const colon = k.indexOf(':');
  const kind = k.slice(0, colon) === 'header' ? 'header' : 'cookie';
  return { kind, name: kind === 'header' ? k.slice(colon + 1).toLowerCase() : k.slice(colon + 1) };
}

/** The lean engine's pool beside each server's undici pool (kept and retired with it: h1PoolOf). */
const H1_POOLS = new WeakMap<Dispatcher, H1Pool>();

export function h1PoolOf(pool: Dispatcher): H1Pool | undefined {
  return H1_POOLS.get(pool);
}

function h1PoolFor(sv: UpstreamServer, u: UpstreamConfig): H1Pool {
  let h1 = H1_POOLS.get(sv.dispatcher);
  if (h1 === undefined) {
    h1 = new H1Pool({
      host: sv.host,
      port: sv.port,
      authority: sv.label,
      connections: u.connections,
      connectTimeoutMs: u.connectTimeoutMs,
      headersTimeoutMs: u.headersTimeoutMs,
      bodyTimeoutMs: u.bodyTimeoutMs,
      keepAliveTimeoutMs: u.keepAliveTimeoutMs,
    });
    H1_POOLS.set(sv.dispatcher, h1);
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
 * Compile a validated config. `previous` lends its servers (their clients, warm connections, outlier
 * state and health checks) to upstreams whose server and client settings did not change; the returned
 * `retired` clients are the ones to close. Admission gates and breakers are kept by upstream name and
 * server list, so a reload keeps the learned limit, the in-flight count and the waiting queue.
 * `dispatchers` makes each server's client (the seam for another HTTP/1.1 engine).
 */
export function compileRuntime(
  config: Config,
  previous?: Runtime,
  clock: Clock = systemClock,
  dispatchers: DispatcherFactory = createUndiciPool,
  tlsFiles: UpstreamTlsFiles = NO_UPSTREAM_TLS,
): { runtime: Runtime; retired: Dispatcher[] } {
  const queue = queueSettings(config);
  // Upstream name + client key → the previous snapshot's server, lent to the new one if still wanted.
  const reusable = new Map<string, UpstreamServer>();
  if (previous)
    for (const u of previous.upstreams.values())
      for (const sv of u.pool.servers) reusable.set(`${u.name}\u0000${sv.clientKey}`, sv);

  const upstreams = new Map<string, CompiledUpstream>();
  for (const u of config.upstreams) {
    const urls = serverUrls(u);
    const settings = clientSettings(u, tlsFiles);
    const servers = urls.map((url) => {
      const key = `${u.name}\u0000${clientKey(new URL(url).origin, settings)}`;
      const kept = reusable.get(key);
      reusable.delete(key);
      return kept ?? new UpstreamServer(u.name, url, settings, dispatchers);
    });
    // With `server.engine: lean`, requests to a plain-http server go through the lean engine's raw pool.
    for (const sv of servers) sv.h1 = config.server.engine === 'lean' && !sv.tls ? h1PoolFor(sv, u) : null;
    const pool = new ServerPool(u.name, servers, { balance: u.balance, outlier: u.outlierDetection });
    for (const sv of servers) {
      const h = sv.health;
      const same =
        h !== null && u.healthCheck !== undefined && JSON.stringify(h.settings) === JSON.stringify(u.healthCheck);
      if (!same) pool.adoptHealth(sv, u.healthCheck === undefined ? null : serverHealthCheck(sv, u.healthCheck));
    }
    const serversKey = urls.join(' ');
    const limiter: LimiterSettings = u.admission;
    const prev = previous?.upstreams.get(u.name);
    const kept = prev?.admission;
    let admission: AdmissionGate<RequestContext>;
    if (kept !== undefined && kept.url === serversKey) {
      admission = kept;
      admission.reconfigure(limiter, queue);
    } else admission = new AdmissionGate(u.name, serversKey, limiter, queue, clock);
    // Admission's limits are per server: the gate's limit is scaled by the servers in service.
    pool.onLiveChange = (p) => admission.setServers(p.liveCount);
    admission.setServers(pool.liveCount);
    let breaker: CircuitBreaker;
    if (prev !== undefined && serverUrls(prev.config).join(' ') === serversKey) {
      breaker = prev.breaker;
      breaker.reconfigure(u.circuitBreaker);
    } else breaker = new CircuitBreaker(u.name, u.circuitBreaker, clock);
    upstreams.set(u.name, {
      name: u.name,
      config: u,
      pool,
      hashOn: compileHashOn(u),
      tls: servers[0]!.tls,
      admission,
      breaker,
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
      cache: compileRouteCache(r, config),
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
  const retired: Dispatcher[] = [];
  for (const sv of reusable.values()) {
    sv.setEjectTimer(null);
    retired.push(sv.dispatcher);
  }
  return { runtime, retired };
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
