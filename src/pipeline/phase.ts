// The request path: an ordered list of named phases, each returning a verdict, run by one runner.
// A phase either lets the request continue, answers it locally (429, 503, a challenge, a stale copy),
// or sends it to its upstream. `done` always runs afterwards, in reverse order (Envoy's encoder
// order), to release what earlier phases took. See docs/lifecycle.md.
import type { RequestContext } from './context.ts';

/** What a phase decided. Plain numbers: no allocation per request. */
export const Verdict = {
  /** Go on to the next phase. */
  Continue: 0,
  /** Answer locally with ctx.reply* (the phase has filled them in, and ctx.reason). */
  Reply: 1,
  /** Stop running phases and forward to ctx.upstream now. */
  Forward: 2,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

export interface Phase {
  /** Short name, used in docs/lifecycle.md and logs. */
  readonly name: string;
  /** Decide. Return a promise only when the phase really waits (a queue, a store look-up). */
  onRequest(ctx: RequestContext): Verdict | Promise<Verdict>;
  /** Runs once per request after the response is finished or the client is gone, whatever happened. */
  onDone?(ctx: RequestContext): void;
}

/**
 * Run phases from index `from`. Stays synchronous while every phase is; awaits only when a phase
 * returns a promise (fastify's hook runner does the same). Falling off the end means Forward.
 */
export function runPhases(phases: readonly Phase[], ctx: RequestContext, from = 0): Verdict | Promise<Verdict> {
  for (let i = from; i < phases.length; i++) {
    ctx.phaseIndex = i;
    const v = phases[i]!.onRequest(ctx);
    if (typeof v !== 'number') return v.then((r) => (r === Verdict.Continue ? runPhases(phases, ctx, i + 1) : r));
    if (v !== Verdict.Continue) return v;
  }
  return Verdict.Forward;
}

/** Run every reached phase's onDone, last first. Never throws. */
export function runDone(phases: readonly Phase[], ctx: RequestContext, onError: (err: unknown, phase: string) => void): void {
  for (let i = Math.min(ctx.phaseIndex, phases.length - 1); i >= 0; i--) {
    const p = phases[i]!;
    if (p.onDone === undefined) continue;
    try {
      p.onDone(ctx);
    } catch (err) {
      onError(err, p.name);
    }
  }
}
