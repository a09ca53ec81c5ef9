// "A solution is accepted once": the ids of used challenges (and no-JS delay tokens), in two
// generations of one challenge lifetime each. Bounded whatever an attacker sends: a generation holds
// at most `capacity` ids; when the current one fills early it is rotated at once, and every token
// issued before the oldest generation still kept started is refused from then on (it might have been
// used in the generation just dropped). Honest clients holding such a token get a fresh challenge.
//
//   time ──────────────────────────────────────────────▶
//   [ previous: ids used since prevStart ][ current: ids used since curStart ]
//   accepted: issuedSec*1000 >= prevStart  (a token used before prevStart was issued before it)
//
// Memory: 2 × capacity short strings (~80 bytes each with Set overhead; each its own copy, so an id
// cut from a Cookie header does not keep the header alive).
import { ownCopy } from '../../core/own-copy.ts';

export class ReplayGuard {
  #current = new Set<string>();
  #previous = new Set<string>();
  #currentStartMs: number;
  #previousStartMs: number;
  #capacity: number;
  #generationMs: number;

  constructor(capacity: number, generationMs: number, nowMs: number) {
    this.#capacity = capacity;
    this.#generationMs = generationMs;
    // Nothing was recorded before we started: both generations begin "long ago", so tokens issued
    // before a restart (same key) are accepted until the first early rotation.
    this.#currentStartMs = nowMs;
    this.#previousStartMs = -Infinity;
  }

  /** New bounds (reload). Ids already recorded are kept. */
  configure(capacity: number, generationMs: number): void {
    this.#capacity = capacity;
    this.#generationMs = generationMs;
  }

  #rotate(nowMs: number): void {
    this.#previous = this.#current;
    this.#previousStartMs = this.#currentStartMs;
    this.#current = new Set();
    this.#currentStartMs = nowMs;
  }

  /**
   * Record `id` (from a token issued at `issuedMs`) as used. False when it was used already, or when
   * it was issued before the oldest generation kept (it might have been used in a dropped one).
   */
  use(id: string, issuedMs: number, nowMs: number): boolean {
    // Rotated lazily: the current generation may hold ids used a moment ago, so it always becomes
    // the previous one (never dropped straight away).
    if (nowMs - this.#currentStartMs >= this.#generationMs) this.#rotate(nowMs);
    if (issuedMs < this.#previousStartMs) return false;
    if (this.#current.has(id) || this.#previous.has(id)) return false;
    if (this.#current.size >= this.#capacity) this.#rotate(nowMs);
    this.#current.add(ownCopy(id));
    return true;
  }

  get size(): number {
    return this.#current.size + this.#previous.size;
  }
}
