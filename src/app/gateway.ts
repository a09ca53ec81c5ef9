// The gateway: listeners, the HTTP server they feed, the phase pipeline, and the done step.
// Configuration lives in an immutable Runtime snapshot that reload() swaps whole.
import http from 'node:http';
import tls from 'node:tls';
import { readFile } from 'node:fs/promises';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Pool } from 'undici';
import type { Config } from '../config/schema.ts';
import { RequestContext } from '../pipeline/context.ts';
import { ERRORS, RempartError, type ErrorCode } from '../core/errors.ts';
import { createLogger, resolveLogFormat, type LogFormat, type Logger } from '../core/log.ts';
import { createMetrics, type Metrics } from '../core/metrics.ts';
import type { CounterCell, HistogramCell } from '../core/hot-metrics.ts';
import { LogSampler } from '../core/log-sampler.ts';
import { runDone, runPhases, Verdict, type Phase } from '../pipeline/phase.ts';
import { loadSecureContext, splitHostPort } from '../core/listen.ts';
import { compileRuntime, isTrusted, type Runtime } from '../pipeline/runtime.ts';
import { createEdgePhase } from '../phases/edge/index.ts';
import { createIdentifyPhase } from '../phases/identify/index.ts';
import { createRoutePhase } from '../phases/route/index.ts';
import { createCachePhase, type CachePhase } from '../phases/cache/index.ts';
import { systemClock, type Clock } from '../core/clock.ts';
import { createBodyPhase } from '../phases/body/index.ts';
import { createAdmissionPhase, type AdmissionPhase } from '../phases/admission/index.ts';
import { createWaitingRoomPhase } from '../phases/waiting-room/index.ts';
import { CookieSigner, loadKey } from '../phases/waiting-room/ticket.ts';
import { createFailoverPhase, createUnavailablePhase } from '../phases/failover/index.ts';
import { setStatusPage } from '../phases/failover/status-page.ts';
import { BREAKER_STATES, type CircuitBreaker } from '../upstream/breaker.ts';
import { forward, type ForwardHooks } from '../pipeline/forward.ts';
import { createAdminServer } from '../control/admin.ts';
import { hostname } from 'node:os';
import { createAdminApi, loadTokens, type AdminApi } from '../control/api.ts';
import { Alerts, loadWebhookTarget, type AlertSink } from '../control/alerts.ts';
import { AuditTrail } from '../control/audit.ts';
import { auditAction, createCockpit } from '../control/cockpit.ts';
import { RuntimeOverrides, registerOverridesApi } from '../control/overrides.ts';
import { SnapshotBuilder } from '../control/snapshot.ts';
import { BanTable } from '../phases/ban/table.ts';
import { AttackLevelMonitor } from '../phases/level/monitor.ts';
import { AttackLevel } from '../pipeline/env.ts';
import type { DefenseDeps } from '../pipeline/env.ts';
import { createBanPhase } from '../phases/ban/index.ts';
import { createLevelPhase } from '../phases/level/index.ts';
import { createRateLimitPhase } from '../phases/ratelimit/index.ts';
import { createChallengeGuard, type ChallengeGuard } from '../phases/challenge/index.ts';
import { createSignaturesPhase } from '../phases/signatures/index.ts';
import { createExfiltrationPhase } from '../phases/exfiltration/index.ts';
import { createCluster, type Cluster } from './cluster.ts';
import { openStateFile, resolveStateFile } from './state-file.ts';
import type { ClusterStore } from '../store/types.ts';
import { createAcceptServer, createConnectionTable } from '../server/accept.ts';
import { closingReason, flushDeferredReply, sendLocalReply, writeRawReply } from '../pipeline/reply.ts';
import { tunnelUpgrade, wantsTunnel, type TunnelHooks } from '../server/upgrade.ts';
import { holdQueuedReply, markStalled, pauseReading, resumeReading, sweep, type SweepResult, type TrackedSocket } from '../server/connections.ts';
import { kIdleSince, kPeerAddress, kPending, kReadPaused } from '../pipeline/symbols.ts';

const kCtx = Symbol('rempart.ctx');
type ResponseWithCtx = http.ServerResponse & { [kCtx]: RequestContext };

export interface GatewayOptions {
  logger?: Logger;
  /** Time for phases that keep time (the cache); tests pass a manual clock. */
  clock?: Clock;
  /** The cluster store to use instead of the one `cluster.store` names (tests share one MemoryStore between gateways). */
  store?: ClusterStore;
  /**
   * The command line's config file (null: none). `state.file: auto` puts the state file beside it (or
   * in $STATE_DIRECTORY); unset (a gateway built by code, as tests do), `auto` keeps nothing.
   */
  configFile?: string | null;
}

export interface Gateway {
  readonly metrics: Metrics;
  readonly log: Logger;
  /** The response cache phase (its store, and serveStaleIfAny for phases that shed). */
  readonly cache: CachePhase;
  /** The admin API (phases register their endpoints on it). */
  readonly api: AdminApi;
  /** What the defence phases share: the attack level and the ban table. */
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
   * Graceful stop: `/readyz` turns 503 at once; after readinessDelayMs the listeners stop accepting;
   * in-flight requests get up to graceMs to finish; then everything closes (config `shutdown`).
   */
  stop(graceMs?: number, readinessDelayMs?: number): Promise<void>;
  /** Swap in a validated config. Listener addresses and maxHeaderBytes need a restart. */
  reload(config: Config): Promise<void>;
  /** Bound addresses, in listener order (useful with port 0). */
  addresses(): { listeners: AddressInfo[]; admin: AddressInfo | null };
}

/** Node parse errors that are request-smuggling shapes, refused as such. */
const SMUGGLING_PARSE_ERRORS = new Set([
  'HPE_INVALID_CONTENT_LENGTH',
  'HPE_UNEXPECTED_CONTENT_LENGTH',
  'HPE_INVALID_TRANSFER_ENCODING',
  'HPE_CR_EXPECTED',
  'HPE_LF_EXPECTED',
  'HPE_INVALID_HEADER_TOKEN',
  'HPE_INVALID_CHUNK_SIZE',
  'HPE_STRICT',
]);

export async function createGateway(initial: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const log = options.logger ?? createLogger(initial.logging.level, undefined, initial.logging.format as LogFormat);
  // The combined access-log format needs a few more fields per request line (only then: JSON lines
  // keep their fixed set).
  const combinedLog = options.logger === undefined && resolveLogFormat(initial.logging.format as LogFormat) === 'combined';
  const metrics = createMetrics();
  let current = compileRuntime(initial).runtime;
  const getRuntime = () => current;
  const secureContexts = new Map<string, tls.SecureContext>();
  await loadSecureContexts(initial, secureContexts);

  // Waiting-room tickets and passes are signed with this key (never logged).
  const roomKey = await loadKey(process.env, initial.waitingRoom.keyFile);
  if (roomKey.random && initial.routes.some((r) => r.waitingRoom.enabled))
    log.warn('waiting room: no REMPART_WAITING_ROOM_KEY nor waitingRoom.keyFile, using a random key for this process (tickets and passes do not survive a restart nor work across nodes)');

  const clock = options.clock ?? systemClock;
  const api = createAdminApi(log);
  api.setTokens(await loadTokens(process.env, initial.admin.tokensFile));
  // The webhook URL and secret come from the environment or files, never the YAML; never logged.
  const alerts = new Alerts({ log, metrics, config: () => current.config.alerts });
  alerts.setWebhook(await loadWebhookTarget(process.env, initial.alerts.webhook));
  // The audit trail: operator calls through the API hook, and every alert (attack-level changes,
  // failovers, the exfiltration guard) through the sink the phases raise them on.
  const nodeName = () => current.config.alerts.node ?? hostname();
  const audit = new AuditTrail({ file: initial.audit.file ?? ':memory:', retentionDays: initial.audit.retentionDays, node: nodeName(), log });
  let auditSeq = 0;
  audit.onRecord = () => auditSeq++;
  api.onAction = (action) => auditAction(audit, action);
  const alertSink: AlertSink = {
    raise(kind, message, fields, logged) {
      alerts.raise(kind, message, fields, logged);
      const by = typeof fields.by === 'string' ? fields.by : 'rempart';
      const reasons = Array.isArray(fields.reasons) ? `: ${fields.reasons.join('; ')}` : '';
      audit.record(kind, by, `${message}${reasons}`, fields);
    },
  };
  const level = new AttackLevelMonitor({ getRuntime, metrics, log, clock, alerts: alertSink });
  // Under attack, admission's guaranteed shares give way to the strict class order (docs/admission.md).
  level.onTick((m) => {
    const suspended = m.level === AttackLevel.underAttack;
    for (const u of getRuntime().upstreams.values()) u.admission.sharesSuspended = suspended;
  });
  const bans = new BanTable(clock, { getRuntime, log, metrics });
  // Shared state across nodes (memory: this process only); nothing in it runs per request.
  const cluster = await createCluster({ getRuntime, log, metrics, clock, bans, level, store: options.store });
  const defense: DefenseDeps = {
    getRuntime,
    metrics,
    log,
    clock,
    level,
    bans,
    api,
    alerts: alertSink,
    leases: cluster.leases,
  };
  // Familiarity and the challenge share their keys and tables; the forward handler feeds it sessions.
  const challengeGuard = await createChallengeGuard(defense);

  // What the last run learned (bans, level, sessions, used solutions), read before the listeners accept.
  const stateFile = resolveStateFile(initial.state.file, options.configFile);
  const state = await openStateFile({ file: stateFile, log, clock }, {
    bans, level, replay: challengeGuard.replay, sessions: challengeGuard.sessions, localStore: cluster.local,
  });

  // Bans made by the gateway itself (offences, rules); an operator's are recorded as their API call.
  if (defense.bans instanceof BanTable)
    defense.bans.onBan = (v, ttlMs) => {
      if (!v.by.startsWith('operator:')) audit.record('ban', v.by || 'rempart', v.reason, { target: v.target, rule: v.rule || undefined, ttlSec: Math.round(ttlMs / 1000), count: v.count });
    };

  // The list fixes the order (docs/lifecycle.md is checked against it); `unavailable` needs the cache.
  let cache!: CachePhase;
  let admission!: AdmissionPhase;
  const phases: readonly Phase[] = [
    createIdentifyPhase(getRuntime),
    createEdgePhase(getRuntime),
    createRoutePhase(getRuntime),
    createBanPhase(defense),
    createLevelPhase(defense),
    createRateLimitPhase(defense),
    challengeGuard.familiarity,
    createSignaturesPhase(defense),
    challengeGuard.challenge,
    createExfiltrationPhase(defense),
    createFailoverPhase(getRuntime, metrics, log),
    (cache = createCachePhase(getRuntime, metrics, options.clock ?? systemClock)),
    createUnavailablePhase(getRuntime, cache),
    createWaitingRoomPhase(getRuntime, metrics, options.clock ?? systemClock, new CookieSigner(roomKey.key)),
    createBodyPhase(getRuntime),
    (admission = createAdmissionPhase(getRuntime, metrics, options.clock ?? systemClock, (ctx) => cache.serveStaleIfAny(ctx))),
  ];

  // Failover state lives on the compiled upstreams (kept across reloads); wire new ones to metrics
  // and logs, and run their health checks while the gateway runs.
  let started = false;
  const onBreakerChange = (b: CircuitBreaker, from: string, to: string) => {
    for (const state of BREAKER_STATES) metrics.upstreamState.set({ upstream: b.name, state }, state === to ? 1 : 0);
    log.warn({ upstream: b.name, from, to }, 'circuit breaker state changed');
    // Operators hear of an upstream going down and of its recovery (its routes switch to and from their fallback).
    if (from === 'closed' && to === 'open') alertSink.raise('failover', 'upstream failing: circuit breaker opened (its routes use their fallback, a stale copy or the status page)', { upstream: b.name });
    else if (to === 'closed') alertSink.raise('failover', 'upstream recovered: circuit breaker closed', { upstream: b.name });
  };
  function wireFailover(rt: Runtime): void {
    for (const u of rt.upstreams.values()) {
      if (u.breaker.onChange === null) {
        u.breaker.onChange = onBreakerChange;
        for (const state of BREAKER_STATES) metrics.upstreamState.set({ upstream: u.name, state }, state === u.breaker.state ? 1 : 0);
      }
      const h = u.health;
      if (h === null) continue;
      if (h.onResult === null) {
        h.onResult = (check, result, changed) => {
          metrics.healthChecks.inc({ upstream: check.name, result });
          if (changed) log.warn({ upstream: check.name, healthy: check.healthy }, check.healthy ? 'health check: upstream healthy again' : 'health check: upstream unhealthy');
        };
      }
      if (started) h.start();
    }
  }
  wireFailover(current);

  // Metric cells per compiled route (a reload compiles new routes, so a changed class gets new
  // cells), then per decision and status. Keys come from configuration and status codes: small.
  const DECISIONS = ['forwarded', 'answered', 'refused', 'upstream_error', 'aborted', 'cache_hit', 'stale'] as const;
  interface RouteCells {
    readonly routeName: string;
    readonly cls: string;
    readonly byOutcome: Map<number, CounterCell>;
    readonly duration: HistogramCell;
  }
  const routeCells = new WeakMap<object, RouteCells>();
  const noRoute = { name: '-', class: '-' };
  // One response-time cell per upstream name (names come from configuration).
  const upstreamCells = new Map<string, HistogramCell>();

  const sampler = new LogSampler(options.clock ?? systemClock);
  const onSuppressed = (reason: string, suppressed: number, windowMs: number) =>
    log.warn({ reason, suppressed, windowMs: Math.round(windowMs) }, 'log lines suppressed (sampled per reason)');
  const onPhaseError = (err: unknown, phase: string) => log.error({ err, phase }, 'phase onDone failed');

  function record(ctx: RequestContext): void {
    const route = ctx.route ?? noRoute;
    let cells = routeCells.get(route);
    if (cells === undefined) {
      cells = { routeName: route.name, cls: route.class, byOutcome: new Map(), duration: metrics.requestDuration.cell(route.name, route.class) };
      routeCells.set(route, cells);
    }
    const outcome = DECISIONS.indexOf(ctx.decision) * 1000 + ctx.status;
    let counter = cells.byOutcome.get(outcome);
    if (counter === undefined) {
      counter = metrics.requests.cell(route.name, route.class, ctx.decision, String(ctx.status));
      cells.byOutcome.set(outcome, counter);
    }
    counter.value++;
    const nowMs = performance.now();
    const durationSec = (nowMs - ctx.startMs) / 1000;
    metrics.requestDuration.observe(cells.duration, durationSec);
    const up = ctx.upstream;
    if (up !== null && ctx.forwardStartMs !== 0 && ctx.upstreamStatus !== 0) {
      let cell = upstreamCells.get(up.name);
      if (cell === undefined) upstreamCells.set(up.name, (cell = metrics.upstreamResponse.cell(up.name)));
      metrics.upstreamResponse.observe(cell, (nowMs - ctx.forwardStartMs) / 1000);
    }
    const routeName = route.name;
    const cls = route.class;
    if (ctx.reason !== '' && ctx.decision === 'refused') metrics.refusals.inc({ reason: ctx.reason });
    // Refused requests come at attack rate: their lines are sampled per reason (first few per window,
    // then one summary line); forwarded requests are all logged.
    if (current.config.logging.requests && (ctx.decision !== 'refused' || sampler.allow(ctx.reason, onSuppressed))) {
      if (combinedLog) {
        const h = ctx.req.headers;
        log.info({ msg: 'request', method: ctx.req.method, path: ctx.path, url: ctx.req.url, httpVersion: ctx.req.httpVersion, client: ctx.clientAddress, status: ctx.status, bytes: ctx.responseBytes, referer: h.referer, userAgent: h['user-agent'] });
      } else log.info({
        msg: 'request',
        method: ctx.req.method,
        path: ctx.path,
        client: ctx.clientAddress,
        route: routeName,
        class: cls,
        decision: ctx.decision,
        reason: ctx.reason || undefined,
        rule: ctx.ruleId || undefined,
        observed: ctx.observed || undefined,
        cache: ctx.cache || undefined,
        upstream: ctx.upstream?.name,
        status: ctx.status,
        durationMs: Math.round(durationSec * 1e6) / 1e3,
      });
    }
  }

  // `done`: runs once per request whatever happened (finished, refused, client gone).
  function onResponseClose(this: ResponseWithCtx): void {
    const ctx = this[kCtx];
    if (ctx.finished) return;
    ctx.finished = true;
    if (ctx.pinned) unpin(ctx);
    const socket = ctx.req.socket as TrackedSocket;
    const left = socket[kPending] - 1;
    socket[kPending] = left;
    if (left === 0) socket[kIdleSince] = performance.now();
    if (socket[kReadPaused] && left < current.config.limits.maxPipelinedRequests && !socket.destroyed) resumeReading(socket);
    if (!this.writableFinished) {
      if (ctx.decision === 'forwarded') {
        ctx.decision = 'aborted';
        ctx.reason = 'RMP_ERR_CLIENT_ABORTED';
      }
      ctx.forwardHandler?.abort?.(new RempartError('RMP_ERR_CLIENT_ABORTED'));
    }
    runDone(phases, ctx, onPhaseError);
    feedBreaker(ctx);
    record(ctx);
    // A parse error or refused upgrade behind this response waited for it (writeRawReply).
    flushDeferredReply(ctx.req.socket);
  }

  /** Outcomes of forwarded requests feed their upstream's breaker (errors come via onUpstreamError). */
  function feedBreaker(ctx: RequestContext): void {
    const u = ctx.upstream;
    if (u === null || ctx.forwardStartMs === 0) return;
    const s = ctx.upstreamStatus;
    // 503 is not a failure: an overloaded origin answering 503 to its surplus is alive and serving the
    // rest. Opening the breaker on it would turn partial service into none for openMs (admission
    // control is the answer to overload); 502 and 504 say the origin's own backends are gone.
    if (s === 502 || s === 504) u.breaker.onFailure();
    else if (s !== 0) {
      // A head below 500 then a reset mid-body was already counted as a failure: not a success too.
      if (s < 500 && ctx.decision !== 'upstream_error') u.breaker.onSuccess();
    } else if (ctx.decision === 'stale' && ctx.reason.startsWith('RMP_ERR_UPSTREAM_')) u.breaker.onFailure(); // a stale copy stood in for an error
  }

  // Replies stalled on their client keep their upstream connection paused (the admission slot went
  // back). Clients that never read could pin a whole pool that way and leave real users waiting for a
  // connection until the slow-read cut: at most half of an upstream's pool may be pinned; past it the
  // pinned reply whose client took the fewest bytes since it was pinned (a client that never reads
  // takes none; the oldest such first) is cut (RMP_ERR_EDGE_SLOW_READ), freeing its connection. A real
  // user reading slowly but steadily keeps taking bytes and is not the one cut. Keyed by upstream name
  // (configuration), each map bounded by that half; scanned only when it is full.
  /** Per pinned reply: the bytes it had handed to its client when pinned. */
  const pinnedBy = new Map<string, Map<RequestContext, number>>();
  function pin(ctx: RequestContext): void {
    const u = ctx.upstream;
    if (u === null || ctx.finished || ctx.pinned) return;
    let map = pinnedBy.get(u.name);
    if (map === undefined) pinnedBy.set(u.name, (map = new Map()));
    ctx.pinned = true;
    map.set(ctx, ctx.responseBytes);
    const max = Math.max(1, Math.floor(u.config.connections / 2));
    while (map.size > max) {
      let victim: RequestContext | null = null;
      let least = Infinity;
      for (const [other, bytesWhenPinned] of map) {
        // Drained since, or done: no longer holding a paused upstream connection.
        if (other.finished || !other.res.writableNeedDrain) {
          map.delete(other);
          other.pinned = false;
          continue;
        }
        const taken = other.responseBytes - bytesWhenPinned;
        if (taken < least) {
          least = taken;
          victim = other;
        }
      }
      if (victim === null || map.size <= max) break;
      map.delete(victim);
      victim.pinned = false;
      metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' });
      victim.req.socket?.destroy();
    }
  }
  function unpin(ctx: RequestContext): void {
    ctx.pinned = false;
    if (ctx.upstream !== null) pinnedBy.get(ctx.upstream.name)?.delete(ctx);
  }


  const hooks: ForwardHooks = {
    onResponseHead: challengeGuard.onUpstreamHead,
    onUpstreamEnd(ctx) {
      admission.releaseSlot(ctx);
      // The whole reply is read from the origin: it holds no upstream connection any more.
      if (ctx.pinned) unpin(ctx);
    },
    // The reply waits on the client to read: the origin's part is done, so its slot goes back now (a
    // slow reader must not hold one), and the connection's slow-read clock starts.
    onClientBackpressure(ctx) {
      admission.releaseSlot(ctx);
      markStalled(ctx.req.socket as TrackedSocket, table.stalled, performance.now());
      pin(ctx);
    },
    onQueuedReply(ctx, bytes) {
      if (holdQueuedReply(ctx.res, bytes, current.config.limits.maxQueuedReplyBytes)) return true;
      metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' });
      return false;
    },
    replyError(ctx, code, status) {
      ctx.replyStatus = status;
      ctx.replyBody = '';
      ctx.reason = code;
      const page = current.config.statusPage;
      // Upstream unreachable, nothing sent yet: the operator's status page, not a bare 502/504.
      if (page.enabled && (code === 'RMP_ERR_UPSTREAM_CONNECT' || code === 'RMP_ERR_UPSTREAM_TIMEOUT')) setStatusPage(ctx, page, code, status);
      sendLocalReply(ctx);
    },
    onUpstreamError(ctx, code, err) {
      ctx.upstream?.breaker.onFailure();
      metrics.upstreamErrors.inc({ upstream: ctx.upstream?.name ?? '-', reason: code });
      if (sampler.allow(code, onSuppressed)) log.warn({ upstream: ctx.upstream?.name, reason: code, err: err.message }, 'upstream error');
    },
  };

  function act(ctx: RequestContext, verdict: Verdict): void {
    if (verdict === Verdict.Forward) forward(ctx, hooks, current.config.via, current.config.limits.bufferBodyBytes);
    else sendLocalReply(ctx);
  }

  function onInternalError(ctx: RequestContext, err: unknown): void {
    log.error({ err }, 'internal error in request pipeline');
    ctx.decision = 'refused';
    ctx.refuse('RMP_ERR_INTERNAL', 500);
    if (!ctx.res.headersSent) sendLocalReply(ctx);
    else ctx.res.destroy();
  }

  /** Too many requests unanswered on one connection (pipelined in one write): close it, charge an offence. */
  function refusePipelined(socket: TrackedSocket): void {
    metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_PIPELINE_LIMIT' });
    const peer = (socket as TrackedSocket & { [kPeerAddress]?: string })[kPeerAddress] ?? '';
    // A trusted balancer's own address carries many clients (X-Forwarded-For): never charge it.
    if (!isTrusted(current.trustedProxies, peer)) defense.bans.offence(peer, 'pipeline_flood', '');
    if (sampler.allow('RMP_ERR_EDGE_PIPELINE_LIMIT', onSuppressed)) log.warn({ client: peer, reason: 'RMP_ERR_EDGE_PIPELINE_LIMIT' }, 'connection closed: too many pipelined requests unanswered');
    socket.destroy();
  }

  /** Before Node builds a response for a request parsed on `socket`: false stops parsing that connection. */
  function requestGate(socket: TrackedSocket): boolean {
    if (socket[kPending] < 2 * current.config.limits.maxPipelinedRequests) return true;
    refusePipelined(socket);
    return false;
  }

  function onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket as TrackedSocket;
    // Node parses every request in a chunk it reads, answered or not; one write can hold thousands.
    // requestGate stops the parsing past the bound; this check stands if Node's internals change.
    if (socket.destroyed) return;
    const maxPipelined = current.config.limits.maxPipelinedRequests;
    const pending = (socket[kPending] | 0) + 1;
    if (pending > 2 * maxPipelined) return refusePipelined(socket);
    socket[kPending] = pending;
    socket[kIdleSince] = 0;
    if (pending >= maxPipelined) pauseReading(socket);
    // A request carrying Upgrade that is not a tunnel (shouldUpgradeCallback said no): Node's parser
    // stops at such a request and drops whatever followed it in the same read, so a pipelined request
    // behind it would never be answered. Closing after this answer tells the client so.
    if (req.headers.upgrade !== undefined) res.shouldKeepAlive = false;
    const ctx = new RequestContext(req, res, performance.now());
    (res as ResponseWithCtx)[kCtx] = ctx;
    res.on('close', onResponseClose);
    try {
      const v = runPhases(phases, ctx);
      if (typeof v === 'number') act(ctx, v);
      else v.then((r) => act(ctx, r), (err) => onInternalError(ctx, err));
    } catch (err) {
      onInternalError(ctx, err);
    }
  }

  // Upgraded connections leave the HTTP server's tracking (closeAllConnections no longer sees
  // them), so stop() closes them itself.
  const upgraded = new Set<Duplex>();

  // Sockets on the tunnel path (handshakes under way and open tunnels), against limits.maxTunnels.
  let tunnels = 0;
  const onTunnelSocketClose = () => tunnels--;
  const TUNNEL_RETRY_AFTER = { 'retry-after': '5' };

  function onUpgradedSocketFinish(this: http.ServerResponse): void {
    this.socket?.destroySoon();
  }
  function destroyUpgradedSocket(this: Socket): void {
    this.destroy();
  }
  type SocketWithMessage = Socket & { _httpMessage?: http.ServerResponse | null };

  /**
   * Close `s` once every answer still owed on it is out: Node hands the socket to the next queued
   * response when one finishes, so look again after each (several requests may precede the handshake).
   */
  function closeAfterAnswers(s: SocketWithMessage): void {
    const m = s._httpMessage;
    if (m == null || m.writableFinished || s.destroyed) s.destroySoon();
    else m.once('finish', () => setImmediate(closeAfterAnswers, s));
  }

  const tunnelHooks: TunnelHooks = {
    onSwitched(ctx) {
      const socket = ctx.req.socket;
      ctx.res.detachSocket(socket);
      socket.removeListener('timeout', destroyUpgradedSocket);
      metrics.websocketUpgrades.inc({ route: ctx.route!.name });
      // The handshake measured the origin (breaker, response time); the tunnel's life says nothing
      // about its speed, so no sample is taken when the tunnel closes and its slot goes back.
      feedBreaker(ctx);
      const up = ctx.upstream!;
      let cell = upstreamCells.get(up.name);
      if (cell === undefined) upstreamCells.set(up.name, (cell = metrics.upstreamResponse.cell(up.name)));
      metrics.upstreamResponse.observe(cell, (performance.now() - ctx.forwardStartMs) / 1000);
      ctx.forwardStartMs = 0;
    },
    onClosed(ctx) {
      if (ctx.finished) return;
      ctx.finished = true;
      runDone(phases, ctx, onPhaseError);
      record(ctx);
    },
  };

  /**
   * Node hands over the socket of a request it judged an upgrade (a WebSocket GET on a route that
   * allows tunnels, see wantsTunnel) without its HTTP machinery. A ServerResponse is attached to it so
   * that the phases' answers (refusals, challenge and waiting-room pages, a non-101 answer of the
   * upstream) are written and counted like any other, then the connection closes.
   */
  function onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const s = socket as Socket;
    s.on('error', destroyUpgradedSocket);
    upgraded.add(s);
    s.once('close', () => upgraded.delete(s));
    // No HTTP server timeout watches this socket any more: a client that does not read is cut.
    s.setTimeout(current.config.limits.idleTimeoutMs, destroyUpgradedSocket);
    // Pipelined behind a request whose answer is still going out: the connection owes that answer
    // first, and nothing can be answered in order after it. Closed once it is sent; never forwarded.
    const inFlight = (s as SocketWithMessage)._httpMessage;
    if (inFlight != null) {
      closeAfterAnswers(s as SocketWithMessage);
      return;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(s);
    res.on('finish', onUpgradedSocketFinish);
    // Node without shouldUpgradeCallback (before 24.9) hands over every request carrying Upgrade:
    // those that are not tunnels go the ordinary way (their pipelined followers are lost either way).
    if (!wantsTunnel(req, current)) {
      (req as unknown as { upgrade: boolean }).upgrade = false;
      onRequest(req, res);
      return;
    }
    // A tunnel is never an idle keep-alive connection to reclaim (onResponseClose counts it down if
    // the handshake ends without switching).
    (s as TrackedSocket)[kPending] = ((s as TrackedSocket)[kPending] | 0) + 1;
    (s as TrackedSocket)[kIdleSince] = 0;
    const ctx = new RequestContext(req, res, performance.now());
    (res as ResponseWithCtx)[kCtx] = ctx;
    res.on('close', onResponseClose);
    // Each tunnel holds two sockets for minutes: bounded whatever admission says (it may be off).
    tunnels++;
    s.once('close', onTunnelSocketClose);
    if (tunnels > current.config.limits.maxTunnels) {
      ctx.refuse('RMP_ERR_TUNNEL_LIMIT', 503, '', TUNNEL_RETRY_AFTER);
      sendLocalReply(ctx);
      return;
    }
    try {
      const v = runPhases(phases, ctx);
      if (typeof v === 'number') actUpgrade(ctx, v, head);
      else v.then((r) => actUpgrade(ctx, r, head), (err) => onInternalError(ctx, err));
    } catch (err) {
      onInternalError(ctx, err);
    }
  }

  function actUpgrade(ctx: RequestContext, verdict: Verdict, head: Buffer): void {
    if (verdict !== Verdict.Forward) return sendLocalReply(ctx);
    if (ctx.finished) return; // the client left while a phase waited; `done` has run
    // A refusal on this connection said Connection: close (see dispatch in pipeline/forward.ts).
    const closing = closingReason(ctx.req.socket);
    // The route the phases chose must allow tunnels too (a reload between the parser's question and now).
    const refusal = closing ?? (ctx.route?.websocket === true ? undefined : 'RMP_ERR_ROUTE_NO_WEBSOCKET');
    if (refusal !== undefined) {
      ctx.refuse(refusal, 400);
      admission.releaseSlot(ctx);
      return sendLocalReply(ctx);
    }
    tunnelUpgrade(ctx, head, current.config.via, hooks, tunnelHooks, current.config.limits.tunnelIdleTimeoutMs);
  }

  function onClientError(err: Error & { code?: string }, socket: Duplex): void {
    let code: ErrorCode = 'RMP_ERR_EDGE_BAD_REQUEST';
    if (err.code === 'HPE_HEADER_OVERFLOW') code = 'RMP_ERR_EDGE_HEADERS_TOO_LARGE';
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT') code = 'RMP_ERR_EDGE_TIMEOUT';
    else if (err.code !== undefined && SMUGGLING_PARSE_ERRORS.has(err.code)) code = 'RMP_ERR_EDGE_SMUGGLING';
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
      socket.destroy();
      return;
    }
    metrics.refusals.inc({ reason: code });
    writeRawReply(socket as Socket, ERRORS[code].status, code);
  }

  const limits = initial.limits;
  const httpServer = http.createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      insecureHTTPParser: false,
      // A missing Host is refused by the `edge` phase, which closes the connection behind it.
      requireHostHeader: false,
      joinDuplicateHeaders: false,
      // Check header/request timeouts twice a second rather than Node's default 30 s, so a
      // slowloris connection is closed close to limits.headersTimeoutMs.
      connectionsCheckingInterval: 500,
      // Node 24.9+: only WebSocket GETs on routes that allow tunnels become upgrades; any other
      // request carrying Upgrade reaches onRequest and crosses the phases like any request.
      shouldUpgradeCallback: (req: http.IncomingMessage) => wantsTunnel(req, current),
    } as http.ServerOptions,
    onRequest,
  );
  applyTimeouts(httpServer, initial);
  httpServer.on('upgrade', onUpgrade);
  // Expect: 100-continue is answered by us once the phases accepted the request, not by Node at once.
  httpServer.on('checkContinue', onRequest);
  // Any other Expect Node answers 417 itself, keep-alive, before any phase: framing the edge phase
  // refuses (`Transfer-Encoding: identity, chunked`) was then never refused, and a request hidden in
  // that body reached the upstream (fuzz finding). The edge phase answers it (RMP_ERR_EDGE_EXPECTATION).
  httpServer.on('checkExpectation', onRequest);
  httpServer.on('clientError', onClientError);
  // The HTTP server is fed sockets by the accept layer and never listens itself, but Node only
  // starts tracking connections (headersTimeout/requestTimeout checks, closeAllConnections) on
  // 'listening'. Without this, slowloris connections would never be timed out.
  httpServer.emit('listening');

  const table = createConnectionTable();
  // Twice a second: slow readers past their deadline, and idle connections under pressure.
  const swept: SweepResult = { slowReaders: 0, idleClosed: 0 };
  let sweepTimer: NodeJS.Timeout | null = null;
  /** Set by stop(): /readyz answers 503 from the first moment of a graceful stop. */
  let draining = false;
  function sweepConnections(): void {
    const l = current.config.limits;
    const now = performance.now();
    const idle = sweep(table.sockets, table.stalled, table.total, l, now, swept);
    table.reclaim.list = idle;
    table.reclaim.next = 0;
    // Empty (no pressure, or none idle): an accept at the cap may look again at once.
    table.reclaim.builtAt = idle.length > 0 ? now : -Infinity;
    if (swept.slowReaders > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' }, swept.slowReaders);
    if (swept.idleClosed > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_IDLE_RECLAIMED' }, swept.idleClosed);
  }
  const retiredPools = new Set<Pool>();
  const acceptServers: NetServer[] = initial.listeners.map((l) =>
    createAcceptServer({
      proxyProtocol: l.proxyProtocol,
      getSecureContext: l.tls ? () => secureContexts.get(l.address)! : null,
      httpServer,
      getRuntime,
      table,
      metrics,
      log,
      bans: defense.bans,
      requestGate,
    }),
  );
  // Operator overrides (guard modes, the status-page message) patch the file's config; reloads keep them.
  const overrides = new RuntimeOverrides();
  let fileConfig = initial;
  registerOverridesApi(api, { overrides, fileConfig: () => fileConfig, config: () => current.config, apply: () => swapRuntime(overrides.apply(fileConfig)) });
  const cockpit =
    initial.admin.address === 'off'
      ? null
      : await createCockpit({ api, audit, log, snapshots: new SnapshotBuilder({ metrics, getRuntime, api, node: nodeName, auditSeq: () => auditSeq }) });
  const admin = initial.admin.address === 'off' ? null : createAdminServer({ metrics, getRuntime, log, api, cockpit, ready: () => !draining });

  /** Compile and swap in a new runtime (reload, or an operator override), retiring what it replaced. */
  function swapRuntime(config: Config): void {
    const { runtime, retired } = compileRuntime(config, current);
    const kept = new Set([...runtime.upstreams.values()].map((u) => u.health));
    for (const u of current.upstreams.values()) if (u.health !== null && !kept.has(u.health)) u.health.stop();
    current = runtime;
    wireFailover(runtime);
    // Retired pools finish what they carry, then close.
    // Requests routed under the old snapshot may still be reading their body or waiting in a queue
    // and will dispatch on the old pool: close it only once they can no longer exist.
    const graceMs = config.limits.requestTimeoutMs + Math.max(...config.upstreams.map((u) => u.headersTimeoutMs));
    for (const pool of retired) {
      retiredPools.add(pool);
      setTimeout(() => {
        retiredPools.delete(pool);
        void pool.close().catch(() => {});
      }, graceMs).unref();
    }
  }

  return {
    metrics,
    log,
    cache,
    api,
    defense,
    challenge: challengeGuard,
    audit,
    cluster,
    runtime: getRuntime,
    async start() {
      started = true;
      wireFailover(current);
      level.start();
      await cluster.start();
      await Promise.all(initial.listeners.map((l, i) => listen(acceptServers[i]!, l.address)));
      sweepTimer ??= setInterval(sweepConnections, 500).unref();
      if (admin !== null && initial.admin.address !== 'off') await listen(admin, initial.admin.address);
      cockpit?.start();
    },
    async stop(graceMs = 5000, readinessDelayMs = 0) {
      // Not ready from here on: a load balancer polling /readyz stops sending new traffic.
      draining = true;
      if (readinessDelayMs > 0) await new Promise((r) => setTimeout(r, readinessDelayMs));
      // Stop accepting; close() resolves only once every connection is gone, so wait on it last.
      cockpit?.stop();
      if (sweepTimer !== null) clearInterval(sweepTimer);
      sweepTimer = null;
      const closed = acceptServers.map((s) => new Promise<void>((r) => s.close(() => r())));
      httpServer.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (table.total > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        httpServer.closeIdleConnections();
      }
      // The admin listener stays up through the drain, so /readyz keeps saying 503 and /metrics
      // shows the drain; it goes last.
      if (admin) closed.push(new Promise<void>((r) => admin.close(() => r())));
      admin?.closeAllConnections();
      httpServer.closeAllConnections();
      for (const socket of upgraded) socket.destroy();
      // The HTTP server never listened itself, but close() also stops its timeout-checking timer.
      httpServer.close();
      started = false;
      for (const u of current.upstreams.values()) u.health?.stop();
      level.stop();
      state.close();
      await cluster.stop();
      await Promise.all(closed);
      // Alerts still waiting get a short, bounded chance to reach the webhook.
      await Promise.all([...[...current.upstreams.values()].map((u) => u.pool.destroy()), ...[...retiredPools].map((p) => p.destroy()), alerts.stop(Math.min(graceMs, 2000))]);
      audit.close();
    },
    async reload(config) {
      // The admin listener's address needs a restart; allowRemote, metricsRequireToken and the tokens file apply at once.
      const staticKeys = (c: Config) => JSON.stringify([c.listeners.map((l) => [l.address, l.proxyProtocol, !!l.tls]), c.admin.address, c.limits.maxHeaderBytes, c.cluster.store, c.cluster.redis, c.cluster.nodeName, c.cluster.resyncMs, c.cluster.levelHeartbeatMs, c.state.file]);
      if (staticKeys(config) !== staticKeys(current.config)) log.warn('listener, admin address, maxHeaderBytes, cluster store or state.file changes take effect at the next restart');
      // Read every TLS file first: a failure rejects the whole reload and changes nothing.
      const contexts = new Map<string, tls.SecureContext>();
      await loadSecureContexts(config, contexts);
      const tokens = await loadTokens(process.env, config.admin.tokensFile);
      const webhook = await loadWebhookTarget(process.env, config.alerts.webhook);
      const applyChallenge = await challengeGuard.prepare(config);
      api.setTokens(tokens);
      alerts.setWebhook(webhook);
      for (const [address, context] of contexts) secureContexts.set(address, context);
      fileConfig = config;
      const overridden = overrides.state;
      swapRuntime(overrides.apply(config));
      applyChallenge();
      applyTimeouts(httpServer, config);
      log.level = config.logging.level;
      audit.record('config_reload', 'rempart', 'configuration reloaded', overrides.empty ? {} : { overridesKept: overridden });
    },
    addresses() {
      return {
        listeners: acceptServers.map((s) => s.address() as AddressInfo),
        admin: admin ? (admin.address() as AddressInfo | null) : null,
      };
    },
  };
}

function applyTimeouts(server: http.Server, config: Config): void {
  server.headersTimeout = config.limits.headersTimeoutMs;
  server.requestTimeout = config.limits.requestTimeoutMs;
  server.keepAliveTimeout = config.limits.idleTimeoutMs;
  // Node 24 keeps an idle socket 1 s past keepAliveTimeout by default; the limit is the limit.
  (server as http.Server & { keepAliveTimeoutBuffer?: number }).keepAliveTimeoutBuffer = 0;
  server.timeout = config.limits.idleTimeoutMs;
  // Node truncates heads past maxHeadersCount; one more than the limit lets the edge phase see the excess.
  server.maxHeadersCount = config.limits.maxHeaderCount + 1;
}

async function loadSecureContexts(config: Config, into: Map<string, tls.SecureContext>): Promise<void> {
  for (const l of config.listeners) if (l.tls) into.set(l.address, await loadSecureContext(l.tls));
}

function listen(server: NetServer | http.Server, address: string): Promise<void> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 4096 }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}
