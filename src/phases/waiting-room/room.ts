// One route's waiting line, as two counters and nothing per visitor: `issued` (the last ticket
// number handed out) and `admittedUpTo` (tickets up to it may enter). A visitor carries its number in
// a signed cookie (./ticket.ts); the server only compares numbers, and keeps one bit per recent
// number to let each ticket in once.
//
//   tickets:   1   2   3   4   5   6   7
//              └─ admittedUpTo = 3 ─┘ └── waiting ──┘  issued = 7, length = 4, ticket 6 is at place 3
//
// While the room is open, admittedUpTo moves by admitPerSecond per second of (injected) time; once
// the route's class has not been saturated for CALM_MS it jumps to `issued`: the whole line goes in.

/**
 * The class must stay unsaturated this long before the whole line goes in: the saturation signal
 * flickers under overload (the class's queue is empty for a moment between two sheds), and a line
 * let in on a flicker is a crowd shed behind the room.
 */
export const CALM_MS = 2000;

/**
 * Ticket numbers whose use is remembered: the last USED_WINDOW numbers issued, one bit each (128 KiB
 * per room). A ticket older than that (a million visitors took a place after it) cannot be told
 * used or not and is refused as used: its holder takes a new place at the back.
 */
export const USED_WINDOW = 1 << 20;

export class WaitingRoom {
  /** The last ticket number handed out (0 before the first). */
  issued = 0;
  /** Tickets numbered up to this may enter. */
  admittedUpTo = 0;
  /** Admissions earned but not yet whole (fractions of a visitor), while the room is open. */
  #credit = 0;
  /** Clock.now() of the last advance, or -1 before the first. */
  #lastMs = -1;
  /** Clock.now() when the class was last seen saturated, or -1. */
  #saturatedAtMs = -1;
  /** Bit (n mod USED_WINDOW) set: ticket n was turned into a pass. Allocated on the first use. */
  #used: Uint32Array | null = null;

  /** Visitors waiting: issued − admittedUpTo. */
  get length(): number {
    return this.issued - this.admittedUpTo;
  }

  /** True when nobody waits. */
  get isEmpty(): boolean {
    return this.admittedUpTo >= this.issued;
  }

  /**
   * Move the line to `nowMs`. Saturated (or within CALM_MS of it): let in admitPerSecond per elapsed
   * second, in order. Calm for CALM_MS: everyone in line may enter now. Credit is not banked while
   * nobody waits, so an empty room cannot save up a burst for the next crowd.
   */
  advance(nowMs: number, saturated: boolean, admitPerSecond: number): void {
    const elapsedMs = this.#lastMs < 0 ? 0 : Math.max(0, nowMs - this.#lastMs);
    this.#lastMs = nowMs;
    if (saturated) this.#saturatedAtMs = nowMs;
    const open = saturated || (this.#saturatedAtMs >= 0 && nowMs - this.#saturatedAtMs < CALM_MS);
    if (!open || this.isEmpty) {
      this.admittedUpTo = this.issued;
      this.#credit = 0;
      return;
    }
    this.#credit += (elapsedMs / 1000) * admitPerSecond;
    const whole = Math.floor(this.#credit);
    if (whole === 0) return;
    this.#credit -= whole;
    this.admittedUpTo = Math.min(this.issued, this.admittedUpTo + whole);
    if (this.isEmpty) this.#credit = 0;
  }

  /** A new place at the back of the line: its ticket number. */
  take(): number {
    const n = ++this.issued;
    // The slot of n last stood for n − USED_WINDOW, now out of the window: it starts unused.
    const used = this.#used;
    if (used !== null) used[(n & (USED_WINDOW - 1)) >>> 5]! &= ~(1 << (n & 31));
    return n;
  }

  /**
   * Turn admitted ticket `n` into a pass, once: false when it was used already (or is too old to
   * tell), so a ticket let in is not a ticket that lets in again.
   */
  use(n: number): boolean {
    if (n < 1 || n > this.issued || n <= this.issued - USED_WINDOW) return false;
    const used = (this.#used ??= new Uint32Array(USED_WINDOW >>> 5));
    const word = (n & (USED_WINDOW - 1)) >>> 5;
    const bit = 1 << (n & 31);
    if ((used[word]! & bit) !== 0) return false;
    used[word]! |= bit;
    return true;
  }

  /** Whether ticket `n` may enter. */
  isAdmitted(n: number): boolean {
    return n <= this.admittedUpTo;
  }

  /** Place in line of ticket `n` (1 = next to enter), 0 when it may enter. */
  positionOf(n: number): number {
    return Math.max(0, n - this.admittedUpTo);
  }
}
