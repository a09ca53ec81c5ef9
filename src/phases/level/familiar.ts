// The prefixes seen while traffic was calm, as two generations of a Bloom filter: bounded memory
// (capacity × ~10 bits per generation) whatever the number of clients, no false "never seen" for a
// prefix inserted in the last two generations, about 1 % false "seen" at capacity. A generation
// rotates when it is full or older than half the retention, so a prefix is remembered between
// retention/2 and retention after its last calm visit ("long-run familiarity": returning customers
// of last week are not new in today's flash crowd).
//
//   check:  hash(prefix) ──▶ 4 bit positions ──▶ all set in `current`  or  all set in `previous`
//   insert: into `current` only; rotate: previous ← current, current ← empty

/** Two 32-bit FNV-1a variants over the string, without allocating; `h2` is forced odd for double hashing. */
export function hashPair(s: string, out: Uint32Array): void {
  let h1 = 0x811c9dc5;
  let h2 = 0x01234567;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  out[0] = h1 >>> 0;
  out[1] = (h2 | 1) >>> 0;
}

/**
 * hashPair's two FNV-1a variants over `s` from index `from`, started from `out` (a hash of what
 * precedes): the address's hash from its prefix's, without hashing the prefix's characters again.
 */
export function hashPairFrom(s: string, from: number, out: Uint32Array): void {
  let h1 = out[0]!;
  let h2 = out[1]!;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  out[0] = h1 >>> 0;
  out[1] = (h2 | 1) >>> 0;
}

/**
 * hashPair(s) into `out`, and into `net` the same hashes of `s` up to its third `:` (of an IPv6 /64 prefix
 * `a:b:c:d::/64`, its /48 `a:b:c`), or of all of `s` when it holds fewer (an IPv4 /24 `a.b.c` is its own
 * network): a client prefix's hashes and its network's in one pass, without allocating.
 */
export function hashPrefix(s: string, out: Uint32Array, net: Uint32Array): void {
  let h1 = 0x811c9dc5;
  let h2 = 0x01234567;
  let colons = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 58 && ++colons === 3) {
      net[0] = h1 >>> 0;
      net[1] = (h2 | 1) >>> 0;
    }
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  out[0] = h1 >>> 0;
  out[1] = (h2 | 1) >>> 0;
  if (colons < 3) {
    net[0] = out[0]!;
    net[1] = out[1]!;
  }
}

const HASHES = 4;

class Bloom {
  readonly bits: Uint32Array;
  readonly mask: number;
  inserted = 0;
  createdMs: number;
  constructor(bitCount: number, nowMs: number) {
    this.bits = new Uint32Array(bitCount >>> 5);
    this.mask = bitCount - 1;
    this.createdMs = nowMs;
  }
  has(h1: number, h2: number): boolean {
    for (let i = 0; i < HASHES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
  add(h1: number, h2: number): void {
    let fresh = false;
    for (let i = 0; i < HASHES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      const word = bit >>> 5;
      const m = 1 << (bit & 31);
      if ((this.bits[word]! & m) === 0) {
        fresh = true;
        this.bits[word]! |= m;
      }
    }
    if (fresh) this.inserted++;
  }
}

/** One generation as the state file keeps it (src/app/state-file.ts). */
export interface BloomState {
  /** The bit words' bytes (this machine's byte order). */
  readonly bits: Uint8Array;
  readonly inserted: number;
  /** Wall-clock ms the generation started. */
  readonly createdWallMs: number;
}

export interface FamiliarState {
  readonly bitCount: number;
  readonly current: BloomState;
  readonly previous: BloomState;
}

export class FamiliarPrefixes {
  readonly capacity: number;
  readonly retentionMs: number;
  readonly #bitCount: number;
  #current: Bloom;
  #previous: Bloom;

  constructor(capacity: number, retentionMs: number, nowMs: number) {
    this.capacity = capacity;
    this.retentionMs = retentionMs;
    // ~10 bits per element and 4 hashes: ~1.2 % false positives at capacity. A power of two for masking.
    this.#bitCount = 2 ** Math.max(10, Math.ceil(Math.log2(capacity * 10)));
    this.#current = new Bloom(this.#bitCount, nowMs);
    this.#previous = new Bloom(this.#bitCount, nowMs);
  }

  /** Bytes held (both generations). */
  get bytes(): number {
    return (this.#bitCount / 8) * 2;
  }

  has(h1: number, h2: number): boolean {
    return this.#current.has(h1, h2) || this.#previous.has(h1, h2);
  }

  add(h1: number, h2: number, nowMs: number): void {
    if (this.#current.inserted >= this.capacity || nowMs - this.#current.createdMs >= this.retentionMs / 2) {
      this.#previous = this.#current;
      this.#current = new Bloom(this.#bitCount, nowMs);
    }
    this.#current.add(h1, h2);
  }

  /**
   * Both generations, for the state file (copies: the filter goes on learning); `nowMs` (monotonic)
   * and `wallMs` are now.
   */
  export(nowMs: number, wallMs: number): FamiliarState {
    const gen = (b: Bloom): BloomState => ({
      bits: new Uint8Array(b.bits.buffer.slice(0)),
      inserted: b.inserted,
      createdWallMs: wallMs - (nowMs - b.createdMs),
    });
    return { bitCount: this.#bitCount, current: gen(this.#current), previous: gen(this.#previous) };
  }

  /**
   * Put back generations the state file kept (start-up). False, and nothing changed, when they do not
   * fit (familiarPrefixes.capacity changed since: another filter size).
   */
  restore(state: FamiliarState, nowMs: number, wallMs: number): boolean {
    const bytes = this.#bitCount / 8;
    const fits =
      state.bitCount === this.#bitCount &&
      state.current.bits.byteLength === bytes &&
      state.previous.bits.byteLength === bytes;
    if (!fits) return false;
    const gen = (g: BloomState): Bloom => {
      const b = new Bloom(this.#bitCount, nowMs - Math.max(0, wallMs - g.createdWallMs));
      new Uint8Array(b.bits.buffer).set(g.bits);
      b.inserted = Math.max(0, g.inserted | 0);
      return b;
    };
    this.#current = gen(state.current);
    this.#previous = gen(state.previous);
    return true;
  }

  /** Distinct prefixes inserted in the current and previous generations (approximate). */
  get size(): number {
    return this.#current.inserted + this.#previous.inserted;
  }
}
