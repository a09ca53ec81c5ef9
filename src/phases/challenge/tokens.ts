// The challenge's three signed tokens, all `v1.<kid>.…fields….<mac>`, the MAC an HMAC-SHA256 (full
// 32 bytes, base64url) over a kind tag and the fields, compared in constant time. Nothing is stored
// per client: a token says what it is for and until when, and the key ring says whether we wrote it.
//
//   challenge  v1.<kid>.<bits>.<issuedSec>.<expiresSec>.<rand>.<binding>.<mac>
//   solution   <challenge>.<nonce>       valid when SHA-256(solution) starts with `bits` zero bits
//   delay      v1.<kid>.<notBeforeSec>.<expiresSec>.<rand>.<binding>.<mac>     (the no-JS door)
//   clearance  v1.<kid>.<expiresSec>.<binding>.<mac>
//
// binding = base64url(SHA-256(clientPrefix + "\n" + User-Agent))[0..12): a token is good only for the
// client network and browser it was given to. Token values and keys are never logged.
import { createHmac, createSecretKey, hash, randomFillSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { KeyRing } from './keys.ts';
import { binding } from '../../core/signing-keys.ts';

export { binding };

/** Longest token (or solution) looked at: anything longer is garbage and refused before any hashing. */
export const MAX_TOKEN_CHARS = 256;
const NONCE_RE = /^[0-9A-Za-z]{1,32}$/;
const INT_RE = /^[0-9]{1,12}$/;
const MAC_CHARS = 43;

export interface Challenge {
  readonly bits: number;
  readonly issuedSec: number;
  readonly expiresSec: number;
  /** 12 random bytes, base64url: the challenge's identity for the replay guard. */
  readonly rand: string;
  readonly binding: string;
}

/** Why a token or solution was refused (for tests and the log; the client only sees RMP_ERR_CHALLENGE_FAILED). */
export type Refusal =
  | 'malformed'
  | 'unknown_key'
  | 'bad_mac'
  | 'expired'
  | 'not_yet'
  | 'other_client'
  | 'insufficient_work'
  | 'replayed'
  | 'over_quota';

/** Leading zero bits of a digest (counting from the most significant bit of the first byte). */
export function leadingZeroBits(digest: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < digest.length; i++) {
    const b = digest[i]!;
    if (b === 0) {
      n += 8;
      continue;
    }
    return n + Math.clz32(b) - 24;
  }
  return n;
}

/**
 * The `rand` of a challenge or delay token: 12 bytes from the CSPRNG, base64url (16 characters), as
 * they always were, but drawn from a pool filled RAND_POOL tokens at a time instead of one randomBytes
 * call (a system call and a Buffer) per token: under a flood every unknown request gets a challenge
 * (two tokens for the page), and that call was 7 % of the page's CPU, as much as the HMACs.
 *
 * What the value must guarantee, and why the pool keeps it:
 *   - uniqueness: it is the token's identity for the replay guard (a solution, a delay token, is
 *     accepted once); two tokens with one rand would make the second "replayed". 96 random bits per
 *     token, from the CSPRNG, in every process and after every restart (the guard's state outlives one):
 *     no collision in practice, whatever the number of processes sharing keys;
 *   - an unpredictable puzzle: the work is SHA-256(token.nonce) with leading zero bits. The token ends
 *     in its HMAC under a key the client never sees, so no one can compute a future puzzle whatever the
 *     rand; the rand (inside the MACed body) also makes two challenges issued to one client in the same
 *     second with the same bits different puzzles, so one solution never pays for two;
 *   - not secret, but no information either: each rand is fresh random bytes, so tokens say nothing of
 *     how many were issued before them (a counter after a random prefix would be as unique and as safe
 *     for the puzzle, but would tell anyone holding two tokens how many challenges went out between).
 * The pool is per process, filled on first use (never inherited by a forked worker) and each 12 bytes
 * are handed out once.
 */
const RAND_BYTES = 12;
const RAND_POOL = 256;
const randPool = Buffer.alloc(RAND_BYTES * RAND_POOL);
let randOffset = randPool.length;

export function tokenRand(): string {
  if (randOffset >= randPool.length) {
    randomFillSync(randPool);
    randOffset = 0;
  }
  const start = randOffset;
  randOffset += RAND_BYTES;
  // A copy of the bytes as text: the pool's bytes are then overwritten by the next fill.
  return randPool.toString('base64url', start, start + RAND_BYTES);
}

function macKeys(ring: KeyRing): Map<string, KeyObject> {
  const out = new Map<string, KeyObject>();
  for (const [kid, key] of ring.keys) out.set(kid, createSecretKey(key));
  return out;
}

export class TokenSigner {
  #ring: KeyRing;
  /**
   * The ring's keys as KeyObjects, by kid: createHmac with a raw Buffer imports the key on every call
   * (about 10 µs under load, 18 % of a challenge answer's CPU), with a KeyObject it does not (≈ 2 µs).
   */
  #macKeys: Map<string, KeyObject>;

  constructor(ring: KeyRing) {
    this.#ring = ring;
    this.#macKeys = macKeys(ring);
  }

  /** Swap the key ring (reload): tokens signed by a key still in the ring stay valid. */
  setRing(ring: KeyRing): void {
    this.#ring = ring;
    this.#macKeys = macKeys(ring);
  }

  get ring(): KeyRing {
    return this.#ring;
  }

  #mac(key: KeyObject, kind: string, body: string): string {
    // One update: each is a call into C++ (the same bytes as kind, '|' and body fed one by one).
    return createHmac('sha256', key).update(`${kind}|${body}`).digest('base64url');
  }

  #sign(kind: string, fields: string): string {
    const kid = this.#ring.signingKid;
    const body = `v1.${kid}.${fields}`;
    return `${body}.${this.#mac(this.#macKeys.get(kid)!, kind, body)}`;
  }

  /** The fields between kid and mac when `token` is a well-formed `kind` token one of our keys signed, else a refusal. */
  #open(kind: string, token: string, fieldCount: number): string[] | Refusal {
    if (token.length > MAX_TOKEN_CHARS) return 'malformed';
    const parts = token.split('.', fieldCount + 4);
    if (parts.length !== fieldCount + 3 || parts[0] !== 'v1') return 'malformed';
    const key = this.#macKeys.get(parts[1]!);
    if (key === undefined) return 'unknown_key';
    const given = parts[fieldCount + 2]!;
    if (given.length !== MAC_CHARS) return 'bad_mac';
    const expected = this.#mac(key, kind, token.slice(0, token.length - MAC_CHARS - 1));
    if (!timingSafeEqual(Buffer.from(given, 'latin1'), Buffer.from(expected, 'latin1'))) return 'bad_mac';
    return parts.slice(2, fieldCount + 2);
  }

  issueChallenge(bits: number, nowMs: number, ttlSec: number, bind: string): string {
    const issued = Math.floor(nowMs / 1000);
    return this.#sign('challenge', `${bits}.${issued}.${issued + ttlSec}.${tokenRand()}.${bind}`);
  }

  /** Open a challenge token (MAC, expiry and binding checked; not the work, not replay). */
  openChallenge(token: string, nowMs: number, bind: string): Challenge | Refusal {
    const f = this.#open('challenge', token, 5);
    if (typeof f === 'string') return f;
    const [bitsText, issuedText, expiresText, rand, tokenBinding] = f as [string, string, string, string, string];
    if (!INT_RE.test(bitsText) || !INT_RE.test(issuedText) || !INT_RE.test(expiresText)) return 'malformed';
    const expiresSec = Number(expiresText);
    if (nowMs >= expiresSec * 1000) return 'expired';
    if (tokenBinding !== bind) return 'other_client';
    return { bits: Number(bitsText), issuedSec: Number(issuedText), expiresSec, rand, binding: tokenBinding };
  }

  /**
   * Check a solution `<challenge>.<nonce>`: the work first (one SHA-256, so garbage costs no HMAC),
   * then the challenge token. Replay is the caller's (the guard holds the state).
   */
  checkSolution(solution: string, nowMs: number, bind: string): Challenge | Refusal {
    if (solution.length > MAX_TOKEN_CHARS + 33) return 'malformed';
    const dot = solution.lastIndexOf('.');
    if (dot <= 0 || !NONCE_RE.test(solution.slice(dot + 1))) return 'malformed';
    const token = solution.slice(0, dot);
    const second = token.indexOf('.', 3);
    const third = second === -1 ? -1 : token.indexOf('.', second + 1);
    if (third === -1) return 'malformed';
    const bits = Number(token.slice(second + 1, third));
    if (!Number.isInteger(bits) || bits < 1 || bits > 64) return 'malformed';
    if (leadingZeroBits(hash('sha256', solution, 'buffer')) < bits) return 'insufficient_work';
    return this.openChallenge(token, nowMs, bind);
  }

  issueDelay(nowMs: number, delaySec: number, ttlSec: number, bind: string): string {
    const now = Math.floor(nowMs / 1000);
    return this.#sign('delay', `${now + delaySec}.${now + ttlSec}.${tokenRand()}.${bind}`);
  }

  /** A delay token that is ours, for this client, past its notBefore and not expired: its rand (for the replay guard), else a refusal. */
  openDelay(token: string, nowMs: number, bind: string): { rand: string; expiresSec: number } | Refusal {
    const f = this.#open('delay', token, 4);
    if (typeof f === 'string') return f;
    const [nbText, expText, rand, tokenBinding] = f as [string, string, string, string];
    if (!INT_RE.test(nbText) || !INT_RE.test(expText)) return 'malformed';
    const expiresSec = Number(expText);
    if (nowMs >= expiresSec * 1000) return 'expired';
    if (nowMs < Number(nbText) * 1000) return 'not_yet';
    if (tokenBinding !== bind) return 'other_client';
    return { rand, expiresSec };
  }

  issueClearance(nowMs: number, ttlSec: number, bind: string): { token: string; expiresSec: number } {
    const expiresSec = Math.floor(nowMs / 1000) + ttlSec;
    return { token: this.#sign('clearance', `${expiresSec}.${bind}`), expiresSec };
  }

  /** Whether `token` is a clearance of ours for this client, not expired. */
  checkClearance(token: string, nowMs: number, bind: string): true | Refusal {
    const f = this.#open('clearance', token, 2);
    if (typeof f === 'string') return f;
    if (!INT_RE.test(f[0]!)) return 'malformed';
    if (nowMs >= Number(f[0]) * 1000) return 'expired';
    if (f[1] !== bind) return 'other_client';
    return true;
  }
}
