// Global rate limits without a store round trip per request: each node leases tokens from a shared
// GCRA bucket per (rule, key) in blocks, and spends them locally (the way quota systems such as
// Doorman or Envoy's quota-based limits do). The request path only reads and decrements a local
// number; a lease is asked (batched, pipelined) when a key's tokens run low.
//
//   request ─▶ tokens > 0 ? ── yes ─▶ spend one (ask the next block when ≤ half a block is left)
//                  │ no
//                  ├─ lease in flight and debt < credit ─▶ admit on credit (repaid from the next grant)
//                  └─ otherwise ─▶ refuse (ask again once the store said tokens would be back)
//
// A key over its limit does not poll: the store reserves the next half block for the node that asks
// (usable once they conform, `usableAt`), so every lease carries at least half a block of tokens.
//
// Accuracy: the store never grants more than the bucket holds (rate × t + burst), so the total
// admitted across nodes is the granted total, minus tokens left unused when a lease expires, plus
// outstanding credit (≤ credit per key per node, repaid). Store operations per request ≈ 1 / block.
// When the store is unusable, check() returns null: the caller decides with its local limiter
// (`failMode: open`) — or refuses once leased tokens run out (`closed`).
import { ownCopy } from '../core/own-copy.ts';
import type { ClusterStore, LeaseGrant, LeaseRequest } from './types.ts';

export interface LeaseSettings {
  leaseMs: number;
  leaseTtlMs: number;
  failMode: 'open' | 'closed';
}

interface Lease {
  tokens: number;
  /** Tokens of a reservation, added to `tokens` at usableAt. */
  reserved: number;
  /** Monotonic ms from which the reserved tokens may be spent. */
  usableAt: number;
  /** Monotonic ms after which unused tokens are dropped. */
  expiresAt: number;
  debt: number;
  pending: boolean;
  /** The store said no tokens before this (monotonic ms): do not ask again sooner. */
  waitUntil: number;
}

interface Pending {
  readonly limiter: GlobalLimiter;
  readonly key: string;
  readonly lease: Lease;
  readonly req: LeaseRequest;
}

/** Batches lease requests: everything asked within one turn of the event loop goes in one pipelined call. */
export class LeaseBroker {
  readonly store: ClusterStore;
  readonly #settings: () => LeaseSettings;
  readonly #now: () => number;
  #queue: Pending[] = [];
  #scheduled = false;
  /** Requests decided by the local limiter because the store was unusable (a metric). */
  localDecisions = 0;
  /** Leases asked (store operations made for rate limits). */
  leasesAsked = 0;

  constructor(store: ClusterStore, settings: () => LeaseSettings, now: () => number) {
    this.store = store;
    this.#settings = settings;
    this.#now = now;
  }

  get settings(): LeaseSettings {
    return this.#settings();
  }

  now(): number {
    return this.#now();
  }

  /** Queue a lease; sent at the end of this turn with the others. */
  ask(p: Pending): void {
    p.lease.pending = true;
    this.#queue.push(p);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    this.leasesAsked += batch.length;
    this.store.lease(batch.map((p) => p.req)).then(
      (grants) => {
        const now = this.#now();
        for (let i = 0; i < batch.length; i++) batch[i]!.limiter.granted(batch[i]!.lease, grants[i]!, now);
      },
      () => {
        // The store failed: the keys fall back to local decisions (the store reports its health).
        for (const p of batch) p.lease.pending = false;
      },
    );
  }
}

/** One `scope: global` rule's view of its shared buckets. Bounded: at most maxKeys leases held. */
export class GlobalLimiter {
  readonly ruleId: string;
  readonly intervalMs: number;
  readonly burst: number;
  readonly #broker: LeaseBroker;
  readonly #maxKeys: number;
  readonly #leases = new Map<string, Lease>();
  /** When check() refused: ms until it may admit again (for Retry-After). */
  waitMs = 0;

  constructor(broker: LeaseBroker, ruleId: string, ratePerSec: number, burst: number, maxKeys: number) {
    this.#broker = broker;
    this.ruleId = ruleId;
    this.intervalMs = 1000 / ratePerSec;
    this.burst = burst;
    this.#maxKeys = maxKeys;
  }

  /** Tokens per lease: leaseMs worth of the rate, at least 1, at most the burst. */
  get block(): number {
    return Math.max(1, Math.min(this.burst, Math.ceil(this.#broker.settings.leaseMs / this.intervalMs)));
  }

  /** Leases held now (tests, memory checks). */
  get size(): number {
    return this.#leases.size;
  }

  /** Whether `key` may pass now; null when the store is unusable and the local limiter must decide. */
  check(key: string, now: number): boolean | null {
    const broker = this.#broker;
    const healthy = broker.store.healthy;
    if (!healthy && broker.settings.failMode === 'open') {
      broker.localDecisions++;
      return null;
    }
    let l = this.#leases.get(key);
    if (l === undefined) {
      if (this.#leases.size >= this.#maxKeys) {
        // The oldest lease goes: its unused tokens are lost (stricter), its debt forgiven (at most `credit`).
        const first = this.#leases.keys().next();
        if (first.done !== true) this.#leases.delete(first.value);
      }
      l = { tokens: 0, reserved: 0, usableAt: 0, expiresAt: 0, debt: 0, pending: false, waitUntil: 0 };
      this.#leases.set(ownCopy(key), l); // not a view into the request's Cookie header
    } else {
      if (l.reserved > 0 && now >= l.usableAt) {
        l.tokens += l.reserved;
        l.reserved = 0;
        l.expiresAt = l.usableAt + this.#broker.settings.leaseTtlMs;
      }
      if (l.tokens > 0 && now >= l.expiresAt) l.tokens = 0;
    }
    const block = this.block;
    if (l.tokens > 0) {
      l.tokens--;
      if (healthy && !l.pending && (l.tokens + l.reserved) * 2 <= block) this.#ask(key, l, block);
      return true;
    }
    if (l.reserved > 0) {
      // Reserved, not yet due: refused, and nothing to ask (the reservation is the next block).
      this.waitMs = l.usableAt - now;
      return false;
    }
    if (!healthy) {
      this.waitMs = 1000;
      return false; // failMode closed, nothing leased left
    }
    if (!l.pending && now >= l.waitUntil) this.#ask(key, l, block);
    // Credit while a lease is in flight: a key's first request is not refused for want of a round trip.
    if (l.pending && l.debt < Math.max(1, block >> 1)) {
      l.debt++;
      return true;
    }
    this.waitMs = Math.max(1, l.waitUntil - now);
    return false;
  }

  #ask(key: string, l: Lease, block: number): void {
    const want = block + l.debt;
    const maxDelayMs = this.#broker.settings.leaseTtlMs >> 1;
    this.#broker.ask({
      limiter: this,
      key,
      lease: l,
      req: {
        bucket: `${this.ruleId}:${key}`,
        intervalMs: this.intervalMs,
        burst: this.burst,
        want,
        minGrant: Math.min(want, Math.max(1, block >> 1)),
        maxDelayMs,
      },
    });
  }

  /** A grant arrived for `l` (called by the broker). */
  granted(l: Lease, g: LeaseGrant, now: number): void {
    l.pending = false;
    let n = g.granted;
    if (n === 0) {
      l.waitUntil = now + g.waitMs;
      return;
    }
    const paid = Math.min(n, l.debt);
    l.debt -= paid;
    n -= paid;
    if (g.waitMs > 0) {
      l.reserved += n;
      l.usableAt = now + g.waitMs;
    } else {
      l.tokens += n;
      l.expiresAt = now + this.#broker.settings.leaseTtlMs;
    }
  }

  /** Forget every lease (tests). */
  clear(): void {
    this.#leases.clear();
  }
}
