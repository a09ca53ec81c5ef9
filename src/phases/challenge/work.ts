// Clearances each client prefix (IPv4 /24, IPv6 /64) bought recently, so the work asked of the next
// one rises with them: a prefix that keeps re-solving (a bot farm throwing away clearances spent at
// 10 requests a second) pays double, then four times… while a prefix where a few people solved once
// pays the base difficulty. The count decays exponentially (`halfLifeSec`); the table is capped
// (least recently touched prefix dropped first, losing it only forgets that prefix's extra bits).
//
//   extra bits = min(maxExtraBits, floor(log2(1 + bought / freeClearances)))
//   bought:  0–15 → +0   16–47 → +1   48–111 → +2   112–239 → +3   240+ → +4   (freeClearances 16)
import { ownCopy } from '../../core/own-copy.ts';

export interface WorkRise {
  readonly freeClearances: number;
  readonly maxExtraBits: number;
  readonly halfLifeSec: number;
}

interface Bought {
  count: number;
  atMs: number;
}

export class PrefixWork {
  readonly #table = new Map<string, Bought>();
  #max: number;

  constructor(maxPrefixes: number) {
    this.#max = maxPrefixes;
  }

  configure(maxPrefixes: number): void {
    this.#max = maxPrefixes;
    while (this.#table.size > this.#max) {
      const first = this.#table.keys().next();
      if (first.done === true) break;
      this.#table.delete(first.value);
    }
  }

  get size(): number {
    return this.#table.size;
  }

  #decayed(b: Bought, nowMs: number, halfLifeSec: number): number {
    const age = nowMs - b.atMs;
    return age <= 0 ? b.count : b.count * 2 ** (-age / (halfLifeSec * 1000));
  }

  /** A clearance was bought from `prefix`. */
  add(prefix: string, nowMs: number, rise: WorkRise): void {
    if (this.#max === 0) return;
    const b = this.#table.get(prefix);
    if (b !== undefined) {
      b.count = this.#decayed(b, nowMs, rise.halfLifeSec) + 1;
      b.atMs = nowMs;
      // Re-inserted: the map's first key is then the least recently touched prefix.
      this.#table.delete(prefix);
      this.#table.set(prefix, b);
      return;
    }
    while (this.#table.size >= this.#max) {
      const first = this.#table.keys().next();
      if (first.done === true) break;
      this.#table.delete(first.value);
    }
    this.#table.set(ownCopy(prefix), { count: 1, atMs: nowMs });
  }

  /** Bits to add to the base difficulty for the next challenge given to `prefix`. */
  extraBits(prefix: string, nowMs: number, rise: WorkRise): number {
    if (rise.maxExtraBits === 0) return 0;
    const b = this.#table.get(prefix);
    if (b === undefined) return 0;
    const n = this.#decayed(b, nowMs, rise.halfLifeSec);
    const extra = Math.floor(Math.log2(1 + n / rise.freeClearances));
    return extra < rise.maxExtraBits ? extra : rise.maxExtraBits;
  }
}
