// What the cache may store and for how long: Cache-Control parsing (RFC 9111 §5.2) and the
// storability rules of a shared cache (§3), kept deliberately narrow. No heuristic freshness: a
// response without max-age or s-maxage is never stored, so an origin opts in explicitly.
import { rewrittenForOrigin } from '../../pipeline/headers.ts';

/** The response directives the cache acts on. Ages in seconds; -1 when absent. */
export interface CacheControl {
  maxAgeSec: number;
  sMaxAgeSec: number;
  staleWhileRevalidateSec: number;
  staleIfErrorSec: number;
  noStore: boolean;
  noCache: boolean;
  isPrivate: boolean;
  isPublic: boolean;
}

/** Parse a Cache-Control value (or the comma-joined values of several fields). Unknown directives are ignored. */
export function parseCacheControl(value: string | undefined): CacheControl {
  const cc: CacheControl = {
    maxAgeSec: -1,
    sMaxAgeSec: -1,
    staleWhileRevalidateSec: -1,
    staleIfErrorSec: -1,
    noStore: false,
    noCache: false,
    isPrivate: false,
    isPublic: false,
  };
  if (value === undefined || value === '') return cc;
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    const arg =
      eq === -1
        ? ''
        : part
            .slice(eq + 1)
            .trim()
            .replace(/^"|"$/g, '');
    switch (name) {
      case 'max-age':
        cc.maxAgeSec = seconds(arg, cc.maxAgeSec);
        break;
      case 's-maxage':
        cc.sMaxAgeSec = seconds(arg, cc.sMaxAgeSec);
        break;
      case 'stale-while-revalidate':
        cc.staleWhileRevalidateSec = seconds(arg, cc.staleWhileRevalidateSec);
        break;
      case 'stale-if-error':
        cc.staleIfErrorSec = seconds(arg, cc.staleIfErrorSec);
        break;
      case 'no-store':
        cc.noStore = true;
        break;
      case 'no-cache':
        cc.noCache = true;
        break;
      case 'private':
        cc.isPrivate = true;
        break;
      case 'public':
        cc.isPublic = true;
        break;
    }
  }
  return cc;
}

/** A delta-seconds argument; an invalid one keeps the previous value (RFC 9111 §1.2.2: be strict, never guess). */
function seconds(arg: string, previous: number): number {
  if (!/^[0-9]{1,10}$/.test(arg)) return previous;
  return Number(arg);
}

/** What a response's head says about storing it. */
export interface ResponseFacts {
  method: string;
  status: number;
  cacheControl: string | undefined;
  hasSetCookie: boolean;
  /** The Vary field value ('' when absent). */
  vary: string;
  /** The Age field, in seconds (0 when absent or invalid). */
  ageSec: number;
  /** The request carried Authorization or the configured API-key header (CompiledRouteCache.credentialHeaders). */
  requestHasAuthorization: boolean;
  /** The request carried a Cookie (besides Rempart's own, which the origin never sees). */
  requestHasCookie: boolean;
  /**
   * The route caches only by its class's default: the operator never said the origin's answers are
   * shared. What the origin sends was then written for browsers, maybe not for a cache in front.
   */
  cachedByDefault: boolean;
}

/** The stale windows a route grants, in ms; the response's stale-* directives can only widen them. */
export interface StaleWindows {
  staleWhileRevalidateMs: number;
  staleIfErrorMs: number;
}

export type StoreDecision =
  | { store: false; reason: string }
  | {
      store: true;
      /** Lower-cased header names the variant is chosen by. */
      varyNames: string[];
      freshForMs: number;
      staleWhileRevalidateMs: number;
      staleIfErrorMs: number;
      isPublic: boolean;
    };

const STORABLE_STATUS = new Set([200, 301]);

/**
 * The refusals, one shared object each (frozen): a pass route's every answer is one of them, and made
 * a new object per request they were garbage at request rate.
 */
const NOT_STORED = new Map<string, StoreDecision>();
function notStored(reason: string): StoreDecision {
  let d = NOT_STORED.get(reason);
  if (d === undefined) {
    d = Object.freeze({ store: false as const, reason });
    NOT_STORED.set(reason, d);
  }
  return d;
}

/**
 * May this response be stored, and for how long? The reason names the first rule that refused,
 * for logs (`cache` field) and tests.
 */
export function decideStore(facts: ResponseFacts, windows: StaleWindows): StoreDecision {
  if (facts.method !== 'GET') return notStored('method');
  if (!STORABLE_STATUS.has(facts.status)) return notStored('status');
  if (facts.hasSetCookie) return notStored('set_cookie');
  // On a route cached by default, the key does not vary on cookies nor credentials, and nobody said the
  // origin's answers do not depend on them: an answer to a request with one may be that person's page,
  // never stored whatever it says (as Varnish's built-in rules pass such requests). On a route the
  // operator switched on, a cookie does not count (the operator vouched for the route) and credentials
  // follow RFC 9111 §3.5 below.
  if (facts.cachedByDefault && facts.requestHasCookie) return notStored('request_cookie');
  if (facts.cachedByDefault && facts.requestHasAuthorization) return notStored('authorization');
  // No Cache-Control at all (the common answer of a pass route): the rules below would find no
  // directive, and refuse for want of a lifetime; told without parsing an empty set of directives.
  if (facts.cacheControl === undefined || facts.cacheControl === '')
    return notStored(facts.requestHasAuthorization ? 'authorization' : 'no_freshness');
  const cc = parseCacheControl(facts.cacheControl);
  if (cc.noStore) return notStored('no_store');
  if (cc.isPrivate) return notStored('private');
  // no-cache: storable, but every use needs a revalidation we do not do; not worth storing.
  if (cc.noCache) return notStored('no_cache');
  // RFC 9111 §3.5: a response to an authorized request is shared only when the origin says so.
  if (facts.requestHasAuthorization && !cc.isPublic && cc.sMaxAgeSec < 0) return notStored('authorization');
  const lifetimeSec = cc.sMaxAgeSec >= 0 ? cc.sMaxAgeSec : cc.maxAgeSec;
  if (lifetimeSec < 0) return notStored('no_freshness');
  // On a route cached by default, only an answer addressed to shared caches: a bare `max-age` is what
  // origins send browsers for per-person pages too (keyed by a header or address the cache cannot see).
  if (facts.cachedByDefault && !cc.isPublic && cc.sMaxAgeSec < 0) return notStored('not_public');
  const freshForMs = (lifetimeSec - facts.ageSec) * 1000;
  if (freshForMs <= 0) return notStored('expired');
  const varyNames: string[] = [];
  for (const v of facts.vary.split(',')) {
    const name = v.trim().toLowerCase();
    if (name === '') continue;
    if (name === '*') return notStored('vary_star');
    // Varying on a field Rempart sets or drops: the variant would be filed under the client's value,
    // not the one the origin answered (another visitor's X-Forwarded-For page served to everyone).
    if (rewrittenForOrigin(name)) return notStored('vary_rewritten');
    // A Vary that is not a field-name token (RFC 9110 §5.1) is the upstream misbehaving: don't store.
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) return notStored('vary_invalid');
    if (!varyNames.includes(name)) varyNames.push(name);
  }
  varyNames.sort();
  return {
    store: true,
    varyNames,
    freshForMs,
    staleWhileRevalidateMs: Math.max(windows.staleWhileRevalidateMs, cc.staleWhileRevalidateSec * 1000),
    staleIfErrorMs: Math.max(windows.staleIfErrorMs, cc.staleIfErrorSec * 1000),
    isPublic: cc.isPublic || cc.sMaxAgeSec >= 0,
  };
}
