// Phase `rateLimit`: GCRA budgets per client key (address, prefix, session cookie, API key), per class
// and route; 429 with Retry-After and the IETF RateLimit-Policy / RateLimit headers. Each refusal is an
// offence reported to the ban table: a client that keeps hammering past its limit is banned, and then
// refused on accept where it costs least (docs/rate-limits.md, docs/bans.md).
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { RequestContext } from '../../core/context.ts';
import type { Runtime } from '../../core/runtime.ts';
import { decide } from '../../defense/decide.ts';
import type { DefenseDeps } from '../../defense/types.ts';
import { cookieValue } from '../admission/client-key.ts';
import { GcraLimiter } from './gcra.ts';
import { GlobalLimiter, type LeaseBroker } from '../../store/leases.ts';
import type { RateLimitKey } from './schema.ts';

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
  readonly windowSec: number;
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
  constructor(runtime: Runtime, previous: RuleSet | null, broker: LeaseBroker | undefined) {
    const cfg = runtime.config.defense.rateLimit;
    this.mode = cfg.mode;
    this.sessionCookie = cfg.sessionCookie;
    this.apiKeyHeader = cfg.apiKeyHeader.toLowerCase();
    const kept = new Map<string, CompiledRule>();
    if (previous !== null) for (const r of previous.all) kept.set(signature(r.id, r.key, r.perRoute, r.ratePerSec, r.limiter.burst, r.limiter.maxKeys, r.global !== null), r);
    this.all = runtime.config.defense.rateLimit.rules.map((rc: RuleConfig) => {
      const perRoute = rc.per === 'route';
      const maxKeys = rc.maxKeys ?? 100000;
      // Without a cluster store (a bare phase in tests), a global rule counts per node.
      const isGlobal = rc.scope === 'global' && broker !== undefined;
      const old = kept.get(signature(rc.id, rc.key, perRoute, rc.ratePerSec, rc.burst, maxKeys, isGlobal));
      if (old !== undefined) return old;
      const windowSec = Math.max(1, Math.ceil(rc.burst / rc.ratePerSec));
      const global = isGlobal ? new GlobalLimiter(broker, rc.id, rc.ratePerSec, rc.burst, maxKeys) : null;
      return { id: rc.id, key: rc.key, perRoute, ratePerSec: rc.ratePerSec, limiter: new GcraLimiter(rc.ratePerSec, rc.burst, maxKeys), global, policy: `"${rc.id}";q=${rc.burst};w=${windowSec}`, windowSec };
    });
    const rules = runtime.config.defense.rateLimit.rules;
    this.byRoute = runtime.routes.map((route) =>
      this.all.filter((_, i) => {
        const rc = rules[i]!;
        return (rc.classes === undefined || (rc.classes as readonly string[]).includes(route.class)) && (rc.routes === undefined || rc.routes.includes(route.name));
      }),
    );
  }
}

function signature(id: string, key: string, perRoute: boolean, rate: number, burst: number, maxKeys: number, global: boolean): string {
  return `${id}\0${key}\0${perRoute}\0${rate}\0${burst}\0${maxKeys}\0${global}`;
}

/** The key `rule` counts this request by, or '' when the request lacks the credential the rule counts. */
function keyOf(rule: CompiledRule, ctx: RequestContext, sessionCookie: string, apiKeyHeader: string): string {
  let k: string;
  switch (rule.key) {
    case 'address':
      k = ctx.clientAddress;
      break;
    case 'prefix':
      k = ctx.clientPrefix;
      break;
    case 'session': {
      const sid = cookieValue(ctx.req.headers.cookie, sessionCookie);
      if (sid === '') return '';
      k = sid.length > MAX_CREDENTIAL_CHARS ? sid.slice(0, MAX_CREDENTIAL_CHARS) : sid;
      break;
    }
    case 'apiKey': {
      const v = ctx.req.headers[apiKeyHeader];
      if (typeof v !== 'string' || v === '') return '';
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

export function createRateLimitPhase(deps: DefenseDeps): RateLimitPhase {
  let runtime: Runtime | null = null;
  let rules: RuleSet | null = null;
  const current = (): RuleSet => {
    const rt = deps.getRuntime();
    if (rt !== runtime || rules === null) {
      rules = new RuleSet(rt, rules, deps.leases);
      runtime = rt;
    }
    return rules;
  };

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
      for (let i = 0; i < list.length; i++) {
        const rule = list[i]!;
        const key = keyOf(rule, ctx, set.sessionCookie, set.apiKeyHeader);
        if (key === '') continue;
        const g = rule.global;
        // A global rule asks its leases (local numbers, no round trip); null: the store is unusable, decide locally.
        const verdict = g === null ? null : g.check(key, now);
        if (verdict === true || (verdict === null && rule.limiter.check(key, now))) continue;
        const waitSec = Math.max(1, Math.ceil((verdict === false ? g!.waitMs : rule.limiter.result.waitMs) / 1000));
        const headers = {
          'retry-after': String(waitSec),
          'ratelimit-policy': rule.policy,
          ratelimit: `"${rule.id}";r=0;t=${waitSec}`,
        };
        // Observe mode decides and counts but neither refuses nor feeds bans (that would be enforcing).
        if (mode === 'enforce') deps.bans.offence(ctx.clientAddress, 'rate_limited', rule.id);
        if (decide(deps, ctx, 'rateLimit', mode, 'RMP_ERR_RATE_LIMITED', rule.id, 429, '', headers)) return Verdict.Reply;
        return Verdict.Continue;
      }
      return Verdict.Continue;
    },
  };
}
