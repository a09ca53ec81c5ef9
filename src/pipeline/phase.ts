// The request path: an ordered list of named phases, each returning a verdict, run by one runner.
// A phase either lets the request continue, answers it locally (429, 503, a challenge, a stale copy),
// or sends it to its upstream. `done` always runs afterwards, in reverse order (Envoy's encoder
// order), to release what earlier phases took. Each phase is described by a PhaseModule; the ordered
// list of modules is src/phases/index.ts. See docs/lifecycle.md.
import type { RequestContext } from './context.ts';
import type { ErrorCode } from '../core/errors.ts';
import type { AdminRoute } from './admin-route.ts';
import type { PhaseEnv } from './env.ts';

/** What a phase decided. Plain numbers: no allocation per request. */
export const Verdict = {
  /** Go on to the next phase. */
  Continue: 0,
  /** Answer locally with ctx.reply* (the phase has filled them in, and ctx.reason). */
  Reply: 1,
  /** Stop running phases and forward to ctx.upstream now. */
  Forward: 2,
  /**
   * The phase keeps the request waiting (an admission slot) and will hand its verdict to
   * `ctx.resumer` once, later, from another call stack. Returned only when `ctx.resumer` is set: a
   * runner that sets it resumes the request itself, with no promise, closure or microtask per wait.
   */
  Wait: 3,
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
 * Resumes a request one of whose phases answered Verdict.Wait (the request cycle: one object for all
 * requests). Called once per wait, never on the phase's own call stack.
 */
export interface PhaseResumer {
  /** The waiting phase's verdict: Continue runs the phases after `ctx.phaseIndex`. */
  resume(ctx: RequestContext, verdict: Verdict): void;
  /** The waiting phase failed (a throw while settling): an internal error for this request alone. */
  fail(ctx: RequestContext, err: unknown): void;
}

/**
 * What the composition root knows of a phase: how to build it and what to document. `create` has no
 * side effects (no admin route registered, no timer started): the root mounts `adminRoutes`, and
 * docs/lifecycle.md's phase table is generated from name, folder, summary and codes.
 */
export interface PhaseModule<P extends Phase = Phase> {
  /** The phase's name (equal to the built phase's `name`). */
  readonly name: string;
  /** The folder under src/phases/ that holds it (docs/lifecycle.md's "where" column). */
  readonly folder: string;
  /** What it decides or answers, one line of Markdown for docs/lifecycle.md. */
  readonly summary: string;
  /** The reason codes it can answer (or mark a request) with, for the docs table. */
  readonly codes?: readonly ErrorCode[];
  /** Build the phase. Called once per gateway, in list order. */
  create(env: PhaseEnv): P;
  /** The admin endpoints this phase serves, mounted on the admin API by the composition root. */
  adminRoutes?(phase: P, env: PhaseEnv): readonly AdminRoute[];
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
export function runDone(
  phases: readonly Phase[],
  ctx: RequestContext,
  onError: (err: unknown, phase: string) => void,
): void {
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
