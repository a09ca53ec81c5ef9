// The life of one request once an entry has made its context, whatever the protocol: run the phases,
// act on the verdict (forward, or send the local reply), answer an internal error, and finish (the
// phases' `done`, then the record). The HTTP/1.1 entry (entry.ts) and the tunnel entry
// (upgrade-entry.ts) feed it; a second protocol's entry feeds the same cycle with its own connection
// callbacks (what a stalled or queued reply means on its connections).
import type { RequestContext } from '../pipeline/context.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Logger } from '../core/log.ts';
import type { Recorder } from '../pipeline/record.ts';
import { RempartError } from '../core/errors.ts';
import { runDone, runPhases, Verdict, type Phase, type PhaseResumer } from '../pipeline/phase.ts';
import { forward, type ForwardHooks } from '../pipeline/forward.ts';
import { sendLocalReply } from '../pipeline/reply.ts';
import { setStatusPage } from '../phases/failover/status-page.ts';
import { feedBreakerError } from '../phases/failover/breaker-feed.ts';
import { PinnedReplies } from './pinned.ts';

export interface CycleOptions {
  readonly phases: readonly Phase[];
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly recorder: Recorder;
  /** Sees every upstream response head (the challenge guard learns origin-granted sessions). */
  readonly onUpstreamHead?: ForwardHooks['onResponseHead'];
  /** Give the request's admission slot back (the origin's part of the exchange is over). */
  readonly releaseSlot: (ctx: RequestContext) => void;
  /** The reply had to wait for its client to read: the entry's slow-read clock for that connection starts. */
  readonly onClientStalled: (ctx: RequestContext) => void;
  /** `bytes` more of a reply queued behind earlier ones on its connection: false once closed for holding too much. */
  readonly onQueuedReply: (ctx: RequestContext, bytes: number) => boolean;
}

export interface RequestCycle {
  /** What the forward handler (and the tunnel) tell the gateway. */
  readonly hooks: ForwardHooks;
  /** Run the phases from the first, then forward or send the local reply. */
  run(ctx: RequestContext): void;
  /** Something threw on the request path: a 500 if nothing was sent yet, else the connection is cut. */
  internalError(ctx: RequestContext, err: unknown): void;
  /**
   * The request is over (the entry has set ctx.finished): `completed` says whether its answer went
   * out whole. Runs every reached phase's onDone, last first, then the record.
   */
  finish(ctx: RequestContext, completed: boolean): void;
}

export function createRequestCycle(opts: CycleOptions): RequestCycle {
  const { phases, getRuntime, recorder } = opts;
  const pinned = new PinnedReplies(opts.metrics);
  const hooks = forwardHooks(opts, pinned);

  function act(ctx: RequestContext, verdict: Verdict): void {
    // A phase after a promise-returning one waits on the resumer: it acts when that verdict comes.
    if (verdict === Verdict.Wait) return;
    const config = getRuntime().config;
    if (verdict === Verdict.Forward) forward(ctx, hooks, config.via, config.limits.bufferBodyBytes);
    else sendLocalReply(ctx);
  }

  function internalError(ctx: RequestContext, err: unknown): void {
    opts.log.error({ err }, 'internal error in request pipeline');
    ctx.refuse('RMP_ERR_INTERNAL', 500);
    if (!ctx.res.headersSent) sendLocalReply(ctx);
    else ctx.res.destroy();
  }

  /** Run the phases from `from`, then act on the verdict (unless one waits: the resumer goes on). */
  function step(ctx: RequestContext, from: number): void {
    try {
      const v = runPhases(phases, ctx, from);
      if (typeof v === 'number') act(ctx, v);
      else
        v.then(
          (r) => act(ctx, r),
          (err) => internalError(ctx, err),
        );
    } catch (err) {
      internalError(ctx, err);
    }
  }

  // A waiting phase (admission) comes back here, with no promise made for the wait.
  const resumer: PhaseResumer = {
    resume(ctx, verdict) {
      if (verdict === Verdict.Continue) return step(ctx, ctx.phaseIndex + 1);
      try {
        act(ctx, verdict);
      } catch (err) {
        internalError(ctx, err);
      }
    },
    fail: internalError,
  };

  return {
    hooks,
    internalError,
    run(ctx) {
      ctx.resumer = resumer;
      step(ctx, 0);
    },
    finish(ctx, completed) {
      if (ctx.pinned) pinned.unpin(ctx);
      if (!completed) {
        ctx.abort();
        ctx.forwardHandler?.abort?.(new RempartError('RMP_ERR_CLIENT_ABORTED'));
      }
      // The upstream's breaker learns the outcome here too (failover's onDone).
      runDone(phases, ctx, recorder.onPhaseError);
      recorder.record(ctx);
    },
  };
}

function forwardHooks(opts: CycleOptions, pinned: PinnedReplies): ForwardHooks {
  const { getRuntime, metrics, log, recorder, releaseSlot } = opts;
  return {
    onResponseHead: opts.onUpstreamHead,
    onUpstreamEnd(ctx) {
      releaseSlot(ctx);
      // The whole reply is read from the origin: it holds no upstream connection any more.
      if (ctx.pinned) pinned.unpin(ctx);
    },
    // The reply waits on the client to read: the origin's part is done, so its slot goes back now (a
    // slow reader must not hold one), and the connection's slow-read clock starts.
    onClientBackpressure(ctx) {
      releaseSlot(ctx);
      opts.onClientStalled(ctx);
      pinned.pin(ctx);
    },
    onQueuedReply: opts.onQueuedReply,
    // The outcome is set (failUpstream, refuse or abort, by pipeline/forward.ts); only the dress is chosen here.
    replyError(ctx, code, status) {
      const page = getRuntime().config.statusPage;
      // Upstream unreachable, nothing sent yet: the operator's status page, not a bare 502/504.
      const unreachable =
        code === 'RMP_ERR_UPSTREAM_CONNECT' ||
        code === 'RMP_ERR_UPSTREAM_TIMEOUT' ||
        code === 'RMP_ERR_RESOURCES_EXHAUSTED';
      if (page.enabled && unreachable) setStatusPage(ctx, page, code, status);
      sendLocalReply(ctx);
    },
    onRetry(ctx, _from, code) {
      metrics.upstreamRetries.inc({ upstream: ctx.upstream?.name ?? '-', reason: code });
    },
    onUpstreamError(ctx, code, err) {
      feedBreakerError(ctx, code, err);
      metrics.upstreamErrors.inc({ upstream: ctx.upstream?.name ?? '-', reason: code });
      if (!recorder.allowLine(code)) return;
      log.warn({ upstream: ctx.upstream?.name, reason: code, err: err.message }, 'upstream error');
    },
  };
}
