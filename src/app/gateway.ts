// The gateway: the composition root. It compiles the configuration into a Runtime snapshot (reload
// swaps it whole), makes the services and the phases (compose.ts), hands them to the HTTP/1.1 request
// entry (src/server/entry.ts) that the accept layer feeds, and starts, stops and reloads the whole.
import type tls from 'node:tls';
import type { AddressInfo, Server as NetServer } from 'node:net';
import type http from 'node:http';
import type { Dispatcher } from 'undici';
import type { Config } from '../config/schema.ts';
import { createLogger, resolveLogFormat, type LogFormat, type Logger } from '../core/log.ts';
import { createMetrics, type Metrics } from '../core/metrics.ts';
import { listenOn, loadSecureContext } from '../core/listen.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { compileRuntime, h1PoolOf, type Runtime } from '../pipeline/runtime.ts';
import { tlsEnvironmentWarning } from '../core/tls-files.ts';
import { loadUpstreamTls, upstreamTlsWarnings, type UpstreamTlsFiles } from '../upstream/tls.ts';
import type { DefenseDeps } from '../pipeline/env.ts';
import { createRecorder } from '../pipeline/record.ts';
import type { CachePhase } from '../phases/cache/index.ts';
import { cachePhase } from '../phases/cache/index.ts';
import { admissionPhase } from '../phases/admission/index.ts';
import type { ChallengeGuard } from '../phases/challenge/index.ts';
import { createAdminServer } from '../control/admin.ts';
import { loadTokens, type AdminApi } from '../control/api.ts';
import { loadWebhookTarget } from '../control/alerts.ts';
import type { AuditTrail } from '../control/audit.ts';
import { createCockpit, type Cockpit } from '../control/cockpit.ts';
import { RuntimeOverrides, registerOverridesApi } from '../control/overrides.ts';
import { SnapshotBuilder } from '../control/snapshot.ts';
import type { ClusterStore } from '../store/types.ts';
import { createAcceptServer, type AcceptOptions } from '../server/accept.ts';
import { createHttpEntry, type HttpEntry } from '../server/entry.ts';
import { createH2Entry, type H2Entry } from '../server/h2/entry.ts';
import { type Cluster, storeTlsAtReload } from './cluster.ts';
import { buildPhases, createServices, failoverWiring, phaseOf, type Services } from './compose.ts';
import { openStateFile, resolveStateFile, type StateFile } from './state-file.ts';

export interface GatewayOptions {
  logger?: Logger;
  /** Time for phases that keep time (the cache); tests pass a manual clock. */
  clock?: Clock;
  /** The cluster store to use instead of the one `cluster.store` names (tests share one MemoryStore between gateways). */
  store?: ClusterStore;
  /**
   * The command line's config file (null: none). `state.file: auto` puts the state file beside it (or
   * in $STATE_DIRECTORY); a gateway built from an object alone keeps no state file.
   */
  configFile?: string | null;
  /**
   * Bind addresses another process holds with SO_REUSEPORT: the new process of an upgrade (`--upgrade`), a
   * worker beside its siblings. Without it such an address is refused at start (src/core/listen.ts).
   */
  join?: boolean;
}

export interface Gateway {
  readonly metrics: Metrics;
  readonly log: Logger;
  /** The response cache phase (its store, and serveStaleIfAny for phases that shed). */
  readonly cache: CachePhase;
  /** The admin API (the composition root mounts the phases' endpoints on it). */
  readonly api: AdminApi;
  /** The environment the phases were built with: the attack level, the ban table and the other services. */
  readonly defense: DefenseDeps;
  /** The challenge guard (familiarity and challenge phases, the token signer, origin-granted sessions). */
  readonly challenge: ChallengeGuard;
  /** The audit trail (operator actions, level changes, failovers, reloads). */
  readonly audit: AuditTrail;
  /** Cluster mode: the store and what syncs through it (docs/cluster.md). */
  readonly cluster: Cluster;
  runtime(): Runtime;
  /** Bind every listener and the admin listener. */
  start(): Promise<void>;
  /**
   * Graceful stop: `/readyz` turns 503 and replies say `Connection: close` at once; after readinessDelayMs the
   * listeners stop accepting; in-flight requests get up to graceMs to finish; what is left then is cut
   * (RMP_ERR_SHUTDOWN_CUT) and everything closes (config `shutdown`). `handover`: a successor holds the same
   * addresses (an upgrade), so the admin listener closes with the others and the successor answers `/readyz`.
   */
  stop(graceMs?: number, readinessDelayMs?: number, handover?: boolean): Promise<void>;
  /** Swap in a validated config. Listener addresses and maxHeaderBytes need a restart. */
  reload(config: Config): Promise<void>;
  /** Bound addresses, in listener order (useful with port 0). */
  addresses(): { listeners: AddressInfo[]; admin: AddressInfo | null };
}

/** What start, stop and reload work on; the mutable part is the gateway's own. */
interface Parts {
  readonly initial: Config;
  readonly log: Logger;
  readonly services: Services;
  /** What survives a restart (bans, the level, sessions, used solutions): src/app/state-file.ts. */
  readonly state: StateFile;
  readonly entry: HttpEntry;
  readonly h2: H2Entry;
  readonly acceptServers: readonly NetServer[];
  admin: http.Server | null;
  cockpit: Cockpit | null;
  readonly overrides: RuntimeOverrides;
  readonly secureContexts: Map<string, tls.SecureContext>;
  /** The files of `upstreams[].tls` of `fileConfig`, as read at start or by the last reload. */
  upstreamTls: UpstreamTlsFiles;
  readonly retiredPools: Set<Dispatcher>;
  readonly getRuntime: () => Runtime;
  /** Compile and swap in a new runtime (reload, or an operator override), retiring what it replaced. */
  readonly swapRuntime: (config: Config) => void;
  /** Wire a runtime's upstreams to metrics, logs and alerts (health checks start once `started`). */
  readonly wireFailover: (rt: Runtime, started: boolean) => void;
  fileConfig: Config;
  /** GatewayOptions.join: bind beside another process's sockets. */
  readonly join: boolean;
  started: boolean;
  /** Set by stop(): /readyz answers 503 from the first moment of a graceful stop. */
  draining: boolean;
  sweepTimer: NodeJS.Timeout | null;
}

export async function createGateway(initial: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const log = options.logger ?? createLogger(initial.logging.level, undefined, initial.logging.format as LogFormat);
  const metrics = createMetrics();
  const clock = options.clock ?? systemClock;
  const upstreamTls = await loadUpstreamTls(initial.upstreams);
  for (const w of upstreamTlsWarnings(upstreamTls)) log.warn(w);
  const tlsEnv = tlsEnvironmentWarning(process.env);
  if (tlsEnv !== null) log.warn(tlsEnv);
  let current = compileRuntime(initial, undefined, undefined, undefined, upstreamTls).runtime;
  const getRuntime = () => current;
  const secureContexts = new Map<string, tls.SecureContext>();
  await loadSecureContexts(initial, secureContexts);
  const services = await createServices({ initial, getRuntime, log, metrics, clock, store: options.store });
  const { api, challenge } = services;
  // What the last run learned (bans, level, sessions, used solutions), read before the listeners accept.
  const state = await openStateFile(
    {
      file: resolveStateFile(initial.state.file, options.configFile),
      log,
      clock,
      onWriteFailure: () => metrics.diskWriteFailures.inc({ file: 'state' }),
    },
    {
      bans: services.bans,
      level: services.level,
      replay: challenge.replay,
      sessions: challenge.sessions,
      localStore: services.cluster.local,
    },
  );
  const phases = buildPhases(services.env, api);
  const cache = phaseOf(phases, cachePhase);
  services.stale.source = cache;
  const wireFailover = failoverWiring(metrics, log, services.alertSink);
  wireFailover(current, false);
  const logging = () => current.config.logging;
  const entryOptions = {
    phases,
    getRuntime,
    metrics,
    log,
    bans: services.bans,
    recorder: createRecorder({ metrics, log, clock, logging, combined: combined(initial, options) }),
    onUpstreamHead: challenge.onUpstreamHead,
    releaseSlot: phaseOf(phases, admissionPhase).releaseSlot,
    initial,
  };
  const entry = createHttpEntry(entryOptions);
  // HTTP/2 streams cross the same phases through their own entry (src/server/h2).
  const h2 = createH2Entry(entryOptions);
  const parts: Parts = {
    initial,
    log,
    services,
    state,
    entry,
    h2,
    acceptServers: createListeners(initial, entry, h2, secureContexts, {
      getRuntime,
      metrics,
      log,
      bans: services.bans,
    }),
    admin: null,
    cockpit: null,
    overrides: new RuntimeOverrides(),
    secureContexts,
    upstreamTls,
    retiredPools: new Set(),
    getRuntime,
    swapRuntime: (config) => {
      current = swapRuntime(parts, config);
    },
    wireFailover,
    fileConfig: initial,
    join: options.join === true,
    started: false,
    draining: false,
    sweepTimer: null,
  };
  await mountControl(parts, metrics);

  return {
    metrics,
    log,
    cache,
    api,
    defense: services.deps,
    challenge,
    audit: services.audit,
    cluster: services.cluster,
    runtime: getRuntime,
    start: () => start(parts),
    stop: (graceMs = 5000, readinessDelayMs = 0, handover = false) => stop(parts, graceMs, readinessDelayMs, handover),
    reload: (config) => reload(parts, config),
    addresses() {
      return {
        listeners: parts.acceptServers.map((s) => s.address() as AddressInfo),
        admin: parts.admin ? (parts.admin.address() as AddressInfo | null) : null,
      };
    },
  };
}

/** One accept server per listener, each feeding the entry's HTTP server. */
function createListeners(
  initial: Config,
  entry: HttpEntry,
  h2: H2Entry,
  secureContexts: ReadonlyMap<string, tls.SecureContext>,
  shared: Pick<AcceptOptions, 'getRuntime' | 'metrics' | 'log' | 'bans'>,
): NetServer[] {
  return initial.listeners.map((l) =>
    createAcceptServer({
      ...shared,
      proxyProtocol: l.proxyProtocol,
      getSecureContext: l.tls ? () => secureContexts.get(l.address)! : null,
      httpServer: entry.server,
      table: entry.connections,
      requestGate: entry.requestGate,
      handOff: entry.handOff,
      h2Server: l.http2.enabled && (l.tls !== undefined || l.http2.cleartext) ? h2.serverFor(l.http2) : null,
      h2Cleartext: l.http2.cleartext,
    }),
  );
}

/**
 * The combined access-log format needs a few more fields per request line (only then: JSON lines keep
 * their fixed set); not with a logger of the caller's.
 */
function combined(initial: Config, options: GatewayOptions): boolean {
  return options.logger === undefined && resolveLogFormat(initial.logging.format as LogFormat) === 'combined';
}

/** Operator overrides, the dashboard and the admin listener (none with admin.address `off`). */
async function mountControl(parts: Parts, metrics: Metrics): Promise<void> {
  const { services, initial, getRuntime, log } = parts;
  const { api, audit } = services;
  // Operator overrides (guard modes, the status-page message) patch the file's config; reloads keep them.
  registerOverridesApi(api, {
    overrides: parts.overrides,
    fileConfig: () => parts.fileConfig,
    config: () => getRuntime().config,
    apply: () => parts.swapRuntime(parts.overrides.apply(parts.fileConfig)),
  });
  if (initial.admin.address === 'off') return;
  const { nodeName: node, auditSeq } = services;
  const snapshots = new SnapshotBuilder({ metrics, getRuntime, api, node, auditSeq });
  const cockpit = await createCockpit({ api, audit, log, snapshots });
  parts.cockpit = cockpit;
  parts.admin = createAdminServer({ metrics, getRuntime, log, api, cockpit, ready: () => !parts.draining });
}

/** Compile `config` against the runtime in force; stop what it no longer uses; returns the new runtime. */
function swapRuntime(parts: Parts, config: Config): Runtime {
  const previous = parts.getRuntime();
  const { runtime, retired } = compileRuntime(config, previous, undefined, undefined, parts.upstreamTls);
  const kept = new Set([...runtime.upstreams.values()].flatMap((u) => u.pool.healthChecks));
  for (const u of previous.upstreams.values()) for (const h of u.pool.healthChecks) if (!kept.has(h)) h.stop();
  parts.wireFailover(runtime, parts.started);
  // Retired pools finish what they carry, then close.
  // Requests routed under the old snapshot may still be reading their body or waiting in a queue
  // and will dispatch on the old pool: close it only once they can no longer exist.
  const graceMs = config.limits.requestTimeoutMs + Math.max(...config.upstreams.map((u) => u.headersTimeoutMs));
  for (const pool of retired) {
    parts.retiredPools.add(pool);
    setTimeout(() => {
      parts.retiredPools.delete(pool);
      void pool.close().catch(() => {});
      void h1PoolOf(pool)?.close();
    }, graceMs).unref();
  }
  return runtime;
}

async function start(parts: Parts): Promise<void> {
  const { initial, services } = parts;
  parts.started = true;
  parts.wireFailover(parts.getRuntime(), true);
  services.level.start();
  await services.cluster.start();
  await Promise.all(initial.listeners.map((l, i) => listenOn(parts.acceptServers[i]!, l.address, parts.join, 4096)));
  // Beside another process (an upgrade's successor, a worker): take what it writes when it hands over.
  // With a shared store (Redis) its bans reach this process through the store already.
  if (parts.join && services.cluster.local) parts.state.followHandover();
  parts.sweepTimer ??= setInterval(sweepSoon, 500, parts).unref();
  if (parts.admin !== null && initial.admin.address !== 'off')
    await listenOn(parts.admin, initial.admin.address, parts.join, 4096);
  parts.cockpit?.start();
}

/**
 * The connection sweep (timeouts, idle connections) runs after the sockets are next read, not from its
 * timer: after a stall (a long callback, a GC pause, the process descheduled) Node runs the timers that
 * fell due before it reads what arrived meanwhile, and the sweep judged connections by their state from
 * before the stall: a keep-alive request sent in time but not read yet was closed as idle, a reset.
 */
function sweepSoon(parts: Parts): void {
  setImmediate(sweepNow, parts);
}

function sweepNow(parts: Parts): void {
  if (parts.sweepTimer === null) return; // stopped meanwhile
  parts.entry.sweep();
  parts.h2.sweep();
}

async function stop(parts: Parts, graceMs: number, readinessDelayMs: number, handover: boolean): Promise<void> {
  const { services, entry, admin } = parts;
  // Not ready from here on: a load balancer polling /readyz stops sending new traffic, and every reply
  // says Connection: close, so keep-alive clients move on after their exchange instead of being cut.
  parts.draining = true;
  entry.drain();
  // HTTP/2 connections get GOAWAY: the streams in flight finish, the client opens its next ones elsewhere.
  parts.h2.drain();
  if (readinessDelayMs > 0) await sleep(readinessDelayMs);
  // Stop accepting; close() resolves only once every connection is gone, so wait on it last. With
  // SO_REUSEPORT the kernel sends new connections to the successor's sockets from here on.
  parts.cockpit?.stop();
  if (parts.sweepTimer !== null) clearInterval(parts.sweepTimer);
  parts.sweepTimer = null;
  const closed = parts.acceptServers.map((s) => new Promise<void>((r) => s.close(() => r())));
  // The admin listener stays up through a drain, so /readyz keeps saying 503 and /metrics shows the
  // drain; but in a hand-over the successor shares its address and is the one to answer.
  if (admin && handover) closed.push(new Promise<void>((r) => admin.close(() => r())));
  // A successor already serves: it gets this process's last changes now, not at the next 2 s write.
  // Written once the listeners are closed: the write blocks the loop (SQLite is synchronous), and
  // connections the kernel queues on a listener meanwhile are reset when it closes.
  if (handover) parts.state.handOver();
  const httpServer = entry.server;
  // In-flight requests finish up to the drain time; connections close after their reply, or once idle.
  const deadline = Date.now() + graceMs;
  while (entry.connections.total > 0 && Date.now() < deadline) {
    await sleep(25);
    entry.closeIdle();
  }
  if (admin && !handover) closed.push(new Promise<void>((r) => admin.close(() => r())));
  admin?.closeAllConnections();
  // Past the drain, what is left is cut (logged RMP_ERR_SHUTDOWN_CUT). Its upstream exchange is stopped
  // only once the cut is recorded (the connections' close events): destroying the pools first made a cut
  // request look like an upstream failure (logged 502, counted by the breaker) while its client got nothing.
  const cut = entry.cutAll() + parts.h2.cutAll();
  if (cut > 0) parts.log.warn({ connections: cut, drainMs: graceMs }, 'drain time over: requests in flight were cut');
  for (let i = 0; i < 40 && entry.connections.total > 0; i++) await sleep(25);
  // The HTTP server never listened itself, but close() also stops its timeout-checking timer.
  httpServer.close();
  parts.started = false;
  for (const u of parts.getRuntime().upstreams.values()) for (const h of u.pool.healthChecks) h.stop();
  services.level.stop();
  parts.state.close();
  await services.cluster.stop();
  await Promise.all(closed);
  // Alerts still waiting get a short, bounded chance to reach the webhook.
  const upstreams = [...parts.getRuntime().upstreams.values()];
  const pools = [...upstreams.map((u) => u.pool.destroy()), ...[...parts.retiredPools].map((p) => p.destroy())];
  for (const p of [...upstreams.flatMap((u) => u.pool.servers.map((sv) => sv.dispatcher)), ...parts.retiredPools])
    pools.push(h1PoolOf(p)?.destroy() ?? Promise.resolve());
  await Promise.all([...pools, services.alerts.stop(Math.min(graceMs, 2000))]);
  services.audit.close();
}

async function reload(parts: Parts, config: Config): Promise<void> {
  const { services, log } = parts;
  // The admin listener's address needs a restart; allowRemote, metricsRequireToken and the tokens file apply at once.
  if (staticKeys(config) !== staticKeys(parts.getRuntime().config))
    log.warn(
      'listener, admin address, maxHeaderBytes, cluster store, state.file or server.engine changes take effect at the next restart',
    );
  // The engine reads the client connections (chosen at start) and the upstream pools (compiled here):
  // a reload naming the other one keeps the running one on both sides, not half of each.
  if (config.server.engine !== parts.initial.server.engine)
    config = Object.freeze({ ...config, server: parts.initial.server });
  // Read every TLS file first: a failure rejects the whole reload and changes nothing.
  const contexts = new Map<string, tls.SecureContext>();
  await loadSecureContexts(config, contexts);
  const upstreamTls = await loadUpstreamTls(config.upstreams);
  const storeTlsNotes = await storeTlsAtReload(config.cluster, services.cluster.storeTlsDigest);
  const tokens = await loadTokens(process.env, config.admin.tokensFile);
  const webhook = await loadWebhookTarget(process.env, config.alerts.webhook);
  const applyChallenge = await services.challenge.prepare(config);
  services.api.setTokens(tokens);
  services.alerts.setWebhook(webhook);
  for (const [address, context] of contexts) parts.secureContexts.set(address, context);
  parts.fileConfig = config;
  parts.upstreamTls = upstreamTls;
  for (const w of [...upstreamTlsWarnings(upstreamTls), ...storeTlsNotes]) parts.log.warn(w);
  const overridden = parts.overrides.state;
  parts.swapRuntime(parts.overrides.apply(config));
  applyChallenge();
  parts.entry.applyTimeouts(config);
  log.level = config.logging.level;
  const kept = parts.overrides.empty ? {} : { overridesKept: overridden };
  services.audit.record('config_reload', 'rempart', 'configuration reloaded', kept);
}

/** The settings a reload cannot change (a restart applies them). */
function staticKeys(c: Config): string {
  const listeners = c.listeners.map((l) => [l.address, l.proxyProtocol, !!l.tls, l.http2]);
  const cl = c.cluster;
  const cluster = [cl.store, cl.redis, cl.nodeName, cl.resyncMs, cl.levelHeartbeatMs];
  return JSON.stringify([
    listeners,
    c.admin.address,
    c.limits.maxHeaderBytes,
    ...cluster,
    c.state.file,
    c.server.engine,
  ]);
}

async function loadSecureContexts(config: Config, into: Map<string, tls.SecureContext>): Promise<void> {
  for (const l of config.listeners) if (l.tls) into.set(l.address, await loadSecureContext(l.tls));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
