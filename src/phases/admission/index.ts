// Phase `admission`: take a slot on the upstream's concurrency limiter, or wait for one in the
// priority queue, or be shed with 503 + Retry-After. The fast path (a free slot) is synchronous and
// allocates nothing; only a request that really waits gets a promise. `onDone` gives the slot back
// and tells the limiter how the exchange went. See docs/admission.md.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { CounterCell, HistogramCell } from '../../core/hot-metrics.ts';
import { holdClock, releaseClock, systemClock, type Clock } from '../../core/clock.ts';
import { TRAFFIC_CLASSES } from '../../config/schema.ts';
import { refuseShed } from '../../pipeline/shed.ts';
import type { StaleSource } from '../../pipeline/services.ts';
import { Outcome, QueueEntry, classIndex } from '../../upstream/queue.ts';
import type { AdmissionEntry } from '../../upstream/gate.ts';
import { clientKey } from '../../core/client-key.ts';

/** Why a request was shed: the `reason` label of rempart_admission_shed_total. */
export type ShedReason = 'queue-full' | 'evicted' | 'fairness' | 'queue-timeout';
const SHED_REASONS: readonly ShedReason[] = ['queue-full', 'evicted', 'fairness', 'queue-timeout'];

interface ClassCells {
  readonly admitted: CounterCell;
  readonly queued: CounterCell;
  readonly shed: Record<ShedReason, CounterCell>;
  readonly wait: HistogramCell;
}

/**
 * @example
 *   const phases = [identify, edge, route, createAdmissionPhase(getRuntime, metrics, systemClock)];
 */
export interface AdmissionPhase extends Phase {
  /**
   * Give the request's slot back now (if it holds one) and teach the limiter what the exchange said.
   * Called when the upstream exchange ends (the forward handler's completion or error), so the sample
   * is the origin's time, not the client's download, and a slow reader of a small response does not hold an origin slot;
   * `onDone` calls it too for requests that never got that far.
   */
  releaseSlot(ctx: RequestContext): void;
}

/**
 * A request that waited while the attack level rose is judged again at the level now, as it would be
 * had it arrived now: `rejudge` runs the checks the level asks for (the challenge) and says whether it
 * answered the request. Requests queued before the rise would otherwise reach the origin unasked.
 */
export interface LevelRecheck {
  level(): number;
  rejudge(ctx: RequestContext): boolean;
}

export function createAdmissionPhase(
  getRuntime: () => Runtime,
  metrics: Metrics,
  clock: Clock = systemClock,
  serveStale?: (ctx: RequestContext) => boolean,
  recheck?: LevelRecheck,
): AdmissionPhase {
  // Metric cells per upstream name and class: both come from configuration, so the table stays small.
  const cells = new Map<string, (ClassCells | undefined)[]>();
  const waitCells = TRAFFIC_CLASSES.map((c) => metrics.admissionWait.cell(c));
  // A shed request with a stale copy in the cache gets the copy, not the 503 (pipeline/shed.ts).
  const stale: StaleSource | null = serveStale === undefined ? null : { serveStaleIfAny: serveStale };

  function cellsFor(upstream: string, cls: number): ClassCells {
    let row = cells.get(upstream);
    if (row === undefined) cells.set(upstream, (row = []));
    let c = row[cls];
    if (c === undefined) {
      const name = TRAFFIC_CLASSES[cls]!;
      const shed = {} as Record<ShedReason, CounterCell>;
      for (const r of SHED_REASONS) shed[r] = metrics.admissionShed.cell(upstream, name, r);
      c = {
        admitted: metrics.admissionAdmitted.cell(upstream, name),
        queued: metrics.admissionQueued.cell(upstream, name),
        shed,
        wait: waitCells[cls]!,
      };
      row[cls] = c;
    }
    return c;
  }

  // Gauges are read from the live gates when Prometheus scrapes, not kept up to date per request.
  metrics.admissionReaders.limit = (g) => {
    g.reset();
    for (const u of getRuntime().upstreams.values())
      if (u.admission.limiter.mode !== 'off') g.set({ upstream: u.name }, u.admission.limiter.limit);
  };
  metrics.admissionReaders.inFlight = (g) => {
    g.reset();
    for (const u of getRuntime().upstreams.values())
      if (u.admission.limiter.mode !== 'off') g.set({ upstream: u.name }, u.admission.limiter.inFlight);
  };
  metrics.admissionReaders.queueDepth = (g) => {
    const depth = TRAFFIC_CLASSES.map(() => 0);
    for (const u of getRuntime().upstreams.values())
      for (let i = 0; i < depth.length; i++) depth[i]! += u.admission.queue.depth(i);
    TRAFFIC_CLASSES.forEach((c, i) => {
      g.set({ class: c }, depth[i]!);
    });
  };

  /** A waiting request's fate is known: continue to the upstream, or answer 503. One function for all. */
  function settle(entry: AdmissionEntry<RequestContext>): Verdict {
    const ctx = entry.owner;
    ctx.admissionEntry = null;
    if (entry.outcome === Outcome.Cancelled || ctx.finished) return Verdict.Reply; // the client left: nothing to send
    const c = cellsFor(ctx.upstream!.name, entry.cls);
    if (entry.outcome === Outcome.Admitted) {
      // Answered now (a challenge): the slot it was given goes back in onDone, nothing reached the origin.
      if (recheck !== undefined && recheck.level() > entry.stamp && recheck.rejudge(ctx)) return Verdict.Reply;
      c.admitted.value++;
      metrics.admissionWait.observe(c.wait, (clock.now() - entry.enqueuedMs) / 1000);
      return Verdict.Continue;
    }
    if (entry.outcome === Outcome.Timeout) {
      c.shed['queue-timeout'].value++;
      refuseShed(ctx, 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT', stale);
    } else {
      c.shed.evicted.value++;
      refuseShed(ctx, 'RMP_ERR_ADMISSION_SHED', stale);
    }
    return Verdict.Reply;
  }

  /**
   * The gate's settle call for a request whose runner resumes it (Verdict.Wait): the outcome is written
   * now, as the gate decides, and the runner goes on in the next tick, never inside the gate's drain
   * (another request's release, whose upstream connection is not back in its pool yet).
   */
  function resolveWaiting(entry: AdmissionEntry<RequestContext>): void {
    let verdict: Verdict;
    try {
      verdict = settle(entry);
    } catch (err) {
      process.nextTick(failWaiting, entry.owner, err);
      return;
    }
    process.nextTick(resumeWaiting, entry.owner, verdict);
  }

  return {
    name: 'admission',
    onRequest(ctx: RequestContext) {
      // Reached after an earlier phase waited and the client left meanwhile: `done` has already run,
      // so a slot taken now would never be given back.
      if (ctx.finished) return Verdict.Reply;
      const upstream = ctx.upstream;
      if (upstream === null || ctx.route === null) return Verdict.Continue;
      const gate = upstream.admission;
      // A WebSocket tunnel takes its slot like any request and holds it until it closes (gateway.ts):
      // tunnels and requests in flight together stay within the limit. It teaches the limiter nothing.
      if (gate.limiter.mode === 'off') return Verdict.Continue;
      const cls = classIndex(ctx.route.class);
      const c = cellsFor(upstream.name, cls);
      // Fast path: nobody waiting and a slot free. Synchronous, no allocation.
      if (gate.tryAcquire(cls)) {
        ctx.admissionGate = gate;
        ctx.admissionClass = cls;
        c.admitted.value++;
        metrics.admissionWait.observe(c.wait, 0);
        return Verdict.Continue;
      }
      const now = clock.now();
      const config = getRuntime().config;
      const fairness = config.admission.fairness;
      const key = clientKey(
        fairness.key,
        ctx.clientAddress,
        ctx.req.headers.cookie,
        fairness.sessionCookie,
        config.defense.ipv6PrefixLength,
      );
      const entry: AdmissionEntry<RequestContext> = new QueueEntry(
        ctx,
        cls,
        key,
        now,
        gate.queue.deadlineFor(cls, now),
      );
      // Known clients (familiarity: a clearance, a session the origin granted, a JWT) go ahead of
      // unknown ones within their class; between clients of one kind, turns stay fair.
      if (!ctx.known) entry.bias = 1;
      if (recheck !== undefined) entry.stamp = recheck.level();
      const refused = gate.enqueue(entry);
      if (refused !== null) {
        c.shed[refused].value++;
        refuseShed(ctx, 'RMP_ERR_ADMISSION_SHED', stale);
        return Verdict.Reply;
      }
      c.queued.value++;
      ctx.admissionEntry = entry;
      if (ctx.resumer !== null) {
        // The request cycle resumes the request itself: no promise, closure or microtask per wait.
        entry.resolve = resolveWaiting;
        if (gate.limiter.inFlight < gate.limiter.limit) gate.drain();
        return Verdict.Wait;
      }
      // Without a resumer (a runner of its own): one promise per waiting request, settled with the verdict when the gate decides (at saturation
      // most pass-through requests wait a moment here: a promise and a microtask hop fewer each).
      // settle writes only the request's outcome, no I/O; a throw rejects this request alone, never
      // the gate's drain that settled it (another request's release).
      const waiting = new Promise<Verdict>((resolve, reject) => {
        entry.resolve = (e) => {
          try {
            resolve(settle(e));
          } catch (err) {
            reject(err);
          }
        };
      });
      // Slots may be free while others wait (the limit just grew): let the queue order decide.
      if (gate.limiter.inFlight < gate.limiter.limit) gate.drain();
      return waiting;
    },
    onDone(ctx: RequestContext) {
      const entry = ctx.admissionEntry;
      if (entry !== null && entry.outcome === Outcome.Pending) ctx.upstream!.admission.cancel(entry);
      releaseSlot(ctx);
    },
    releaseSlot,
  };
}

function resumeWaiting(ctx: RequestContext, verdict: Verdict): void {
  // The rest of its phases and its dispatch read the clock once (core/clock.ts).
  holdClock();
  try {
    ctx.resumer!.resume(ctx, verdict);
  } finally {
    releaseClock();
  }
}

function failWaiting(ctx: RequestContext, err: unknown): void {
  ctx.resumer!.fail(ctx, err);
}

function releaseSlot(ctx: RequestContext): void {
  const gate = ctx.admissionGate;
  if (gate === null) return;
  ctx.admissionGate = null;
  let sample: 'success' | 'drop' | 'none' = 'none';
  if (ctx.forwardStartMs > 0) {
    // Only a completed exchange measures the origin. A 503 (the origin's "full"), a 504 or a timeout
    // says it is overloaded; another 5xx is an error of that request (a bug, a broken route), not
    // congestion, and its latency says nothing about the origin's speed either.
    const st = ctx.upstreamStatus;
    if (st === 503 || st === 504 || ctx.reason === 'RMP_ERR_UPSTREAM_TIMEOUT') sample = 'drop';
    else if (st >= 500) sample = 'none';
    else if (ctx.decision === 'forwarded' && st > 0) sample = 'success';
  }
  let rtt = 0;
  let stalled = 0;
  if (sample !== 'none') {
    const end = gate.clock.now();
    rtt = end - ctx.forwardStartMs;
    // What of that time was Rempart's own event loop being busy (upstream/stall.ts), not the origin.
    if (sample === 'success' && gate.stalls !== null) stalled = gate.stalls.stalledWithin(ctx.forwardStartMs, end);
  }
  gate.release(ctx.admissionClass, sample, rtt, ctx.route?.rttSlot ?? 0, stalled);
  ctx.admissionClass = -1;
}

export const admissionPhase: PhaseModule<AdmissionPhase> = {
  name: 'admission',
  folder: 'admission',
  summary:
    '503 with Retry-After (JSON, or a small HTML page for browsers); a stale copy instead when the cache has ' + 'one',
  codes: ['RMP_ERR_ADMISSION_SHED', 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT'],
  create: (env) => {
    const stale = env.stale;
    const level = env.level;
    const challenge = env.challenge.challenge;
    return createAdmissionPhase(env.getRuntime, env.metrics, env.clock, (ctx) => stale.serveStaleIfAny(ctx), {
      level: () => level.level,
      // The challenge guard (a named service, not the phase's module) at the level in force now.
      rejudge: (ctx) => challenge.onRequest(ctx) === Verdict.Reply,
    });
  },
};
