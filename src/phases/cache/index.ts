// Phase `cache`: answer routes that cache from memory. A fresh copy is served locally; concurrent
// misses for one key wait for a single origin request (collapsing); a stale copy is served while one
// background request refreshes it, and stands in whenever the origin fails or the request is shed.
// What is stored and for how long: policy.ts; the key: key.ts; the memory bound: store.ts; docs/cache.md.
import type { IncomingHttpHeaders } from 'node:http';
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext, ResponseTap, UpstreamHeadFacts } from '../../pipeline/context.ts';
import type { CompiledRoute, CompiledRouteCache, Runtime } from '../../pipeline/runtime.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { CounterCell } from '../../core/hot-metrics.ts';
import type { Clock } from '../../core/clock.ts';
import type { ErrorCode } from '../../core/errors.ts';
import { CacheStore, entrySize, type CacheEntry } from './store.ts';
import { varyValue, varyValuesOf } from './vary.ts';
import { cacheTarget, keyOfTarget } from './key.ts';
import { decideStore, type StoreDecision } from './policy.ts';
import { clientResponseHeaders, refreshRequestHeaders, withoutRempartCookies } from '../../pipeline/headers.ts';
import { classifyUpstreamError } from '../../upstream/errors.ts';
import { sendLocalReply } from '../../pipeline/reply.ts';
import { isShed, refuseShed, type ShedCode } from '../../pipeline/shed.ts';
import type { StaleSource } from '../../pipeline/services.ts';
import { classIndex } from '../../upstream/queue.ts';

export const LOOKUP_RESULTS = ['hit', 'miss', 'stale', 'collapsed', 'bypass'] as const;
export type LookupResult = (typeof LOOKUP_RESULTS)[number];
const R_HIT = 0;
const R_MISS = 1;
const R_STALE = 2;
const R_COLLAPSED = 3;
const R_BYPASS = 4;

/** Variants kept per key: Vary on a header an attacker sets freely must not multiply an entry. */
export const MAX_VARIANTS_PER_KEY = 8;
/** Requests waiting on one key's fill; past it they go to the origin themselves. */
export const MAX_WAITERS_PER_KEY = 1024;
/**
 * Keys whose last answer the origin made unstorable are remembered this long (Varnish's hit-for-miss):
 * their misses go to the origin side by side, each still able to fill, instead of queueing behind one
 * another's fill. With the cache on by default, most pages of a site are such keys.
 */
export const PASS_MARK_MS = 30_000;
/**
 * Keys remembered so at most: the oldest mark goes first (that key only collapses again). Keys are the
 * client's targets: longer ones than MAX_PASS_KEY_CHARS are not remembered, so the marks hold 4 MiB at most.
 */
export const MAX_PASS_MARKS = 4096;
/** A pass mark younger than this is not renewed (markPass). */
const PASS_REMARK_MS = 1_000;
export const MAX_PASS_KEY_CHARS = 1024;

/** How a fill ended, for the requests that waited on it. */
interface FlightOutcome {
  entry: CacheEntry | null;
  /** Why the upstream failed (error or 5xx), '' if it did not: waiters may then stand a stale copy in. */
  failure: ErrorCode | '';
  /** The filling request's client left before the response was complete, so the fetch was dropped. */
  abandoned: boolean;
  /** The fill was shed by admission (its class is saturated): waiters are answered alike at once, not queued one after another. */
  shed: ShedCode | '';
}

/** One origin request in progress for a key, and who waits on it. */
interface Flight {
  readonly waiters: ((outcome: FlightOutcome) => void)[];
}

/**
 * The flight of a key marked pass (hit-for-miss): its request may fill, but nobody waits on it and it is
 * never in `inflight`, so one shared empty flight serves them all (no allocation per such request).
 */
const PASS_FLIGHT: Flight = { waiters: [] };

/**
 * The phase, and the StaleSource (pipeline/services.ts) of the phases after it: a request this phase
 * looked up carries its stale copy in its tap, and admission's shed or failover's `unavailable` may
 * have it stand in for their answer.
 */
export interface CachePhase extends Phase, StaleSource {
  readonly store: CacheStore;
  /** Requests waiting now on another request's fill of the same key. */
  waiting(): number;
}

/** The shared state a tap reports to. */
interface Core {
  readonly store: CacheStore;
  readonly clock: Clock;
  readonly inflight: Map<string, Flight>;
  /** Key → until when its misses go side by side (PASS_MARK_MS). */
  readonly passUntil: Map<string, number>;
  afterStoreChange(): void;
  /** Answer with `entry` in place of the failure `code` (the code stays the request's reason). */
  standIn(ctx: RequestContext, entry: CacheEntry, note: string, code: ErrorCode | ''): void;
  onUpstreamError(ctx: RequestContext, code: ErrorCode): void;
}

/**
 * Create the phase. `metrics` gets lookups by route and result, and the store's size; `clock` decides
 * freshness (tests drive it).
 * @example const cache = createCachePhase(getRuntime, metrics, systemClock); // after `route`
 */
export function createCachePhase(getRuntime: () => Runtime, metrics: Metrics, clock: Clock): CachePhase {
  const initial = getRuntime().config.cache;
  const store = new CacheStore({
    maxBytes: initial.maxBytes,
    maxObjectBytes: initial.maxObjectBytes,
    maxVariants: MAX_VARIANTS_PER_KEY,
  });
  const inflight = new Map<string, Flight>();
  const passUntil = new Map<string, number>();
  let limitsFrom = getRuntime();
  let evictionsSeen = 0;
  let waiting = 0;
  const cellsByRoute = new WeakMap<CompiledRoute, CounterCell[]>();

  function count(route: CompiledRoute, result: number): void {
    let cells = cellsByRoute.get(route);
    if (cells === undefined) {
      cells = LOOKUP_RESULTS.map((r) => metrics.cacheLookups.cell(route.name, r));
      cellsByRoute.set(route, cells);
    }
    cells[result]!.value++;
  }

  const core: Core = {
    store,
    clock,
    inflight,
    passUntil,
    afterStoreChange() {
      metrics.cacheBytes.set(store.bytes);
      metrics.cacheEntries.set(store.entries);
      if (store.evictions !== evictionsSeen) {
        metrics.cacheEvictions.inc(store.evictions - evictionsSeen);
        evictionsSeen = store.evictions;
      }
    },
    standIn(ctx, entry, note, code) {
      ctx.cache = note;
      replyWith(ctx, entry, 'STALE', code);
    },
    onUpstreamError(ctx, code) {
      metrics.upstreamErrors.inc({ upstream: ctx.upstream?.name ?? '-', reason: code });
    },
  };

  /** Answer with a stored copy: a hit, or a stale copy (while it refreshes: `code` '', or for the failure `code`). */
  function replyWith(ctx: RequestContext, entry: CacheEntry, xcache: 'HIT' | 'STALE', code: ErrorCode | '' = ''): void {
    const headers = { age: String(Math.max(0, Math.floor((clock.now() - entry.storedAt) / 1000))), 'x-cache': xcache };
    ctx.serveStored(entry, xcache === 'HIT' ? 'cache_hit' : 'stale', headers, code);
  }

  /** A stale copy this request may still use when the origin fails, or null. */
  function usableOnError(entry: CacheEntry | null): CacheEntry | null {
    return entry !== null && clock.now() < entry.staleUntil ? entry : null;
  }

  function refresh(ctx: RequestContext, key: string, entry: CacheEntry): void {
    if (entry.refreshing) return;
    const upstream = ctx.upstream!;
    // A refresh takes an admission slot like any request, but never waits for one: with the origin
    // at its limit the stale copy keeps answering, and a later request refreshes.
    const gate = upstream.admission;
    const cls = classIndex(ctx.route!.class);
    const rttSlot = ctx.route!.rttSlot;
    const gated = gate.limiter.mode !== 'off';
    if (gated && !gate.tryAcquire(cls)) return;
    entry.refreshing = true;
    const reqHeaders = ctx.req.headers;
    const via = getRuntime().config.via;
    const headers = refreshRequestHeaders(ctx, via);
    const rc = ctx.route!.cache!;
    const target = ctx.target;
    void (async () => {
      let sample: 'success' | 'drop' | 'none' = 'none';
      const startMs = gated ? gate.clock.now() : 0;
      try {
        const res = await upstream.pool.request({ path: target, method: 'GET', headers });
        sample = res.statusCode >= 500 ? 'drop' : 'success';
        const maxObjectBytes = store.limits.maxObjectBytes;
        const chunks: Buffer[] = [];
        let bytes = 0;
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          bytes += chunk.length;
          if (bytes > maxObjectBytes) {
            res.body.destroy();
            return;
          }
          chunks.push(chunk);
        }
        const raw: Buffer[] = [];
        for (const [name, value] of Object.entries(res.headers)) {
          if (value === undefined) continue;
          for (const v of Array.isArray(value) ? value : [value])
            raw.push(Buffer.from(name, 'latin1'), Buffer.from(v, 'latin1'));
        }
        const pairs = clientResponseHeaders(raw, via);
        // The refresh is sent without the request's cookies and credentials (refreshRequestHeaders): an
        // anonymous answer, filed under the values it was asked with (none for the fields left out).
        const d = decideFromPairs('GET', res.statusCode, pairs, false, false, rc);
        const varyValues = d.store ? varyValuesOf(d.varyNames, reqHeaders) : null;
        if (varyValues !== null && d.store)
          for (let i = 0; i < d.varyNames.length; i++) {
            const name = d.varyNames[i]!;
            if (name === 'cookie' || rc.credentialHeaders.includes(name)) varyValues[i] = '';
          }
        if (d.store && varyValues !== null) {
          store.put(key, makeEntry(key, res.statusCode, pairs, ownedBody(chunks, bytes), d, varyValues, clock.now()));
          core.afterStoreChange();
        }
      } catch (err) {
        // The stale copy stays until its windows end; the next request past them goes to the origin.
        if (sample === 'none' && classifyUpstreamError(err as Error).code === 'RMP_ERR_UPSTREAM_TIMEOUT')
          sample = 'drop';
      } finally {
        entry.refreshing = false;
        if (gated) gate.release(cls, sample, sample === 'success' ? gate.clock.now() - startMs : 0, rttSlot);
      }
    })();
  }

  function wait(
    ctx: RequestContext,
    route: CompiledRoute,
    key: string,
    flight: Flight,
    stale: CacheEntry | null,
  ): Promise<Verdict> {
    return new Promise<Verdict>((resolve) => {
      let settled = false;
      const waiter = (o: FlightOutcome) => {
        if (settled) return;
        settled = true;
        waiting--;
        clearTimeout(timer);
        if (ctx.finished) {
          // The client left while waiting: nothing to answer, nothing to fetch.
          resolve(Verdict.Reply);
          return;
        }
        const now = clock.now();
        if (
          o.entry !== null &&
          now < o.entry.freshUntil &&
          sameVariant(o.entry, ctx.req.headers) &&
          (o.entry.isPublic || !personal(ctx.req.headers, route.cache!))
        ) {
          count(route, R_COLLAPSED);
          ctx.cache = 'collapsed';
          replyWith(ctx, o.entry, 'HIT');
          resolve(Verdict.Reply);
          return;
        }
        const usable = o.failure !== '' ? usableOnError(stale) : null;
        if (usable !== null) {
          count(route, R_STALE);
          core.standIn(ctx, usable, o.shed !== '' ? 'stale:shed' : 'stale:error', o.failure);
          resolve(Verdict.Reply);
          return;
        }
        if (o.shed !== '') {
          // The class is saturated and this key's fill did not get a slot in time: a waiter would
          // meet the same queue (and each would wait out its deadline in turn). Same answer, now.
          count(route, R_MISS);
          ctx.cache = 'miss:fill_shed';
          refuseShed(ctx, o.shed, null);
          resolve(Verdict.Reply);
          return;
        }
        if (o.abandoned && ctx.req.method === 'GET') {
          // The fill ended without a failure and without storing: its client left and the fetch was
          // abandoned. The first waiter to wake takes over the fill and the others wait on it again,
          // so a client that asks for a hot key and hangs up cannot send every waiter to the origin.
          const next = inflight.get(key);
          if (next !== undefined && next.waiters.length < MAX_WAITERS_PER_KEY) {
            resolve(wait(ctx, route, key, next, stale));
            return;
          }
          if (next === undefined) {
            const own: Flight = { waiters: [] };
            inflight.set(key, own);
            count(route, R_MISS);
            ctx.cache = 'miss:fill_taken_over';
            ctx.cacheTap = new CacheTap(core, ctx, key, stale, own);
            resolve(Verdict.Continue);
            return;
          }
        }
        count(route, R_MISS);
        goToOrigin(ctx, stale, o.failure !== '' ? 'miss:fill_failed' : 'miss:fill_not_stored');
        resolve(Verdict.Continue);
      };
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        waiting--;
        const i = flight.waiters.indexOf(waiter);
        if (i !== -1) flight.waiters.splice(i, 1);
        if (ctx.finished) {
          resolve(Verdict.Reply);
          return;
        }
        count(route, R_MISS);
        goToOrigin(ctx, stale, 'miss:collapse_timeout');
        resolve(Verdict.Continue);
      }, route.upstream.config.headersTimeoutMs);
      flight.waiters.push(waiter);
      waiting++;
    });
  }

  /** Let the request go to the origin without filling, a stale copy in hand for a failure. */
  function goToOrigin(ctx: RequestContext, stale: CacheEntry | null, note: string): void {
    ctx.cache = note;
    ctx.cacheTap = new CacheTap(core, ctx, '', stale, null);
  }

  return {
    name: 'cache',
    store,
    waiting: () => waiting,
    onRequest(ctx: RequestContext) {
      const route = ctx.route!;
      const rc = route.cache;
      if (rc === null) return Verdict.Continue;
      const rt = getRuntime();
      if (rt !== limitsFrom) {
        limitsFrom = rt;
        store.setLimits({
          maxBytes: rt.config.cache.maxBytes,
          maxObjectBytes: rt.config.cache.maxObjectBytes,
          maxVariants: MAX_VARIANTS_PER_KEY,
        });
        core.afterStoreChange();
      }
      const req = ctx.req;
      const method = req.method;
      // A WebSocket tunnel (a real upgrade, on a route that allows them) is not a cacheable exchange; a
      // request that merely carries Upgrade is an ordinary GET (Upgrade is not forwarded) and is served
      // or filled like any other, so the header cannot be used to walk past the cache.
      if ((method !== 'GET' && method !== 'HEAD') || (req as { upgrade?: boolean }).upgrade === true) {
        count(route, R_BYPASS);
        ctx.cache = 'bypass:method';
        return Verdict.Continue;
      }
      // The path as routes judged it (without `;parameters`: `/track/A;x=<random>` is `/track/A`), or
      // on a route that keys its whole target, the target as it came.
      const q = rc.queryParams === null ? -2 : ctx.target.indexOf('?');
      const target = q === -2 ? ctx.target : q === -1 ? ctx.path : ctx.path + ctx.target.slice(q);
      // From here on the request goes upstream (a fill, a refresh, a bypassed copy) with exactly the
      // target its key describes, so nothing outside the key can shape what gets stored.
      ctx.target = cacheTarget(target, rc.queryParams);
      const key = keyOfTarget(method, ctx.host, ctx.target);
      const now = clock.now();
      let entry = store.get(key, req.headers) ?? null;
      if (entry !== null && now >= entry.staleUntil) {
        store.delete(key, entry);
        core.afterStoreChange();
        entry = null;
      }
      // Authorization or the API-key header: RFC 9111 §3.5, a copy stored without `public`/`s-maxage`
      // does not answer such a request (it may be asking for its own page).
      const credentials = carriesCredentials(req.headers, rc);
      if (credentials && entry !== null && !entry.isPublic) {
        count(route, R_BYPASS);
        ctx.cache = 'bypass:authorization';
        return Verdict.Continue;
      }
      // On a route cached by default, a cookie the origin sees may make its answer that person's page, and
      // the key does not vary on cookies: such a request is answered only by a copy the origin called
      // shared. On a route the operator switched on, the operator vouched for it: cookies do not count.
      const cookie = rc.byDefault && carriesCookie(req.headers);
      if (cookie && entry !== null && !entry.isPublic) {
        count(route, R_BYPASS);
        ctx.cache = 'bypass:cookie';
        return Verdict.Continue;
      }
      // On a route cached by default, a request with credentials or a cookie never fills the shared
      // copy, even with an answer marked public (policy.ts); it may still be answered from one.
      const noFill = rc.byDefault && (cookie || credentials);
      if (entry !== null) {
        if (now < entry.freshUntil) {
          count(route, R_HIT);
          ctx.cache = 'hit';
          replyWith(ctx, entry, 'HIT');
          return Verdict.Reply;
        }
        if (now < entry.staleWhileRevalidateUntil) {
          count(route, R_STALE);
          ctx.cache = 'stale:revalidating';
          replyWith(ctx, entry, 'STALE');
          refresh(ctx, key, entry);
          return Verdict.Reply;
        }
      }
      // A miss, or a copy too old for anything but standing in for a failure.
      if (passUntil.size > 0) {
        const until = passUntil.get(key);
        if (until !== undefined && now < until) {
          count(route, R_MISS);
          // Not registered as the key's flight: nobody waits on it, yet a storable answer is stored.
          if (method === 'GET' && !noFill) {
            ctx.cache = 'miss:pass';
            ctx.cacheTap = new CacheTap(core, ctx, key, entry, PASS_FLIGHT);
          } else goToOrigin(ctx, entry, 'miss:pass');
          return Verdict.Continue;
        }
        if (until !== undefined) passUntil.delete(key);
      }
      const flight = inflight.get(key);
      if (flight !== undefined && flight.waiters.length < MAX_WAITERS_PER_KEY)
        return wait(ctx, route, key, flight, entry);
      count(route, R_MISS);
      // HEAD carries no body to store, a request with a cookie or credentials on a route cached by
      // default fills nothing, and a full waiting list means this one goes alone.
      if (method === 'GET' && flight === undefined && !noFill) {
        const own: Flight = { waiters: [] };
        inflight.set(key, own);
        ctx.cache = entry === null ? 'miss' : 'miss:expired';
        ctx.cacheTap = new CacheTap(core, ctx, key, entry, own);
      } else {
        const why = noFill ? (credentials ? ':authorization' : ':request_cookie') : '';
        goToOrigin(ctx, entry, `${entry === null ? 'miss' : 'miss:expired'}${why}`);
      }
      return Verdict.Continue;
    },
    onDone(ctx: RequestContext) {
      const tap = ctx.cacheTap;
      if (tap !== null) (tap as CacheTap).release();
    },
    serveStaleIfAny(ctx: RequestContext): boolean {
      const tap = ctx.cacheTap as CacheTap | null;
      if (tap === null || tap.answered) return false;
      const usable = usableOnError(tap.stale);
      if (usable === null) return false;
      core.standIn(ctx, usable, 'stale:shed', ctx.reason);
      tap.answered = true;
      return true;
    },
  };
}

/** Whether the request carries Authorization or a configured API-key header (rc.credentialHeaders). */
function carriesCredentials(headers: IncomingHttpHeaders, rc: CompiledRouteCache): boolean {
  const names = rc.credentialHeaders;
  for (let i = 0; i < names.length; i++) if (Object.hasOwn(headers, names[i]!)) return true;
  return false;
}

/** Whether a copy not marked public may not answer this request (credentials; on a default route, cookies). */
function personal(headers: IncomingHttpHeaders, rc: CompiledRouteCache): boolean {
  return carriesCredentials(headers, rc) || (rc.byDefault && carriesCookie(headers));
}

/** Whether the request carries a cookie the origin sees (Rempart's own are taken out before it). */
function carriesCookie(headers: IncomingHttpHeaders): boolean {
  const c = headers.cookie;
  return c !== undefined && c !== '' && withoutRempartCookies(c) !== '';
}

function sameVariant(entry: CacheEntry, headers: IncomingHttpHeaders): boolean {
  const names = entry.varyNames;
  for (let i = 0; i < names.length; i++) if (varyValue(names[i]!, headers) !== entry.varyValues[i]) return false;
  return true;
}

/**
 * The body in a memory block of its own. Buffer.concat cuts small results from Node's shared 8 KiB
 * pool, and a cached slice keeps its whole slab alive: an attacker who keeps every hundredth small
 * entry warm would pin 8 KiB for each while the store charges its few bytes.
 */
function ownedBody(chunks: readonly Buffer[], bytes: number): Buffer {
  const body = Buffer.allocUnsafeSlow(bytes);
  let at = 0;
  for (const c of chunks) at += c.copy(body, at);
  return body;
}

/** Whether `name` is `lower` (a lower-case field name of the same length) in any ASCII case. */
function isName(name: string, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    const c = name.charCodeAt(k);
    const l = lower.charCodeAt(k);
    if (c !== l && !(l >= 0x61 && l <= 0x7a && c === l - 0x20)) return false;
  }
  return true;
}

/** The policy's facts read from response header pairs (as clientResponseHeaders gives them). */
function decideFromPairs(
  method: string,
  status: number,
  pairs: readonly string[],
  hasAuth: boolean,
  hasCookie: boolean,
  rc: CompiledRouteCache,
): StoreDecision {
  let cacheControl: string | undefined;
  let vary = '';
  let ageSec = 0;
  let hasSetCookie = false;
  // Names told by their length first, compared without a lower-cased copy each: every proxied GET on a
  // caching route comes here (a pass route too: its answer may have become storable).
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i]!;
    const value = pairs[i + 1]!;
    const len = name.length;
    if (len === 13 && isName(name, 'cache-control'))
      cacheControl = cacheControl === undefined ? value : `${cacheControl}, ${value}`;
    else if (len === 10 && isName(name, 'set-cookie')) hasSetCookie = true;
    else if (len === 4 && isName(name, 'vary')) vary = vary === '' ? value : `${vary}, ${value}`;
    else if (len === 3 && isName(name, 'age') && /^[0-9]{1,10}$/.test(value.trim())) ageSec = Number(value.trim());
  }
  return decideStore(
    {
      method,
      status,
      cacheControl,
      hasSetCookie,
      vary,
      ageSec,
      requestHasAuthorization: hasAuth,
      requestHasCookie: hasCookie,
      cachedByDefault: rc.byDefault,
    },
    rc,
  );
}

/** decideFromPairs from the facts the lean pool's head gives (headers.ts upstreamHeadFacts). */
function decideFacts(
  method: string,
  status: number,
  facts: UpstreamHeadFacts,
  hasAuth: boolean,
  hasCookie: boolean,
  rc: CompiledRouteCache,
): StoreDecision {
  return decideStore(
    {
      method,
      status,
      cacheControl: facts.cacheControl,
      hasSetCookie: facts.hasSetCookie,
      vary: facts.vary,
      ageSec: facts.ageSec,
      requestHasAuthorization: hasAuth,
      requestHasCookie: hasCookie,
      cachedByDefault: rc.byDefault,
    },
    rc,
  );
}

/**
 * Build an entry: our own Content-Length (the body is whole) and Age (computed when served). `varyValues`
 * are the request's, from varyValuesOf (callers do not store when it gave null).
 */
function makeEntry(
  key: string,
  status: number,
  pairs: readonly string[],
  body: Buffer,
  d: Extract<StoreDecision, { store: true }>,
  varyValues: readonly string[],
  now: number,
): CacheEntry {
  const headers: string[] = [];
  let ageSec = 0;
  for (let i = 0; i < pairs.length; i += 2) {
    const lower = pairs[i]!.toLowerCase();
    if (lower === 'age') {
      const v = Number(pairs[i + 1]!.trim());
      if (Number.isFinite(v) && v >= 0) ageSec = v;
      continue;
    }
    if (lower === 'content-length' || lower === 'set-cookie' || lower === 'x-cache') continue;
    headers.push(pairs[i]!, pairs[i + 1]!);
  }
  headers.push('content-length', String(body.length));
  const freshUntil = now + d.freshForMs;
  return {
    status,
    headers,
    body,
    storedAt: now - ageSec * 1000,
    freshUntil,
    staleWhileRevalidateUntil: freshUntil + d.staleWhileRevalidateMs,
    staleUntil: freshUntil + Math.max(d.staleWhileRevalidateMs, d.staleIfErrorMs),
    varyNames: d.varyNames,
    varyValues,
    isPublic: d.isPublic,
    sizeBytes: entrySize(key, headers, body, d.varyNames, varyValues),
    refreshing: false,
  };
}

/**
 * Watches one forwarded response. As the filler of a key (it owns `flight`) it copies a storable
 * response's body as it streams to the client, stores it at the end and wakes the waiters. With a
 * stale copy in hand it stands in for an upstream failure: an error before the head, or a 5xx head.
 */
class CacheTap implements ResponseTap {
  readonly core: Core;
  readonly ctx: RequestContext;
  readonly key: string;
  readonly stale: CacheEntry | null;
  flight: Flight | null;
  answered: boolean;
  /** Whether and how to store the response (policy.ts), once its head is in. */
  storeDecision: StoreDecision | null;
  /** The request's values for the response's Vary names (set with `storeDecision`). */
  varyValues: string[] | null;
  headers: string[] | null;
  chunks: Buffer[] | null;
  bytes: number;

  constructor(core: Core, ctx: RequestContext, key: string, stale: CacheEntry | null, flight: Flight | null) {
    this.core = core;
    this.ctx = ctx;
    this.key = key;
    this.stale = stale;
    this.flight = flight;
    this.answered = false;
    this.storeDecision = null;
    this.varyValues = null;
    this.headers = null;
    this.chunks = null;
    this.bytes = 0;
  }

  #usableStale(): CacheEntry | null {
    const s = this.stale;
    return s !== null && this.core.clock.now() < s.staleUntil ? s : null;
  }

  onHeaders(status: number, pairs: string[]): boolean {
    const ctx = this.ctx;
    if (status >= 500) {
      const stale = this.#usableStale();
      if (stale !== null) {
        this.core.onUpstreamError(ctx, 'RMP_ERR_UPSTREAM_STATUS');
        this.core.standIn(ctx, stale, 'stale:upstream_5xx', 'RMP_ERR_UPSTREAM_STATUS');
        this.answered = true;
        sendLocalReply(ctx);
        this.finish('RMP_ERR_UPSTREAM_STATUS');
        return true;
      }
    }
    if (this.flight === null) return false;
    const rc = ctx.route!.cache!;
    const reqHeaders = ctx.req.headers;
    const d = decideFromPairs('GET', status, pairs, carriesCredentials(reqHeaders, rc), carriesCookie(reqHeaders), rc);
    if (!d.store) {
      this.#notStored(status, d.reason);
      return false;
    }
    const lengthPos = pairs.findIndex((v, i) => i % 2 === 0 && v.toLowerCase() === 'content-length');
    if (lengthPos !== -1 && Number(pairs[lengthPos + 1]) > this.core.store.limits.maxObjectBytes) {
      ctx.cache = `${ctx.cache}:not_stored:too_large`;
      this.markPass();
      this.finish('');
      return false;
    }
    const varyValues = varyValuesOf(d.varyNames, ctx.req.headers);
    if (varyValues === null) {
      ctx.cache = `${ctx.cache}:not_stored:vary_value_too_long`;
      this.finish('');
      return false;
    }
    this.storeDecision = d;
    this.varyValues = varyValues;
    this.headers = pairs;
    this.chunks = [];
    return false;
  }

  /**
   * The lean pool's head judged from its facts (the four fields decideFromPairs reads, strings only for
   * those present): the whole pairs are asked for only when they are kept (a storable answer) or a stale
   * copy may stand in for a 5xx. Most answers on a caching route are judged not storable here.
   */
  needsPairs(status: number, facts: UpstreamHeadFacts): boolean {
    if (status >= 500 && this.#usableStale() !== null) return true;
    if (this.flight === null) return false;
    const ctx = this.ctx;
    const rc = ctx.route!.cache!;
    const reqHeaders = ctx.req.headers;
    const d = decideFacts('GET', status, facts, carriesCredentials(reqHeaders, rc), carriesCookie(reqHeaders), rc);
    if (d.store) return true;
    this.#notStored(status, d.reason);
    return false;
  }

  #notStored(status: number, reason: string): void {
    const ctx = this.ctx;
    ctx.cache = `${ctx.cache}:not_stored:${reason}`;
    // What the origin says of the resource, not of this request: later misses need not wait on a fill.
    if (reason !== 'authorization' && reason !== 'request_cookie') this.markPass();
    this.finish(status >= 500 ? 'RMP_ERR_UPSTREAM_STATUS' : '');
  }

  onData(chunk: Buffer): void {
    const chunks = this.chunks;
    if (chunks === null) return;
    this.bytes += chunk.length;
    if (this.bytes > this.core.store.limits.maxObjectBytes) {
      this.chunks = null;
      this.ctx.cache = `${this.ctx.cache}:not_stored:too_large`;
      this.finish('');
      return;
    }
    chunks.push(chunk);
  }

  onComplete(): void {
    const chunks = this.chunks;
    const d = this.storeDecision;
    if (chunks === null || d === null || !d.store || this.answered) {
      this.finish('');
      return;
    }
    this.chunks = null;
    const core = this.core;
    const entry = makeEntry(
      this.key,
      this.ctx.upstreamStatus,
      this.headers!,
      ownedBody(chunks, this.bytes),
      d,
      this.varyValues!,
      core.clock.now(),
    );
    if (core.store.put(this.key, entry)) {
      core.afterStoreChange();
      core.passUntil.delete(this.key);
      this.ctx.cache = `${this.ctx.cache}:stored`;
      this.finish('', entry);
    } else {
      this.finish('');
    }
  }

  onError(err: Error): void {
    this.chunks = null;
    const ctx = this.ctx;
    if (this.answered) return;
    const { code } = classifyUpstreamError(err);
    // A stale copy also stands in when the gateway could not reach the upstream for want of descriptors.
    const upstreamFault = code.startsWith('RMP_ERR_UPSTREAM_') || code === 'RMP_ERR_RESOURCES_EXHAUSTED';
    if (upstreamFault && !ctx.finished && !ctx.res.headersSent) {
      const stale = this.#usableStale();
      if (stale !== null) {
        this.core.onUpstreamError(ctx, code);
        this.core.standIn(ctx, stale, 'stale:error', code);
        this.answered = true;
        sendLocalReply(ctx);
      }
    }
    this.finish(upstreamFault ? code : '');
  }

  /** Remember the key as one whose misses go to the origin side by side (bounded: oldest mark first). */
  markPass(): void {
    if (this.key.length > MAX_PASS_KEY_CHARS) return;
    const marks = this.core.passUntil;
    const now = this.core.clock.now();
    // Every miss:pass of a hot key re-marks it: a mark renewed within the last second is left as it is
    // (the Map's delete and set per request showed in profiles). Not longer: a mark keeps its place in
    // the eviction order while it is not renewed, and 4,096 other keys marked meanwhile evict a key in
    // use (with half the span, 270 uncacheable requests a second did: attacker review of s23).
    const until = marks.get(this.key);
    if (until !== undefined && until - now >= PASS_MARK_MS - PASS_REMARK_MS) return;
    marks.delete(this.key);
    if (marks.size >= MAX_PASS_MARKS) {
      const oldest = marks.keys().next();
      if (oldest.done !== true) marks.delete(oldest.value);
    }
    marks.set(this.key, now + PASS_MARK_MS);
  }

  /** The request is over (the phase's onDone): wake anyone still waiting. */
  release(): void {
    const ctx = this.ctx;
    if (isShed(ctx.reason)) {
      this.finish(ctx.reason, null, ctx.reason);
      return;
    }
    const failed = ctx.decision === 'upstream_error' || ctx.decision === 'stale';
    this.finish(failed && ctx.reason !== '' ? ctx.reason : ctx.upstreamStatus >= 500 ? 'RMP_ERR_UPSTREAM_STATUS' : '');
  }

  /** Hand the outcome to the requests waiting on this fill (once). */
  finish(failure: ErrorCode | '', entry: CacheEntry | null = null, shed: ShedCode | '' = ''): void {
    const flight = this.flight;
    if (flight === null) return;
    this.flight = null;
    const inflight = this.core.inflight;
    if (inflight.get(this.key) === flight) inflight.delete(this.key);
    if (flight.waiters.length === 0) return;
    // Finished while its own client is already gone and with nothing stored nor failed: abandoned.
    const outcome: FlightOutcome = {
      entry,
      failure,
      abandoned: this.ctx.finished && entry === null && failure === '',
      shed,
    };
    for (const w of flight.waiters) w(outcome);
  }
}

export const cachePhase: PhaseModule<CachePhase> = {
  name: 'cache',
  folder: 'cache',
  summary:
    "the stored response (`x-cache: HIT`), a stale copy (`x-cache: STALE`); a miss waits for the same key's " +
    'origin request (collapsing). Decisions `cache_hit`, `stale`; the log field `cache` gives why (`hit`, ' +
    '`miss`, `collapsed`, `stale:revalidating`, `stale:error`, `miss:not_stored:private` …)',
  create: (env) => createCachePhase(env.getRuntime, env.metrics, env.clock),
};
