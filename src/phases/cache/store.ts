// The in-memory response store: an LRU over keys, bounded by total bytes and per object, each key
// holding a few Vary variants. Memory is what an attacker aims at, so every bound is hard.
//
//   Map (insertion order = recency; a hit deletes and re-sets its key)
//   oldest ─▶ "GET a.org /track/A" ─▶ [variant gzip, variant br]   ◀─ evicted first
//             "GET a.org /track/B" ─▶ [variant *]
//   newest ─▶ "GET a.org /track/C" ─▶ [variant gzip]
//
// A variant is chosen by the request's values of the header names the response's Vary listed.
import type { IncomingHttpHeaders } from 'node:http';
import { varyValue } from './vary.ts';

export { varyValuesOf } from './vary.ts';

export interface CacheEntry {
  readonly status: number;
  /** Flat [name, value, …] pairs, without hop-by-hop fields and Set-Cookie. */
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** Clock times in ms. */
  readonly storedAt: number;
  readonly freshUntil: number;
  /** Until then a stale copy is served while one background request refreshes it. */
  readonly staleWhileRevalidateUntil: number;
  /** Until then a stale copy stands in for an upstream failure; the entry is dropped after it. */
  readonly staleUntil: number;
  /** Lower-cased, sorted header names from Vary, and the request's values for them when stored. */
  readonly varyNames: readonly string[];
  readonly varyValues: readonly string[];
  /** The origin said public or s-maxage: it may answer requests that carry Authorization. */
  readonly isPublic: boolean;
  /** Bytes charged to the store: body, headers, key, Vary names and values, and a fixed overhead. */
  readonly sizeBytes: number;
  /** A background refresh for it is running (stale-while-revalidate fires once). */
  refreshing: boolean;
}

/**
 * Fixed per-entry charge for the objects around the bytes: the entry, its arrays, the Buffer view, the
 * Map slot. Measured with bench/cache-vary.ts: a 7-byte body with five header pairs held about 1.5 KB
 * of heap, so tiny entries are where an under-charge multiplies (256 here let the heap reach 4x maxBytes).
 */
const ENTRY_OVERHEAD_BYTES = 1024;
/** Per string kept (header names and values, Vary names and values): V8's header and rounding. */
const STRING_OVERHEAD_BYTES = 32;

export interface StoreLimits {
  maxBytes: number;
  maxObjectBytes: number;
  /** Most variants kept per key; the oldest goes first. */
  maxVariants: number;
}

/**
 * Charge for an entry of this shape: every string it keeps, the request's Vary values included (they
 * are the client's bytes; see vary.ts for their bound).
 */
export function entrySize(
  key: string,
  headers: readonly string[],
  body: Buffer,
  varyNames: readonly string[] = [],
  varyValues: readonly string[] = [],
): number {
  let n = ENTRY_OVERHEAD_BYTES + STRING_OVERHEAD_BYTES + key.length + body.length;
  for (const h of headers) n += STRING_OVERHEAD_BYTES + h.length;
  for (const v of varyNames) n += STRING_OVERHEAD_BYTES + v.length;
  for (const v of varyValues) n += STRING_OVERHEAD_BYTES + v.length;
  return n;
}

export class CacheStore {
  readonly #map = new Map<string, CacheEntry[]>();
  #limits: StoreLimits;
  #bytes = 0;
  #entries = 0;
  /** Entries dropped to make room (not counting replacements and expiries). */
  evictions = 0;

  constructor(limits: StoreLimits) {
    this.#limits = { ...limits };
  }

  get bytes(): number {
    return this.#bytes;
  }

  get entries(): number {
    return this.#entries;
  }

  get limits(): Readonly<StoreLimits> {
    return this.#limits;
  }

  /** New limits (a reload); shrinking evicts at once. */
  setLimits(limits: StoreLimits): void {
    this.#limits = { ...limits };
    this.#evictUntil(this.#limits.maxBytes);
  }

  /** The variant matching these request headers, and mark the key recently used; undefined if none. */
  get(key: string, headers: IncomingHttpHeaders): CacheEntry | undefined {
    const variants = this.#map.get(key);
    if (variants === undefined) return undefined;
    for (let i = 0; i < variants.length; i++) {
      const e = variants[i]!;
      if (!matches(e, headers)) continue;
      this.#map.delete(key);
      this.#map.set(key, variants);
      return e;
    }
    return undefined;
  }

  /** Store an entry, replacing the variant with the same Vary values. False when it is too large. */
  put(key: string, entry: CacheEntry): boolean {
    if (entry.body.length > this.#limits.maxObjectBytes || entry.sizeBytes > this.#limits.maxBytes) return false;
    let variants = this.#map.get(key);
    if (variants === undefined) {
      variants = [];
    } else {
      this.#map.delete(key);
      for (let i = variants.length - 1; i >= 0; i--) {
        const v = variants[i]!;
        if (sameVariant(v, entry)) this.#drop(variants, i);
      }
      while (variants.length >= this.#limits.maxVariants) {
        this.#drop(variants, 0);
        this.evictions++;
      }
    }
    variants.push(entry);
    this.#bytes += entry.sizeBytes;
    this.#entries++;
    this.#map.set(key, variants);
    this.#evictUntil(this.#limits.maxBytes);
    return true;
  }

  /** Remove one variant (e.g. past its stale window). */
  delete(key: string, entry: CacheEntry): void {
    const variants = this.#map.get(key);
    if (variants === undefined) return;
    const i = variants.indexOf(entry);
    if (i === -1) return;
    this.#drop(variants, i);
    if (variants.length === 0) this.#map.delete(key);
  }

  /** Variants held for a key (tests and the admin view). */
  variantCount(key: string): number {
    return this.#map.get(key)?.length ?? 0;
  }

  #drop(variants: CacheEntry[], i: number): void {
    const [e] = variants.splice(i, 1);
    this.#bytes -= e!.sizeBytes;
    this.#entries--;
  }

  #evictUntil(maxBytes: number): void {
    while (this.#bytes > maxBytes) {
      const oldest = this.#map.entries().next();
      if (oldest.done === true) break;
      const [key, variants] = oldest.value;
      this.evictions += variants.length;
      while (variants.length > 0) this.#drop(variants, 0);
      this.#map.delete(key);
    }
  }
}

function matches(e: CacheEntry, headers: IncomingHttpHeaders): boolean {
  const names = e.varyNames;
  for (let i = 0; i < names.length; i++) if (varyValue(names[i]!, headers) !== e.varyValues[i]) return false;
  return true;
}

function sameVariant(a: CacheEntry, b: CacheEntry): boolean {
  if (a.varyNames.length !== b.varyNames.length) return false;
  for (let i = 0; i < a.varyNames.length; i++)
    if (a.varyNames[i] !== b.varyNames[i] || a.varyValues[i] !== b.varyValues[i]) return false;
  return true;
}
