// Challenges given to (or failed by) each address per minute, in fixed memory: a count-min sketch of
// two rows of 4096 counters, cleared every window. Collisions only over-count, and only past a
// threshold set far above what a person does (one or two challenges per page), so a leaving visitor
// is never an offender; a bot that ignores challenges at request rate is.
import { hash, randomBytes } from 'node:crypto';

const SLOTS = 4096;

/** The 16-bit big-endian number at hex digits [at, at + 4) of a hex digest. */
function hex16(h: string, at: number): number {
  return Number.parseInt(h.slice(at, at + 4), 16);
}

/**
 * A secret of this process before every key: the slots are then no one's to compute. Unkeyed, an
 * attacker finds offline two addresses of its own (about 4096 tries each: one IPv6 /48 holds 65536
 * /64 keys) meeting a chosen victim's two slots, and ignores challenges from them: the victim's count
 * passes the threshold and each challenge it is given is an offence towards a ban. A prefix under
 * SHA-256 is enough here (no output is ever shown, so nothing to extend), and costs no HMAC object.
 */
const SKETCH_KEY = `${randomBytes(16).toString('base64')}\n`;

/**
 * The sketch's two slots for `key`: the first two 16-bit words of SHA-256(SKETCH_KEY + key). Asked as
 * hex, not as a Buffer: a Buffer made per call costs about three times the hash (this runs for every
 * challenge given, so for every request of a flood).
 */
function slots(key: string, out: Uint16Array): void {
  const h = hash('sha256', SKETCH_KEY + key, 'hex');
  out[0] = hex16(h, 0) % SLOTS;
  out[1] = hex16(h, 4) % SLOTS;
}
const SLOT_PAIR = new Uint16Array(2);

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
    slots(address, SLOT_PAIR);
    const a = SLOT_PAIR[0]!;
    const b = SLOT_PAIR[1]!;
    const r0 = this.#rows[0];
    const r1 = this.#rows[1];
    r0[a] = r0[a]! + 1;
    r1[b] = r1[b]! + 1;
    return Math.min(r0[a]!, r1[b]!);
  }
}

/**
 * Which keys were marked in this second and in the one before, in fixed memory (two rows of 4096
 * bits a second, as bytes). A client refused over its budget counts towards a ban once for each second
 * it is refused in that follows a second it was refused in: the requests of one page that overran the
 * budget (all within a second) never count, a client that keeps sending past its Retry-After counts
 * once a second. Collisions only make a key look marked: it takes `banAfter` such seconds in a minute.
 */
export class SecondsInARow {
  #cur = [new Uint8Array(SLOTS), new Uint8Array(SLOTS)] as const;
  #prev = [new Uint8Array(SLOTS), new Uint8Array(SLOTS)] as const;
  #startMs = Number.NEGATIVE_INFINITY;

  /** Mark `key` now; true when it is its first mark this second and it was marked the second before. */
  mark(key: string, nowMs: number): boolean {
    const age = nowMs - this.#startMs;
    if (age >= 1000) {
      const old = this.#prev;
      this.#prev = this.#cur;
      this.#cur = old;
      this.#cur[0].fill(0);
      this.#cur[1].fill(0);
      if (age >= 2000) {
        this.#prev[0].fill(0);
        this.#prev[1].fill(0);
        this.#startMs = nowMs;
      } else this.#startMs += 1000;
    }
    slots(key, SLOT_PAIR);
    const a = SLOT_PAIR[0]!;
    const b = SLOT_PAIR[1]!;
    const first = this.#cur[0][a] === 0 || this.#cur[1][b] === 0;
    this.#cur[0][a] = 1;
    this.#cur[1][b] = 1;
    return first && this.#prev[0][a] === 1 && this.#prev[1][b] === 1;
  }
}
