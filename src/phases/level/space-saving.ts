// Space-Saving heavy hitters (Metwally, Agrawal, El Abbadi 2005) with k counters, so memory stays
// bounded whatever values attackers send: a value not tracked takes the place of the smallest
// counter and inherits its count as its possible over-count (`error`). `count - error` is a
// guaranteed lower bound of a value's weight, which is what shares and divergences are built on (an
// over-estimate would make a stream of one-off values look like a shift). Counts are weights, not
// integers: `decay(f)` turns a sketch into an exponentially weighted window, `mergeFrom` folds one
// second's sketch into the longer windows.
//
//   slot:      0        1        2      …   k-1
//   values  [ "curl" | "/api" | "Go-…" | … | ""  ]   index: Map value → slot
//   counts  [  812.5 |  90.0  |  41.0  | … | 0   ]   Float64Array
//   errors  [    0   |  12.0  |  40.0  | … | 0   ]   counted before the value took the slot
//   firstMs [  …wall ms when the value took its slot… ]

import { ownCopy } from '../../core/own-copy.ts';

export interface HeavyHitter {
  readonly value: string;
  /** Weight counted for the value (an over-estimate by at most `error`). */
  readonly count: number;
  readonly error: number;
  /** Wall-clock ms when the value took its counter. */
  readonly firstSeenMs: number;
}

/** A sketch as the state file keeps it (src/app/state-file.ts): its tracked slots, in slot order. */
export interface SpaceSavingState {
  readonly values: readonly string[];
  readonly counts: readonly number[];
  readonly errors: readonly number[];
  readonly firstMs: readonly number[];
  readonly total: number;
}

export class SpaceSaving {
  readonly k: number;
  readonly #index = new Map<string, number>();
  readonly #values: string[];
  readonly #counts: Float64Array;
  readonly #errors: Float64Array;
  readonly #firstMs: Float64Array;
  #size = 0;
  /** Sum of every weight added (decayed with the counters). */
  total = 0;

  constructor(k: number) {
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
    this.k = k;
    this.#values = new Array<string>(k).fill('');
    this.#counts = new Float64Array(k);
    this.#errors = new Float64Array(k);
    this.#firstMs = new Float64Array(k);
  }

  get size(): number {
    return this.#size;
  }

  /** Count `weight` for `value`; `error` is an over-count the weight may already carry (merges). */
  add(value: string, weight = 1, nowWallMs = 0, error = 0): void {
    this.total += weight;
    const at = this.#index.get(value);
    if (at !== undefined) {
      this.#counts[at]! += weight;
      this.#errors[at]! += error;
      return;
    }
    let slot: number;
    let inherited = 0;
    if (this.#size < this.k) slot = this.#size++;
    else {
      // O(k) scan for the smallest counter: sketches are fed sampled requests, k is small (64).
      slot = 0;
      const counts = this.#counts;
      for (let i = 1; i < this.k; i++) if (counts[i]! < counts[slot]!) slot = i;
      inherited = counts[slot]!;
      this.#index.delete(this.#values[slot]!);
    }
    // Its own copy: a user agent cut to 200 characters would otherwise keep its whole header alive.
    value = ownCopy(value);
    this.#index.set(value, slot);
    this.#values[slot] = value;
    this.#counts[slot] = inherited + weight;
    this.#errors[slot] = inherited + error;
    this.#firstMs[slot] = nowWallMs;
  }

  has(value: string): boolean {
    return this.#index.has(value);
  }

  /** Upper bound of a value's weight: its counter, or the smallest counter when it is not tracked and the sketch is full. */
  upper(value: string): number {
    const at = this.#index.get(value);
    if (at !== undefined) return this.#counts[at]!;
    if (this.#size < this.k) return 0;
    let min = Infinity;
    for (let i = 0; i < this.k; i++) if (this.#counts[i]! < min) min = this.#counts[i]!;
    return min;
  }

  /** Lower bound of a value's weight (0 when not tracked). */
  guaranteed(value: string): number {
    const at = this.#index.get(value);
    return at === undefined ? 0 : this.#counts[at]! - this.#errors[at]!;
  }

  /** When the value took its counter (0 when not tracked). */
  firstSeenMs(value: string): number {
    const at = this.#index.get(value);
    return at === undefined ? 0 : this.#firstMs[at]!;
  }

  /** Multiply every weight by `factor` (0 < factor ≤ 1): an exponentially weighted window. */
  decay(factor: number): void {
    for (let i = 0; i < this.#size; i++) {
      this.#counts[i]! *= factor;
      this.#errors[i]! *= factor;
    }
    this.total *= factor;
  }

  /** Fold another sketch in (each of its values with its count and error). */
  mergeFrom(other: SpaceSaving): void {
    const total = this.total + other.total;
    for (let i = 0; i < other.#size; i++)
      this.add(other.#values[i]!, other.#counts[i]!, other.#firstMs[i]!, other.#errors[i]!);
    this.total = total; // add() counted the merged weights; the other's untracked remainder counts too
  }

  /** Its tracked slots (the level's calm baselines, for the state file). */
  export(): SpaceSavingState {
    const n = this.#size;
    return {
      values: this.#values.slice(0, n),
      counts: Array.from(this.#counts.subarray(0, n)),
      errors: Array.from(this.#errors.subarray(0, n)),
      firstMs: Array.from(this.#firstMs.subarray(0, n)),
      total: this.total,
    };
  }

  /** Replace its content with a saved one; false (and left empty) when it does not fit in k slots or is malformed. */
  restore(state: SpaceSavingState): boolean {
    this.clear();
    const n = state.values.length;
    const shaped = state.counts.length === n && state.errors.length === n && state.firstMs.length === n;
    if (n > this.k || !shaped || !(state.total >= 0)) return false;
    for (let i = 0; i < n; i++) {
      const v = state.values[i];
      if (typeof v !== 'string' || this.#index.has(v)) {
        this.clear();
        return false;
      }
      this.#index.set(v, i);
      this.#values[i] = v;
      this.#counts[i] = Number(state.counts[i]);
      this.#errors[i] = Number(state.errors[i]);
      this.#firstMs[i] = Number(state.firstMs[i]);
    }
    this.#size = n;
    this.total = Number(state.total);
    return true;
  }

  clear(): void {
    this.#index.clear();
    this.#values.fill('');
    this.#counts.fill(0);
    this.#errors.fill(0);
    this.#size = 0;
    this.total = 0;
  }

  /** Tracked values, heaviest (by guaranteed weight) first. Allocates: for ticks and the admin API, not per request. */
  top(limit = this.k): HeavyHitter[] {
    const out: HeavyHitter[] = [];
    for (let i = 0; i < this.#size; i++)
      out.push({
        value: this.#values[i]!,
        count: this.#counts[i]!,
        error: this.#errors[i]!,
        firstSeenMs: this.#firstMs[i]!,
      });
    out.sort((a, b) => b.count - b.error - (a.count - a.error));
    return out.length > limit ? out.slice(0, limit) : out;
  }
}

/**
 * Total variation distance between two sketched distributions, over their heavy values only: a
 * value counts when its guaranteed share reaches `heavyShare` in either sketch; everything else
 * (the long tail, where a window of a few hundred samples is pure noise) falls in one shared
 * "other" bucket. 0 identical, 1 disjoint. Shares come from guaranteed weights (count − error).
 */
export function divergence(current: SpaceSaving, baseline: SpaceSaving, heavyShare = 0.02): number {
  if (current.total <= 0 || baseline.total <= 0) return 0;
  let diff = 0;
  let sumP = 0;
  let sumQ = 0;
  for (const h of current.top()) {
    const p = (h.count - h.error) / current.total;
    const q = baseline.guaranteed(h.value) / baseline.total;
    if (p < heavyShare && q < heavyShare) continue;
    diff += Math.abs(p - q);
    sumP += p;
    sumQ += q;
  }
  for (const h of baseline.top()) {
    const q = (h.count - h.error) / baseline.total;
    if (q < heavyShare) continue;
    const p = current.guaranteed(h.value) / current.total;
    if (p >= heavyShare || current.has(h.value)) continue; // counted above (or a tail value on both sides)
    diff += q;
    sumQ += q;
  }
  diff += Math.abs(Math.max(0, 1 - sumP) - Math.max(0, 1 - sumQ));
  return Math.min(1, diff / 2);
}

/**
 * Share of `current` on values `baseline` (nearly) never held: the heavy values of the current window
 * (guaranteed share ≥ `heavyShare`) whose baseline share (upper bound) is under 1/`ratio` of theirs,
 * each counted for its excess. A crowd re-weighting known values (everyone lands on the home page
 * first: a value of 10 % of calm's can never count) moves the distance, not this; new paths (a search
 * nobody ran, a login flood where calm logged in now and then) move both.
 */
export function unseenShare(current: SpaceSaving, baseline: SpaceSaving, heavyShare = 0.02, ratio = 10): number {
  if (current.total <= 0 || baseline.total <= 0) return 0;
  let share = 0;
  for (const h of current.top()) {
    const p = (h.count - h.error) / current.total;
    if (p < heavyShare) continue;
    const q = baseline.upper(h.value) / baseline.total;
    if (q * ratio < p) share += p - q;
  }
  return Math.min(1, share);
}
