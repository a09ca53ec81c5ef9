// Challenges given to (or failed by) each address per minute, in fixed memory: a count-min sketch of
// two rows of 4096 counters, cleared every window. Collisions only over-count, and only past a
// threshold set far above what a person does (one or two challenges per page), so a leaving visitor
// is never an offender; a bot that ignores challenges at request rate is.
import { hash } from 'node:crypto';

const SLOTS = 4096;

export class IgnoredChallenges {
  readonly #rows = [new Uint32Array(SLOTS), new Uint32Array(SLOTS)] as const;
  #windowStartMs = 0;
  readonly #windowMs: number;

  constructor(windowMs = 60_000) {
    this.#windowMs = windowMs;
  }

  /** Count one for `address`; the estimate for this window after counting. */
  add(address: string, nowMs: number): number {
    if (nowMs - this.#windowStartMs >= this.#windowMs) {
      this.#rows[0].fill(0);
      this.#rows[1].fill(0);
      this.#windowStartMs = nowMs;
    }
    const h = hash('sha256', address, 'buffer');
    const a = h.readUInt16BE(0) % SLOTS;
    const b = h.readUInt16BE(2) % SLOTS;
    const r0 = this.#rows[0];
    const r1 = this.#rows[1];
    r0[a] = r0[a]! + 1;
    r1[b] = r1[b]! + 1;
    return Math.min(r0[a]!, r1[b]!);
  }
}
