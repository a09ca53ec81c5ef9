// What one identity took from one sensitive route: documents over a sliding hour and bytes over a sliding
// day, and the bounded table that holds these counts (docs/exfiltration.md).
//
// Sliding window = two fixed windows, the previous one weighted by how much of it still overlaps
// (pingora-limits' estimator; exact at window edges, never more than one window's count off):
//
//        prev window          current window
//   |────────────────────|──────────●─────────|      estimate = prev · (1 − elapsed/W) + cur
//                        start      now
//                        └ elapsed ┘

import { ownCopy } from '../../core/own-copy.ts';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

export class SlidingCount {
  readonly windowMs: number;
  start: number;
  cur: number;
  prev: number;

  constructor(windowMs: number, now: number) {
    this.windowMs = windowMs;
    this.start = now;
    this.cur = 0;
    this.prev = 0;
  }

  #roll(now: number): void {
    const elapsed = now - this.start;
    if (elapsed < this.windowMs) return;
    if (elapsed < 2 * this.windowMs) {
      this.prev = this.cur;
      this.start += this.windowMs;
    } else {
      this.prev = 0;
      this.start = now - (elapsed % this.windowMs);
    }
    this.cur = 0;
  }

  add(now: number, n: number): void {
    this.#roll(now);
    this.cur += n;
  }

  estimate(now: number): number {
    this.#roll(now);
    return this.prev * (1 - (now - this.start) / this.windowMs) + this.cur;
  }

  /** Milliseconds until the estimate falls to `threshold` or below with nothing added meanwhile (0 if it is already). */
  msUntilAtMost(now: number, threshold: number): number {
    if (this.estimate(now) <= threshold) return 0;
    const w = this.windowMs;
    const into = now - this.start;
    // Still in this window: the previous window's share shrinks linearly (cur <= threshold < estimate, so prev > 0).
    if (this.cur <= threshold) return Math.max(0, w * (1 - (threshold - this.cur) / this.prev) - into);
    // In the next window, this window's count becomes the shrinking share.
    return w - into + w * (1 - threshold / this.cur);
  }
}

/** The limits a usage entry is scored against (the route's quotas; 0 = no such quota). */
export interface QuotaLimits {
  readonly documentsPerHour: number;
  readonly bytesPerDay: number;
}

/** Counts of one identity on one route. One fixed shape; ~200 bytes with its key. */
export class Usage {
  readonly documents: SlidingCount;
  readonly bytes: SlidingCount;
  /** Requests let through and not answered yet: reserved against the documents quota, so a burst of parallel requests cannot overshoot it. */
  pending: number;
  /** Wall of the last alert per quota (clock ms), -Infinity for never. */
  documentsAlertedMs: number;
  bytesAlertedMs: number;
  /** The quotas in force when last seen (for eviction scoring). */
  limits: QuotaLimits;

  constructor(now: number, limits: QuotaLimits) {
    this.documents = new SlidingCount(HOUR_MS, now);
    this.bytes = new SlidingCount(DAY_MS, now);
    this.pending = 0;
    this.documentsAlertedMs = -Infinity;
    this.bytesAlertedMs = -Infinity;
    this.limits = limits;
  }

  /** How close to a quota this identity is: 0 idle, 1 at a quota (requests in flight count as the documents they reserve). */
  score(now: number): number {
    let s = 0;
    if (this.limits.documentsPerHour > 0)
      s = (this.documents.estimate(now) + this.pending) / this.limits.documentsPerHour;
    if (this.limits.bytesPerDay > 0) s = Math.max(s, this.bytes.estimate(now) / this.limits.bytesPerDay);
    return s;
  }
}

/** How many of the least recently seen entries an eviction looks at. */
const EVICTION_SAMPLE = 16;

/**
 * Usage per `route \0 identity`, at most `max` entries. A Map in least-recently-seen order (a hit
 * moves the entry to the end). When full, an insert forgets the entry with the lowest score among
 * the EVICTION_SAMPLE least recently seen: idle and one-request identities go first, and an identity
 * at its quota (score ≥ 1) goes only if every sampled one is at least as close to its own quota. So
 * flooding the table with fresh identities (random cookies cost nothing) cannot reset an exfiltrating
 * session's count: to push it out, the flood would have to really take as many documents per identity.
 */
export class UsageTable {
  readonly #map: Map<string, Usage>;
  max: number;
  evictions: number;

  constructor(max: number) {
    this.#map = new Map();
    this.max = max;
    this.evictions = 0;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The entry for `key`, marked recently seen, or undefined. */
  get(key: string): Usage | undefined {
    const u = this.#map.get(key);
    if (u !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, u);
    }
    return u;
  }

  /** The entry for `key`, created (evicting when full) if there is none. */
  getOrCreate(key: string, now: number, limits: QuotaLimits): Usage {
    let u = this.get(key);
    if (u === undefined) {
      while (this.#map.size >= this.max) this.#evictOne(now);
      u = new Usage(now, limits);
      // Its own copy: the identity is cut from a Cookie or API-key header it would otherwise keep alive.
      this.#map.set(ownCopy(key), u);
    }
    u.limits = limits;
    return u;
  }

  #evictOne(now: number): void {
    let victim: string | undefined;
    let lowest = Infinity;
    let seen = 0;
    for (const [key, u] of this.#map) {
      const s = u.score(now);
      if (s < lowest) {
        lowest = s;
        victim = key;
        if (s === 0) break;
      }
      if (++seen >= EVICTION_SAMPLE) break;
    }
    if (victim === undefined) return;
    this.#map.delete(victim);
    this.evictions++;
  }
}
