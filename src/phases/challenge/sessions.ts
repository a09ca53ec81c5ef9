// Sessions the origin granted: a session cookie value first seen in a Set-Cookie of a 2xx upstream
// response is remembered, so later requests carrying it are known. Behind a small interface because
// cluster mode will share the table between nodes (Valkey/Redis); this one lives in memory.
// Only hashes are kept (a session id is a secret), in a capped table ordered by last use: Map
// iteration order is insertion order, so re-inserting on use makes the first key the least recently
// used one, evicted when the table is full.
//
// A session is one person's: a cookie seen from more than `maxPrefixes` client prefixes or with more
// than `maxUserAgents` User-Agents within a window is a cookie shared by a crowd (50 bots in 50 /24s
// holding one logged-in cookie), and is not known for the rest of that window. Under attack each
// session also has a request budget (GCRA) past which it is not known. Per session that is a few
// numbers: the prefixes and User-Agents seen are bits of small masks (linear counting), so an entry
// has a fixed size whatever the bounds (about 250 bytes with its key, against 95 for the bare expiry).
import { hash, randomInt } from 'node:crypto';

/** What keeps a session known (defense.familiarity.sessionBounds). */
export interface SessionBounds {
  readonly maxPrefixes: number;
  readonly maxUserAgents: number;
  readonly windowSec: number;
  readonly underAttackRatePerSec: number;
  readonly underAttackBurst: number;
}

export const DEFAULT_SESSION_BOUNDS: SessionBounds = {
  maxPrefixes: 6,
  maxUserAgents: 3,
  windowSec: 600,
  underAttackRatePerSec: 10,
  underAttackBurst: 200,
};

export interface SessionStore {
  /** The origin granted this session id (a 2xx response set it). */
  grant(sessionId: string, nowMs: number): void;
  /** The origin cleared it (logout: an empty value or Max-Age=0). */
  revoke(sessionId: string): void;
  /**
   * Whether this session id was granted, has not expired and is used as one person uses it: from
   * few prefixes and User-Agents in the window, and (`underAttack`) within its request budget. A hit
   * extends its life. Without `prefix` nothing is observed (the grant alone decides).
   */
  isKnown(sessionId: string, nowMs: number, prefix?: string, userAgent?: string, underAttack?: boolean): boolean;
  readonly size: number;
}

/** Session ids longer than this are not remembered (no session id we need to tell apart is). */
const MAX_SESSION_ID_CHARS = 1024;

function hashId(id: string): string {
  return hash('sha256', id, 'buffer').subarray(0, 16).toString('base64url');
}

/** Per-process seed: which prefixes or User-Agents share a hash cannot be worked out from outside. */
const SEED = randomInt(0, 0x7fffffff);

/** A seeded FNV-1a of `s`, reduced to a bit number below `bins`. */
function bin(s: string, bins: number): number {
  let h = 0x811c9dc5 ^ SEED;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0) % bins;
}

/** Set bits of a 30-bit mask (small integers stay unboxed). */
function bitCount(m: number): number {
  let n = 0;
  for (let x = m; x !== 0; x &= x - 1) n++;
  return n;
}

/** Bits of a mask field: 30 keeps every mask a small integer. */
const MASK_BITS = 30;

class Session {
  expiresMs: number;
  /** Start of the window prefixes and User-Agents are counted in. */
  windowStartMs = Number.NEGATIVE_INFINITY;
  /** Seen from too many prefixes or User-Agents in this window: not known until it ends. */
  shared = false;
  /** Prefixes seen this window, one bit each of 60 (two masks); two prefixes may share a bit. */
  prefixesLo = 0;
  prefixesHi = 0;
  /** User-Agents seen this window, one bit each of 30. */
  agents = 0;
  /** GCRA theoretical arrival time of the under-attack budget (ms). */
  tatMs = 0;
  constructor(expiresMs: number) {
    this.expiresMs = expiresMs;
  }
}

export class MemorySessionStore implements SessionStore {
  readonly #table = new Map<string, Session>();
  #max: number;
  #ttlMs: number;
  #bounds: SessionBounds;

  constructor(maxSessions: number, ttlSec: number, bounds: SessionBounds = DEFAULT_SESSION_BOUNDS) {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
    this.#bounds = bounds;
  }

  configure(maxSessions: number, ttlSec: number, bounds: SessionBounds = this.#bounds): void {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
    this.#bounds = bounds;
    while (this.#table.size > this.#max) this.#evictOldest();
  }

  #evictOldest(): void {
    const first = this.#table.keys().next();
    if (!first.done) this.#table.delete(first.value);
  }

  grant(sessionId: string, nowMs: number): void {
    if (this.#max === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    const h = hashId(sessionId);
    // Granted again (origins that re-send the cookie with every answer): the same session, with what
    // was seen of it kept, or re-sending would wash a shared cookie clean.
    const old = this.#table.get(h);
    this.#table.delete(h);
    while (this.#table.size >= this.#max) this.#evictOldest();
    if (old !== undefined) old.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, old ?? new Session(nowMs + this.#ttlMs));
  }

  revoke(sessionId: string): void {
    if (sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    this.#table.delete(hashId(sessionId));
  }

  isKnown(sessionId: string, nowMs: number, prefix?: string, userAgent?: string, underAttack = false): boolean {
    if (this.#table.size === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return false;
    const h = hashId(sessionId);
    const s = this.#table.get(h);
    if (s === undefined) return false;
    this.#table.delete(h);
    if (s.expiresMs <= nowMs) return false;
    s.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, s);
    return prefix === undefined || this.#withinBounds(s, nowMs, prefix, userAgent, underAttack);
  }

  /**
   * For credentials valid by themselves (a verified JWT): remember `id` if new, then whether it is
   * used as one person uses it — the same bounds as sessions, in the same bounded table shape.
   */
  use(id: string, nowMs: number, prefix: string, userAgent: string | undefined, underAttack: boolean): boolean {
    if (this.#max === 0 || id === '' || id.length > MAX_SESSION_ID_CHARS * 8) return true;
    const h = hashId(id);
    let s = this.#table.get(h);
    this.#table.delete(h);
    if (s === undefined) {
      while (this.#table.size >= this.#max) this.#evictOldest();
      s = new Session(0);
    }
    s.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, s);
    return this.#withinBounds(s, nowMs, prefix, userAgent, underAttack);
  }

  #withinBounds(
    s: Session,
    nowMs: number,
    prefix: string,
    userAgent: string | undefined,
    underAttack: boolean,
  ): boolean {
    const b = this.#bounds;
    if (nowMs - s.windowStartMs >= b.windowSec * 1000) {
      s.windowStartMs = nowMs;
      s.shared = false;
      s.prefixesLo = s.prefixesHi = s.agents = 0;
    }
    if (s.shared) return false;
    const p = bin(prefix, 2 * MASK_BITS);
    if (p < MASK_BITS) s.prefixesLo |= 1 << p;
    else s.prefixesHi |= 1 << (p - MASK_BITS);
    s.agents |= 1 << bin(userAgent ?? '', MASK_BITS);
    // Linear counting: a collision can only hide a network or browser, never invent one.
    if (bitCount(s.prefixesLo) + bitCount(s.prefixesHi) > b.maxPrefixes || bitCount(s.agents) > b.maxUserAgents) {
      s.shared = true;
      return false;
    }
    if (!underAttack) return true;
    // GCRA: one request every `interval`, `burst` at once; a refused request does not spend.
    const interval = 1000 / b.underAttackRatePerSec;
    const tat = Math.max(s.tatMs, nowMs);
    if (tat - nowMs > (b.underAttackBurst - 1) * interval) return false;
    s.tatMs = tat + interval;
    return true;
  }

  get size(): number {
    return this.#table.size;
  }
}

/**
 * Feed `store` from an upstream response head (undici's flat raw headers): every `Set-Cookie` for
 * `cookieName` on a 2xx grants its value, an empty value or `Max-Age=0` revokes it.
 */
export function learnSessions(
  store: SessionStore,
  cookieName: string,
  status: number,
  rawHeaders: readonly Buffer[],
  nowMs: number,
): void {
  if (status < 200 || status > 299 || cookieName === '') return;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (
      name.length !== 10 ||
      (name[0]! | 0x20) !== 0x73 /* s */ ||
      name.toString('latin1').toLowerCase() !== 'set-cookie'
    )
      continue;
    const line = rawHeaders[i + 1]!.toString('latin1');
    const semi = line.indexOf(';');
    const pair = semi === -1 ? line : line.slice(0, semi);
    const eq = pair.indexOf('=');
    if (eq === -1 || pair.slice(0, eq).trim() !== cookieName) continue;
    const value = pair.slice(eq + 1).trim();
    if (value === '' || /;\s*max-age\s*=\s*(0|-)/i.test(line)) store.revoke(value);
    else store.grant(value, nowMs);
  }
}
