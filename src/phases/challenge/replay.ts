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

/** What the state file keeps of the guard (src/app/state-file.ts): wall-clock ms throughout. */
export interface ReplayState {
  readonly currentStartMs: number;
  /** null: -Infinity (no generation dropped yet). */
  readonly previousStartMs: number | null;
  /** Ids with the time each was used; those used before previousStartMs are dropped. */
  readonly ids: ReadonlyArray<readonly [id: string, usedMs: number]>;
}

export class ReplayGuard {
  #current = new Set<string>();
  #previous = new Set<string>();
  #currentStartMs: number;
  #previousStartMs: number;
  #capacity: number;
  #generationMs: number;
  /**
   * Persistence: ids used since the state file last took them, with the time of use (null: not
   * persisted). At most 2 × capacity (then the next save writes both generations whole).
   */
  #journal: Array<string | number> | null = null;
  #rewrite = false;

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
    const own = ownCopy(id);
    this.#current.add(own);
    if (this.#journal !== null) {
      if (this.#journal.length >= 4 * this.#capacity) {
        this.#journal.length = 0;
        this.#rewrite = true;
      } else if (!this.#rewrite) this.#journal.push(own, nowMs);
    }
    return true;
  }

  get size(): number {
    return this.#current.size + this.#previous.size;
  }

  /** Persistence: from now on, journal the ids used (takeChanges() hands them over). */
  trackChanges(): void {
    this.#journal ??= [];
  }

  /**
   * The generations' starts and at most `limit` of the ids used since the last call (the rest wait for
   * the next). `all`: every stored id goes first, and both generations follow, `limit` at a time.
   * Ids used before `previousStartMs` are no longer needed.
   */
  takeChanges(limit = Infinity): ReplayState & { all: boolean } {
    const all = this.#rewrite;
    const ids: Array<[string, number]> = [];
    const j = this.#journal;
    if (j !== null && all) {
      this.#rewrite = false;
      // The time of use is not kept per id: each generation's own start stands for it.
      const prev = this.#previousStartMs === -Infinity ? this.#currentStartMs : this.#previousStartMs;
      j.length = 0;
      for (const id of this.#previous) j.push(id, prev);
      for (const id of this.#current) j.push(id, this.#currentStartMs);
    }
    if (j !== null) {
      const n = Math.min(j.length, 2 * Math.min(limit, j.length));
      for (let i = 0; i < n; i += 2) ids.push([j[i] as string, j[i + 1] as number]);
      j.splice(0, n);
    }
    const previousStartMs = this.#previousStartMs === -Infinity ? null : this.#previousStartMs;
    return { all, currentStartMs: this.#currentStartMs, previousStartMs, ids };
  }

  /** Hand both generations over again at the next takeChanges() (a failed write). */
  changesLost(): void {
    if (this.#journal === null) return;
    this.#journal.length = 0;
    this.#rewrite = true;
  }

  /**
   * Put back what the state file kept (start-up): the generations' starts and their ids, each in the
   * generation its time of use falls in. Ids used before the previous generation's start are dropped.
   */
  restore(state: ReplayState, nowMs: number): number {
    const cur = Number(state.currentStartMs);
    if (!Number.isFinite(cur) || cur > nowMs) return 0;
    const prev = state.previousStartMs === null ? -Infinity : Number(state.previousStartMs);
    this.#currentStartMs = cur;
    this.#previousStartMs = Number.isNaN(prev) ? -Infinity : prev;
    this.#current = new Set();
    this.#previous = new Set();
    let n = 0;
    for (const [id, usedMs] of state.ids) {
      if (typeof id !== 'string' || usedMs < this.#previousStartMs) continue;
      // Rotated early twice within one millisecond: the current generation's overflow was the previous one's.
      let into = usedMs >= cur ? this.#current : this.#previous;
      if (into === this.#current && into.size >= this.#capacity) into = this.#previous;
      if (into.size >= this.#capacity) continue;
      into.add(id);
      n++;
    }
    // Rotated (or two generations past) while the process was down: as use() would have on its next call.
    if (nowMs - this.#currentStartMs >= this.#generationMs) this.#rotate(nowMs);
    return n;
  }
}
