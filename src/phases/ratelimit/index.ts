// Phase `rateLimit`: GCRA budgets per client key (address, prefix, session cookie, API key), per class
// and route; 429 with Retry-After and the IETF RateLimit-Policy / RateLimit headers. Each refusal is an
// offence reported to the ban table: a client that keeps hammering past its limit is banned, and then
// refused on accept where it costs least (docs/rate-limits.md, docs/bans.md).
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import { decide } from '../../pipeline/guard.ts';
import { holdClock, releaseClock } from '../../core/clock.ts';
import type { DefenseDeps } from '../../pipeline/env.ts';
import { addressKey, cookieValues, headerValues, v6PrefixKey } from '../../core/client-key.ts';
import { GcraLimiter } from './gcra.ts';
import { GlobalLimiter, type LeaseBroker } from '../../store/leases.ts';
import { DEFAULT_PREFIX_FACTOR, type RateLimitKey } from './schema.ts';

type RuleConfig = Runtime['config']['defense']['rateLimit']['rules'][number];

/** A rule as the hot path reads it. */
interface CompiledRule {
  readonly id: string;
  readonly key: RateLimitKey;
  readonly perRoute: boolean;
  readonly ratePerSec: number;
  readonly limiter: GcraLimiter;
  /** `scope: global`: the leases from the cluster store (the local limiter decides when the store is unusable). */
  readonly global: GlobalLimiter | null;
  /** `"id";q=burst;w=seconds`, built once. */
  readonly policy: string;
  /** A refusal's headers by its wait in seconds, frozen (refusalHeaders). */
  readonly refusals: Map<number, Readonly<Record<string, string>>>;
  readonly windowSec: number;
  /**
   * The second level of an `address` rule: 24 counts the client's IPv4 /24 (IPv6 clients skip it), 48
   * its IPv6 /48 (IPv4 clients skip it); 0 for a rule's own level.
   */
  readonly level: 0 | 24 | 48;
  /** Methods counted (upper case), or null for all. */
  readonly methods: readonly string[] | null;
  /** Count only requests from clients that are not known (ctx.known). */
  readonly unknownOnly: boolean;
}

/** Session ids and API keys longer than this are cut: enough to tell clients apart, bounded in memory. */
const MAX_CREDENTIAL_CHARS = 128;

/**
 * The rules in force for each route index, rebuilt when the runtime snapshot changes (a reload).
 * Limiter state survives a reload for a rule whose id, key, scope, rate, burst and budget are unchanged.
 */
class RuleSet {
  readonly byRoute: CompiledRule[][];
  readonly all: CompiledRule[];
  readonly mode: Runtime['config']['defense']['rateLimit']['mode'];
  readonly sessionCookie: string;
  /** Lower-cased, as Node gives header names. */
  readonly apiKeyHeader: string;
  /** defense.ipv6PrefixLength: the IPv6 network `key: address` counts as one client. */
  readonly v6Bits: number;
  /** defense.rateLimit.maxWaiting: requests waiting for their turn at most, in the process. */
  readonly maxWaiting: number;
  constructor(runtime: Runtime, previous: RuleSet | null, broker: LeaseBroker | undefined) {
    const cfg = runtime.config.defense.rateLimit;
    this.mode = cfg.mode;
    this.maxWaiting = cfg.maxWaiting;
    this.v6Bits = runtime.config.defense.ipv6PrefixLength;
    this.sessionCookie = cfg.sessionCookie;
    this.apiKeyHeader = cfg.apiKeyHeader.toLowerCase();
    const kept = new Map<string, CompiledRule>();
    if (previous !== null)
      for (const r of previous.all)
        kept.set(
          signature(r.id, r.key, r.perRoute, r.ratePerSec, r.limiter.burst, r.limiter.maxKeys, r.global !== null) +
            `\0${r.methods?.join(',') ?? ''}\0${r.unknownOnly}\0${r.limiter.maxDelayMs}`,
          r,
        );
    const compile = (
      id: string,
      key: RateLimitKey,
      rc: RuleConfig,
      ratePerSec: number,
      burst: number,
      level: 0 | 24 | 48,
    ): CompiledRule => {
      const perRoute = rc.per === 'route';
      const maxKeys = rc.maxKeys ?? 100000;
      // Without a cluster store (a bare phase in tests), a global rule counts per node.
      const isGlobal = rc.scope === 'global' && broker !== undefined;
      const methods = rc.methods === undefined ? null : [...rc.methods];
      const unknownOnly = rc.clients === 'unknown';
      const old = kept.get(
        signature(id, key, perRoute, ratePerSec, burst, maxKeys, isGlobal) +
          `\0${methods?.join(',') ?? ''}\0${unknownOnly}\0${rc.maxDelayMs ?? 0}`,
      );
      if (old !== undefined) return old;
      const windowSec = Math.max(1, Math.ceil(burst / ratePerSec));
      const global = isGlobal ? new GlobalLimiter(broker, id, ratePerSec, burst, maxKeys) : null;
      return {
        id,
        key,
        perRoute,
        ratePerSec,
        limiter: new GcraLimiter(ratePerSec, burst, maxKeys, rc.maxDelayMs ?? 0),
        global,
        policy: `"${id}";q=${burst};w=${windowSec}`,
        refusals: new Map(),
        windowSec,
        level,
        methods,
        unknownOnly,
      };
    };
    // Each rule, and after an `address` rule with a prefixFactor its /24 and /48 levels: addresses
    // rotated inside one /24 (254 budgets for whoever holds it), or /64s inside one /48 (65,536: what a
    // free tunnel broker hands out), meet one budget `prefixFactor` times larger.
    const owners: RuleConfig[] = [];
    const all: CompiledRule[] = [];
    for (const rc of cfg.rules) {
      all.push(compile(rc.id, rc.key, rc, rc.ratePerSec, rc.burst, 0));
      owners.push(rc);
      const factor = rc.key === 'address' ? (rc.prefixFactor ?? DEFAULT_PREFIX_FACTOR) : 0;
      if (factor > 0) {
        const rate = rc.ratePerSec * factor;
        const burst = Math.ceil(rc.burst * factor);
        all.push(compile(`${rc.id}/24`, 'prefix', rc, rate, burst, 24));
        owners.push(rc);
        if (this.v6Bits > 48) {
          all.push(compile(`${rc.id}/48`, 'prefix', rc, rate, burst, 48));
          owners.push(rc);
        }
      }
    }
    this.all = all;
    this.byRoute = runtime.routes.map((route) =>
      this.all.filter((_, i) => {
        const rc = owners[i]!;
        return (
          (rc.classes === undefined || (rc.classes as readonly string[]).includes(route.class)) &&
          (rc.routes === undefined || rc.routes.includes(route.name))
        );
      }),
    );
  }
}

function signature(
  id: string,
  key: string,
  perRoute: boolean,
  rate: number,
  burst: number,
  maxKeys: number,
  global: boolean,
): string {
  return `${id}\0${key}\0${perRoute}\0${rate}\0${burst}\0${maxKeys}\0${global}`;
}

/** Session ids and API keys of this request (the phase is synchronous: one scratch array serves all). */
const credentials: string[] = [];

/**
 * How many keys `rule` counts this request by, in `credentials` for session and apiKey rules (0 when
 * the request lacks the credential; -1 when it carries more than MAX_IDENTITY_VALUES of them). A
 * cookie or header sent with several values is counted against every one: `sid=x1; sid=<real>`
 * spends the real session's budget too, whichever value the origin reads.
 */
function credentialsOf(rule: CompiledRule, ctx: RequestContext, set: RuleSet): number {
  if (rule.key === 'session') return cookieValues(ctx.req.headers.cookie, set.sessionCookie, credentials);
  if (ctx.req.headers[set.apiKeyHeader] === undefined) return 0;
  return headerValues(ctx.req.rawHeaders, set.apiKeyHeader, credentials);
}

/** The key `rule` counts this request by: the i-th credential for session and apiKey rules; '' for none. */
function keyOf(rule: CompiledRule, ctx: RequestContext, set: RuleSet, i: number): string {
  let k: string;
  switch (rule.key) {
    case 'address':
      // IPv4 by address, IPv6 by its /64 (defense.ipv6PrefixLength).
      k = addressKey(ctx.clientAddress, ctx.clientPrefix, set.v6Bits);
      break;
    case 'prefix':
      if (rule.level === 0) k = ctx.clientPrefix;
      else if (ctx.clientPrefix.indexOf(':') === -1) {
        if (rule.level === 48) return '';
        k = ctx.clientPrefix;
      } else {
        if (rule.level === 24) return '';
        k = v6PrefixKey(ctx.clientAddress, 48);
      }
      break;
    case 'session':
    case 'apiKey': {
      const v = credentials[i]!;
      k = v.length > MAX_CREDENTIAL_CHARS ? v.slice(0, MAX_CREDENTIAL_CHARS) : v;
      break;
    }
  }
  return rule.perRoute ? `${ctx.route!.index}\0${k}` : k;
}

export interface RateLimitPhase extends Phase {
  /** The limiter of rule `id` in the current configuration (tests, the bench). */
  limiter(id: string): GcraLimiter | null;
}

/**
 * How much of a rule's maxDelayMs a request may wait with `size` of `max` places taken: all of it up
 * to half, then in proportion to what is left (0 at the cap). A client sending at its rate with a full
 * queue of places (an attacker keeping the process's places taken without a single refusal) meets a
 * shorter wait than its queue's: refused, offences, banned. A page's first requests past its burst
 * (short waits) still find a place.
 */
export function waitShare(size: number, max: number): number {
  if (size >= max) return 0;
  return 2 * size <= max ? 1 : (2 * (max - size)) / max;
}

/** A ban found when a waiting request's turn comes closes its connection, as the `ban` phase's 403 does. */
const CLOSE = Object.freeze({ connection: 'close' });

/** Distinct waits kept per rule: a wait is at most the rule's window, so a few dozen in practice. */
const MAX_REFUSAL_SETS = 128;

/**
 * The 429's Retry-After and RateLimit headers for a wait of `waitSec`: made once per rule and wait,
 * frozen, so the reply keeps their merged, checked head fields (pipeline/reply.ts) instead of making
 * and checking three fields for every refused request. Capped: past the cap the set starts over.
 */
function refusalHeaders(rule: CompiledRule, waitSec: number): Readonly<Record<string, string>> {
  let h = rule.refusals.get(waitSec);
  if (h === undefined) {
    if (rule.refusals.size >= MAX_REFUSAL_SETS) rule.refusals.clear();
    h = Object.freeze({
      'retry-after': String(waitSec),
      'ratelimit-policy': rule.policy,
      ratelimit: `"${rule.id}";r=0;t=${waitSec}`,
    });
    rule.refusals.set(waitSec, h);
  }
  return h;
}

export function createRateLimitPhase(deps: DefenseDeps): RateLimitPhase {
  let runtime: Runtime | null = null;
  let rules: RuleSet | null = null;
  /**
   * Requests waiting for their turn now, with their timers (at most defense.rateLimit.maxWaiting). A request
   * leaves it exactly once: when its turn comes, or when its client leaves first (onDone clears the
   * timer), so a place is not held for the rest of the wait by a client that is gone, and the context
   * is not kept alive by its timer.
   */
  const waiting = new Map<RequestContext, NodeJS.Timeout>();
  /** The rules that made the request at hand wait (scratch, reused: one request at a time). */
  const delayedBy: CompiledRule[] = [];
  /**
   * A waiting request's turn came. Banned meanwhile (its own refusals past the places, an operator):
   * refused as the `ban` phase would, not forwarded, since that phase ran before the wait.
   */
  const afterWait = (ctx: RequestContext): Verdict => {
    if (!deps.bans.isBanned(ctx.clientAddress)) return Verdict.Continue;
    decide(deps, ctx, 'ban', 'enforce', 'RMP_ERR_BANNED', 'ban', 403, '', CLOSE);
    return Verdict.Reply;
  };
  const resumeDelayed = (ctx: RequestContext): void => {
    if (!waiting.delete(ctx)) return;
    // Not reached in practice (onDone took it out), kept against an entry that marks before it calls done.
    if (ctx.finished) return;
    // The rest of its phases and its dispatch read the clock once (core/clock.ts).
    holdClock();
    try {
      ctx.resumer!.resume(ctx, afterWait(ctx));
    } finally {
      releaseClock();
    }
  };
  const current = (): RuleSet => {
    const rt = deps.getRuntime();
    if (rt !== runtime || rules === null) {
      rules = new RuleSet(rt, rules, deps.leases);
      runtime = rt;
    }
    return rules;
  };

  deps.metrics.tableSizes.set('rate_limit_waiting', () => waiting.size);
  deps.metrics.defenseReaders.rateLimitKeys = (g) => {
    g.reset();
    for (const r of current().all) g.set({ rule: r.id }, r.limiter.size);
  };

  return {
    name: 'rateLimit',
    limiter(id) {
      return current().all.find((r) => r.id === id)?.limiter ?? null;
    },
    onRequest(ctx) {
      const route = ctx.route;
      if (route === null) return Verdict.Continue;
      const set = current();
      const mode = set.mode;
      if (mode === 'off') return Verdict.Continue;
      const list = set.byRoute[route.index];
      if (list === undefined || list.length === 0) return Verdict.Continue;
      const now = deps.clock.now();
      const method = ctx.req.method;
      // A request past a burst may wait for its turn (a rule's maxDelayMs): the longest wait of its rules.
      let delayMs = 0;
      let delays = 0;
      const share = waitShare(waiting.size, set.maxWaiting);
      for (let i = 0; i < list.length; i++) {
        const rule = list[i]!;
        if (rule.methods !== null && !rule.methods.includes(method ?? '')) continue;
        // Asked last: the look-up verifies a clearance's MAC or a JWT's signature, once per request.
        if (rule.unknownOnly && ctx.known) continue;
        let n = 1;
        if (rule.key === 'session' || rule.key === 'apiKey') {
          n = credentialsOf(rule, ctx, set);
          if (n < 0) {
            // More values than a browser ever holds: someone trying to be counted as someone else.
            if (mode === 'enforce') {
              ctx.refuse('RMP_ERR_EDGE_AMBIGUOUS_IDENTITY', 400);
              return Verdict.Reply;
            }
            n = credentials.length;
          }
        }
        for (let j = 0; j < n; j++) {
          const key = keyOf(rule, ctx, set, j);
          if (key === '') continue;
          const g = rule.global;
          // A global rule asks its leases (local numbers, no round trip); null: the store is unusable, decide locally.
          const verdict = g === null ? null : g.check(key, now);
          if (verdict === true) continue;
          const limiter = rule.limiter;
          if (
            verdict === null &&
            limiter.check(key, now, share === 1 ? limiter.maxDelayMs : limiter.maxDelayMs * share)
          ) {
            const d = limiter.result.delayMs;
            if (d > 0) {
              if (d > delayMs) delayMs = d;
              delayedBy[delays++] = rule;
            }
            continue;
          }
          const waitSec = Math.max(1, Math.ceil((verdict === false ? g!.waitMs : rule.limiter.result.waitMs) / 1000));
          const headers = refusalHeaders(rule, waitSec);
          // Observe mode decides and counts but neither refuses nor feeds bans (that would be enforcing).
          if (mode === 'enforce') deps.bans.offence(ctx.clientAddress, 'rate_limited', rule.id);
          if (decide(deps, ctx, 'rateLimit', mode, 'RMP_ERR_RATE_LIMITED', rule.id, 429, '', headers))
            return Verdict.Reply;
          return Verdict.Continue;
        }
      }
      // Observe mode decides and counts, never holds a request.
      if (delayMs <= 0 || mode !== 'enforce') return Verdict.Continue;
      // Counted as `delayed` once the request does wait: not when a later rule refused it.
      for (let i = 0; i < delays; i++)
        deps.metrics.guardDecisions.inc('rateLimit', 'delayed', 'RMP_ERR_RATE_LIMITED', delayedBy[i]!.id);
      if (ctx.resumer !== null) {
        // The request cycle resumes the request itself: one timer per waiting request, no promise.
        waiting.set(ctx, setTimeout(resumeDelayed, delayMs, ctx).unref());
        return Verdict.Wait;
      }
      // A runner of its own (the tunnel entry): a promise. If the client leaves first, onDone clears
      // the timer and the promise is never settled: nothing waits on it any more (its `done` has run).
      return new Promise<Verdict>((resolve) => {
        const timer = setTimeout(() => {
          if (!waiting.delete(ctx)) return;
          resolve(ctx.finished ? Verdict.Reply : afterWait(ctx));
        }, delayMs).unref();
        waiting.set(ctx, timer);
      });
    },
    onDone(ctx) {
      // One size check per request while nobody waits.
      if (waiting.size === 0) return;
      const timer = waiting.get(ctx);
      if (timer === undefined) return;
      clearTimeout(timer);
      waiting.delete(ctx);
    },
  };
}

export const rateLimitPhase: PhaseModule<RateLimitPhase> = {
  name: 'rateLimit',
  folder: 'ratelimit',
  summary:
    '429 with Retry-After, RateLimit-Policy and RateLimit headers (GCRA per address, prefix, session or API ' +
    'key; each 429 is an offence towards a ban; [rate-limits.md](rate-limits.md))',
  codes: ['RMP_ERR_RATE_LIMITED'],
  create: (env) => createRateLimitPhase(env),
};
