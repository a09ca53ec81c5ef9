// Sessions the origin granted: a session cookie value first seen in a Set-Cookie of a 2xx upstream
// response is remembered, so later requests carrying it are known. Behind a small interface because
// cluster mode will share the table between nodes (Valkey/Redis); this one lives in memory.
// Only hashes are kept (a session id is a secret), in a capped table ordered by last use: Map
// iteration order is insertion order, so re-inserting on use makes the first key the least recently
// used one, evicted when the table is full.
import { hash } from 'node:crypto';

export interface SessionStore {
  /** The origin granted this session id (a 2xx response set it). */
  grant(sessionId: string, nowMs: number): void;
  /** The origin cleared it (logout: an empty value or Max-Age=0). */
  revoke(sessionId: string): void;
  /** Whether this session id was granted and has not expired; a hit extends its life. */
  isKnown(sessionId: string, nowMs: number): boolean;
  readonly size: number;
}

/** Session ids longer than this are not remembered (no session id we need to tell apart is). */
const MAX_SESSION_ID_CHARS = 1024;

function hashId(id: string): string {
  return hash('sha256', id, 'buffer').subarray(0, 16).toString('base64url');
}

export class MemorySessionStore implements SessionStore {
  readonly #table = new Map<string, number>();
  #max: number;
  #ttlMs: number;

  constructor(maxSessions: number, ttlSec: number) {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
  }

  configure(maxSessions: number, ttlSec: number): void {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
    while (this.#table.size > this.#max) this.#evictOldest();
  }

  #evictOldest(): void {
    const first = this.#table.keys().next();
    if (!first.done) this.#table.delete(first.value);
  }

  grant(sessionId: string, nowMs: number): void {
    if (this.#max === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    const h = hashId(sessionId);
    this.#table.delete(h);
    while (this.#table.size >= this.#max) this.#evictOldest();
    this.#table.set(h, nowMs + this.#ttlMs);
  }

  revoke(sessionId: string): void {
    if (sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    this.#table.delete(hashId(sessionId));
  }

  isKnown(sessionId: string, nowMs: number): boolean {
    if (this.#table.size === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return false;
    const h = hashId(sessionId);
    const expires = this.#table.get(h);
    if (expires === undefined) return false;
    this.#table.delete(h);
    if (expires <= nowMs) return false;
    this.#table.set(h, nowMs + this.#ttlMs);
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
export function learnSessions(store: SessionStore, cookieName: string, status: number, rawHeaders: readonly Buffer[], nowMs: number): void {
  if (status < 200 || status > 299 || cookieName === '') return;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 10 || (name[0]! | 0x20) !== 0x73 /* s */ || name.toString('latin1').toLowerCase() !== 'set-cookie') continue;
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
