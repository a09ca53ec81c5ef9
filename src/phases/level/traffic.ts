// What the `level` phase measures, per request and per one-second tick. Per request: counters only
// (total, per route, from never-seen prefixes, shed) and a countdown that picks 1 in N requests for
// the feature sketches. Per tick: rates against calm baselines, the never-seen share, admission
// saturation, and how far the last seconds' mix drifted from calm's. Baselines, calm sketches and
// the familiar prefixes learn only from ticks the monitor judged calm (learn()), so attack traffic
// never becomes normal.
//
//   request ──▶ observe(): prefix and network hash → the network's count this interval → within its part?
//                │           total++, route[i]++, familiar? → novel++ / pending hash  (else excess++)
//                ├─ client hash → pace count-min (decayed) → the client's recent count → pace bucket++
//                └─ 1 in N ──▶ pending sketches (prefix, path shape, user agent, header order, method,
//                              JA4, HTTP/2 fingerprint)
//   tick    ──▶ measure(): rates, shares, saturation, pace; pending → current (half-life 1 s)
//               learn() only when calm: EWMAs, pending → baseline, pending hashes → familiar prefixes
//               learnPrefixes() when the clients behave like calm's although the level is raised
//               (a crowd): pending hashes → familiar prefixes only
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import type { Config } from '../../config/schema.ts';
import { SpaceSaving, divergence, unseenShare, type HeavyHitter, type SpaceSavingState } from './space-saving.ts';
import { FEATURES, FeatureIndex, featureValue, type FeatureName } from './features.ts';
import { FamiliarPrefixes, hashPair, hashPairFrom, hashPrefix, type FamiliarState } from './familiar.ts';
import { networkKey } from '../../core/client-key.ts';

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
  /**
   * Share of the interval's requests left out of the rates and the never-seen share: what networks (IPv4
   * /24s, IPv6 /48s) sent beyond one network's part of a surge (see SOLO_NETWORKS). High when a few
   * networks make the traffic.
   */
  readonly soloExcess: number;
  /** Total variation distance from calm's mix, per feature (0 while too few samples or warming up). */
  readonly shift: Readonly<Record<FeatureName, number>>;
  /**
   * Share of the last seconds' requests on path shapes and methods calm rarely asked for (under a
   * tenth of their share now): new paths, not a crowd's re-weighting of calm's (0 as `shift`).
   */
  readonly unseen: Readonly<{ pathShape: number; method: number }>;
  /**
   * Per-client pace: share of the last seconds' requests from clients (an IPv4 address, an IPv6 /64)
   * sending faster than calm's fastest (at least `paceCount` requests in their last ~6 s, twice the
   * count only 2 % of calm's requests reach), and calm's share over that bar (0 while too few samples).
   */
  readonly pace: number;
  readonly paceBaseline: number;
  readonly paceCount: number;
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
  /** Calm's histogram of per-client pace buckets (absent in files written before it existed). */
  readonly pace?: readonly number[];
}

/** Decay of the current window per tick: half-life one second, so the window is the last ~2–3 s. */
const CURRENT_DECAY = 0.5;
/** Pending never-seen prefix hashes per tick (learned when the tick is calm); beyond, the rest wait for another calm tick. */
const PENDING_HASHES = 4096;
/** The baseline sketches count as warm with this many sampled requests. */
const MIN_BASELINE_SAMPLES = 200;
/** The current window's mix is compared only with this many sampled requests in it (sampling noise). */
const MIN_WINDOW_SAMPLES = 50;

// Per-client pace. Every request adds 1 to its client's cells of a count-min sketch (two rows,
// conservative update) whose cells decay with a half-life of PACE_HALF_LIFE seconds, and reads the
// client's count before it: ~6 × its requests a second when steady, its page's burst when it just
// arrived. That count's log2 bucket goes into a histogram per tick, compared with calm's like the
// mixes are: a crowd of people browsing at a person's pace keeps calm's histogram whatever its size
// or its addresses, a flood from fewer, faster clients moves it up. Bounded (2 × 64 Ki float cells,
// 512 KiB) whatever the number of clients; a collision only adds to a count, it never hides a client.
const PACE_ROW_BITS = 16;
const PACE_ROW = 1 << PACE_ROW_BITS;
const PACE_MASK = PACE_ROW - 1;
const PACE_HALF_LIFE = 4;
/** Bucket b holds counts in [2^(b-1), 2^b) (bucket 0: under 1); the last holds everything above. */
export const PACE_BUCKETS = 14;
/** Calm's fastest: the bucket from which only this share of calm's requests come. */
const PACE_TAIL = 0.02;

// One network's part. The rates (`surge`) and the never-seen share count a network's requests of the
// interval only up to 1/SOLO_NETWORKS of the surge threshold's rate (surgeFactor × max(baseline,
// minRatePerSecond) a second; the calm rate itself with the defaults): it takes at least SOLO_NETWORKS
// networks to make a surge. A network is an IPv4 /24 or an IPv6 /48, as the rate limits' prefix levels
// count them. An attacker pays for networks, not addresses (the 254 addresses of a rented /24, the 65,536
// /64s of a tunnel broker's free /48 cost no more than the first), so a network counts for what one client
// counted for before (4 addresses of one /24, or 4 /64s of one /48, made a surge then), and a client (an
// IPv4 address, an IPv6 /64), inside its network, for no more. One address or one network, however fast,
// cannot raise pressure and with it put every visitor under `under_attack` (a small site at 20 req/s was
// under attack within 2 s of one address sending 60 req/s); it is the rate limits' and bans' to answer
// (their /24 and /48 levels). Real crowds and botnets span many networks (a household each, a few /24s per
// carrier NAT; the drills' botnets 15 to 500 /24s); a crowd behind one network (a campus, one carrier NAT)
// counts for a quarter of a surge, and admission queues it either way: a crowd is never to be challenged.
// Its requests still count in the pace histogram and the samples (a fast client is strange, which alone
// is only `elevated`, where nobody is challenged) and in shedShare's denominator. Counted per interval in
// a count-min sketch of its own (two rows of 64 Ki cells, cleared each tick), not from the pace count:
// that one decays over seconds, and would let a new client's first seconds count whole.
const SOLO_NETWORKS = 4;

export class TrafficObserver {
  // Per tick counters, fed per request.
  #requests = 0;
  /** Requests beyond one network's part (see SOLO_NETWORKS): not in #requests, the routes or #novel. */
  #excess = 0;
  /** One network's part of an interval (see SOLO_NETWORKS), per route too, and each network's requests of this interval. */
  #soloPart: number;
  #routeParts = new Float64Array(0);
  readonly #intervalCells = new Uint32Array(PACE_ROW * 2);
  #novel = 0;
  /** Shed requests, each network's counted up to its part of the shed threshold (#shedPart). */
  #shed = 0;
  /**
   * One network's part of the shed threshold in an interval: shedShare × max(baseline, minRatePerSecond)
   * / SOLO_NETWORKS requests (a fraction of one on most sites), and each network's shed requests of this
   * interval (cleared at the tick when any was counted).
   */
  #shedPart: number;
  readonly #shedCells = new Uint32Array(PACE_ROW * 2);
  #shedCellsUsed = false;
  #routeCounts = new Float64Array(0);
  readonly #hash = new Uint32Array(2);
  readonly #netHash = new Uint32Array(2);
  readonly #pendingHashes = new Uint32Array(PENDING_HASHES * 2);
  #pendingCount = 0;
  readonly #clientHash = new Uint32Array(2);
  readonly #paceCells = new Float32Array(PACE_ROW * 2);
  /** This tick's requests per pace bucket, the last seconds' (decayed like `current`), calm's. */
  readonly #pacePending = new Float64Array(PACE_BUCKETS);
  readonly #paceCurrent = new Float64Array(PACE_BUCKETS);
  readonly #paceBaseline = new Float64Array(PACE_BUCKETS);
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
    this.#soloPart = soloPart(level, 0);
    this.#shedPart = shedPart(level, 0);
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

  /**
   * Per request: counters, and 1 in N into the pending sketches. No allocation unless sampled; the wall
   * clock (`wallMs`) is read only for a sampled request.
   */
  observe(ctx: RequestContext, wallMs: () => number): void {
    const h = this.#hash;
    const net = this.#netHash;
    hashPrefix(ctx.clientPrefix, h, net);
    const count = this.#paceOf(ctx, h);
    const bucket = 32 - Math.clz32(count);
    this.#pacePending[bucket < PACE_BUCKETS ? bucket : PACE_BUCKETS - 1]!++;
    // The network's requests of this interval before this one (see SOLO_NETWORKS).
    const n = countIn(this.#intervalCells, net[0]! & PACE_MASK, PACE_ROW + (net[1]! & PACE_MASK));
    // A route's own surge counts the network up to that route's part (against all its requests: stricter).
    const route = ctx.route;
    if (route !== null && route.index < this.#routeCounts.length && n < this.#routeParts[route.index]!)
      this.#routeCounts[route.index]!++;
    if (n >= this.#soloPart) this.#excess++;
    else {
      this.#requests++;
      if (!this.familiar.has(h[0]!, h[1]!)) {
        this.#novel++;
        if (this.#pendingCount < PENDING_HASHES) {
          this.#pendingHashes[this.#pendingCount * 2] = h[0]!;
          this.#pendingHashes[this.#pendingCount * 2 + 1] = h[1]!;
          this.#pendingCount++;
        }
      }
    }
    if (--this.#countdown > 0) return;
    // Jittered so a client cannot time its requests between samples.
    this.#countdown = this.sampleEvery === 1 ? 1 : 1 + Math.floor(Math.random() * (2 * this.sampleEvery - 1));
    const nowWallMs = wallMs();
    for (let f = 0; f < FEATURES.length; f++) this.pending[f]!.add(featureValue(ctx, f), 1, nowWallMs);
  }

  /**
   * The client's recent count before this request, and this request counted. The client is the
   * address for IPv4 and the /64 for IPv6 (where one host holds 2^64 addresses).
   */
  #paceOf(ctx: RequestContext, prefixHash: Uint32Array): number {
    const h = this.#clientHash;
    h[0] = prefixHash[0]!;
    h[1] = prefixHash[1]!;
    clientHash(ctx, h);
    const cells = this.#paceCells;
    const a = h[0]! & PACE_MASK;
    const b = PACE_ROW + (h[1]! & PACE_MASK);
    const ca = cells[a]!;
    const cb = cells[b]!;
    const count = ca < cb ? ca : cb;
    // Conservative update: raise only the cells below the new estimate (fewer over-counts).
    const next = count + 1;
    if (ca < next) cells[a] = next;
    if (cb < next) cells[b] = next;
    return count;
  }

  /**
   * Per request, once done: was it shed for saturation? A network's sheds count only up to its part
   * (#shedPart): one address or network refused by its own share of the admission queue, or by a waiting
   * room, is not the origin's saturation (the 2 % threshold is one request at 50 req/s).
   */
  onDone(ctx: RequestContext): void {
    const r = ctx.reason;
    if (r !== 'RMP_ERR_ADMISSION_SHED' && r !== 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT' && r !== 'RMP_ERR_WAITING_ROOM')
      return;
    const net = this.#netHash;
    hashPrefix(ctx.clientPrefix, this.#hash, net);
    const before = countIn(this.#shedCells, net[0]! & PACE_MASK, PACE_ROW + (net[1]! & PACE_MASK));
    const part = this.#shedPart;
    if (before < part) this.#shed += Math.min(1, part - before);
    this.#shedCellsUsed = true;
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
    // Until the next tick sets them from the baselines: the part of a route at minRatePerSecond (the least).
    this.#routeParts = new Float64Array(names.length).fill(soloPart(runtime.config.defense.level, 0));
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
    const excess = this.#excess;
    // For the next interval: one network's part of the surge threshold at this baseline, for an interval as
    // long as this one (a loop stalled by load ticks late; the part of a 1 s interval would undercount a
    // crowd's fast clients then), up to 5 s.
    const stretch = seconds < 1 ? 1 : seconds > 5 ? 5 : seconds;
    this.#soloPart = soloPart(level, baseRate) * stretch;
    this.#shedPart = shedPart(level, baseRate) * stretch;
    let surge = rate / Math.max(baseRate, floor);
    let surgeRoute = '';
    const counts = this.#routeCounts;
    for (let i = 0; i < counts.length && i < this.#routeBaselines.length; i++) {
      const base = this.#rateWeight > 0 ? this.#routeBaselines[i]! / this.#rateWeight : 0;
      this.#routeParts[i] = soloPart(level, base) * stretch;
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
      // Each network's queued requests (its client keys' together) up to its part of the threshold (see
      // SOLO_NETWORKS): one address or network holding its share of the queue (maxSharePercent, 100 places by
      // default, per key) is not the origin's saturation.
      const limit = Math.max(1, gate.limiter.limit);
      const share = gate.queue.sizeCappedPerKey((level.queueShare * limit) / SOLO_NETWORKS, networkKey) / limit;
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

    const unseenOf = (f: number) =>
      compare && this.baseline[f]!.total >= MIN_BASELINE_SAMPLES
        ? round3(unseenShare(this.current[f]!, this.baseline[f]!))
        : 0;
    const unseen = { pathShape: unseenOf(FeatureIndex.pathShape), method: unseenOf(FeatureIndex.method) };
    const pace = this.#measurePace(seconds, warm && rate >= floor);

    // Sample less often when traffic is heavy, so the tick's merge cost and the hot path stay flat.
    // Every request's: one network's excess is left out of the rates, not out of the hot path's work.
    this.sampleEvery = Math.max(sig.sampleEvery, Math.ceil((requests + excess) / seconds / sig.maxSamplesPerSecond));
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
      // Of every request, a network's excess included: one network's shed requests are not most of a share.
      shedShare: requests + excess === 0 ? 0 : round3(Math.min(1, this.#shed / (requests + excess))),
      soloExcess: requests + excess === 0 ? 0 : round3(excess / (requests + excess)),
      shift,
      unseen,
      pace: round3(pace.share),
      paceBaseline: round3(pace.baseline),
      paceCount: pace.count,
      samples: round3(samples),
      baselineSamples: round3(baselineSamples),
      warm,
      sampleEvery: this.sampleEvery,
    };
  }

  /**
   * Decay the clients' counts and the pace window, fold this tick's histogram in, and measure the
   * share of the window above calm's fastest (0 with too few requests on either side).
   */
  #measurePace(seconds: number, compare: boolean): { share: number; baseline: number; count: number } {
    const cells = this.#paceCells;
    const decay = 2 ** (-seconds / PACE_HALF_LIFE);
    for (let i = 0; i < cells.length; i++) if (cells[i]! !== 0) cells[i] = cells[i]! < 0.05 ? 0 : cells[i]! * decay;
    const cur = this.#paceCurrent;
    const base = this.#paceBaseline;
    let curTotal = 0;
    let baseTotal = 0;
    for (let b = 0; b < PACE_BUCKETS; b++) {
      cur[b] = cur[b]! * CURRENT_DECAY + this.#pacePending[b]!;
      curTotal += cur[b]!;
      baseTotal += base[b]!;
    }
    if (!compare || curTotal < MIN_WINDOW_SAMPLES || baseTotal < MIN_BASELINE_SAMPLES)
      return { share: 0, baseline: 0, count: 0 };
    // Calm's fastest bucket: the first from which at most PACE_TAIL of calm's requests come; the bar
    // is the bucket above it (twice the count), so a crowd of the same people never reaches it.
    let tail = 0;
    let bar = PACE_BUCKETS;
    for (let b = PACE_BUCKETS - 1; b >= 0; b--) {
      tail += base[b]!;
      if (tail > PACE_TAIL * baseTotal) {
        bar = b + 2;
        break;
      }
    }
    if (bar >= PACE_BUCKETS) return { share: 0, baseline: 0, count: 2 ** (PACE_BUCKETS - 2) };
    let curOver = 0;
    let baseOver = 0;
    for (let b = bar; b < PACE_BUCKETS; b++) {
      curOver += cur[b]!;
      baseOver += base[b]!;
    }
    return { share: curOver / curTotal, baseline: baseOver / baseTotal, count: 2 ** (bar - 1) };
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
    for (let b = 0; b < PACE_BUCKETS; b++)
      this.#paceBaseline[b] = this.#paceBaseline[b]! * decay + this.#pacePending[b]!;
    this.learnPrefixes(nowMs);
    this.#learnedTicks++;
  }

  /**
   * Make this tick's never-seen prefixes familiar, and nothing else (no baseline moves): the monitor
   * calls it for a raised level whose clients have behaved like calm's for several seconds (a crowd),
   * so a wave of new visitors does not lock its own prefixes out. At most PENDING_HASHES a tick.
   */
  learnPrefixes(nowMs: number): void {
    const hashes = this.#pendingHashes;
    for (let i = 0; i < this.#pendingCount; i++) this.familiar.add(hashes[i * 2]!, hashes[i * 2 + 1]!, nowMs);
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
      pace: Array.from(this.#paceBaseline),
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
    if (Array.isArray(state.pace) && state.pace.length === PACE_BUCKETS)
      for (let b = 0; b < PACE_BUCKETS; b++) this.#paceBaseline[b] = num(state.pace[b]);
    if (familiar !== undefined) this.familiar.restore(familiar.state, familiar.nowMs, familiar.wallMs);
  }

  /** Start the next interval (after measure, and learn when calm). */
  reset(): void {
    this.#requests = 0;
    this.#excess = 0;
    this.#novel = 0;
    this.#shed = 0;
    this.#routeCounts.fill(0);
    this.#pendingCount = 0;
    this.#pacePending.fill(0);
    this.#intervalCells.fill(0);
    if (this.#shedCellsUsed) {
      this.#shedCells.fill(0);
      this.#shedCellsUsed = false;
    }
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

/**
 * A count-min sketch of one interval's counts (two rows, cells `a` and `b`, cleared at each tick): the
 * network's count before this one, and this one counted (conservative update: only the cells at the
 * minimum are raised, fewer over-counts).
 */
function countIn(cells: Uint32Array, a: number, b: number): number {
  const ca = cells[a]!;
  const cb = cells[b]!;
  const before = ca < cb ? ca : cb;
  if (ca === before) cells[a] = before + 1;
  if (cb === before) cells[b] = before + 1;
  return before;
}

/** A network's requests in an interval (about a second) beyond which they are beyond its part of a surge. */
function soloPart(level: LevelConfig, baseRate: number): number {
  return (level.surgeFactor * Math.max(baseRate, level.minRatePerSecond)) / SOLO_NETWORKS;
}

/** A network's shed requests in an interval beyond which they do not count (a fraction: each counts whole up to it). */
function shedPart(level: LevelConfig, baseRate: number): number {
  return (level.shedShare * Math.max(baseRate, level.minRatePerSecond)) / SOLO_NETWORKS;
}

/**
 * The client's hash, from its prefix's in `h`: the address for IPv4 (`a.b.c.d` with prefix `a.b.c`: only
 * `.d` is left to hash, and the same for its IPv4-mapped IPv6 spelling `::ffff:a.b.c.d`, which a
 * dual-stack listener sees where an IPv4 one sees `a.b.c.d`: one client, not two), the /64 for IPv6 (the
 * prefix's). Any other spelling is hashed whole.
 */
function clientHash(ctx: RequestContext, h: Uint32Array): void {
  const prefix = ctx.clientPrefix;
  const address = ctx.clientAddress;
  if (prefix.indexOf(':') !== -1) return;
  const at = address.length > prefix.length && address.charCodeAt(0) === 58 && address.startsWith('::ffff:') ? 7 : 0;
  const end = at + prefix.length;
  if (address.length > end && address.charCodeAt(end) === 46 && address.startsWith(prefix, at))
    hashPairFrom(address, end, h);
  else hashPair(address, h);
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export { FeatureIndex };
