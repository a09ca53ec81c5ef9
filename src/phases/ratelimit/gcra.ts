// GCRA (the generic cell rate algorithm, ITU-T I.371; what redis-cell and Envoy's local limiter
// amount to) for one rate-limit rule, over a bounded table of keys.
//
// Per key one number: the theoretical arrival time (TAT) of the next request if the key sent at
// exactly its rate. With T = 1000 / ratePerSec ms and tolerance tau = burst × T, a request at `now`
// is allowed when max(TAT, now) + T − now ≤ tau, and then TAT becomes max(TAT, now) + T. A key whose
// TAT ≤ now has its whole burst available: it carries no information and may be forgotten.
//
// Memory is bounded whatever the number of distinct keys (a million addresses, random session ids):
//
//   exact: Map<key, TAT>, at most maxKeys entries ──full of live keys──▶ shared: 2 rows × W Float64 TATs
//          a cursor walks it on inserts and drops         (count-min style: a key's TAT is the min of its
//          keys whose TAT ≤ now (full buckets)             two cells, updated conservatively; a collision
//                                                          only makes a key's budget smaller, never bigger)
//
// A key not in the exact table starts from its shared estimate while the shared rows are in use, so a
// key cannot escape its debt by being pushed out of the table and coming back.
// Rejected requests do not advance the TAT (docs/rate-limits.md says why).
//
// With `maxDelayMs` > 0 (nginx's `limit_req burst=… delay=…`), a request past the burst whose turn comes
// within maxDelayMs is allowed late: it takes its place (the TAT advances as for any allowed request)
// and result.delayMs says how long it must wait for it. At most maxDelayMs × rate requests of one key
// wait at a time; past that, refused as without it.
import { ownCopy } from '../../core/own-copy.ts';

/** What the last check() decided, kept on the limiter so the hot path allocates nothing. */
export interface GcraResult {
  allowed: boolean;
  /** Requests the key may still send at once after this one (0 when refused). */
  remaining: number;
  /** When refused: ms until one request would be allowed. When allowed: ms until the full burst is back. */
  waitMs: number;
  /** When allowed past the burst: ms the request must wait for its turn (0 within the burst). */
  delayMs: number;
}

/** How long the sweep rests after finding the table full of live keys (new keys go to the shared rows meanwhile). */
const FULL_REST_MS = 50;
/** Entries the cursor inspects per insert into a full table. */
const SWEEP_STEPS = 32;

/** Slack for floating-point rounding in the conformance test (ms): see check(). */
const ROUNDING_MS = 1e-3;

export class GcraLimiter {
  readonly intervalMs: number;
  readonly toleranceMs: number;
  readonly burst: number;
  readonly maxKeys: number;
  /** The outcome of the last check(). */
  readonly result: GcraResult = { allowed: true, remaining: 0, waitMs: 0, delayMs: 0 };
  /** How long a request past the burst may wait for its turn (0: refused at once). */
  readonly maxDelayMs: number;
  readonly #tat = new Map<string, number>();
  #cursor: MapIterator<[string, number]> | null = null;
  #restUntil = -Infinity;
  /** The shared rows (2 × width), allocated the first time the table is full of live keys. */
  #shared: Float64Array | null = null;
  readonly #width: number;
  /** Requests counted in the shared rows (for tests and the docs' figures). */
  sharedChecks = 0;

  constructor(ratePerSec: number, burst: number, maxKeys: number, maxDelayMs = 0) {
    this.intervalMs = 1000 / ratePerSec;
    this.maxDelayMs = maxDelayMs;
    this.burst = burst;
    this.toleranceMs = this.intervalMs * burst;
    this.maxKeys = maxKeys;
    // Rows as wide as the exact table (power of two, 2^10..2^20): 16 bytes per exact key at most.
    let w = 1024;
    while (w < maxKeys && w < 1 << 20) w <<= 1;
    this.#width = w;
  }

  /** Keys tracked exactly now. */
  get size(): number {
    return this.#tat.size;
  }

  /** Bytes held by the shared rows (0 until first needed; fixed after). */
  get sharedBytes(): number {
    return this.#shared === null ? 0 : this.#shared.byteLength;
  }

  /**
   * Decide for `key` at `now` (ms); the outcome is in this.result. Returns result.allowed. `maxDelayMs`:
   * how late a request past the burst may be allowed (this.maxDelayMs unless told; 0: refused at once).
   */
  check(key: string, now: number, maxDelayMs = this.maxDelayMs): boolean {
    const T = this.intervalMs;
    const tau = this.toleranceMs;
    const r = this.result;
    let tat = this.#tat.get(key);
    let exact = tat !== undefined;
    let h = 0;
    if (tat === undefined) {
      tat = now;
      if (this.#shared !== null) {
        h = hash(key);
        tat = this.#sharedTat(h);
      }
      if (this.#tat.size < this.maxKeys || this.#makeRoom(now)) {
        exact = true;
        // Kept: its own string, not a view that keeps the whole Cookie or X-Forwarded-For line alive.
        key = ownCopy(key);
      } else if (this.#shared === null) {
        this.#shared = new Float64Array(this.#width * 2);
        h = hash(key);
      }
    }
    const base = tat > now ? tat : now;
    const next = base + T;
    // The last request of a burst at one instant lands exactly on the bound, where `base + T − now`
    // carries the rounding of large clock values (about one time in 25 it came out above tau, and the
    // burst was one short): a microsecond's slack, far below any interval.
    let delay = 0;
    if (next - now > tau + ROUNDING_MS) {
      const late = next - tau - now;
      if (late > maxDelayMs + ROUNDING_MS) {
        r.allowed = false;
        r.remaining = 0;
        r.waitMs = late - maxDelayMs;
        r.delayMs = 0;
        if (!exact) this.sharedChecks++;
        return false;
      }
      delay = late;
    }
    if (exact) this.#tat.set(key, next);
    else {
      this.sharedChecks++;
      this.#sharedSet(h, next);
    }
    r.allowed = true;
    r.remaining = Math.max(0, Math.floor((tau - (next - now) + ROUNDING_MS) / T));
    r.waitMs = next - now;
    r.delayMs = delay;
    return true;
  }

  /** Forget every key (a reload that changed the rule's rate or burst). */
  clear(): void {
    this.#tat.clear();
    this.#cursor = null;
    this.#shared = null;
    this.#restUntil = -Infinity;
  }

  /** Drop keys whose bucket is full again; true when one place was freed. */
  #makeRoom(now: number): boolean {
    if (now < this.#restUntil) return false;
    const map = this.#tat;
    let freed = false;
    for (let i = 0; i < SWEEP_STEPS; i++) {
      if (this.#cursor === null) this.#cursor = map.entries();
      const step = this.#cursor.next();
      if (step.done === true) {
        this.#cursor = null;
        if (i >= map.size) break; // walked the whole (small) table
        continue;
      }
      if (step.value[1] <= now) {
        map.delete(step.value[0]);
        freed = true;
      }
    }
    if (!freed) this.#restUntil = now + FULL_REST_MS;
    return freed;
  }

  #sharedTat(h: number): number {
    const s = this.#shared!;
    const a = s[h & (this.#width - 1)]!;
    const b = s[this.#width + (((h >>> 16) | (h << 16)) & (this.#width - 1))]!;
    return a < b ? a : b;
  }

  #sharedSet(h: number, tat: number): void {
    const s = this.#shared!;
    const i = h & (this.#width - 1);
    const j = this.#width + (((h >>> 16) | (h << 16)) & (this.#width - 1));
    // Conservative update: raise a cell only up to this key's new TAT (never lower what another key set).
    if (s[i]! < tat) s[i] = tat;
    if (s[j]! < tat) s[j] = tat;
  }
}

/** FNV-1a over UTF-16 code units, then a murmur3 finaliser so both halves of the word are mixed. */
export function hash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
