// The cluster store: the few shared-state primitives the defence needs across nodes, behind one
// interface with two implementations that pass one contract suite (test/store-contract.test.ts):
// memory (the embedded default: one node needs nothing but Node.js) and Valkey/Redis (many nodes).
//
// Nothing here is called per request. The hot path decides from local state; the store is touched
// by batches (token leases), timers (resync, level heartbeat) and pub/sub (bans, overrides).
// Every method may reject (store gone, slow): callers treat a rejection as "decide locally".

/** One request for tokens from a shared GCRA bucket (docs/cluster.md, "Global rate limits"). */
export interface LeaseRequest {
  /** Bucket name (rule id and client key), without the store's key prefix. */
  readonly bucket: string;
  /** 1000 / ratePerSec: ms between two tokens. */
  readonly intervalMs: number;
  /** The bucket's depth in tokens (the rule's burst). */
  readonly burst: number;
  /** Tokens wanted. */
  readonly want: number;
  /** Fewer available than this: reserve minGrant tokens in the future (within maxDelayMs), else grant nothing. Keeps leases large, so store operations per request stay small. */
  readonly minGrant: number;
  /** Longest a reservation may wait before its tokens are usable (0: no reservations). */
  readonly maxDelayMs: number;
}

export interface LeaseGrant {
  /** Tokens granted (0 ≤ granted ≤ want), already taken from the shared bucket. */
  readonly granted: number;
  /** Granted: ms until the tokens may be spent (0 at once; > 0 for a reservation). Not granted: ms until minGrant tokens are available. */
  readonly waitMs: number;
}

/** An entry of a shared table, with the time it has left (computed on the store's clock). */
export interface TableEntry {
  readonly field: string;
  readonly value: string;
  readonly ttlMs: number;
}

export type StoreKind = 'memory' | 'redis';

export interface ClusterStore {
  readonly kind: StoreKind;
  /** False while the store is unreachable or failing; changes are reported through onHealth. */
  readonly healthy: boolean;
  /** Commands sent to the store so far (the figure "store operations per request" is made from). */
  readonly operations: number;
  /** Called on each change of `healthy` (true: the store is back, callers reconcile). */
  onHealth(fn: (healthy: boolean) => void): void;
  /**
   * Called when the subscription starts failing (`failing`, with the store's reason) and when it works
   * again: meanwhile messages do not arrive and nodes converge by resync only. Stores whose
   * subscription cannot fail need not implement it.
   */
  onSubscribeTrouble?(fn: (failing: boolean, reason: string) => void): void;

  /** Take tokens from shared buckets, one answer per request, in order (one pipelined round trip). */
  lease(requests: readonly LeaseRequest[]): Promise<LeaseGrant[]>;

  /**
   * Set `field` of `table` to `value` for `ttlMs`. A table holds at most `maxEntries` fields: past it,
   * those expiring soonest go. Each put and delete bumps the table's version (returned), so a node
   * that saw every change since its last full read can skip the next one (tableVersion).
   */
  tablePut(table: string, field: string, value: string, ttlMs: number, maxEntries: number): Promise<number>;
  tableDelete(table: string, field: string): Promise<number>;
  /** The live entries of `table` (expired ones are dropped on the way) and its version. */
  tableEntries(table: string): Promise<{ version: number; entries: TableEntry[] }>;
  /** The table's version: puts and deletes made so far (0 for a table never written). */
  tableVersion(table: string): Promise<number>;

  /** Send `message` to every subscriber of `channel`, on every node (this one included). */
  publish(channel: string, message: string): Promise<void>;
  /** Receive the messages of `channel` (re-subscribed by the store after a reconnection). */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<void>;

  close(): Promise<void>;
}

/**
 * GCRA over a bucket of `burst` tokens refilled every `intervalMs`, taking up to `want` at once: the
 * arithmetic both stores share (the Redis side runs the same lines in Lua, src/store/redis.ts).
 * `tat` is the bucket's theoretical arrival time (ms); returns the grant and the new tat. A node that
 * found the bucket empty reserves the next tokens instead of polling for them: every lease then yields
 * at least minGrant tokens, even for a key far over its limit.
 */
export function gcraLease(tat: number, now: number, r: LeaseRequest): { granted: number; waitMs: number; tat: number } {
  const T = r.intervalMs;
  const tau = T * r.burst;
  const base = tat > now ? tat : now;
  // Tokens available: the largest n with base + n·T − now ≤ tau.
  const avail = Math.floor((tau - (base - now)) / T + 1e-9);
  const n = Math.min(r.want, avail);
  const min = Math.max(1, Math.min(r.minGrant, r.want));
  if (n >= min) return { granted: n, waitMs: 0, tat: base + n * T };
  // Not enough now: reserve `min` tokens, usable once the last of them conforms (the bucket's TAT
  // moves past them, so nobody else can have them), unless that is too far ahead.
  const delay = Math.max(1, Math.ceil(base + min * T - tau - now));
  if (delay <= r.maxDelayMs) return { granted: min, waitMs: delay, tat: base + min * T };
  return { granted: 0, waitMs: delay, tat };
}
