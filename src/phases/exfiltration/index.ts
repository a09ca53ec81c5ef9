// Phase `exfiltration`: per-identity quotas on routes marked `sensitive` (documents per hour, bytes per
// day). The quota is checked before forwarding (the request that would go past it is refused: 429 with
// Retry-After), documents and bytes are counted when answered (onDone). Past a quota an identity raises
// one alert per quota per cooldown: a log line, rempart_exfiltration_alerts_total, the webhook.
// See docs/exfiltration.md.
import type { Config } from '../../config/schema.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import { decide } from '../../pipeline/guard.ts';
import type { DefenseDeps } from '../../pipeline/env.ts';
import { identitiesOf } from './identity.ts';
import type { ExfiltrationIdentity } from './schema.ts';
import { UsageTable, type QuotaLimits, type Usage } from './usage.ts';

/** A sensitive route's settings, resolved against the global defaults. */
interface Policy extends QuotaLimits {
  readonly route: string;
  readonly identity: ExfiltrationIdentity;
  readonly sessionCookie: string;
  /** Lower-cased, as Node keys request headers. */
  readonly apiKeyHeader: string;
}

function compilePolicies(config: Config): Map<string, Policy> {
  const g = config.defense.exfiltration;
  const out = new Map<string, Policy>();
  for (const r of config.routes) {
    const s = r.sensitive;
    if (s === undefined) continue;
    out.set(r.name, {
      route: r.name,
      documentsPerHour: s.documentsPerHour ?? 0,
      bytesPerDay: s.bytesPerDay ?? 0,
      identity: s.identity,
      sessionCookie: s.sessionCookie ?? g.sessionCookie,
      apiKeyHeader: (s.apiKeyHeader ?? g.apiKeyHeader).toLowerCase(),
    });
  }
  return out;
}

export interface ExfiltrationPhase extends Phase {
  /** The identity table (tests and the docs' memory figures read its size and evictions). */
  readonly table: UsageTable;
}

/** A request on `u` is answered: its reservation is released, and a document (and its bytes) counted. */
function settle(u: Usage, counted: boolean, now: number, bytes: number): void {
  u.pending--;
  if (!counted) return;
  u.documents.add(now, 1);
  if (bytes > 0) u.bytes.add(now, bytes);
}

/**
 * @example phases: [… challenge, createExfiltrationPhase(defense), failover, …]
 */
export function createExfiltrationPhase(deps: DefenseDeps): ExfiltrationPhase {
  const table = new UsageTable(deps.getRuntime().config.defense.exfiltration.maxIdentities);
  deps.metrics.tableSizes.set('exfiltration_identities', () => table.size);
  // The requests let through on a sensitive route, with the usage (or usages: one per value of a
  // repeated session cookie) they reserved a document in.
  const reserved = new WeakMap<RequestContext, Usage | Usage[]>();
  // Scratch for the identities of one request (onRequest is synchronous).
  const identities: string[] = [];
  const usages: Usage[] = [];
  // How many of those are still open: requests on other routes skip the WeakMap look-up while it is 0.
  let open = 0;
  let compiledFor: Config | null = null;
  let policies = new Map<string, Policy>();

  function policyOf(ctx: RequestContext): Policy | undefined {
    const config = deps.getRuntime().config;
    if (config !== compiledFor) {
      policies = compilePolicies(config);
      compiledFor = config;
      table.max = config.defense.exfiltration.maxIdentities;
    }
    return policies.size === 0 || ctx.route === null ? undefined : policies.get(ctx.route.name);
  }

  function alert(
    policy: Policy,
    identity: string,
    quota: 'documentsPerHour' | 'bytesPerDay',
    u: Usage,
    now: number,
    enforced: boolean,
  ): void {
    deps.metrics.exfiltrationAlerts.inc({ route: policy.route });
    deps.alerts.raise(
      'exfiltration',
      enforced
        ? 'exfiltration guard: identity past its quota on a sensitive route, blocked'
        : 'exfiltration guard: identity past its quota on a sensitive route (observe mode: not blocked)',
      {
        route: policy.route,
        identity,
        quota,
        limit: quota === 'documentsPerHour' ? policy.documentsPerHour : policy.bytesPerDay,
        documentsLastHour: Math.round(u.documents.estimate(now)),
        bytesLastDay: Math.round(u.bytes.estimate(now)),
        action: enforced ? 'blocked' : 'observed',
      },
    );
  }

  return {
    name: 'exfiltration',
    table,
    onRequest(ctx) {
      const policy = policyOf(ctx);
      if (policy === undefined) return Verdict.Continue;
      const g = deps.getRuntime().config.defense.exfiltration;
      if (g.mode === 'off') return Verdict.Continue;
      const now = deps.clock.now();
      const n = identitiesOf(
        ctx,
        policy.identity,
        policy.sessionCookie,
        policy.apiKeyHeader,
        deps.getRuntime().config.defense.ipv6PrefixLength,
        identities,
      );
      if (n < 0) {
        // More values than a browser ever holds: counting them all would let one request evict others.
        if (g.mode === 'enforce') {
          ctx.refuse('RMP_ERR_EDGE_AMBIGUOUS_IDENTITY', 400);
          return Verdict.Reply;
        }
        return Verdict.Continue;
      }
      usages.length = 0;
      for (let i = 0; i < n; i++) {
        const identity = identities[i]!;
        const u = table.getOrCreate(`${policy.route}\0${identity}`, now, policy);
        usages.push(u);
        // The documents quota counts answered documents plus those in flight: N parallel requests of a
        // scraper reserve N, so a burst cannot overshoot. Bytes are only known once sent: the response
        // that crosses bytesPerDay is served, the next request refused.
        const docsOver =
          policy.documentsPerHour > 0 && u.documents.estimate(now) + u.pending + 1 > policy.documentsPerHour;
        const bytesOver = policy.bytesPerDay > 0 && u.bytes.estimate(now) >= policy.bytesPerDay;
        if (!docsOver && !bytesOver) continue;
        const enforced = g.mode === 'enforce';
        if (docsOver && now - u.documentsAlertedMs >= g.alertCooldownMs) {
          u.documentsAlertedMs = now;
          alert(policy, identity, 'documentsPerHour', u, now, enforced);
        }
        if (bytesOver && now - u.bytesAlertedMs >= g.alertCooldownMs) {
          u.bytesAlertedMs = now;
          alert(policy, identity, 'bytesPerDay', u, now, enforced);
        }
        let waitMs = 0;
        if (docsOver) waitMs = u.documents.msUntilAtMost(now, policy.documentsPerHour - 1);
        if (bytesOver) waitMs = Math.max(waitMs, u.bytes.msUntilAtMost(now, policy.bytesPerDay - 1));
        const retryAfter = String(Math.max(1, Math.ceil(waitMs / 1000)));
        const rule = docsOver ? `exfiltration:${policy.route}:documents` : `exfiltration:${policy.route}:bytes`;
        if (
          decide(deps, ctx, 'exfiltration', g.mode, 'RMP_ERR_EXFILTRATION', rule, 429, '', {
            'retry-after': retryAfter,
          })
        )
          return Verdict.Reply;
      }
      // A tunnel's bytes flow for as long as it lives: it is cut where it would cross the quota of
      // the identity closest to it.
      if (policy.bytesPerDay > 0 && g.mode === 'enforce') {
        let budget = Infinity;
        for (let i = 0; i < usages.length; i++)
          budget = Math.min(budget, policy.bytesPerDay - usages[i]!.bytes.estimate(now));
        ctx.responseByteBudget = budget;
      }
      for (let i = 0; i < usages.length; i++) usages[i]!.pending++;
      open++;
      reserved.set(ctx, usages.length === 1 ? usages[0]! : usages.slice());
      return Verdict.Continue;
    },
    onDone(ctx) {
      if (open === 0) return;
      const r = reserved.get(ctx);
      if (r === undefined) return;
      reserved.delete(ctx);
      open--;
      const s = ctx.status;
      // A document is a 2xx answer with a body: a HEAD reveals no content, a 304 re-validates a copy the
      // client already holds. Counted even when the client left mid-body (aborting must not be a way out).
      // A WebSocket tunnel (101) is one document, and every byte the origin sent down it counts.
      const counted = ((s >= 200 && s <= 299) || s === 101) && ctx.req.method !== 'HEAD';
      const now = counted ? deps.clock.now() : 0;
      if (Array.isArray(r)) for (const u of r) settle(u, counted, now, ctx.responseBytes);
      else settle(r, counted, now, ctx.responseBytes);
    },
  };
}

export const exfiltrationPhase: PhaseModule<ExfiltrationPhase> = {
  name: 'exfiltration',
  folder: 'exfiltration',
  summary:
    '429 with Retry-After for an identity (session, address, prefix or API key) past its quota on a route ' +
    'marked `sensitive` (documents per hour, bytes per day); counts documents in `done`; raises an alert once ' +
    'per identity and cooldown ([exfiltration.md](exfiltration.md))',
  codes: ['RMP_ERR_EXFILTRATION'],
  create: (env) => createExfiltrationPhase(env),
};
