// One upstream's admission gate: its concurrency limiter and the priority queue in front of it,
// plus the one timer that sheds queued requests at their deadline. Compiled into the Runtime and
// kept across reloads for an upstream whose name and servers did not change (src/pipeline/runtime.ts).
// One gate per upstream, however many servers: its limit is the per-server limit times the servers in
// service, and the server is picked after admission, when the request is sent (pipeline/forward.ts).
import { systemClock, type Clock } from '../core/clock.ts';
import { eventLoopStalls, type StallSource } from './stall.ts';
import { ConcurrencyLimiter, type LimiterSettings } from './limiter.ts';
import { TRAFFIC_CLASSES } from '../core/traffic.ts';
import { AdmissionQueue, Outcome, type QueueEntry, type QueueSettings, type RefusalReason } from './queue.ts';

/** A queued request: `T` is the request record (the pipeline's RequestContext); the gate never looks inside. */
export type AdmissionEntry<T extends SlotHolder = SlotHolder> = QueueEntry<T>;

/** What a queued request must carry: the gate hands it the slot when it is let in. */
export interface SlotHolder {
  admissionGate: object | null;
  admissionClass: number;
}

export class AdmissionGate<T extends SlotHolder = SlotHolder> {
  readonly upstream: string;
  /** The upstream's server URLs, space-separated: the gate is kept across reloads while they hold. */
  readonly url: string;
  readonly limiter: ConcurrencyLimiter;
  readonly queue: AdmissionQueue<T>;
  /** Slots held now per class (TRAFFIC_CLASSES order): what `admission.reservePercent` is measured against. */
  readonly inFlightByClass = new Int32Array(TRAFFIC_CLASSES.length);
  /**
   * Set while the attack level is `under_attack` (by the gateway, each level tick): guaranteed shares
   * are then suspended and the strict class order applies, so a flood aimed at a class with a share
   * (cold parcels on `cacheable`) cannot use it to hold slots ahead of approvals and the vault.
   */
  sharesSuspended = false;
  /**
   * Rempart's own event-loop stalls (stall.ts), subtracted from latency samples so a busy gateway does
   * not read itself as a congested origin. Null on a test clock, whose times are not the loop's.
   */
  readonly stalls: StallSource | null;
  readonly #clock: Clock;
  readonly #settled: AdmissionEntry<T>[] = [];
  #settling = false;
  #timer: NodeJS.Timeout | null = null;
  #timerAtMs = Infinity;

  constructor(upstream: string, url: string, limiter: LimiterSettings, queue: QueueSettings, clock: Clock) {
    this.upstream = upstream;
    this.url = url;
    this.limiter = new ConcurrencyLimiter(limiter, clock);
    this.queue = new AdmissionQueue(queue);
    this.#clock = clock;
    this.stalls = clock === systemClock ? eventLoopStalls() : null;
  }

  get clock(): Clock {
    return this.#clock;
  }

  reconfigure(limiter: LimiterSettings, queue: QueueSettings): void {
    this.limiter.reconfigure(limiter);
    this.queue.reconfigure(queue);
    this.drain();
  }

  /** The upstream's servers in service changed: the limit is per server (limiter.ts), so it follows. */
  setServers(n: number): void {
    const before = this.limiter.limit;
    this.limiter.setScale(n);
    if (this.limiter.limit > before) this.drain();
  }

  /** Take a slot for class `cls` at once if nobody waits and one is free (the fast path; also background cache refreshes, which never queue). */
  tryAcquire(cls: number): boolean {
    if (this.queue.size !== 0 || !this.limiter.tryAcquire()) return false;
    this.inFlightByClass[cls]!++;
    return true;
  }

  /**
   * Queue a request that found no free slot. Null when it waits (its promise settles later), or why it
   * was refused. Entries evicted to make room are settled here.
   */
  enqueue(entry: AdmissionEntry<T>): RefusalReason | null {
    const evicted = this.#settled;
    const refused = this.queue.push(entry, evicted);
    this.#settle(evicted);
    if (refused === null) this.#arm();
    return refused;
  }

  /** The request's client left while it waited: free its place. */
  cancel(entry: AdmissionEntry<T>): void {
    if (!this.queue.remove(entry)) return;
    entry.outcome = Outcome.Cancelled;
    entry.resolve?.(entry);
  }

  /**
   * A request of class `cls` that held a slot is done; `sample` says what its exchange (of the route
   * with `rttSlot`) taught the limiter: `rttMs`, whose last `stalledMs` Rempart's own loop was busy (stall.ts).
   */
  release(cls: number, sample: 'success' | 'drop' | 'none', rttMs: number, rttSlot: number, stalledMs = 0): void {
    if (sample === 'success') this.limiter.onSuccess(rttMs, rttSlot, stalledMs);
    else if (sample === 'drop') this.limiter.onDrop(rttMs);
    this.limiter.release();
    if (this.inFlightByClass[cls]! > 0) this.inFlightByClass[cls]!--;
    this.drain();
  }

  /** Shed what expired, then hand free slots to the queue: reserved shares first, then highest class first. */
  drain(): void {
    const now = this.#clock.now();
    const out = this.#settled;
    this.queue.expire(now, out);
    while (this.queue.size > 0 && this.limiter.tryAcquire()) {
      const e = this.queue.shift(this.sharesSuspended ? undefined : this.inFlightByClass, this.limiter.limit)!;
      if (e.deadlineMs <= now) {
        // Waited past its deadline: shed, never served late.
        this.limiter.release();
        e.outcome = Outcome.Timeout;
      } else {
        e.owner.admissionGate = this; // the slot is the request's now; its onDone gives it back
        e.owner.admissionClass = e.cls;
        this.inFlightByClass[e.cls]!++;
        e.outcome = Outcome.Admitted;
      }
      out.push(e);
    }
    this.#settle(out);
    this.#arm();
  }

  /**
   * Settle what drain/enqueue collected. Re-entered (a settle that answers at once, whose onDone gives
   * its slot back and drains again), the inner call only appends: this loop reads the length each time
   * and settles those too, and the array is emptied once, here. Else the inner call would settle the
   * outer's entries twice and truncate the array under it: requests never settled, slots leaked.
   */
  #settle(entries: AdmissionEntry<T>[]): void {
    if (this.#settling) return;
    this.#settling = true;
    try {
      for (let i = 0; i < entries.length; i++) entries[i]!.resolve?.(entries[i]!);
    } finally {
      entries.length = 0;
      this.#settling = false;
    }
  }

  /** Keep one timer armed for the earliest deadline in the queue. */
  #arm(): void {
    const next = this.queue.nextDeadlineMs();
    if (next === Infinity) {
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
      this.#timerAtMs = Infinity;
      return;
    }
    if (this.#timer !== null && this.#timerAtMs <= next) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAtMs = next;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, next - this.#clock.now()) + 1);
    this.#timer.unref();
  }

  readonly #onTimer = (): void => {
    this.#timer = null;
    this.#timerAtMs = Infinity;
    this.drain();
  };
}
