// The in-memory store: the embedded default. One node (or several gateways in one process, as the
// tests run them) shares state through one object; nothing leaves the process. It follows the same
// contract as the Redis store (test/store-contract.test.ts), so code above it cannot tell them apart.
import { systemClock, type Clock } from '../core/clock.ts';
import { ownCopy } from '../core/own-copy.ts';
import { gcraLease, type ClusterStore, type LeaseGrant, type LeaseRequest, type TableEntry } from './types.ts';

export interface MemoryStoreOptions {
  clock?: Clock;
  /** Shared buckets kept at most; past it, full (forgettable) buckets go first, then the oldest. */
  maxBuckets?: number;
}

interface Row {
  value: string;
  expiresAt: number;
}

const SWEEP_STEPS = 64;

export class MemoryStore implements ClusterStore {
  readonly kind = 'memory' as const;
  readonly healthy = true;
  operations = 0;
  readonly #clock: Clock;
  readonly #maxBuckets: number;
  readonly #buckets = new Map<string, number>();
  readonly #tables = new Map<string, Map<string, Row>>();
  readonly #versions = new Map<string, number>();
  readonly #channels = new Map<string, Set<(message: string) => void>>();
  #closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#maxBuckets = options.maxBuckets ?? 1_000_000;
  }

  onHealth(): void {
    // Always healthy: nothing to report.
  }

  async lease(requests: readonly LeaseRequest[]): Promise<LeaseGrant[]> {
    const now = this.#clock.now();
    const out: LeaseGrant[] = [];
    for (const r of requests) {
      this.operations++;
      const tat = this.#buckets.get(r.bucket) ?? now;
      const g = gcraLease(tat, now, r);
      if (g.granted > 0) {
        if (this.#buckets.has(r.bucket)) this.#buckets.set(r.bucket, g.tat);
        else {
          if (this.#buckets.size >= this.#maxBuckets) this.#evictBucket(now);
          this.#buckets.set(ownCopy(r.bucket), g.tat); // not a view into a request header
        }
      }
      out.push({ granted: g.granted, waitMs: g.waitMs });
    }
    return out;
  }

  async tablePut(table: string, field: string, value: string, ttlMs: number, maxEntries: number): Promise<number> {
    this.operations++;
    let t = this.#tables.get(table);
    if (t === undefined) this.#tables.set(table, (t = new Map()));
    const now = this.#clock.now();
    t.delete(field);
    t.set(field, { value, expiresAt: now + ttlMs });
    if (t.size > maxEntries) {
      this.#expire(t, now);
      while (t.size > maxEntries) {
        // The one expiring soonest goes (as the Redis store's sorted set does).
        let victim = '';
        let soonest = Infinity;
        for (const [f, row] of t) if (row.expiresAt < soonest) (soonest = row.expiresAt), (victim = f);
        t.delete(victim);
      }
    }
    return this.#bump(table);
  }

  async tableDelete(table: string, field: string): Promise<number> {
    this.operations++;
    this.#tables.get(table)?.delete(field);
    return this.#bump(table);
  }

  async tableEntries(table: string): Promise<{ version: number; entries: TableEntry[] }> {
    this.operations++;
    const version = this.#versions.get(table) ?? 0;
    const t = this.#tables.get(table);
    if (t === undefined) return { version, entries: [] };
    const now = this.#clock.now();
    this.#expire(t, now);
    return {
      version,
      entries: [...t].map(([field, row]) => ({ field, value: row.value, ttlMs: Math.ceil(row.expiresAt - now) })),
    };
  }

  async tableVersion(table: string): Promise<number> {
    this.operations++;
    return this.#versions.get(table) ?? 0;
  }

  #bump(table: string): number {
    const v = (this.#versions.get(table) ?? 0) + 1;
    this.#versions.set(table, v);
    return v;
  }

  async publish(channel: string, message: string): Promise<void> {
    this.operations++;
    const subs = this.#channels.get(channel);
    if (subs === undefined) return;
    // Delivered later, never inside the publisher's call stack (as over a network).
    for (const fn of subs) setImmediate(() => this.#closed || fn(message));
  }

  async subscribe(channel: string, onMessage: (message: string) => void): Promise<void> {
    let subs = this.#channels.get(channel);
    if (subs === undefined) this.#channels.set(channel, (subs = new Set()));
    subs.add(onMessage);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#channels.clear();
  }

  #expire(t: Map<string, Row>, now: number): void {
    for (const [f, row] of t) if (row.expiresAt <= now) t.delete(f);
  }

  #evictBucket(now: number): void {
    let i = 0;
    for (const [k, tat] of this.#buckets) {
      if (tat <= now || ++i >= SWEEP_STEPS) {
        this.#buckets.delete(k);
        return;
      }
    }
  }
}
