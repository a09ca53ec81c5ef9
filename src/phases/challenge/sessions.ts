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
//
// The same table shape keeps every credential to one person's pace (defense.familiarity.budget): from
// `elevated` up, each session, verified JWT and clearance spends one token of a GCRA per look-up
// (`ratePerMinute` with `burst`, `underAttackBurst` from under_attack; held on the look-up, given back
// when the request did not reach the origin): a page fits in the burst, a client sending several
// requests a second for minutes does not. Past it the credential is over its budget (`lastRefusal`
// says so, `retryAfterMs` says when one request would fit again), and the challenge phase answers 429.
// A clearance is also bound to few client addresses (it is already bound to one prefix and one browser).
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

/** One person's pace for any credential (defense.familiarity.budget). */
export interface PaceBudget {
  readonly ratePerMinute: number;
  readonly burst: number;
  /** From `under_attack`, the burst instead of `burst` (absent: `burst`). */
  readonly underAttackBurst?: number;
  /** Distinct client addresses (IPv6: the /64) one credential may be used from in the window; 0: not counted. */
  readonly maxAddresses: number;
}

export const DEFAULT_PACE: PaceBudget = { ratePerMinute: 60, burst: 40, maxAddresses: 0 };

/** How a credential is being used by this request (filled by the caller, one object reused: no allocation). */
export interface Usage {
  prefix: string;
  userAgent: string | undefined;
  /** The client key (an IPv4 address, an IPv6 /64). */
  address: string;
  /** Under attack: the sessionBounds budget applies too. */
  underAttack: boolean;
  /** From `elevated` up: the pace budget applies. */
  paced: boolean;
}

/** Why the last look-up did not find a credential known (MemorySessionStore.lastRefusal). */
export const Refused = {
  none: 0,
  /** Not granted, expired, or not ours. */
  unknown: 1,
  /** Seen from too many prefixes, addresses or User-Agents in the window. */
  shared: 2,
  /** Over the under-attack request budget (sessionBounds): challenged until it refills. */
  budget: 3,
  /** Over one person's pace (familiarity.budget): rate-limited. */
  pace: 4,
} as const;
export type Refused = (typeof Refused)[keyof typeof Refused];

export interface SessionStore {
  /**
   * The origin granted this session id (a 2xx response set it). `probationMs` > 0: granted to a client
   * nobody vouched for, not known before then (a grant from a known client lifts it).
   */
  grant(sessionId: string, nowMs: number, probationMs?: number, parent?: Session | null): void;
  /** The origin cleared it (logout: an empty value or Max-Age=0). */
  revoke(sessionId: string): void;
  /**
   * Whether this session id was granted, has not expired and is used as one person uses it: from
   * few prefixes and User-Agents in the window, and (`underAttack`) within its request budget. A hit
   * extends its life. Without `usage` nothing is observed (the grant alone decides).
   */
  isKnown(sessionId: string, nowMs: number, usage?: Usage): boolean;
  /** Why the last isKnown() said no (Refused), and for `pace` the ms until one request would fit. */
  readonly lastRefusal: Refused;
  readonly retryAfterMs: number;
  readonly lastIgnoredRetry: boolean;
  readonly lastFirstOver: boolean;
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

/** One credential's entry (opaque outside this file): a session vouched for by another shares its budget. */
export class Session {
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
  /** Client addresses seen this window, one bit each of 30. */
  addresses = 0;
  /** GCRA theoretical arrival time of the under-attack budget (ms). */
  tatMs = 0;
  /** GCRA theoretical arrival time of the pace budget (ms). */
  paceTatMs = 0;
  /**
   * The credential that vouched for this session when the origin granted it (a client known by a
   * clearance, a JWT or another session logged in): its pace budget is this one's, so logging in again
   * and again does not multiply one solved challenge into many budgets. null: its own budget.
   */
  parent: Session | null = null;

  /** Granted to a client nobody vouched for: not known before this (ms; 0: vouched). */
  probationUntilMs = 0;
  /** The expiry the state file holds (persistence: written again once it lags by a quarter of the TTL). */
  savedExpiresMs = 0;
  constructor(expiresMs: number) {
    this.expiresMs = expiresMs;
  }
}

/** One session as the state file keeps it (src/app/state-file.ts): its hash, never the id. */
export interface SessionRecord {
  readonly hash: string;
  readonly expiresMs: number;
  readonly windowStartMs: number;
  /** Shared by a crowd in the window that started at windowStartMs. */
  readonly shared: boolean;
}

export class MemorySessionStore implements SessionStore {
  readonly #table = new Map<string, Session>();
  #max: number;
  #ttlMs: number;
  #bounds: SessionBounds;
  #pace: PaceBudget;
  /** Why the last isKnown()/use() said no (Refused), and for `pace` the ms until one request fits. */
  lastRefusal: Refused = Refused.none;
  retryAfterMs = 0;
  /** For a `pace` refusal: the client came back before the previous refusal's Retry-After had passed. */
  lastIgnoredRetry = false;
  /** For a `pace` refusal: the first since this credential (or its voucher) was last within budget. */
  lastFirstOver = false;
  /** The budget entry the last pace check that said yes looked at (its voucher's when it has one). */
  lastBudget: Session | null = null;
  /** Called on the first use of an entry pend() gave a site to (clearances minted ahead). */
  firstUse: ((s: Session, site: object, nowMs: number) => void) | null = null;
  /**
   * Entries not used yet since prepare(), with where they were minted (opaque here): a side table, not a
   * field, to keep every entry small; weak, so an entry evicted before its first use takes its site along.
   * `#pendingSeen` only says whether to look (it counts pend() calls not yet met: evicted ones stay in it).
   */
  readonly #pending = new WeakMap<Session, object>();
  #pendingSeen = 0;

  /** Remember where `s` (made by prepare()) was minted until its first use (then `firstUse`). */
  pend(s: Session, site: object): void {
    this.#pending.set(s, site);
    this.#pendingSeen++;
  }
  /**
   * Persistence: hashes granted, extended, shared or forgotten since the state file last took them
   * (null: not persisted). At most 2 × max (then the next save writes the whole table).
   */
  #changed: Set<string> | null = null;
  #rewrite = false;

  constructor(
    maxSessions: number,
    ttlSec: number,
    bounds: SessionBounds = DEFAULT_SESSION_BOUNDS,
    pace: PaceBudget = DEFAULT_PACE,
  ) {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
    this.#bounds = bounds;
    this.#pace = pace;
  }

  configure(maxSessions: number, ttlSec: number, bounds: SessionBounds = this.#bounds, pace = this.#pace): void {
    this.#max = maxSessions;
    this.#ttlMs = ttlSec * 1000;
    this.#bounds = bounds;
    this.#pace = pace;
    while (this.#table.size > this.#max) this.#evictOldest();
  }

  #evictOldest(): void {
    const first = this.#table.keys().next();
    if (!first.done) this.#forget(first.value);
  }

  #forget(h: string): void {
    if (this.#table.delete(h) && this.#changed !== null) this.#markChanged(h);
  }

  #markChanged(h: string): void {
    if (this.#rewrite) return;
    if (this.#changed!.size >= 2 * this.#max) {
      this.#changed!.clear();
      this.#rewrite = true;
    } else this.#changed!.add(h);
  }

  grant(sessionId: string, nowMs: number, probationMs = 0, parent: Session | null = null): void {
    if (this.#max === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    const h = hashId(sessionId);
    // Granted again (origins that re-send the cookie with every answer): the same session, with what
    // was seen of it kept, or re-sending would wash a shared cookie clean.
    const old = this.#table.get(h);
    this.#table.delete(h);
    while (this.#table.size >= this.#max) this.#evictOldest();
    if (old !== undefined) old.expiresMs = nowMs + this.#ttlMs;
    const s = old ?? new Session(nowMs + this.#ttlMs);
    if (old === undefined) s.probationUntilMs = probationMs > 0 ? nowMs + probationMs : 0;
    else if (probationMs === 0) s.probationUntilMs = 0;
    if (parent !== null && parent !== s) s.parent = parent.parent ?? parent;
    this.#table.set(h, s);
    if (this.#changed !== null && s.expiresMs - s.savedExpiresMs > this.#ttlMs / 4) this.#markChanged(h);
  }

  revoke(sessionId: string): void {
    if (sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return;
    this.#forget(hashId(sessionId));
  }

  isKnown(sessionId: string, nowMs: number, usage?: Usage): boolean {
    this.lastRefusal = Refused.unknown;
    if (this.#table.size === 0 || sessionId === '' || sessionId.length > MAX_SESSION_ID_CHARS) return false;
    const h = hashId(sessionId);
    const s = this.#table.get(h);
    if (s === undefined) return false;
    if (s.expiresMs <= nowMs) {
      this.#forget(h);
      return false;
    }
    this.#table.delete(h);
    s.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, s);
    // Persisted: only once the stored expiry lags a quarter of the TTL (not on every hit).
    if (this.#changed !== null && s.expiresMs - s.savedExpiresMs > this.#ttlMs / 4) this.#markChanged(h);
    this.lastRefusal = Refused.none;
    if (usage === undefined) return true;
    if (s.probationUntilMs > nowMs) {
      this.lastRefusal = Refused.unknown;
      return false;
    }
    const wasShared = s.shared;
    const ok = this.#withinBounds(s, nowMs, usage);
    if (this.#changed !== null && s.shared !== wasShared) this.#markChanged(h);
    return ok;
  }

  /**
   * For credentials valid by themselves (a verified JWT): remember `id` if new, then whether it is
   * used as one person uses it — the same bounds as sessions, in the same bounded table shape.
   */
  use(id: string, nowMs: number, usage: Usage): boolean {
    this.lastRefusal = Refused.none;
    if (this.#max === 0 || id === '' || id.length > MAX_SESSION_ID_CHARS * 8) return true;
    const h = hashId(id);
    let s = this.#table.get(h);
    this.#table.delete(h);
    if (s === undefined) {
      while (this.#table.size >= this.#max) this.#evictOldest();
      s = new Session(0);
    } else if (this.#pendingSeen > 0 && this.firstUse !== null) {
      const site = this.#pending.get(s);
      if (site !== undefined) {
        this.#pending.delete(s);
        this.#pendingSeen--;
        this.firstUse(s, site, nowMs);
      }
    }
    s.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, s);
    return this.#withinBounds(s, nowMs, usage);
  }

  /**
   * A credential just minted: its entry now, sharing the budget of `parent` when not null (a lineage),
   * so that the request it was minted on can be held on that budget too. null when nothing is kept.
   */
  prepare(id: string, parent: Session | null, nowMs: number): Session | null {
    if (this.#max === 0 || id === '' || id.length > MAX_SESSION_ID_CHARS * 8) return null;
    const h = hashId(id);
    let s = this.#table.get(h);
    if (s === undefined) {
      while (this.#table.size >= this.#max) this.#evictOldest();
      s = new Session(0);
      s.parent = parent;
      s.expiresMs = nowMs + this.#ttlMs;
      this.#table.set(h, s);
    }
    return s;
  }

  /**
   * The entry whose pace budget `id` spends (its voucher's when it has one), or undefined; no side
   * effect (the request path charges it with spendOn() once the request reached the origin).
   */
  budgetOf(id: string): Session | undefined {
    if (this.#table.size === 0 || id === '' || id.length > MAX_SESSION_ID_CHARS * 8) return undefined;
    const s = this.#table.get(hashId(id));
    return s === undefined ? undefined : (s.parent ?? s);
  }

  /**
   * Charge `tokens` requests to a budget entry (budgetOf), up to the same bounded debt. `busyOnly`: a
   * client shed by admission pays `tokens` only when it already spent half its burst (it keeps sending
   * while the origin is full: flooding), else nothing (the shed request cost the origin nothing): a
   * person shed during an overload others cause does not pay for it.
   */
  spendOn(s: Session, nowMs: number, tokens: number, busyOnly = false, underAttack = false): void {
    const interval = 60_000 / this.#pace.ratePerMinute;
    const tau = (this.#burst(underAttack) - 1) * interval;
    const tat = Math.max(s.paceTatMs, nowMs);
    const n = busyOnly && tat - nowMs < tau / 2 ? 0 : tokens;
    const cap = nowMs + 2 * tau + interval;
    const next = tat + n * interval;
    s.paceTatMs = next < cap ? next : cap;
  }

  /** spendOn() the budget of `id`, if known. */
  spend(id: string, nowMs: number, tokens: number, busyOnly = false, underAttack = false): void {
    const s = this.budgetOf(id);
    if (s !== undefined) this.spendOn(s, nowMs, tokens, busyOnly, underAttack);
  }

  /** Give back one request held on `s` (spendOn of 1) that did not reach the origin after all. */
  giveBack(s: Session): void {
    s.paceTatMs -= 60_000 / this.#pace.ratePerMinute;
  }

  /** The burst at this level: from `under_attack` a page's origin-bound requests, not a large uncached page. */
  #burst(underAttack: boolean): number {
    const b = this.#pace.underAttackBurst;
    return underAttack && b !== undefined ? b : this.#pace.burst;
  }

  /** Whether one more request fits the pace budget `s` shares (#paceOk), for a budget entry held by the caller. */
  paceOn(s: Session, nowMs: number, underAttack: boolean): boolean {
    this.lastRefusal = Refused.none;
    return this.#paceOk(s, nowMs, underAttack);
  }

  /**
   * A pace budget alone, for a key that is no credential (a client address shared by several): remember
   * `id` if new, then whether it is within its budget (checked, not spent: spendOn() charges it).
   */
  paceCheck(id: string, nowMs: number, underAttack = false): Session | null {
    this.lastRefusal = Refused.none;
    if (this.#max === 0 || id === '' || id.length > MAX_SESSION_ID_CHARS) return null;
    const h = hashId(id);
    let s = this.#table.get(h);
    this.#table.delete(h);
    if (s === undefined) {
      while (this.#table.size >= this.#max) this.#evictOldest();
      s = new Session(0);
    }
    s.expiresMs = nowMs + this.#ttlMs;
    this.#table.set(h, s);
    return this.#paceOk(s, nowMs, underAttack) ? s : null;
  }

  /**
   * Whether one more request fits the pace budget of `s` (its voucher's): GCRA, one request every
   * `interval`, `burst` at once. Checked here, charged by spendOn() once the request reached the origin
   * (an answer from the cache costs the origin nothing, and a page's cached assets must not use up the
   * budget). A refused request spends, up to one more burst of debt: a client that keeps going past its
   * Retry-After stays refused (no trickle of one request a second), one that stops waits at most `burst`
   * intervals.
   */
  #paceOk(s: Session, nowMs: number, underAttack: boolean): boolean {
    const pace = this.#pace;
    const p = s.parent ?? s;
    const interval = 60_000 / pace.ratePerMinute;
    const tau = (this.#burst(underAttack) - 1) * interval;
    const tat = Math.max(p.paceTatMs, nowMs);
    const over = tat - nowMs - tau;
    if (over <= 0) {
      this.lastBudget = p;
      return true;
    }
    const next = tat + interval;
    const cap = nowMs + 2 * tau + interval;
    p.paceTatMs = next < cap ? next : cap;
    this.lastRefusal = Refused.pace;
    this.retryAfterMs = p.paceTatMs - nowMs - tau;
    // In debt past one request: it was refused already and came back before that Retry-After.
    this.lastIgnoredRetry = over > interval;
    // The first refusal since it was last within budget (not one field more per entry to say "ever").
    this.lastFirstOver = over <= interval;
    return false;
  }

  #withinBounds(s: Session, nowMs: number, u: Usage): boolean {
    const b = this.#bounds;
    const pace = this.#pace;
    if (nowMs - s.windowStartMs >= b.windowSec * 1000) {
      s.windowStartMs = nowMs;
      s.shared = false;
      s.prefixesLo = s.prefixesHi = s.agents = s.addresses = 0;
    }
    if (s.shared) {
      this.lastRefusal = Refused.shared;
      return false;
    }
    const p = bin(u.prefix, 2 * MASK_BITS);
    if (p < MASK_BITS) s.prefixesLo |= 1 << p;
    else s.prefixesHi |= 1 << (p - MASK_BITS);
    s.agents |= 1 << bin(u.userAgent ?? '', MASK_BITS);
    if (pace.maxAddresses > 0) s.addresses |= 1 << bin(u.address, MASK_BITS);
    // Linear counting: a collision can only hide a network or browser, never invent one.
    if (
      bitCount(s.prefixesLo) + bitCount(s.prefixesHi) > b.maxPrefixes ||
      bitCount(s.agents) > b.maxUserAgents ||
      (pace.maxAddresses > 0 && bitCount(s.addresses) > pace.maxAddresses)
    ) {
      s.shared = true;
      this.lastRefusal = Refused.shared;
      return false;
    }
    if (u.paced && !this.#paceOk(s, nowMs, u.underAttack)) return false;
    if (!u.underAttack) return true;
    const interval = 1000 / b.underAttackRatePerSec;
    const tat = Math.max(s.tatMs, nowMs);
    if (tat - nowMs > (b.underAttackBurst - 1) * interval) {
      this.lastRefusal = Refused.budget;
      return false;
    }
    s.tatMs = tat + interval;
    return true;
  }

  get size(): number {
    return this.#table.size;
  }

  /** Persistence: from now on, remember which sessions change (takeChanges() hands them over). */
  trackChanges(): void {
    this.#changed ??= new Set();
  }

  /**
   * At most `limit` sessions to store and hashes to drop since the last call; the rest wait for the
   * next. `all`: every stored row goes first, and the whole table follows, `limit` at a time.
   */
  takeChanges(limit = Infinity): { all: boolean; saved: SessionRecord[]; removed: string[] } {
    const all = this.#rewrite;
    const saved: SessionRecord[] = [];
    const removed: string[] = [];
    if (this.#changed === null) return { all: false, saved, removed };
    if (all) {
      this.#rewrite = false;
      this.#changed = new Set(this.#table.keys());
    }
    for (const h of this.#changed) {
      if (saved.length + removed.length >= limit) break;
      this.#changed.delete(h);
      const s = this.#table.get(h);
      if (s === undefined) removed.push(h);
      else {
        s.savedExpiresMs = s.expiresMs;
        const windowStartMs = s.windowStartMs === Number.NEGATIVE_INFINITY ? 0 : s.windowStartMs;
        saved.push({ hash: h, expiresMs: s.expiresMs, windowStartMs, shared: s.shared });
      }
    }
    return { all, saved, removed };
  }

  /** Hand the whole table over again at the next takeChanges() (a failed write). */
  changesLost(): void {
    if (this.#changed === null) return;
    this.#changed.clear();
    this.#rewrite = true;
  }

  /**
   * Put back sessions the state file kept (start-up), least recently used first: expired ones are
   * skipped, and the table's bound holds. The prefixes and User-Agents seen are not kept (their bits
   * depend on this process's seed): a session restarts its window, unless it was found shared.
   */
  restore(records: Iterable<SessionRecord>, nowMs: number): number {
    let n = 0;
    if (this.#max === 0) return n;
    for (const r of records) {
      if (typeof r.hash !== 'string' || !(r.expiresMs > nowMs) || this.#table.has(r.hash)) continue;
      while (this.#table.size >= this.#max) this.#evictOldest();
      const s = new Session(Math.min(r.expiresMs, nowMs + this.#ttlMs));
      s.savedExpiresMs = r.expiresMs;
      if (r.shared && nowMs - r.windowStartMs < this.#bounds.windowSec * 1000) {
        s.shared = true;
        s.windowStartMs = r.windowStartMs;
      }
      this.#table.set(r.hash, s);
      n++;
    }
    return n;
  }
}

/**
 * Feed `store` from an upstream response head (undici's flat raw headers): every `Set-Cookie` for
 * `cookieName` on a 2xx grants its value, an empty value or `Max-Age=0` revokes it. `trust()` is asked
 * only when a value is granted: -1 not remembered, 0 trusted, else the probation in ms.
 */
export function learnSessions(
  store: SessionStore,
  cookieName: string,
  status: number,
  rawHeaders: readonly (Buffer | string)[],
  nowMs: number,
  trust: () => number = () => 0,
  voucher: () => Session | null = () => null,
): void {
  if (status < 200 || status > 299 || cookieName === '') return;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 10) continue;
    const text = typeof name === 'string' ? name : name.toString('latin1');
    if ((text.charCodeAt(0) | 0x20) !== 0x73 /* s */ || text.toLowerCase() !== 'set-cookie') continue;
    const field = rawHeaders[i + 1]!;
    const line = typeof field === 'string' ? field : field.toString('latin1');
    const semi = line.indexOf(';');
    const pair = semi === -1 ? line : line.slice(0, semi);
    const eq = pair.indexOf('=');
    if (eq === -1 || pair.slice(0, eq).trim() !== cookieName) continue;
    const value = pair.slice(eq + 1).trim();
    if (value === '' || /;\s*max-age\s*=\s*(0|-)/i.test(line)) store.revoke(value);
    else {
      const probationMs = trust();
      if (probationMs >= 0) store.grant(value, nowMs, probationMs, probationMs === 0 ? voucher() : null);
    }
  }
}
