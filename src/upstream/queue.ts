// The waiting line in front of one upstream: one FIFO per traffic class, served in class priority
// order; bounded in total, per class and per client key, every entry with a deadline. Its memory is
// bounded by maxEntries whatever the number of clients: per-key counts exist only while queued.
//
//   classOrder:  critical ▸ authenticated ▸ cacheable ▸ public ▸ static      (configurable)
//
//   #lines[critical]      [e1 e2]            shift() takes from the first non-empty line its oldest
//                                            entry of the lowest round (a key's 1st waiting entry
//                                            is round 0, its 2nd round 1…): fair between clients
//   #lines[cacheable]     [e3 e4 e5 e6]      deadlines grow along a line (one timeout per class)
//   #lines[static]        [e7 e8]  ◂── tail  a full queue evicts the newest entry of the lowest
//                                            class below the arrival's; an arrival no lower class
//   #keys[cacheable]  { "203.0.113": 3 }     makes room for is refused (queue-full)
//
// Lines are plain arrays (≤ maxEntries each): shift/splice on a thousand slots is cheaper than any
// linked structure, and a cancelled entry leaves no tombstone behind.
import { TRAFFIC_CLASSES, type TrafficClass } from '../core/traffic.ts';

export interface QueueSettings {
  /** Highest priority first: a permutation of TRAFFIC_CLASSES. */
  readonly classOrder: readonly TrafficClass[];
  readonly maxEntries: number;
  readonly maxEntriesPerClass: number;
  readonly timeoutMs: Readonly<Record<TrafficClass, number>>;
  /** Share of a class's slots one client key may hold, in percent (at least one slot). */
  readonly maxSharePercent: number;
  /** Per class (TRAFFIC_CLASSES order), percent of the upstream's limit the class may hold while a higher class waits: its guaranteed share. 0 = strict order. */
  readonly reservePercent: readonly number[];
}

/** What became of a queued request. */
export const Outcome = { Pending: 0, Admitted: 1, Timeout: 2, Evicted: 3, Cancelled: 4 } as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

/** Why an arrival was refused a place. */
export type RefusalReason = 'queue-full' | 'fairness';

export class QueueEntry<T> {
  readonly owner: T;
  /** Index in TRAFFIC_CLASSES. */
  readonly cls: number;
  readonly key: string;
  readonly enqueuedMs: number;
  readonly deadlineMs: number;
  outcome: Outcome;
  /**
   * Served lowest first: the class's service round when it arrived (the round last served), plus `bias`,
   * or one past its key's previous waiting entry, whichever is later. So a client's first waiting request
   * goes before another client's second, and a key's entries keep their arrival order.
   */
  round: number;
  /** Added to the round: 1 for an unknown client, so a known one (a clearance, a session the origin granted) goes first within its class. */
  bias: number;
  /** Settles the waiting request's promise with this entry; set by whoever creates the promise. */
  resolve: ((entry: QueueEntry<T>) => void) | null;
  /** A number its creator keeps with it (admission: the attack level when the request began to wait). */
  stamp: number;

  constructor(owner: T, cls: number, key: string, enqueuedMs: number, deadlineMs: number) {
    this.owner = owner;
    this.cls = cls;
    this.key = key;
    this.enqueuedMs = enqueuedMs;
    this.deadlineMs = deadlineMs;
    this.outcome = Outcome.Pending;
    this.round = 0;
    this.bias = 0;
    this.resolve = null;
    this.stamp = 0;
  }
}

import { classIndex } from '../core/traffic.ts';
export { classIndex };

export class AdmissionQueue<T> {
  readonly #lines: QueueEntry<T>[][] = TRAFFIC_CLASSES.map(() => []);
  readonly #keys: Map<string, number>[] = TRAFFIC_CLASSES.map(() => new Map());
  /** Per class: the round of each key's newest waiting entry (the same keys as #keys). */
  readonly #lastRound: Map<string, number>[] = TRAFFIC_CLASSES.map(() => new Map());
  /**
   * Per class: the round last served (0 once the line is empty). New entries start from it: rounds
   * counted from the key's waiting entries alone (0 for a client's only one) let a newcomer of a key
   * with few entries left overtake that key's older entries numbered when it had many, so under a
   * steady queue from one address (a NAT, a load test) some requests waited past their deadline
   * (p99 600x the median wait in a simulation) and were shed while the origin was idle.
   */
  readonly #served: number[] = TRAFFIC_CLASSES.map(() => 0);
  /**
   * Per class: a lower bound of the rounds in its line (exact after a take that scanned the whole
   * line). #take stops at the first entry at the bound: with a flood from one key every entry has a
   * round above 0 (its position, plus the unknown client's bias), and the scan for the lowest used
   * to read the whole line, up to maxEntries, for each request let in.
   */
  readonly #minRound: number[] = TRAFFIC_CLASSES.map(() => 0);
  /** Class indexes, highest priority first. */
  #order: number[] = [];
  /** rank[class index] = position in #order (0 = highest). */
  #rank: number[] = [];
  #settings!: QueueSettings;
  #classCap = 0;
  #keyCap = 0;
  /** Whether any class has a reserved share. */
  #reserving = false;
  /** Entries waiting now, all classes. */
  size = 0;

  constructor(settings: QueueSettings) {
    this.reconfigure(settings);
  }

  get settings(): QueueSettings {
    return this.#settings;
  }

  /** New bounds, order and timeouts (reload). Entries already queued keep their place and deadline. */
  reconfigure(settings: QueueSettings): void {
    this.#settings = settings;
    this.#order = settings.classOrder.map(classIndex);
    this.#rank = TRAFFIC_CLASSES.map((c) => settings.classOrder.indexOf(c));
    this.#classCap = Math.min(settings.maxEntries, settings.maxEntriesPerClass);
    this.#keyCap = Math.max(1, Math.floor((this.#classCap * settings.maxSharePercent) / 100));
    this.#reserving = settings.reservePercent.some((p) => p > 0);
  }

  /** Most entries one client key may hold in one class. */
  get keyCap(): number {
    return this.#keyCap;
  }

  /** The deadline an entry of this class arriving now gets. */
  deadlineFor(cls: number, nowMs: number): number {
    return nowMs + this.#settings.timeoutMs[TRAFFIC_CLASSES[cls]!];
  }

  depth(cls: number): number {
    return this.#lines[cls]!.length;
  }

  /**
   * Entries waiting, counted up to `cap` per client key (all classes together), or per group of keys when
   * `groupOf` is given (the attack level's: a key's network): the attack level's saturation signal, which
   * one client's or one network's own share of the queue must not make (phases/level/traffic.ts).
   * Allocates only when more than `cap` wait: once a second, at the level's tick.
   */
  sizeCappedPerKey(cap: number, groupOf?: (key: string) => string): number {
    if (this.size <= cap) return this.size;
    const held = new Map<string, number>();
    for (const keys of this.#keys)
      for (const [key, n] of keys) {
        const k = groupOf === undefined ? key : groupOf(key);
        held.set(k, (held.get(k) ?? 0) + n);
      }
    let total = 0;
    for (const n of held.values()) total += n < cap ? n : cap;
    return total;
  }

  /** Entries this key holds in this class. */
  heldBy(cls: number, key: string): number {
    return this.#keys[cls]!.get(key) ?? 0;
  }

  /**
   * Queue `entry`, or say why not. When the queue is full, the newest entry of the lowest class
   * ranked below the arrival is evicted to make room: it is appended to `evicted`, marked Evicted,
   * and the caller settles it.
   */
  push(entry: QueueEntry<T>, evicted: QueueEntry<T>[]): RefusalReason | null {
    const cls = entry.cls;
    const held = this.#keys[cls]!.get(entry.key) ?? 0;
    if (this.#lines[cls]!.length >= this.#classCap) return 'queue-full';
    // Before any eviction: a client at its share cannot push anyone out.
    if (held >= this.#keyCap) return 'fairness';
    while (this.size >= this.#settings.maxEntries) {
      const victim = this.#evictBelow(this.#rank[cls]!);
      if (victim === null) return 'queue-full';
      evicted.push(victim);
    }
    const start = this.#served[cls]! + entry.bias;
    const last = held > 0 ? (this.#lastRound[cls]!.get(entry.key) ?? -1) : -1;
    entry.round = Math.max(start, last + 1);
    this.#lastRound[cls]!.set(entry.key, entry.round);
    const line = this.#lines[cls]!;
    if (line.length === 0 || entry.round < this.#minRound[cls]!) this.#minRound[cls] = entry.round;
    line.push(entry);
    this.#keys[cls]!.set(entry.key, held + 1);
    this.size++;
    return null;
  }

  #evictBelow(rank: number): QueueEntry<T> | null {
    for (let r = this.#order.length - 1; r > rank; r--) {
      const line = this.#lines[this.#order[r]!]!;
      if (line.length === 0) continue;
      const victim = line.pop()!;
      this.#forget(victim);
      victim.outcome = Outcome.Evicted;
      return victim;
    }
    return null;
  }

  /**
   * The next entry, or null. A class holding fewer slots (`inFlight[cls]`) than its reserved share of
   * `limit` goes first (highest such class); otherwise the highest class waiting. Within a class, the
   * oldest of the lowest round, so a client's first waiting request goes before another client's
   * second or twentieth (one client with many connections gets its turn like everyone else, not a turn
   * per connection). The scan stops at the first round-0 entry, usually the head.
   */
  shift(inFlight?: ArrayLike<number>, limit = 0): QueueEntry<T> | null {
    if (inFlight !== undefined && this.#reserving) {
      const reserve = this.#settings.reservePercent;
      for (let r = 0; r < this.#order.length; r++) {
        const cls = this.#order[r]!;
        const pct = reserve[cls]!;
        if (pct === 0 || this.#lines[cls]!.length === 0) continue;
        if (inFlight[cls]! < Math.max(1, Math.floor((limit * pct) / 100))) return this.#take(cls);
      }
    }
    for (let r = 0; r < this.#order.length; r++) {
      const cls = this.#order[r]!;
      if (this.#lines[cls]!.length > 0) return this.#take(cls);
    }
    return null;
  }

  /** The oldest entry of the lowest round in the class's line (not empty). */
  #take(cls: number): QueueEntry<T> {
    const line = this.#lines[cls]!;
    const bound = this.#minRound[cls]!;
    let best = 0;
    let i = 1;
    // The lowest round of the others, when the scan reads the whole line: the next take's exact bound.
    let next = Infinity;
    for (; i < line.length && line[best]!.round > bound; i++) {
      const r = line[i]!.round;
      if (r < line[best]!.round) {
        next = line[best]!.round < next ? line[best]!.round : next;
        best = i;
      } else if (r < next) next = r;
    }
    // Stopped at the bound: other entries may hold it too, it stays. Read it all: the rest's minimum.
    if (line[best]!.round > bound) this.#minRound[cls] = next;
    const e = best === 0 ? line.shift()! : line.splice(best, 1)[0]!;
    if (e.round > this.#served[cls]!) this.#served[cls] = e.round;
    this.#forget(e);
    return e;
  }

  /** Take a waiting entry out (its client left). False if it was not queued. */
  remove(entry: QueueEntry<T>): boolean {
    const line = this.#lines[entry.cls]!;
    const i = line.lastIndexOf(entry);
    if (i === -1) return false;
    line.splice(i, 1);
    this.#forget(entry);
    return true;
  }

  /** Move every entry whose deadline has passed into `out`, marked Timeout. */
  expire(nowMs: number, out: QueueEntry<T>[]): void {
    for (const line of this.#lines) {
      // Deadlines grow along a line; after a reload changed a timeout they may not, and the later
      // entries are caught at the next expiry or when they reach the head.
      while (line.length > 0 && line[0]!.deadlineMs <= nowMs) {
        const e = line.shift()!;
        this.#forget(e);
        e.outcome = Outcome.Timeout;
        out.push(e);
      }
    }
  }

  /** The earliest deadline among line heads (Infinity when empty). */
  nextDeadlineMs(): number {
    let next = Infinity;
    for (const line of this.#lines) if (line.length > 0 && line[0]!.deadlineMs < next) next = line[0]!.deadlineMs;
    return next;
  }

  #forget(e: QueueEntry<T>): void {
    this.size--;
    const keys = this.#keys[e.cls]!;
    const n = (keys.get(e.key) ?? 1) - 1;
    if (n <= 0) {
      keys.delete(e.key);
      this.#lastRound[e.cls]!.delete(e.key);
    } else keys.set(e.key, n);
    if (this.#lines[e.cls]!.length === 0) this.#served[e.cls] = 0;
  }

  /** Distinct client keys tracked now (bounded by size). */
  trackedKeys(): number {
    let n = 0;
    for (const k of this.#keys) n += k.size;
    return n;
  }
}
