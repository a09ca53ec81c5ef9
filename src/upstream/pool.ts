// An upstream's servers: one keep-alive client (an undici Pool) per server, the balancing policy that
// picks one for each request, and each server's health: passive (outlier detection, fed by real
// traffic) and active (the health check, through the server's own client). See docs/upstreams.md.
//
// Who is in service: a server out for failures (ejected) or failing its health check is out, but never
// more than `maxEjectedPercent` of the pool at once (at least one may be): past it a failing server
// stays in, so a broken health check or a cascade of timeouts cannot empty the pool. The upstream as a
// whole is judged by its circuit breaker (src/upstream/breaker.ts), fed only by failures that reached
// a client (after the one retry on another server, src/pipeline/forward.ts): one dead server of three
// never opens it, a dead pool does, and only then do routes go to their `fallback`.
//
// Outlier detection judges a server's failures in two kinds, as the breaker does (and as Envoy's
// split_external_local_origin_errors): a connect failure (refused, unreachable, connect timeout, TLS
// handshake) cannot be caused by a request, so `consecutiveFailures` of them in a row eject the server.
// A response failure (502/504, no head within headersTimeoutMs, a reset after the request went out, an
// unparsable answer) may be the request's doing: one client asking for a slow path, or one the origin
// drops, failed five times in a row on whichever server it landed and ejected servers up to
// maxEjectedPercent. Those now eject a server only when, over a rolling `windowMs`, it answered at
// least `minRequests` times, `failurePercent` of them failed, the failures were on at least `minPaths`
// paths from at least `minClients` client prefixes (with `balance: hash` one client's requests all land
// on one server, so its peers alone cannot tell), and its failure ratio is more than twice its peers'
// (the other servers in service below failurePercent themselves, together; at least one must have
// answered): a path slow on every server is the path's problem, a server failing where its peers
// succeed is the server's. An origin failing everywhere is no outlier: that is the breaker's to judge.
import type { H1Pool } from './h1-pool.ts';
import type { UpstreamTlsMaterial } from './tls.ts';
import { isIP, type Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { buildConnector, Client, Pool, type Dispatcher } from 'undici';
import { HealthCheck, type HealthCheckSettings } from './health.ts';
import { addDistinct, distinct, spreadKey } from './spread.ts';

export type BalancePolicy = 'least_request' | 'round_robin' | 'hash';
export const SERVER_STATES = ['up', 'ejected', 'unhealthy'] as const;
export type ServerState = (typeof SERVER_STATES)[number];

/** The settings of a server's client: the upstream's connection settings, the same for each server. */
export interface ServerClientSettings {
  readonly connections: number;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** `upstreams[].tlsServerName`: the name an https server's TLS says and is checked against; null: its host name. */
  readonly tlsServerName: string | null;
  /** `upstreams[].tls`'s files as read (src/upstream/tls.ts); null: the system's authorities, no client certificate. */
  readonly tlsFiles: UpstreamTlsMaterial | null;
}

export interface OutlierSettings {
  /** Connect failures in a row that eject a server. */
  readonly consecutiveFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectedPercent: number;
  /** The rolling window response failures are judged over. */
  readonly windowMs: number;
  /** A server's answers (successes and response failures) in the window before it may be ejected. */
  readonly minRequests: number;
  /** Response failures, in percent of the server's answers in the window, that may eject it. */
  readonly failurePercent: number;
  /** Distinct paths among the server's response failures in the window needed to eject it. */
  readonly minPaths: number;
  /** Distinct client prefixes among the server's response failures in the window needed to eject it. */
  readonly minClients: number;
}

/**
 * A server's answers and response failures over a rolling window: two fixed windows, the one before
 * weighted by how much of it still lies within windowMs (as the breaker's). The paths and client
 * prefixes kept are the first few failing ones (up to minPaths and minClients): enough to say "at least
 * N", bounded whatever clients send, and strings the request already held (nothing copied). No
 * allocation once its arrays have grown to their caps.
 */
export class OutlierWindow {
  start = 0;
  answers = 0;
  failures = 0;
  readonly paths: string[] = [];
  readonly prefixes: string[] = [];
  prevAnswers = 0;
  prevFailures = 0;
  readonly prevPaths: string[] = [];
  readonly prevPrefixes: string[] = [];

  /** Start afresh at `nowMs` (an ejection spent the failures, or the server came back). */
  clear(nowMs: number): void {
    this.start = nowMs;
    this.answers = 0;
    this.failures = 0;
    this.paths.length = 0;
    this.prefixes.length = 0;
    this.prevAnswers = 0;
    this.prevFailures = 0;
    this.prevPaths.length = 0;
    this.prevPrefixes.length = 0;
  }

  /** Make the current window the one holding `nowMs`, rolling the old one over. */
  roll(nowMs: number, windowMs: number): void {
    const age = nowMs - this.start;
    if (age < windowMs) return;
    if (age >= 2 * windowMs) {
      this.clear(nowMs - (age % windowMs));
      return;
    }
    this.prevAnswers = this.answers;
    this.prevFailures = this.failures;
    copy(this.paths, this.prevPaths);
    copy(this.prefixes, this.prevPrefixes);
    this.start += windowMs;
    this.answers = 0;
    this.failures = 0;
    this.paths.length = 0;
    this.prefixes.length = 0;
  }

  /** How much of the previous window still counts at `nowMs` (0 to 1); -1 if even the current is past. */
  weight(nowMs: number, windowMs: number): number {
    const age = nowMs - this.start;
    if (age < windowMs) return Math.max(0, 1 - age / windowMs);
    return -1;
  }

  /** Note a failure's path and client prefix, each kept only while fewer than its cap are. */
  note(path: string, prefix: string, o: OutlierSettings): void {
    addDistinct(this.paths, path, o.minPaths);
    // Counted by network (IPv6 /48), as the breaker does: three /64s of one customer are one client.
    if (this.prefixes.length < o.minClients) addDistinct(this.prefixes, spreadKey(prefix), o.minClients);
  }

  /** Whether the failures over both windows came on minPaths paths from minClients client prefixes. */
  spread(o: OutlierSettings): boolean {
    return (
      distinct(this.paths, this.prevPaths, o.minPaths) >= o.minPaths &&
      distinct(this.prefixes, this.prevPrefixes, o.minClients) >= o.minClients
    );
  }
}

/** `to` becomes a copy of `from` (arrays of a few entries, reused: no allocation once grown). */
function copy(from: readonly string[], to: string[]): void {
  to.length = 0;
  for (let i = 0; i < from.length; i++) to.push(from[i]!);
}

/**
 * The seam where a server's client is made: undici's Pool today; another HTTP/1.1 engine plugs its own
 * per-server dispatcher in here (compileRuntime takes the factory). Requests and health checks of a
 * server both go through the one client it returns.
 */
export type DispatcherFactory = (origin: string, settings: ServerClientSettings) => Dispatcher;

/** A server's undici client settings: its pool's, and those of a request sent on a connection of its own. */
function undiciOptions(origin: string, s: ServerClientSettings): Client.Options {
  return {
    pipelining: 1,
    keepAliveTimeout: s.keepAliveTimeoutMs,
    keepAliveMaxTimeout: s.keepAliveTimeoutMs,
    headersTimeout: s.headersTimeoutMs,
    bodyTimeout: s.bodyTimeoutMs,
    connect: serverConnector(tlsName(origin, s), s.connectTimeoutMs, s.tlsFiles),
    // Response heads from a misbehaving upstream stay bounded too.
    maxHeaderSize: 65536,
  };
}

/**
 * undici's own connector (as `connect: { timeout }` builds it), with two changes:
 * - TLS names the server as configured (`tlsServerName`, else its host name; no SNI for an IP address,
 *   the certificate then checked against the address: tlsName), never the client's Host. undici takes the TLS server name from each
 *   request's Host: the origin's certificate was checked against a name the client chose, and a client
 *   alternating Host values made every upstream request a new TLS handshake (undici closes the
 *   connection when the name changes): every request now carries the server's host as its name (NamedPool,
 *   forward.ts), so it never changes. nginx (`proxy_ssl_name $proxy_host`) does the same.
 * - its sockets' errors carry the bytes written on the connection, as undici's SocketError does: a reset
 *   (ECONNRESET, EPIPE) then tells forward.ts (#staleReuse) too whether the connection was a reused one.
 */
function serverConnector(
  name: string | undefined,
  timeout: number,
  files: UpstreamTlsMaterial | null,
): buildConnector.connector {
  // undici hands the options it does not know to tls.connect (`upstreams[].tls`); certificates are always verified.
  const connect = buildConnector({ timeout, ...tlsConnectOptions(files) });
  return (opts, callback) =>
    connect(opts.servername === name ? opts : { ...opts, servername: name }, (err, socket) => {
      // Before undici's own listener (added once connected): the error is marked when undici reads it.
      // A failed connect hands no socket.
      if (socket) socket.prependListener('error', markBytesWritten);
      (callback as (e: Error | null, s: Socket | null) => void)(err, socket);
    });
}

function markBytesWritten(this: Socket, err: Error & { code?: string; socket?: { bytesWritten?: number } }): void {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') err.socket ??= { bytesWritten: this.bytesWritten };
}

/**
 * What tls.connect takes towards an https server (the connector here, a WebSocket tunnel's request):
 * `upstreams[].tls`'s files, and `rejectUnauthorized` said outright. Left out, Node takes it from
 * NODE_TLS_REJECT_UNAUTHORIZED, and `=0` (a debugging leftover in a unit file or an image) accepted any
 * certificate, `caFile` or not: the docs promise no switch turns the check off.
 */
export function tlsConnectOptions(files: UpstreamTlsMaterial | null): {
  rejectUnauthorized: true;
  secureContext: SecureContext;
} {
  // The files' one context (src/upstream/tls.ts), else the system's authorities' one, shared by every
  // connection: none is built per connection (tls.connect builds one for each otherwise, ~0.5 ms).
  return { rejectUnauthorized: true, secureContext: files === null ? systemTrust() : files.secureContext };
}

let systemContext: SecureContext | null = null;

/** The context of an https upstream without `tls`: Node's default authorities (NODE_EXTRA_CA_CERTS included). */
function systemTrust(): SecureContext {
  return (systemContext ??= createSecureContext());
}

/** An origin's host as UpstreamServer.host holds it (IPv6 without brackets): every request's servername. */
function originHost(origin: string): string {
  return new URL(origin).hostname.replace(/^\[|\]$/g, '');
}

/**
 * The TLS server name of an https server: `upstreams[].tlsServerName` when set, else its host name, or
 * undefined for an IP address (no SNI, the certificate checked against the address).
 */
export function tlsName(origin: string, s: ServerClientSettings): string | undefined {
  if (s.tlsServerName !== null) return s.tlsServerName;
  const host = originHost(origin);
  return isIP(host) === 0 ? host : undefined;
}

/**
 * undici's Pool whose every request names the server as configured (servername: its host), whatever
 * its Host: undici closes an https connection when a request's name differs from the last one's.
 * forward.ts sends the name itself (no copy per request); health checks and cache refreshes get it here.
 */
/** undici reads `servername` from a request's options (core/request.js), though its types do not list it. */
export type NamedDispatchOptions = Dispatcher.DispatchOptions & { servername?: string };

class NamedPool extends Pool {
  readonly #name: string;
  constructor(origin: string, options: Pool.Options) {
    super(origin, options);
    this.#name = originHost(origin);
  }
  override dispatch(opts: NamedDispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return super.dispatch(opts.servername === this.#name ? opts : { ...opts, servername: this.#name }, handler);
  }
}

export const createUndiciPool: DispatcherFactory = (origin, s) =>
  new NamedPool(origin, { ...undiciOptions(origin, s), connections: s.connections });

/** The key a server's client is shared under across reloads: its origin and client settings. */
export function clientKey(origin: string, s: ServerClientSettings): string {
  return JSON.stringify([
    origin,
    s.connections,
    s.connectTimeoutMs,
    s.headersTimeoutMs,
    s.bodyTimeoutMs,
    s.keepAliveTimeoutMs,
    s.tlsServerName,
    s.tlsFiles?.digest ?? null,
  ]);
}

/** Latency cells set by the composition root (metrics): the forward path observes into them. */
export interface LatencySink {
  observe(seconds: number): void;
}

export class UpstreamServer {
  readonly upstream: string;
  /** `http://host:port` as configured (normalised by URL). */
  readonly origin: string;
  /** `host:port`: the `server` label of metrics and the dashboard (from configuration: bounded). */
  readonly label: string;
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly clientKey: string;
  /** What its TLS connections say (SNI) and check the certificate against; undefined: plain http, or no name. */
  readonly tlsName: string | undefined;
  /** Its `upstreams[].tls` files (authorities, client certificate); null: none given. */
  readonly tlsFiles: UpstreamTlsMaterial | null;
  readonly dispatcher: Dispatcher;
  /**
   * With `server.engine: lean` and plain http, the lean engine's raw keep-alive pool (upstream/h1-pool.ts):
   * forward.ts sends requests there instead of `dispatcher` (health checks and cache refreshes stay on it).
   * Set by compileRuntime; lives and retires with `dispatcher` (runtime.ts h1PoolOf).
   */
  h1: H1Pool | null = null;
  /** FNV-1a of the origin: the server's seed in rendezvous hashing (stable across reloads and order). */
  readonly seed: number;
  /** Requests dispatched to it and not over yet (least_request reads it). */
  inFlight = 0;
  /** Connect failures in a row (outlier detection). */
  connectFailures = 0;
  /** Its answers and response failures over the outlier window. */
  readonly window = new OutlierWindow();
  /** Out for failures until its timer brings it back. */
  ejected = false;
  /** Ejections within maxEjectionMs of each other: the next ejection lasts base × this, up to max. */
  ejections = 0;
  ejectedAtMs = 0;
  returnedAtMs = -Infinity;
  /** Whether the pool uses it now (see ServerPool.#recompute). */
  inService = true;
  /** Its active health check (null without `healthCheck`); started and stopped by the gateway. */
  health: HealthCheck | null = null;
  latency: LatencySink | null = null;
  /** The pool it belongs to now (a reload builds a new pool around the same servers). */
  pool: ServerPool | null = null;
  #ejectTimer: NodeJS.Timeout | null = null;
  readonly #settings: ServerClientSettings;
  /** The clients of dispatchFresh's requests still open (each closes itself after its one request). */
  readonly #fresh = new Set<Client>();

  constructor(upstream: string, url: string, settings: ServerClientSettings, factory: DispatcherFactory) {
    this.#settings = settings;
    const u = new URL(url);
    this.upstream = upstream;
    this.origin = u.origin;
    this.host = u.hostname.replace(/^\[|\]$/g, '');
    this.tls = u.protocol === 'https:';
    this.port = u.port ? Number(u.port) : this.tls ? 443 : 80;
    this.label = u.host;
    this.clientKey = clientKey(this.origin, settings);
    this.tlsName = this.tls ? tlsName(this.origin, settings) : undefined;
    this.tlsFiles = this.tls ? settings.tlsFiles : null;
    this.dispatcher = factory(this.origin, settings);
    this.seed = fnv1a(this.origin, 0x811c9dc5);
  }

  /**
   * One request on a new connection of its own, closed after its answer: forward.ts's retry of an
   * idempotent request whose reused undici connection died under it. Not through the pool: another idle
   * connection to an origin that closes every connection after an answer is as dead. Rare (a stale
   * connection met), so a client per request costs nothing on the request path.
   */
  dispatchFresh(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const client = new Client(this.origin, undiciOptions(this.origin, this.#settings));
    this.#fresh.add(client);
    client.dispatch({ ...opts, reset: true }, handler);
    const forget = () => this.#fresh.delete(client);
    client.close().then(forget, forget);
  }

  /**
   * Whether dispatchFresh may open one more connection: at most `connections` of its one-off ones at
   * once, beside the pool's own, so that an origin closing every reused connection under load gets at
   * most twice the connections it was promised, not one per request in flight (past it, the failure is
   * answered as any other).
   */
  freshRoom(): boolean {
    return this.#fresh.size < this.#settings.connections;
  }

  /** Cut the requests dispatchFresh still has in flight (the gateway stops). */
  async destroyFresh(): Promise<void> {
    await Promise.all([...this.#fresh].map((c) => c.destroy()));
  }

  /** Out for failures, or failing its health check: whether it wants out (the pool may keep it in). */
  get failing(): boolean {
    return this.ejected || (this.health !== null && !this.health.healthy);
  }

  /** What the dashboard and the state gauge say. */
  get state(): ServerState {
    if (!this.inService) return this.ejected ? 'ejected' : 'unhealthy';
    return 'up';
  }

  /** @internal ServerPool's */
  setEjectTimer(t: NodeJS.Timeout | null): void {
    if (this.#ejectTimer !== null) clearTimeout(this.#ejectTimer);
    this.#ejectTimer = t;
  }
}

export interface PoolSettings {
  readonly balance: BalancePolicy;
  readonly outlier: OutlierSettings;
}

/** The largest pool where least_request compares every server; beyond, two random choices (P2C). */
export const FULL_SCAN_MAX = 8;

export class ServerPool {
  readonly name: string;
  readonly servers: readonly UpstreamServer[];
  readonly balance: BalancePolicy;
  #outlier: OutlierSettings;
  /** In service now: what pick chooses from. Rebuilt on each change of a server's state (rare). */
  #live: UpstreamServer[];
  #rr = 0;
  #checks: HealthCheck[] = [];
  /** Called when the servers in service change (count): the admission gate scales its limit by it. */
  onLiveChange: ((pool: ServerPool) => void) | null = null;
  /** Called when a server changes state (metrics, log). */
  onServerState: ((pool: ServerPool, server: UpstreamServer, from: ServerState, to: ServerState) => void) | null = null;

  constructor(name: string, servers: UpstreamServer[], settings: PoolSettings) {
    this.name = name;
    this.servers = servers;
    this.balance = settings.balance;
    this.#outlier = settings.outlier;
    this.#live = servers.slice();
    for (const s of servers) {
      s.pool = this;
      if (s.health !== null) {
        this.#checks.push(s.health);
        this.#watch(s.health);
      }
    }
    this.#recompute();
  }

  /** Servers in service now. */
  get liveCount(): number {
    return this.#live.length;
  }

  /** Whether any server is in service: failover's "is the pool down" (with the breaker). */
  get usable(): boolean {
    return this.#live.length > 0;
  }

  /**
   * The health checks of its servers (the gateway starts and stops them): as this pool has them, so
   * after a reload that replaced a reused server's check, the old pool still lists the old one to stop.
   */
  get healthChecks(): readonly HealthCheck[] {
    return this.#checks;
  }

  /** Most servers out at once: maxEjectedPercent of the pool, at least one. */
  get maxOut(): number {
    return Math.max(1, Math.floor((this.servers.length * this.#outlier.maxEjectedPercent) / 100));
  }

  /** The health check of `server` changed its verdict: its service may change. */
  #watch(h: HealthCheck): void {
    h.onChange = () => this.#recompute();
  }

  /** @internal compileRuntime's: a server whose health check was replaced on reload. */
  adoptHealth(server: UpstreamServer, h: HealthCheck | null): void {
    const old = server.health;
    this.#checks = this.#checks.filter((c) => c !== old);
    if (h !== null) this.#checks.push(h);
    server.health = h;
    if (h !== null) this.#watch(h);
  }

  /**
   * Pick a server for a request: null when none is in service (or the only one is `exclude`, the
   * server a retry moves away from). `hash` is the request's key hash for `balance: hash`, or -1.
   * No allocation.
   */
  pick(hash: number, exclude: UpstreamServer | null): UpstreamServer | null {
    const live = this.#live;
    const n = live.length;
    if (n === 0) return null;
    if (n === 1) return live[0] === exclude ? null : live[0]!;
    if (hash >= 0 && this.balance === 'hash') return this.#rendezvous(hash, exclude);
    if (this.balance === 'round_robin') {
      const i = this.#rr++ % n;
      if (this.#rr >= 0x3fffffff) this.#rr = 0;
      const s = live[i]!;
      return s !== exclude ? s : live[(i + 1) % n]!;
    }
    if (n <= FULL_SCAN_MAX) {
      // Every server compared; the scan starts one further each time, so ties (an idle pool) rotate.
      const start = this.#rr++ % n;
      if (this.#rr >= 0x3fffffff) this.#rr = 0;
      let best: UpstreamServer | null = null;
      for (let k = 0; k < n; k++) {
        const s = live[(start + k) % n]!;
        if (s === exclude) continue;
        if (best === null || s.inFlight < best.inFlight) best = s;
      }
      return best;
    }
    // Power of two choices: two distinct servers at random, the less busy one (Envoy's least_request).
    const i = (Math.random() * n) | 0;
    let j = (Math.random() * (n - 1)) | 0;
    if (j >= i) j++;
    const a = live[i]!;
    const b = live[j]!;
    if (a === exclude) return b;
    if (b === exclude) return a;
    return a.inFlight <= b.inFlight ? a : b;
  }

  /**
   * Rendezvous (highest random weight) hashing: each server scores mix(hash ^ seed), the highest in
   * service wins. A key moves only when its own server leaves (its keys spread evenly over the rest)
   * or comes back: the least disruption any consistent hash gives, with no ring to rebuild. O(n) per
   * request, a few integer operations per server: cheaper than a ring's lookup for pools of tens.
   */
  #rendezvous(hash: number, exclude: UpstreamServer | null): UpstreamServer | null {
    const live = this.#live;
    let best: UpstreamServer | null = null;
    let bestScore = -1;
    for (let k = 0; k < live.length; k++) {
      const s = live[k]!;
      if (s === exclude) continue;
      const score = mix32(hash ^ s.seed);
      if (score > bestScore || (score === bestScore && best !== null && s.seed > best.seed)) {
        best = s;
        bestScore = score;
      }
    }
    return best;
  }

  /**
   * A server answered below 500 for a request sent at `sentMs` (the request's own start time: no clock
   * read here). It is reachable and serving: the connect-failure streak is over.
   */
  onSuccess(s: UpstreamServer, sentMs: number): void {
    if (s.connectFailures !== 0) s.connectFailures = 0;
    const w = s.window;
    if (sentMs - w.start >= this.#outlier.windowMs) w.roll(sentMs, this.#outlier.windowMs);
    w.answers++;
  }

  /** A server could not be reached (refused, unreachable, connect timeout, TLS handshake): in a row. */
  onConnectFailure(s: UpstreamServer, nowMs: number): void {
    s.connectFailures++;
    if (s.connectFailures >= this.#outlier.consecutiveFailures) this.#eject(s, nowMs);
  }

  /**
   * A server was reached but failed the request for `path` from a client of `clientPrefix` (502/504,
   * response timeout, reset after the request went out, bad response): judged over the window against
   * its peers (this file's head).
   */
  onResponseFailure(s: UpstreamServer, clientPrefix: string, path: string, nowMs: number): void {
    s.connectFailures = 0;
    const o = this.#outlier;
    const w = s.window;
    w.roll(nowMs, o.windowMs);
    w.answers++;
    w.failures++;
    w.note(path, clientPrefix, o);
    if (this.servers.length < 2 || s.ejected || !w.spread(o)) return;
    const k = w.weight(nowMs, o.windowMs);
    const answers = w.answers + w.prevAnswers * k;
    const failures = w.failures + w.prevFailures * k;
    if (answers < o.minRequests || failures * 100 < answers * o.failurePercent) return;
    // Its peers: the other servers in service below failurePercent themselves, together. A path slow on
    // every server leaves none (or ones failing nearly as much): nothing is ejected. Rare (only past the
    // gates above), so the scan is no cost on the hot path.
    let peerAnswers = 0;
    let peerFailures = 0;
    for (const x of this.#live) {
      if (x === s) continue;
      const xw = x.window;
      const xk = xw.weight(nowMs, o.windowMs);
      let a = 0;
      let f = 0;
      if (xk >= 0) {
        a = xw.answers + xw.prevAnswers * xk;
        f = xw.failures + xw.prevFailures * xk;
      } else if (nowMs - xw.start < 2 * o.windowMs) {
        // Its current window is past but not yet rolled: it is now the previous one.
        const pk = 1 - (nowMs - xw.start - o.windowMs) / o.windowMs;
        a = xw.answers * pk;
        f = xw.failures * pk;
      }
      if (a > 0 && f * 100 < a * o.failurePercent) {
        peerAnswers += a;
        peerFailures += f;
      }
    }
    // No peer known to serve well, or peers failing at half its ratio or more: the requests' failures.
    if (peerAnswers === 0 || 2 * peerFailures * answers >= failures * peerAnswers) return;
    this.#eject(s, nowMs);
  }

  #eject(s: UpstreamServer, nowMs: number): void {
    // A one-server upstream is never ejected: there is nowhere else to go, and its breaker (with its
    // half-open probe) already stops traffic to a dead origin.
    if (this.servers.length < 2 || s.ejected) return;
    let out = 0;
    for (const x of this.servers) if (!x.inService) out++;
    // Already as many out as allowed: it stays in (its counts stay, so it goes at a next failure once
    // room is made).
    if (s.inService && out >= this.maxOut) return;
    const o = this.#outlier;
    s.ejections = nowMs - s.returnedAtMs < o.maxEjectionMs ? s.ejections + 1 : 1;
    s.ejected = true;
    s.ejectedAtMs = nowMs;
    s.connectFailures = 0;
    s.window.clear(nowMs);
    const ms = Math.min(o.maxEjectionMs, o.baseEjectionMs * s.ejections);
    const t = setTimeout(unejectLater, ms, s);
    t.unref();
    s.setEjectTimer(t);
    this.#recompute();
  }

  /** Bring an ejected server back (its ejection time is over). */
  uneject(s: UpstreamServer, nowMs: number): void {
    if (!s.ejected) return;
    s.ejected = false;
    s.returnedAtMs = nowMs;
    s.connectFailures = 0;
    s.window.clear(nowMs);
    this.#recompute();
  }

  /** Reload: new outlier settings apply to the next ejections. */
  reconfigure(settings: PoolSettings): void {
    this.#outlier = settings.outlier;
    this.#recompute();
  }

  /**
   * Who is in service: every server not failing, and of the failing ones, those over the cap stay in
   * (the ones that went out first stay out: ejected before unhealthy, then in pool order).
   */
  #recompute(): void {
    const maxOut = this.servers.length < 2 ? this.servers.length : this.maxOut;
    let out = 0;
    const live: UpstreamServer[] = [];
    const before = this.servers.map((s) => s.state);
    // First pass: servers already out stay out while failing (no flapping when another one fails).
    for (const s of this.servers) {
      const stays = !s.inService && s.failing && out < maxOut;
      if (stays) out++;
      s.inService = !stays;
    }
    for (const s of this.servers) {
      if (s.inService && s.failing && out < maxOut) {
        s.inService = false;
        out++;
      }
      if (s.inService) live.push(s);
    }
    const changed = live.length !== this.#live.length;
    this.#live = live;
    if (this.onServerState !== null)
      this.servers.forEach((s, i) => {
        if (s.state !== before[i]) this.onServerState!(this, s, before[i]!, s.state);
      });
    if (changed) this.onLiveChange?.(this);
  }

  /**
   * A request outside the forward path (a cache refresh): through a server picked like a request's,
   * counted in its in-flight until the response head. Health checks use each server's dispatcher.
   */
  async request(opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData> {
    const s = this.pick(-1, null) ?? this.servers[0]!;
    s.inFlight++;
    try {
      return await s.dispatcher.request(opts);
    } finally {
      s.inFlight--;
    }
  }

  /** Close every server's client at once (the gateway stops). */
  async destroy(): Promise<void> {
    for (const s of this.servers) s.setEjectTimer(null);
    await Promise.all(this.servers.flatMap((s) => [s.dispatcher.destroy(), s.destroyFresh()]));
  }
}

/** An ejection is over: back through the server's current pool (a reload may have made a new one). */
function unejectLater(s: UpstreamServer): void {
  s.setEjectTimer(null);
  s.pool?.uneject(s, performance.now());
}

/** Make a health check for a server, through its own client. */
export function serverHealthCheck(server: UpstreamServer, settings: HealthCheckSettings): HealthCheck {
  return new HealthCheck(server.upstream, settings, server.dispatcher, server.label);
}

/** FNV-1a, 32 bits, of a string's UTF-16 code units (the key of `balance: hash`). */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Murmur3's finaliser: every bit of the input moves every bit of the output. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
