// "At most N per key per window" in fixed memory, whatever the number of keys: a count-min sketch of
// four rows of 16-bit counters, cleared when the window ends. Collisions only over-count, so a key is
// never allowed more than its quota; with the default width, 100 000 distinct keys in one window still
// leave honest keys far below any useful quota. Used for waiting-room tickets per address and no-JS
// clearances per prefix: events an attacker multiplies by sending requests without cookies.
//
//   take(key): h = seeded FNV-1a(key) ──▶ 4 counters (one per row) ──▶ min < limit ? raise the minima : refuse
//
// Conservative update (only counters equal to the minimum are raised) keeps the over-count low; a
// refused take counts nothing, so a client that retries after a refusal does not push its own wait.
import { randomInt } from 'node:crypto';

const ROWS = 4;
const MAX_COUNT = 0xffff;

export class WindowQuota {
  readonly #counts: Uint16Array;
  readonly #mask: number;
  readonly #windowMs: number;
  #windowStartMs = Number.NEGATIVE_INFINITY;
  /** Per-process seeds: which keys share a counter cannot be worked out from outside. */
  readonly #seed1 = randomInt(0, 0x7fffffff);
  readonly #seed2 = randomInt(0, 0x7fffffff);
  readonly #at = new Uint32Array(ROWS);
  /** Memory in bytes (fixed at construction). */
  readonly bytes: number;

  /** `widthLog2`: counters per row as a power of two (16: 65 536 per row, 512 KiB in all). */
  constructor(windowMs = 60_000, widthLog2 = 16) {
    const width = 1 << widthLog2;
    this.#counts = new Uint16Array(ROWS * width);
    this.#mask = width - 1;
    this.#windowMs = windowMs;
    this.bytes = this.#counts.byteLength;
  }

  #roll(nowMs: number): void {
    if (nowMs - this.#windowStartMs < this.#windowMs) return;
    this.#counts.fill(0);
    this.#windowStartMs = nowMs;
  }

  /** The four counter positions of `key` into #at (no allocation). */
  #locate(key: string): void {
    let h1 = 0x811c9dc5 ^ this.#seed1;
    let h2 = 0x01234567 ^ this.#seed2;
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
    }
    h2 |= 1; // odd: the four positions differ
    const mask = this.#mask;
    for (let r = 0; r < ROWS; r++) this.#at[r] = r * (mask + 1) + ((h1 + Math.imul(r, h2)) & mask);
  }

  #min(): number {
    let min = MAX_COUNT;
    for (let r = 0; r < ROWS; r++) {
      const v = this.#counts[this.#at[r]!]!;
      if (v < min) min = v;
    }
    return min;
  }

  /** Count one for `key` when its estimate in this window is below `limit`: true when counted. */
  take(key: string, limit: number, nowMs: number): boolean {
    this.#roll(nowMs);
    this.#locate(key);
    const min = this.#min();
    if (min >= limit || min >= MAX_COUNT) return false;
    const counts = this.#counts;
    for (let r = 0; r < ROWS; r++) {
      const at = this.#at[r]!;
      if (counts[at] === min) counts[at] = min + 1;
    }
    return true;
  }

  /** The count of `key` in this window (an over-estimate at worst). */
  estimate(key: string, nowMs: number): number {
    this.#roll(nowMs);
    this.#locate(key);
    return this.#min();
  }
}
