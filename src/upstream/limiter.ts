// Per-upstream concurrency limit: how many requests Rempart lets an upstream work on at once.
// `static` is a fixed number; `adaptive` follows the origin's latency (Netflix concurrency-limits'
// Gradient2, the idea behind Envoy's adaptive concurrency filter) so the limit settles near the knee
// of the origin's latency curve instead of pushing it into its own queue, or past it into 503s.
//
// The settings and the learned estimate are per server; the limit is that times the servers in
// service (`scale`, set by the upstream's pool): a pool of four gets four times the slots, and one
// ejected server takes its share with it. One limiter per upstream, learning from every server's
// samples, rather than one per server: the balancer (least_request) keeps the servers' loads even, so
// they see one latency curve, and one queue in front of one limit keeps the class order exact.
import type { Clock } from '../core/clock.ts';

export type LimiterMode = 'adaptive' | 'static' | 'off';

export interface LimiterSettings {
  readonly mode: LimiterMode;
  readonly initialLimit: number;
  readonly minLimit: number;
  readonly maxLimit: number;
  /** The limit in `static` mode. */
  readonly staticLimit?: number;
}

/** The short window closes after this long AND at least SHORT_WINDOW_SAMPLES samples (Gradient2: 1 s, 10). */
export const SHORT_WINDOW_MS = 250;
export const SHORT_WINDOW_SAMPLES = 10;
/** The baseline is an exponential average over this many short windows (Gradient2: 600), after a plain-average warm-up. */
export const LONG_WINDOW = 600;
const LONG_WARMUP = 10;
/** Weight of a new estimate against the current one (Gradient2's smoothing: 0.2). */
const SMOOTHING = 0.2;
/** A drop (5xx or timeout from the upstream) multiplies the limit by this, at most once per round trip
 *  (the baseline RTT, at least DROP_MIN_INTERVAL_MS): like TCP, one decrease per RTT, so a burst of
 *  errors from one overloaded moment is one signal, while sustained errors bring the limit down fast. */
export const DROP_BACKOFF = 0.9;
export const DROP_MIN_INTERVAL_MS = 25;
/**
 * A baseline learned while the origin is already saturated (a restart in the middle of a flood) is the
 * saturated latency, and the limit would then settle at the origin's whole capacity, its own queue
 * included. So, like Envoy's adaptive concurrency filter, when the limit is in use and the last probe is
 * older than PROBE_INTERVAL_MS, the limiter pins itself to minLimit until PROBE_SAMPLES requests that
 * started during the probe have completed (or PROBE_MAX_MS passed), takes their median as the no-load
 * RTT, makes it the baseline, and goes back to the limit it had.
 */
export const PROBE_INTERVAL_MS = 60_000;
export const PROBE_SAMPLES = 10;
export const PROBE_MAX_MS = 1_000;

/**
 * Routes of one upstream can cost very different times (a static file in 1 ms, a vault page in 20, a
 * login in 100): one RTT average would read a change in the mix as a change in load (a crowd loading
 * static files first teaches a 5 ms baseline, and every vault page after it looks like 4× congestion).
 * So baselines are kept per route (`slot`, see routeSlot) and the window's latency is their inflation:
 * the samples' time over what the same requests take at their routes' baselines.
 */
const slots = new Map<string, number>();

/** A small integer per route name, stable across reloads (names come from configuration: bounded). */
export function routeSlot(name: string): number {
  let s = slots.get(name);
  if (s === undefined) slots.set(name, (s = slots.size));
  return s;
}

/**
 * Gradient2, per short window:
 *
 *   inflation = Σ rtt / Σ baselineRtt[route of each sample]   // 1 at the baselines, > 1 as latency rises
 *   gradient = clamp(1 / inflation, 0.5, 1)                   // 1 while latency holds, < 1 as it rises
 *   target   = limit × gradient + √limit                      // √limit: room for a small queue, and growth
 *   limit    = clamp(limit × (1 − 0.2) + target × 0.2, min, max)
 *
 * At rest the limit grows by about √limit × 0.2 per window; it stops where latency is ~1/√limit above
 * the baseline. The baseline is a long average, so a slow drift of the origin's latency is followed
 * rather than fought; when the short RTT falls far under it (the origin recovered) it decays faster.
 * Only successful responses are samples: an error's latency says nothing about the origin's speed.
 */
export class ConcurrencyLimiter {
  readonly #clock: Clock;
  #settings: LimiterSettings;
  /** The current limit, an integer ≥ 1: the per-server limit times `scale`. Read by the admission phase and the limit gauge. */
  limit: number;
  /** Servers in service (at least 1): what the per-server limit is multiplied by. */
  #scale = 1;
  /** Requests holding a slot now. */
  inFlight: number;
  #estimate: number;
  /** Sample-weighted average of the routes' baselines (the gauge, and the drop interval). */
  #baselineRtt: number;
  /** Per route slot: its baseline RTT, the windows it learned from, and the current window's sum and count. */
  #base = new Float64Array(8);
  #baseWindows = new Uint32Array(8);
  #slotSum = new Float64Array(8);
  #slotSamples = new Uint32Array(8);
  #windowStartMs: number;
  #windowSamples: number;
  #windowMaxInFlight: number;
  #lastDropMs: number;
  /** clock.now() when the running probe started, or -1. */
  #probeStartMs: number;
  #lastProbeMs: number;
  #probeSavedEstimate: number;
  readonly #probeRtts = new Float64Array(PROBE_SAMPLES);
  readonly #probeSlots = new Uint32Array(PROBE_SAMPLES);
  #probeSamples: number;

  constructor(settings: LimiterSettings, clock: Clock) {
    this.#clock = clock;
    this.#settings = settings;
    this.inFlight = 0;
    this.#estimate = 0;
    this.limit = 0;
    this.#baselineRtt = 0;
    this.#windowStartMs = clock.now();
    this.#windowSamples = 0;
    this.#windowMaxInFlight = 0;
    this.#lastDropMs = -Infinity;
    this.#probeStartMs = -1;
    this.#lastProbeMs = -Infinity;
    this.#probeSavedEstimate = 0;
    this.#probeSamples = 0;
    this.#reset();
  }

  /** Whether the limiter is pinned to minLimit to measure the no-load RTT. */
  get probing(): boolean {
    return this.#probeStartMs >= 0;
  }

  get scale(): number {
    return this.#scale;
  }

  /** The upstream's servers in service changed: the limit follows (no learned state is lost). */
  setScale(servers: number): void {
    const n = Math.max(1, servers | 0);
    if (n === this.#scale) return;
    this.#scale = n;
    if (this.#probeStartMs >= 0) this.limit = Math.max(1, this.#settings.minLimit) * n;
    else this.limit = Math.max(1, Math.floor(this.#estimate)) * n;
  }

  get mode(): LimiterMode {
    return this.#settings.mode;
  }

  /** The long-window RTT in ms, averaged over the routes by their traffic (0 before the first window closes). */
  get baselineRttMs(): number {
    return this.#baselineRtt;
  }

  /** Apply new settings (reload). The same settings keep the learned state; others restart it. In-flight counts are kept. */
  reconfigure(settings: LimiterSettings): void {
    const a = this.#settings;
    if (
      a.mode === settings.mode &&
      a.initialLimit === settings.initialLimit &&
      a.minLimit === settings.minLimit &&
      a.maxLimit === settings.maxLimit &&
      a.staticLimit === settings.staticLimit
    )
      return;
    this.#settings = settings;
    this.#reset();
  }

  #reset(): void {
    const s = this.#settings;
    this.#estimate =
      s.mode === 'static' ? (s.staticLimit ?? s.initialLimit) : clamp(s.initialLimit, s.minLimit, s.maxLimit);
    this.limit = Math.max(1, Math.floor(this.#estimate)) * this.#scale;
    this.#baselineRtt = 0;
    this.#base.fill(0);
    this.#baseWindows.fill(0);
    this.#slotSum.fill(0);
    this.#slotSamples.fill(0);
    this.#windowStartMs = this.#clock.now();
    this.#windowSamples = 0;
    this.#windowMaxInFlight = 0;
    this.#probeStartMs = -1;
    this.#lastProbeMs = -Infinity;
    this.#probeSamples = 0;
  }

  /** Take a slot if one is free. `off` always has one. */
  tryAcquire(): boolean {
    if (this.#settings.mode !== 'off' && this.inFlight >= this.limit) {
      // A probe whose requests never complete must not pin the limit for ever.
      if (this.#probeStartMs >= 0 && this.#clock.now() - this.#probeStartMs >= PROBE_MAX_MS)
        this.#endProbe(this.#clock.now());
      if (this.inFlight >= this.limit) return false;
    }
    this.inFlight++;
    if (this.inFlight > this.#windowMaxInFlight) this.#windowMaxInFlight = this.inFlight;
    return true;
  }

  /** Give a slot back. */
  release(): void {
    if (this.inFlight > 0) this.inFlight--;
  }

  /** Samples dropped because Rempart's own stalls made up most of them (stall.ts). */
  stalledSamples = 0;
  /** Samples mostly stall yet within the route's baseline (kept as they are): onSuccess. */
  withinBaselineSamples = 0;

  #baseOf(slot: number): number {
    return slot < this.#base.length ? this.#base[slot]! : 0;
  }

  /**
   * A successful exchange of the route with this slot (routeSlot) took `rttMs`, whose last `stalledMs`
   * Rempart's own event loop was busy without a pause (stall.ts). The stall is subtracted: a response that
   * waited in the socket while the loop was busy measured Rempart, not the origin. A sample that is
   * mostly stall teaches nothing (how much of the stall came after the response arrived is unknown;
   * the subtraction is a lower bound of the origin's time, good only while the stall is the smaller part).
   */
  onSuccess(rttMs: number, slot = 0, stalledMs = 0): void {
    if (this.#settings.mode !== 'adaptive') return;
    if (stalledMs > 0 && stalledMs * 2 > rttMs && this.#probeStartMs < 0 && rttMs <= this.#baseOf(slot)) {
      // Mostly stall, yet the whole exchange took no longer than the route's baseline: the origin's
      // time, at most that, shows no congestion whatever the stall was. Kept as it is.
      this.withinBaselineSamples++;
      stalledMs = 0;
    }
    if (stalledMs > 0) {
      if (stalledMs * 2 > rttMs) {
        this.stalledSamples++;
        // Mostly Rempart's own stall: it teaches nothing, either way. A no-load probe measures nothing
        // while Rempart's loop is saturated (its samples are all stall) and would only pin the limit to
        // minLimit, queueing and then shedding what an idle origin could take: end it, keeping the
        // estimate (a saturated gateway shed 13-23 of ~100,000 pass-through requests in front of an
        // instant origin that way, bench/ab-cpu.sh). Not counted at the baseline either: under a flood
        // the probe over-attributes a busy loop's stretch to the read (stall.ts), and growing on such
        // samples hid a congested origin until its own 503s (a review measured 66 → 200 at 10 s latency).
        if (this.#probeStartMs >= 0) this.#abortProbe(this.#clock.now());
        return;
      }
      rttMs -= stalledMs;
    }
    if (this.#probeStartMs >= 0) {
      const now = this.#clock.now();
      // Only requests that started during the probe saw the origin at low concurrency.
      if (now - rttMs >= this.#probeStartMs) {
        this.#probeSlots[this.#probeSamples] = slot;
        this.#probeRtts[this.#probeSamples++] = rttMs;
      }
      if (this.#probeSamples >= PROBE_SAMPLES || now - this.#probeStartMs >= PROBE_MAX_MS) this.#endProbe(now);
      return;
    }
    if (slot >= this.#base.length) this.#grow(slot);
    this.#slotSum[slot]! += rttMs;
    this.#slotSamples[slot]!++;
    this.#windowSamples++;
    const now = this.#clock.now();
    if (now - this.#windowStartMs >= SHORT_WINDOW_MS && this.#windowSamples >= SHORT_WINDOW_SAMPLES)
      this.#closeWindow(now);
  }

  /**
   * The upstream refused (503), timed out or answered 504: back off multiplicatively, once per window
   * of requests, as TCP does once per loss window. `rttMs` is how long the refused request had been
   * out: a refusal of a request sent before the last cut is the same overload the cut answered and is
   * ignored; one sent after it says the cut was not enough. So an origin that answers 503 at once when
   * full (a few ms) brings the limit down to its capacity within a few of its fast 503s, instead of one
   * cut per baseline RTT while every client in the meantime gets a 503 (a 20-slot start on a 5-slot
   * origin handed a third of a closed-loop test's requests the origin's 503), and a burst of timeouts
   * after a stall is still one cut. Without a known duration (`rttMs` ≤ 0): at most one cut per baseline
   * RTT (at least DROP_MIN_INTERVAL_MS).
   */
  onDrop(rttMs = 0): void {
    if (this.#settings.mode !== 'adaptive') return;
    const now = this.#clock.now();
    if (rttMs > 0) {
      if (now - rttMs < this.#lastDropMs) return;
    } else if (now - this.#lastDropMs < Math.max(DROP_MIN_INTERVAL_MS, this.#baselineRtt)) return;
    this.#lastDropMs = now;
    if (this.#probeStartMs >= 0)
      this.#probeSavedEstimate = Math.max(this.#settings.minLimit, this.#probeSavedEstimate * DROP_BACKOFF);
    else this.#setEstimate(this.#estimate * DROP_BACKOFF);
  }

  #startProbe(now: number): void {
    this.#probeStartMs = now;
    this.#probeSamples = 0;
    this.#probeSavedEstimate = this.#estimate;
    this.limit = Math.max(1, this.#settings.minLimit) * this.#scale;
  }

  #grow(slot: number): void {
    const n = Math.max(slot + 1, this.#base.length * 2);
    const grow = <A extends Float64Array | Uint32Array>(a: A, make: (n: number) => A): A => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.#base = grow(this.#base, (k) => new Float64Array(k));
    this.#baseWindows = grow(this.#baseWindows, (k) => new Uint32Array(k));
    this.#slotSum = grow(this.#slotSum, (k) => new Float64Array(k));
    this.#slotSamples = grow(this.#slotSamples, (k) => new Uint32Array(k));
  }

  /**
   * The probe's samples are the no-load RTT: each route seen in it gets their mean as its baseline;
   * routes not seen lose the queueing delay the probe found in the seen ones: the median of (old
   * baseline − probe sample). Subtracted, not scaled: an origin's queue adds the same milliseconds to
   * every request, whatever its route's cost. Scaling by the seen routes' ratio was the cause of a
   * limit stuck at half the origin's capacity: with `static` first in the class order, a probe at
   * minLimit saw only 1 ms static files whose baseline (2.4 ms) had been learned with 1.4 ms of
   * queueing, and divided every other route's baseline by 2.4: a 21 ms vault page got a 9 ms baseline,
   * then read as 2.3× congestion at any load, and the origin stayed 50 % idle under overload.
   */
  #endProbe(now: number): void {
    const n = this.#probeSamples;
    if (n > 0) {
      const base = this.#base;
      const deltas: number[] = [];
      const sums = new Map<number, [number, number]>();
      for (let i = 0; i < n; i++) {
        const slot = this.#probeSlots[i]!;
        const rtt = this.#probeRtts[i]!;
        if (slot >= base.length) this.#grow(slot);
        if (this.#base[slot]! > 0) deltas.push(this.#base[slot]! - rtt);
        const acc = sums.get(slot) ?? [0, 0];
        acc[0] += rtt;
        acc[1]++;
        sums.set(slot, acc);
      }
      deltas.sort((a, b) => a - b);
      const queueing = deltas.length > 0 ? deltas[deltas.length >> 1]! : 0;
      for (let slot = 0; slot < this.#base.length; slot++) {
        const seen = sums.get(slot);
        const old = this.#base[slot]!;
        if (seen !== undefined) this.#base[slot] = seen[0] / seen[1];
        // At most three quarters of a baseline is taken as queueing: a route cannot have cost nothing.
        else if (old > 0) this.#base[slot] = Math.max(old - queueing, old * 0.25);
        else continue;
        this.#baseWindows[slot] = LONG_WARMUP; // from here on, the long exponential average
      }
      const sorted = this.#probeRtts.subarray(0, n).sort();
      this.#baselineRtt = sorted[n >> 1]!;
    }
    this.#probeStartMs = -1;
    this.#lastProbeMs = now;
    this.#windowStartMs = now;
    this.#slotSum.fill(0);
    this.#slotSamples.fill(0);
    this.#windowSamples = 0;
    this.#windowMaxInFlight = this.inFlight;
    this.#setEstimate(this.#probeSavedEstimate);
  }

  /** A probe that cannot measure (Rempart's own loop saturated): back to the estimate, baselines untouched. */
  #abortProbe(now: number): void {
    this.#probeSamples = 0; // its samples so far are not the no-load RTT either: #endProbe learns nothing
    this.#endProbe(now);
  }

  #closeWindow(now: number): void {
    const maxInFlight = this.#windowMaxInFlight;
    this.#windowStartMs = now;
    this.#windowSamples = 0;
    this.#windowMaxInFlight = this.inFlight;

    // Each route's window against its own baseline, then the baselines learn. The inflation is a ratio
    // of sums (time taken ÷ time the same requests take at rest), not a mean of per-sample ratios: an
    // origin's queue adds the same milliseconds to every request, which is 6× on a 1 ms static file and
    // 1.25× on a 20 ms page. A mean of ratios let a few fast requests read a small origin queue as heavy
    // congestion, and the limit then sank below capacity whenever the class order let fast routes through
    // during the overload (the 55 % utilisation of an earlier drill); the ratio of sums weighs each
    // request by its cost, so the limit settles where the origin's queueing is ~1/√limit of its work.
    const base = this.#base;
    let inflationSum = 0; // Σ rtt over routes past their warm-up
    let inflationBase = 0; // Σ baseline of the same samples
    let weighted = 0;
    let samples = 0;
    for (let slot = 0; slot < base.length; slot++) {
      const k = this.#slotSamples[slot]!;
      if (k === 0) continue;
      const sum = this.#slotSum[slot]!;
      const mean = sum / k;
      this.#slotSum[slot] = 0;
      this.#slotSamples[slot] = 0;
      const learned = this.#baseWindows[slot]!;
      if (learned < LONG_WARMUP) {
        // Warming up: a plain average, not yet a yardstick.
        this.#baseWindows[slot] = learned + 1;
        base[slot]! += (mean - base[slot]!) / (learned + 1);
      } else {
        inflationSum += sum;
        inflationBase += base[slot]! * k;
        base[slot]! += (mean - base[slot]!) * (2 / (LONG_WINDOW + 1));
        // The origin got much faster than the baseline remembers: forget the slow past sooner.
        if (base[slot]! / mean > 2) base[slot]! *= 0.95;
      }
      weighted += base[slot]! * k;
      samples += k;
    }
    if (samples > 0) this.#baselineRtt = weighted / samples;
    // Under half the limit in use: the latency says nothing about a higher limit (Gradient2 does the same).
    if (maxInFlight * 2 < this.#estimate * this.#scale) return;
    if (now - this.#lastProbeMs >= PROBE_INTERVAL_MS) {
      this.#startProbe(now);
      return;
    }
    if (inflationBase === 0 || inflationSum === 0) return;

    const gradient = clamp(inflationBase / inflationSum, 0.5, 1);
    const target = this.#estimate * gradient + Math.sqrt(this.#estimate);
    this.#setEstimate(this.#estimate * (1 - SMOOTHING) + target * SMOOTHING);
  }

  #setEstimate(value: number): void {
    const s = this.#settings;
    this.#estimate = clamp(value, s.minLimit, s.maxLimit);
    this.limit = Math.max(1, Math.floor(this.#estimate)) * this.#scale;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
