// What the `level` phase measures, per request and per one-second tick. Per request: counters only
// (total, per route, from never-seen prefixes, shed) and a countdown that picks 1 in N requests for
// the feature sketches. Per tick: rates against calm baselines, the never-seen share, admission
// saturation, and how far the last seconds' mix drifted from calm's. Baselines, calm sketches and
// the familiar prefixes learn only from ticks the monitor judged calm (learn()), so attack traffic
// never becomes normal.
//
//   request ──▶ observe(): total++, route[i]++, prefix hash → familiar? → novel++ / pending hash
//                └─ 1 in N ──▶ pending sketches (prefix, path shape, user agent, header order, method,
//                              JA4, HTTP/2 fingerprint)
//   tick    ──▶ measure(): rates, shares, saturation; pending → current (half-life 1 s)
//               learn() only when calm: EWMAs, pending → baseline, pending hashes → familiar prefixes
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import type { Config } from '../../config/schema.ts';
import { SpaceSaving, divergence, type HeavyHitter, type SpaceSavingState } from './space-saving.ts';
import { FEATURES, FeatureIndex, featureValue, type FeatureName } from './features.ts';
import { FamiliarPrefixes, hashPair, type FamiliarState } from './familiar.ts';

export type LevelConfig = Config['defense']['level'];
export type SignaturesConfig = Config['defense']['signatures'];

/** What one tick measured: the inputs of the state machine, shown by `GET /api/level`. */
export interface LevelFeatures {
  readonly atWallMs: number;
  readonly seconds: number;
  readonly requests: number;
  readonly ratePerSecond: number;
  readonly baselineRatePerSecond: number;
  /** max(global, worst route) rate ÷ max(baseline, minRatePerSecond). */
  readonly surge: number;
  /** The route behind `surge` ('' when it is the global rate). */
  readonly surgeRoute: string;
  /** Share of requests from prefixes not seen while calm, and its calm average. */
  readonly novelty: number;
  readonly noveltyBaseline: number;
  /** Worst upstream: requests queued ÷ concurrency limit. */
  readonly queueShare: number;
  readonly queueUpstream: string;
  /** Share of requests shed by admission or sent to the waiting room. */
  readonly shedShare: number;
  /** Total variation distance from calm's mix, per feature (0 while too few samples or warming up). */
  readonly shift: Readonly<Record<FeatureName, number>>;
  /** Sampled requests in the current window (decayed) and in the calm baseline. */
  readonly samples: number;
  readonly baselineSamples: number;
  /** Whether enough calm has been learned for the mix signals to count. */
  readonly warm: boolean;
  readonly sampleEvery: number;
}

/** What the state file keeps of the learned state (src/app/state-file.ts), so a restart needs no new warm-up. */
export interface LearnedState {
  readonly baselineRate: number;
  readonly rateWeight: number;
  readonly noveltyBaseline: number;
  readonly learnedTicks: number;
  /** Per-route rate baselines, by route name. */
  readonly routes: ReadonlyArray<readonly [name: string, baseline: number]>;
  /** The calm sketches, one per feature (FEATURES order), and their k. */
  readonly k: number;
  readonly baseline: readonly SpaceSavingState[];
}

/** Decay of the current window per tick: half-life one second, so the window is the last ~2–3 s. */
const CURRENT_DECAY = 0.5;
/** Pending never-seen prefix hashes per tick (learned when the tick is calm); beyond, the rest wait for another calm tick. */
const PENDING_HASHES = 4096;
/** The baseline sketches count as warm with this many sampled requests. */
const MIN_BASELINE_SAMPLES = 200;
/** The current window's mix is compared only with this many sampled requests in it (sampling noise). */
const MIN_WINDOW_SAMPLES = 50;

export class TrafficObserver {
  // Per tick counters, fed per request.
  #requests = 0;
  #novel = 0;
  #shed = 0;
  #routeCounts = new Float64Array(0);
  readonly #hash = new Uint32Array(2);
  readonly #pendingHashes = new Uint32Array(PENDING_HASHES * 2);
  #pendingCount = 0;
  #countdown = 1;
  /** Current 1-in-N sampling interval. */
  sampleEvery = 1;

  // Learned state.
  #baselineRate = 0;
  #routeNames: string[] = [];
  #routeBaselines = new Float64Array(0);
  #noveltyBaseline = 0;
  #learnedTicks = 0;
  /** Bias correction of the rate EWMAs while they are young (Adam-style): 1 − (1 − α)^n. */
  #rateWeight = 0;
  #lastTickMs: number;
  #lastRuntime: Runtime | null = null;
  familiar: FamiliarPrefixes;

  // Sketches: this tick's samples, the last seconds' (decayed), and calm's.
  pending: SpaceSaving[];
  current: SpaceSaving[];
  baseline: SpaceSaving[];
  #k: number;

  constructor(level: LevelConfig, signatures: SignaturesConfig, nowMs: number) {
    this.#lastTickMs = nowMs;
    this.familiar = new FamiliarPrefixes(
      level.familiarPrefixes.capacity,
      level.familiarPrefixes.retentionHours * 3_600_000,
      nowMs,
    );
    this.#k = signatures.k;
    this.pending = FEATURES.map(() => new SpaceSaving(this.#k));
    this.current = FEATURES.map(() => new SpaceSaving(this.#k));
    this.baseline = FEATURES.map(() => new SpaceSaving(this.#k));
    this.sampleEvery = signatures.sampleEvery;
    this.#countdown = 1;
  }

  /** Whether the calm baseline has been learned long enough for the mix signals to count. */
  warm(level: LevelConfig): boolean {
    return this.#learnedTicks >= level.warmupSeconds;
  }

  /** Per request: counters, and 1 in N into the pending sketches. No allocation unless sampled. */
  observe(ctx: RequestContext, nowWallMs: number): void {
    this.#requests++;
    const route = ctx.route;
    if (route !== null && route.index < this.#routeCounts.length) this.#routeCounts[route.index]!++;
    const h = this.#hash;
    hashPair(ctx.clientPrefix, h);
    if (!this.familiar.has(h[0]!, h[1]!)) {
      this.#novel++;
      if (this.#pendingCount < PENDING_HASHES) {
        this.#pendingHashes[this.#pendingCount * 2] = h[0]!;
        this.#pendingHashes[this.#pendingCount * 2 + 1] = h[1]!;
        this.#pendingCount++;
      }
    }
    if (--this.#countdown > 0) return;
    // Jittered so a client cannot time its requests between samples.
    this.#countdown = this.sampleEvery === 1 ? 1 : 1 + Math.floor(Math.random() * (2 * this.sampleEvery - 1));
    for (let f = 0; f < FEATURES.length; f++) this.pending[f]!.add(featureValue(ctx, f), 1, nowWallMs);
  }

  /** Per request, once done: was it shed for saturation? */
  onDone(ctx: RequestContext): void {
    const r = ctx.reason;
    if (r === 'RMP_ERR_ADMISSION_SHED' || r === 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT' || r === 'RMP_ERR_WAITING_ROOM')
      this.#shed++;
  }

  /** Keep per-route baselines by route name across reloads. */
  syncRoutes(runtime: Runtime): void {
    if (runtime === this.#lastRuntime) return;
    this.#lastRuntime = runtime;
    const names = runtime.routes.map((r) => r.name);
    const baselines = new Float64Array(names.length);
    names.forEach((n, i) => {
      const was = this.#routeNames.indexOf(n);
      baselines[i] = was === -1 ? 0 : this.#routeBaselines[was]!;
    });
    this.#routeNames = names;
    this.#routeBaselines = baselines;
    this.#routeCounts = new Float64Array(names.length);
  }

  /** The tick: measure what the last interval held. Null when less than 250 ms passed (nothing to judge). */
  measure(nowMs: number, nowWallMs: number, runtime: Runtime): LevelFeatures | null {
    const seconds = (nowMs - this.#lastTickMs) / 1000;
    if (seconds < 0.25) return null;
    this.#lastTickMs = nowMs;
    const level = runtime.config.defense.level;
    const sig = runtime.config.defense.signatures;
    if (sig.k !== this.#k) {
      this.#k = sig.k;
      this.pending = FEATURES.map(() => new SpaceSaving(this.#k));
      this.current = FEATURES.map(() => new SpaceSaving(this.#k));
      this.baseline = FEATURES.map(() => new SpaceSaving(this.#k));
    }
    const floor = level.minRatePerSecond;
    const requests = this.#requests;
    const rate = requests / seconds;
    const baseRate = this.#rateWeight > 0 ? this.#baselineRate / this.#rateWeight : 0;
    let surge = rate / Math.max(baseRate, floor);
    let surgeRoute = '';
    const counts = this.#routeCounts;
    for (let i = 0; i < counts.length && i < this.#routeBaselines.length; i++) {
      const base = this.#rateWeight > 0 ? this.#routeBaselines[i]! / this.#rateWeight : 0;
      const s = counts[i]! / seconds / Math.max(base, floor);
      if (s > surge) {
        surge = s;
        surgeRoute = this.#routeNames[i]!;
      }
    }

    let queueShare = 0;
    let queueUpstream = '';
    for (const u of runtime.upstreams.values()) {
      const gate = u.admission;
      if (gate.limiter.mode === 'off') continue;
      const share = gate.queue.size / Math.max(1, gate.limiter.limit);
      if (share > queueShare) {
        queueShare = share;
        queueUpstream = u.name;
      }
    }

    for (let f = 0; f < FEATURES.length; f++) {
      this.current[f]!.decay(CURRENT_DECAY);
      this.current[f]!.mergeFrom(this.pending[f]!);
    }
    const warm = this.warm(level);
    const samples = this.current[0]!.total;
    const baselineSamples = this.baseline[0]!.total;
    const compare = warm && samples >= MIN_WINDOW_SAMPLES && baselineSamples >= MIN_BASELINE_SAMPLES && rate >= floor;
    const shift = {} as Record<FeatureName, number>;
    // Per feature too: a feature added since the state file was written has a young baseline of its own.
    for (let f = 0; f < FEATURES.length; f++)
      shift[FEATURES[f]!] =
        compare && this.baseline[f]!.total >= MIN_BASELINE_SAMPLES
          ? round3(divergence(this.current[f]!, this.baseline[f]!))
          : 0;

    // Sample less often when traffic is heavy, so the tick's merge cost and the hot path stay flat.
    this.sampleEvery = Math.max(sig.sampleEvery, Math.ceil(rate / sig.maxSamplesPerSecond));
    this.syncRoutes(runtime);

    return {
      atWallMs: nowWallMs,
      seconds: round3(seconds),
      requests,
      ratePerSecond: round3(rate),
      baselineRatePerSecond: round3(baseRate),
      surge: round3(surge),
      surgeRoute,
      novelty: requests === 0 ? 0 : round3(this.#novel / requests),
      noveltyBaseline: round3(this.#noveltyBaseline),
      queueShare: round3(queueShare),
      queueUpstream,
      shedShare: requests === 0 ? 0 : round3(Math.min(1, this.#shed / requests)),
      shift,
      samples: round3(samples),
      baselineSamples: round3(baselineSamples),
      warm,
      sampleEvery: this.sampleEvery,
    };
  }

  /**
   * The monitor judged the tick calm: fold it into the baselines. `seconds` is the tick's length;
   * the EWMAs use α = 1 − 2^(−seconds / halfLife).
   */
  learn(features: LevelFeatures, level: LevelConfig, nowMs: number): void {
    const alpha = 1 - 2 ** (-features.seconds / level.baselineHalfLifeSeconds);
    this.#baselineRate = this.#baselineRate * (1 - alpha) + features.ratePerSecond * alpha;
    this.#rateWeight = this.#rateWeight * (1 - alpha) + alpha;
    const counts = this.#routeCounts;
    for (let i = 0; i < this.#routeBaselines.length && i < counts.length; i++)
      this.#routeBaselines[i] = this.#routeBaselines[i]! * (1 - alpha) + (counts[i]! / features.seconds) * alpha;
    // The never-seen share's calm average follows faster (half-life 15 s): while the familiar set
    // fills after a start it falls quickly, and it must not lag far behind (warmupSeconds covers it).
    if (features.requests > 0) {
      const a = 1 - 2 ** (-features.seconds / 15);
      this.#noveltyBaseline =
        this.#learnedTicks === 0 ? features.novelty : this.#noveltyBaseline * (1 - a) + features.novelty * a;
    }
    const decay = 2 ** (-features.seconds / level.baselineHalfLifeSeconds);
    for (let f = 0; f < FEATURES.length; f++) {
      this.baseline[f]!.decay(decay);
      this.baseline[f]!.mergeFrom(this.pending[f]!);
    }
    const hashes = this.#pendingHashes;
    for (let i = 0; i < this.#pendingCount; i++) this.familiar.add(hashes[i * 2]!, hashes[i * 2 + 1]!, nowMs);
    this.#learnedTicks++;
  }

  /** The learned baselines (the familiar prefixes: familiar.export()). Allocates: for the state file, not per request. */
  exportLearned(): LearnedState {
    return {
      baselineRate: this.#baselineRate,
      rateWeight: this.#rateWeight,
      noveltyBaseline: this.#noveltyBaseline,
      learnedTicks: this.#learnedTicks,
      routes: this.#routeNames.map((n, i) => [n, this.#routeBaselines[i]!] as const),
      k: this.#k,
      baseline: this.baseline.map((b) => b.export()),
    };
  }

  /**
   * Put back baselines the state file kept (start-up): the rates (routes matched by name), the
   * never-seen share, how long calm was learned (so a warm gateway stays warm) and the calm sketches
   * (dropped if signatures.k changed). The familiar prefixes go back through familiar.restore().
   */
  restoreLearned(state: LearnedState, familiar?: { state: FamiliarState; nowMs: number; wallMs: number }): void {
    const num = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : 0);
    this.#baselineRate = num(state.baselineRate);
    this.#rateWeight = Math.min(1, num(state.rateWeight));
    this.#noveltyBaseline = Math.min(1, num(state.noveltyBaseline));
    this.#learnedTicks = Math.floor(num(state.learnedTicks));
    const byName = new Map(Array.isArray(state.routes) ? state.routes : []);
    this.#routeNames.forEach((n, i) => {
      this.#routeBaselines[i] = num(byName.get(n));
    });
    // A file written before a feature was added holds fewer sketches: FEATURES only grows at its end,
    // so the ones it has are restored and the new ones learn from calm.
    if (state.k === this.#k && Array.isArray(state.baseline) && state.baseline.length <= this.baseline.length)
      for (let f = 0; f < state.baseline.length; f++) if (!this.baseline[f]!.restore(state.baseline[f]!)) break;
    if (familiar !== undefined) this.familiar.restore(familiar.state, familiar.nowMs, familiar.wallMs);
  }

  /** Start the next interval (after measure, and learn when calm). */
  reset(): void {
    this.#requests = 0;
    this.#novel = 0;
    this.#shed = 0;
    this.#routeCounts.fill(0);
    this.#pendingCount = 0;
    for (const s of this.pending) s.clear();
  }

  /** Top values per feature in the current window and their calm share, for the admin API. */
  top(
    limit: number,
  ): Record<FeatureName, Array<{ value: string; count: number; share: number; baselineShare: number }>> {
    const out = {} as Record<
      FeatureName,
      Array<{ value: string; count: number; share: number; baselineShare: number }>
    >;
    FEATURES.forEach((name, f) => {
      const cur = this.current[f]!;
      const base = this.baseline[f]!;
      out[name] = cur.top(limit).map((h: HeavyHitter) => ({
        value: h.value,
        count: round3(h.count - h.error),
        share: cur.total > 0 ? round3((h.count - h.error) / cur.total) : 0,
        baselineShare: base.total > 0 ? round3(base.upper(h.value) / base.total) : 0,
      }));
    });
    return out;
  }
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export { FeatureIndex };
