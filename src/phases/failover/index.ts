// Phases `failover` (after `route`) and `unavailable` (after `cache`). `failover` sends a request to
// its route's fallback upstream while the primary is unusable (breaker open, or health check failing),
// and back once the primary recovers; each switch of a route is logged and counted once. With neither
// usable it records that choice (ctx.upstreamChoice, its slot): the cache may still answer from storage
// first, and if it does not, `unavailable` answers with the status page (503), or lets the cache's
// StaleSource stand a stale copy in, instead of waiting on a dead upstream.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import { UpstreamChoice, type RequestContext } from '../../pipeline/context.ts';
import type { CompiledRoute, CompiledUpstream, Runtime } from '../../pipeline/runtime.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { Logger } from '../../core/log.ts';
import type { StaleSource } from '../../pipeline/services.ts';
import { failUnavailable } from './status-page.ts';
import { feedBreaker } from './breaker-feed.ts';

/**
 * Usable: a server in service (src/upstream/pool.ts: a pool never has more than maxEjectedPercent of
 * its servers out, so only a one-server upstream failing its health check, or every server failing it
 * with maxEjectedPercent 100, has none) and the breaker not open (taking the half-open probe if it is
 * due). The breaker is the pool's: it counts failures that reached clients, after a pool's one retry
 * on another server, so one dead server of several never opens it, and the route goes to its
 * `fallback` only when the whole pool fails.
 */
export function isUsable(u: CompiledUpstream): boolean {
  return u.pool.usable && u.breaker.allowRequest();
}

/**
 * @example phases: [identify, edge, route, createFailoverPhase(getRuntime, metrics, log), cache, …]
 */
export function createFailoverPhase(_getRuntime: () => Runtime, metrics: Metrics, log: Logger): Phase {
  // Route name → on its fallback now. Keys come from configuration: bounded.
  const onFallback = new Map<string, boolean>();

  function note(route: CompiledRoute, usingFallback: boolean): void {
    if ((onFallback.get(route.name) ?? false) === usingFallback) return;
    onFallback.set(route.name, usingFallback);
    const from = usingFallback ? route.upstream.name : route.fallback!.name;
    const to = usingFallback ? route.fallback!.name : route.upstream.name;
    metrics.failovers.inc({ route: route.name, from, to });
    if (usingFallback) log.warn({ route: route.name, from, to }, 'failover: route switched to its fallback upstream');
    else log.info({ route: route.name, from, to }, 'failover: route back on its upstream');
  }

  return {
    name: 'failover',
    // The request is over: a forwarded one tells its upstream's breaker how it went.
    onDone: feedBreaker,
    onRequest(ctx: RequestContext) {
      const route = ctx.route!;
      const primary = route.upstream;
      const fallback = route.fallback;
      if (isUsable(primary)) {
        // Back only once the primary is closed: a half-open probe alone is not a recovery.
        if (fallback !== null && primary.breaker.state === 'closed') note(route, false);
        return Verdict.Continue;
      }
      if (fallback !== null && isUsable(fallback)) {
        ctx.upstream = fallback;
        ctx.upstreamChoice = UpstreamChoice.Fallback;
        note(route, true);
        return Verdict.Continue;
      }
      ctx.upstreamChoice = UpstreamChoice.None;
      return Verdict.Continue;
    },
  };
}

/**
 * After `cache`: a request `failover` left on no upstream (UpstreamChoice.None) gets the status page
 * (or the bare 503 JSON body with statusPage.enabled off), or a stale copy in its place when the
 * cache (`stale`) has one within its stale-if-error window.
 */
export function createUnavailablePhase(getRuntime: () => Runtime, stale: StaleSource): Phase {
  return {
    name: 'unavailable',
    onRequest(ctx: RequestContext) {
      if (ctx.upstreamChoice !== UpstreamChoice.None) return Verdict.Continue;
      failUnavailable(ctx, getRuntime().config.statusPage);
      stale.serveStaleIfAny(ctx);
      return Verdict.Reply;
    },
  };
}

export const failoverPhase: PhaseModule = {
  name: 'failover',
  folder: 'failover',
  summary:
    "— (switches the request to the route's `fallback` upstream, or marks it unavailable; a log line and " +
    "`rempart_failover_total` once per switch of a route; its `done` feeds the upstream's circuit breaker)",
  create: (env) => createFailoverPhase(env.getRuntime, env.metrics, env.log),
};

export const unavailablePhase: PhaseModule = {
  name: 'unavailable',
  folder: 'failover',
  summary:
    "a stale copy if the cache has one, else the status page: 503 with Retry-After and the operator's message " +
    '(JSON, or HTML for browsers)',
  codes: ['RMP_ERR_UPSTREAM_UNAVAILABLE'],
  create: (env) => createUnavailablePhase(env.getRuntime, env.stale),
};
