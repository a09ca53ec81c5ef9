// What each client address and browser (its User-Agent) already sent to the origin, from its first
// second and at every level: one person's pace budget (a GCRA theoretical arrival time) per address and
// browser, in fixed memory whatever the number of clients. A clearance minted there starts from that
// pace, not from a fresh burst: a bot that floods while the level is still rising (nothing is asked of
// an unknown client yet) and only then solves has already spent its budget; a person who browsed
// before solving, at a person's pace, has not.
//
//   charge(address, ua): h = seeded FNV-1a(address "\n" ua) ──▶ 4 cells (one per row) ──▶ tat = max(min, now) + interval
//
// A count-min sketch of times: four rows of Float64 cells, each key raising only the cells below its
// new time (conservative update), its time read as the smallest of its four. Collisions can only make a
// key look busier, never idler; with the default width (2^14 a row, 512 KiB), ten thousand clients
// active within one burst's refill leave a person's four cells shared with busier keys less than once
// in a million. Memory is fixed; nothing is ever evicted (a cell's time simply passes).
import { randomInt } from 'node:crypto';

const ROWS = 4;
/** Characters of the User-Agent hashed: enough to tell browsers apart, bounded work per request. */
const MAX_UA_CHARS = 256;

export class PaceSketch {
  readonly #tat: Float64Array;
  readonly #mask: number;
  readonly #seed1 = randomInt(0, 0x7fffffff);
  readonly #seed2 = randomInt(0, 0x7fffffff);
  readonly #at = new Uint32Array(ROWS);
  /** Memory in bytes (fixed at construction). */
  readonly bytes: number;

  /** `widthLog2`: cells per row as a power of two (14: 16 384 a row, 512 KiB in all). */
  constructor(widthLog2 = 14) {
    const width = 1 << widthLog2;
    this.#tat = new Float64Array(ROWS * width);
    this.#mask = width - 1;
    this.bytes = this.#tat.byteLength;
  }

  /** The four cell positions of (address, ua) into #at: no string is built. */
  #locate(address: string, ua: string | undefined): void {
    let h1 = 0x811c9dc5 ^ this.#seed1;
    let h2 = 0x01234567 ^ this.#seed2;
    for (let i = 0; i < address.length; i++) {
      const c = address.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
    }
    // The separator: ("1.2.3.4", "5x") and ("1.2.3.45", "x") are two keys.
    h1 = Math.imul(h1 ^ 10, 0x01000193);
    h2 = Math.imul(h2 ^ 10, 0x5bd1e995);
    if (ua !== undefined) {
      const n = ua.length < MAX_UA_CHARS ? ua.length : MAX_UA_CHARS;
      for (let i = 0; i < n; i++) {
        const c = ua.charCodeAt(i);
        h1 = Math.imul(h1 ^ c, 0x01000193);
        h2 = Math.imul(h2 ^ c, 0x5bd1e995);
        h2 ^= h2 >>> 15;
      }
    }
    h2 |= 1; // odd: the four positions differ
    const mask = this.#mask;
    for (let r = 0; r < ROWS; r++) this.#at[r] = r * (mask + 1) + ((h1 + Math.imul(r, h2)) & mask);
  }

  #min(): number {
    const t = this.#tat;
    let min = t[this.#at[0]!]!;
    for (let r = 1; r < ROWS; r++) {
      const v = t[this.#at[r]!]!;
      if (v < min) min = v;
    }
    return min;
  }

  /**
   * One request of (address, ua) reached the origin: its time moves on by `intervalMs` (one person's
   * pace), from now at the earliest, and never past `nowMs + capMs` (a flood's debt is bounded: once it
   * stops, it is forgotten within `capMs`).
   */
  charge(address: string, ua: string | undefined, nowMs: number, intervalMs: number, capMs: number): void {
    this.#locate(address, ua);
    const min = this.#min();
    let next = (min > nowMs ? min : nowMs) + intervalMs;
    if (next > nowMs + capMs) next = nowMs + capMs;
    const t = this.#tat;
    for (let r = 0; r < ROWS; r++) {
      const at = this.#at[r]!;
      if (t[at]! < next) t[at] = next;
    }
  }

  /** The time (ms) at which (address, ua) is back within one person's pace: <= nowMs when it is already. */
  tat(address: string, ua: string | undefined): number {
    this.#locate(address, ua);
    return this.#min();
  }
}
