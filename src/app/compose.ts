// The composition root's parts: the services made before any phase (logs and metrics come from the
// gateway; the admin API, alerts, the audit trail, the attack level, the ban table, the cluster, the
// challenge guard, the waiting-room key), the phase environment built from them, the phases built
// from the list in src/phases/index.ts with their admin routes mounted, and the failover wiring of
// each compiled upstream. Nothing here runs per request.
import { hostname } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { RequestContext } from '../pipeline/context.ts';
import type { Phase, PhaseModule } from '../pipeline/phase.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import { AttackLevel, type AlertSink, type DefenseDeps, type PhaseEnv, type StaleSource } from '../pipeline/env.ts';
import { BREAKER_STATES, type CircuitBreaker } from '../upstream/breaker.ts';
import { SERVER_STATES, type ServerPool, type ServerState, type UpstreamServer } from '../upstream/pool.ts';
import type { ClusterStore } from '../store/types.ts';
import { createAdminApi, loadTokens, type AdminApi } from '../control/api.ts';
import { Alerts, loadWebhookTarget } from '../control/alerts.ts';
import { AuditTrail } from '../control/audit.ts';
import { auditAction } from '../control/cockpit.ts';
import { BanTable } from '../phases/ban/table.ts';
import { AttackLevelMonitor } from '../phases/level/monitor.ts';
import { createChallengeGuard, type ChallengeGuard } from '../phases/challenge/index.ts';
import { CookieSigner, loadKey } from '../phases/waiting-room/ticket.ts';
import { PHASES } from '../phases/index.ts';
import { createCluster, type Cluster } from './cluster.ts';

/** What the services are made with. */
export interface ServiceOptions {
  readonly initial: Config;
  readonly getRuntime: () => Runtime;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** The cluster store to use instead of the one `cluster.store` names (tests). */
  readonly store?: ClusterStore | undefined;
}

/** The control plane's services: the admin API, alerts and the audit trail behind one alert sink. */
export interface Control {
  readonly api: AdminApi;
  readonly alerts: Alerts;
  readonly audit: AuditTrail;
  /** Where guards raise alerts: the alert (log, metric, webhook) and its audit record. */
  readonly alertSink: AlertSink;
  /** This node's name in alerts and snapshots. */
  nodeName(): string;
  /** How many audit records were written (the dashboard's snapshots follow it). */
  auditSeq(): number;
}

export interface Services extends Control {
  readonly level: AttackLevelMonitor;
  readonly bans: BanTable;
  readonly cluster: Cluster;
  readonly challenge: ChallengeGuard;
  /** The stale source of the phase environment, bound to the `cache` phase once it is built. */
  readonly stale: StaleLink;
  /** The one environment of the phases. */
  /** What the guards share, without the services' secrets: what `Gateway.defense` shows embedders. */
  readonly deps: DefenseDeps;
  readonly env: PhaseEnv;
}

/** A stale source handed to phases before the `cache` phase exists; `source` is set once it does. */
export class StaleLink implements StaleSource {
  source: StaleSource | null = null;
  serveStaleIfAny(ctx: RequestContext): boolean {
    return this.source !== null && this.source.serveStaleIfAny(ctx);
  }
}

async function createControl(o: ServiceOptions): Promise<Control> {
  const { initial, log, getRuntime } = o;
  const api = createAdminApi(log);
  api.setTokens(await loadTokens(process.env, initial.admin.tokensFile));
  // The webhook URL and secret come from the environment or files, never the YAML; never logged.
  const alerts = new Alerts({ log, metrics: o.metrics, config: () => getRuntime().config.alerts });
  alerts.setWebhook(await loadWebhookTarget(process.env, initial.alerts.webhook));
  // The audit trail: operator calls through the API hook, and every alert (attack-level changes,
  // failovers, the exfiltration guard) through the sink the phases raise them on.
  const nodeName = () => getRuntime().config.alerts.node ?? hostname();
  const { file, retentionDays, maxRows } = initial.audit;
  const onWriteFailure = () => o.metrics.diskWriteFailures.inc({ file: 'audit' });
  const audit = new AuditTrail({
    file: file ?? ':memory:',
    retentionDays,
    node: nodeName(),
    log,
    onWriteFailure,
    ...(maxRows !== undefined && { maxRows }),
  });
  o.metrics.tableSizes.set('audit_rows', () => audit.rowsHeld);
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
  return { api, alerts, audit, alertSink, nodeName, auditSeq: () => auditSeq };
}

/** The attack level, the ban table and the cluster that syncs them. */
async function createDefense(o: ServiceOptions, control: Control) {
  const { getRuntime, metrics, log, clock } = o;
  const level = new AttackLevelMonitor({ getRuntime, metrics, log, clock, alerts: control.alertSink });
  // Under attack, admission's guaranteed shares give way to the strict class order (docs/admission.md).
  level.onTick((m) => {
    const suspended = m.level === AttackLevel.underAttack;
    for (const u of getRuntime().upstreams.values()) u.admission.sharesSuspended = suspended;
  });
  const bans = new BanTable(clock, { getRuntime, log, metrics });
  // Bans made by the gateway itself (offences, rules); an operator's are recorded as their API call.
  bans.onBan = (v, ttlMs) => {
    if (v.by.startsWith('operator:')) return;
    const fields = { target: v.target, rule: v.rule || undefined, ttlSec: Math.round(ttlMs / 1000), count: v.count };
    control.audit.record('ban', v.by || 'rempart', v.reason, fields);
  };
  // Shared state across nodes (memory: this process only); nothing in it runs per request.
  const cluster = await createCluster({ getRuntime, log, metrics, clock, bans, level, store: o.store });
  return { level, bans, cluster };
}

/** Every service, then the phase environment made of them. */
export async function createServices(o: ServiceOptions): Promise<Services> {
  const { initial, getRuntime, metrics, log, clock } = o;
  // Waiting-room tickets and passes are signed with this key (never logged).
  const roomKey = await loadKey(process.env, initial.waitingRoom.keyFile);
  if (roomKey.random && initial.routes.some((r) => r.waitingRoom.enabled))
    log.warn(
      'waiting room: no REMPART_WAITING_ROOM_KEY nor waitingRoom.keyFile, using a random key for this process ' +
        '(tickets and passes do not survive a restart nor work across nodes)',
    );
  const control = await createControl(o);
  const { level, bans, cluster } = await createDefense(o, control);
  const alerts = control.alertSink;
  const deps: DefenseDeps = { getRuntime, metrics, log, clock, level, bans, alerts, leases: cluster.leases };
  // Familiarity and the challenge share their keys and tables; the forward handler feeds it sessions.
  const challenge = await createChallengeGuard(deps);
  const stale = new StaleLink();
  const env: PhaseEnv = { ...deps, challenge, stale, roomSigner: new CookieSigner(roomKey.key) };
  return { ...control, level, bans, cluster, challenge, stale, deps, env };
}

/** The phases, in the list's order, built with one environment; their admin routes mounted on `api`. */
export function buildPhases(env: PhaseEnv, api: AdminApi, modules: readonly PhaseModule[] = PHASES): Phase[] {
  return modules.map((m) => {
    const phase = m.create(env);
    if (phase.name !== m.name) throw new Error(`phase module ${m.name} built a phase named ${phase.name}`);
    if (m.adminRoutes !== undefined) api.mount(m.adminRoutes(phase, env));
    return phase;
  });
}

/** The phase `module` built in `phases` (built from PHASES). */
export function phaseOf<P extends Phase>(phases: readonly Phase[], module: PhaseModule<P>): P {
  const i = PHASES.indexOf(module as PhaseModule);
  if (i === -1) throw new Error(`phase ${module.name} is not in PHASES`);
  return phases[i] as P;
}

type FailoverWiring = (rt: Runtime, started: boolean) => void;

/**
 * Failover state lives on the compiled upstreams (kept across reloads): wire new ones to metrics, logs
 * and alerts, and start their health checks while the gateway runs. Returns the function to call with
 * every runtime swapped in.
 */
export function failoverWiring(metrics: Metrics, log: Logger, alerts: AlertSink): FailoverWiring {
  const onBreakerChange = (b: CircuitBreaker, from: string, to: string) => {
    for (const state of BREAKER_STATES) metrics.upstreamState.set({ upstream: b.name, state }, state === to ? 1 : 0);
    log.warn({ upstream: b.name, from, to }, 'circuit breaker state changed');
    // Operators hear of an upstream going down and of its recovery (its routes switch to and from their fallback).
    const upstream = { upstream: b.name };
    const failing =
      'upstream failing: circuit breaker opened (its routes use their fallback, a stale copy or the status page)';
    if (from === 'closed' && to === 'open') alerts.raise('failover', failing, upstream);
    else if (to === 'closed') alerts.raise('failover', 'upstream recovered: circuit breaker closed', upstream);
  };
  // Pools: per-server gauges read from the runtime in force at scrape time; state changes logged.
  let current: Runtime | null = null;
  metrics.serverReaders.state = (g) => {
    g.reset();
    for (const u of current?.upstreams.values() ?? [])
      for (const sv of u.pool.servers)
        for (const state of SERVER_STATES) g.set({ upstream: u.name, server: sv.label, state }, +(sv.state === state));
  };
  metrics.serverReaders.inFlight = (g) => {
    g.reset();
    for (const u of current?.upstreams.values() ?? [])
      for (const sv of u.pool.servers) g.set({ upstream: u.name, server: sv.label }, sv.inFlight);
  };
  const onServerState = (pool: ServerPool, sv: UpstreamServer, from: ServerState, to: ServerState) => {
    if (to === 'ejected') metrics.upstreamEjections.inc({ upstream: pool.name, server: sv.label });
    const fields = { upstream: pool.name, server: sv.label, from, to, inService: pool.liveCount };
    if (to === 'up') log.info(fields, 'pool: server back in service');
    else log.warn(fields, `pool: server out of service (${to})`);
  };
  const hist = metrics.upstreamServerResponse;
  return (rt, started) => {
    current = rt;
    for (const u of rt.upstreams.values()) {
      u.pool.onServerState = onServerState;
      // A one-server upstream's latency is the upstream's own (rempart_upstream_response_seconds): no
      // second histogram per request for it.
      for (const sv of u.pool.servers) {
        if (sv.latency !== null || u.pool.servers.length < 2) continue;
        const cell = hist.cell(u.name, sv.label);
        sv.latency = { observe: (seconds) => hist.observe(cell, seconds) };
      }
      if (u.breaker.onChange === null) {
        u.breaker.onChange = onBreakerChange;
        const now = u.breaker.state;
        for (const state of BREAKER_STATES) metrics.upstreamState.set({ upstream: u.name, state }, +(state === now));
      }
      for (const h of u.pool.healthChecks) {
        if (h.onResult === null) {
          h.onResult = (check, result, changed) => {
            metrics.healthChecks.inc({ upstream: check.name, result });
            if (!changed) return;
            const line = check.healthy ? 'health check: server healthy again' : 'health check: server unhealthy';
            log.warn({ upstream: check.name, server: check.server, healthy: check.healthy }, line);
          };
        }
        if (started) h.start();
      }
    }
  };
}
