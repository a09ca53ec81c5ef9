// The per-request record, written once when a request is over (whatever entry it came through):
// the metric cells (requests by route, class, decision and status; request duration; upstream
// response time) and one log line. Refused requests come at attack rate, so their lines are sampled
// per reason, as are the entries' warning lines (upstream errors, pipelining floods).
import type { RequestContext } from './context.ts';
import type { Config } from '../config/schema.ts';
import { monoNow, type Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { CounterCell, HistogramCell } from '../core/hot-metrics.ts';
import { LogSampler } from '../core/log-sampler.ts';

export interface RecorderOptions {
  readonly metrics: Metrics;
  readonly log: Logger;
  /** The sampler's time (tests pass a manual clock). */
  readonly clock: Clock;
  /** The logging settings in force (read per request: a reload changes them). */
  readonly logging: () => Config['logging'];
  /** The combined access-log format: a few more fields per request line (JSON lines keep their fixed set). */
  readonly combined: boolean;
}

export interface Recorder {
  /** Count the finished request and write its line. */
  record(ctx: RequestContext): void;
  /** One upstream response-time sample for the request's upstream, measured up to `nowMs`. */
  observeUpstream(ctx: RequestContext, nowMs: number): void;
  /** Whether a warning line about `reason` may be written now (sampled per reason code). */
  allowLine(reason: string): boolean;
  /** A phase's onDone threw: log it (runDone's error callback). */
  onPhaseError(err: unknown, phase: string): void;
}

// Metric cells per compiled route (a reload compiles new routes, so a changed class gets new cells),
// then per decision and status. Keys come from configuration and status codes: small.
const DECISIONS = ['forwarded', 'answered', 'refused', 'upstream_error', 'aborted', 'cache_hit', 'stale'] as const;
interface RouteCells {
  readonly byOutcome: Map<number, CounterCell>;
  readonly duration: HistogramCell;
}
const noRoute = { name: '-', class: '-' };

export function createRecorder(opts: RecorderOptions): Recorder {
  const { metrics, log, logging, combined } = opts;
  const routeCells = new WeakMap<object, RouteCells>();
  // One response-time cell per upstream name (names come from configuration).
  const upstreamCells = new Map<string, HistogramCell>();
  const sampler = new LogSampler(opts.clock);
  const byProtocol = [metrics.requestsByProtocol.cell('h1'), metrics.requestsByProtocol.cell('h2')] as const;
  const onSuppressed = (reason: string, suppressed: number, windowMs: number) =>
    log.warn({ reason, suppressed, windowMs: Math.round(windowMs) }, 'log lines suppressed (sampled per reason)');

  function cellsOf(route: { readonly name: string; readonly class: string }): RouteCells {
    let cells = routeCells.get(route);
    if (cells === undefined) {
      cells = { byOutcome: new Map(), duration: metrics.requestDuration.cell(route.name, route.class) };
      routeCells.set(route, cells);
    }
    return cells;
  }

  function observeUpstream(ctx: RequestContext, nowMs: number): void {
    const up = ctx.upstream!;
    let cell = upstreamCells.get(up.name);
    if (cell === undefined) upstreamCells.set(up.name, (cell = metrics.upstreamResponse.cell(up.name)));
    metrics.upstreamResponse.observe(cell, (nowMs - ctx.forwardStartMs) / 1000);
  }

  function count(ctx: RequestContext, nowMs: number): number {
    const route = ctx.route ?? noRoute;
    const cells = cellsOf(route);
    const outcome = DECISIONS.indexOf(ctx.decision) * 1000 + ctx.status;
    let counter = cells.byOutcome.get(outcome);
    if (counter === undefined) {
      counter = metrics.requests.cell(route.name, route.class, ctx.decision, String(ctx.status));
      cells.byOutcome.set(outcome, counter);
    }
    counter.value++;
    byProtocol[ctx.h2 ? 1 : 0].value++;
    const durationSec = (nowMs - ctx.startMs) / 1000;
    metrics.requestDuration.observe(cells.duration, durationSec);
    if (ctx.upstream !== null && ctx.forwardStartMs !== 0 && ctx.upstreamStatus !== 0) observeUpstream(ctx, nowMs);
    if (ctx.reason !== '' && ctx.decision === 'refused') metrics.refusals.inc({ reason: ctx.reason });
    return durationSec;
  }

  function writeLine(ctx: RequestContext, durationSec: number): void {
    const route = ctx.route ?? noRoute;
    if (combined) {
      const h = ctx.req.headers;
      log.info({
        msg: 'request',
        method: ctx.req.method,
        path: ctx.path,
        url: ctx.req.url,
        httpVersion: ctx.req.httpVersion,
        client: ctx.clientAddress,
        status: ctx.status,
        bytes: ctx.responseBytes,
        referer: h.referer,
        userAgent: h['user-agent'],
      });
    } else
      log.info({
        msg: 'request',
        method: ctx.req.method,
        path: ctx.path,
        protocol: ctx.h2 ? 'h2' : 'h1',
        client: ctx.clientAddress,
        route: route.name,
        class: route.class,
        decision: ctx.decision,
        reason: ctx.reason || undefined,
        rule: ctx.ruleId || undefined,
        observed: ctx.observed || undefined,
        cache: ctx.cache || undefined,
        upstream: ctx.upstream?.name,
        status: ctx.status,
        durationMs: Math.round(durationSec * 1e6) / 1e3,
        // The client's fingerprints (src/server/ja4.ts, src/server/h2/fingerprint.ts), when known.
        ja4: ctx.ja4 || undefined,
        h2fp: ctx.h2Fingerprint || undefined,
      });
  }

  return {
    record(ctx) {
      const durationSec = count(ctx, monoNow());
      // Refused requests come at attack rate: their lines are sampled per reason (first few per window,
      // then one summary line); forwarded requests are all logged.
      if (!logging().requests) return;
      if (ctx.decision !== 'refused' || sampler.allow(ctx.reason, onSuppressed)) writeLine(ctx, durationSec);
    },
    observeUpstream,
    allowLine: (reason) => sampler.allow(reason, onSuppressed),
    onPhaseError: (err, phase) => log.error({ err, phase }, 'phase onDone failed'),
  };
}
