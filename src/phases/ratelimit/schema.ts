// Config fragment for the `rateLimit` phase (defense.rateLimit), part of the one schema. See docs/rate-limits.md.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../core/schema-util.ts';
import type { TrafficClass } from '../../core/traffic.ts';

// schema.ts imports this file, so the class list is repeated here (a value import would be a cycle);
// the two checks below fail to compile if they ever differ.
const CLASSES = [
  'critical',
  'authenticated',
  'cacheable',
  'public',
  'static',
] as const satisfies readonly TrafficClass[];
type Missing = Exclude<TrafficClass, (typeof CLASSES)[number]>;
const noneMissing: [Missing] extends [never] ? true : false = true;
void noneMissing;

// The methods a route may name (src/config/schema.ts lists the same), repeated for the same reason as CLASSES.
const RULE_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export const RATE_LIMIT_KEYS = ['address', 'prefix', 'session', 'apiKey'] as const;
export type RateLimitKey = (typeof RATE_LIMIT_KEYS)[number];

/**
 * The rule in force when the operator writes none: per address, on the classes anonymous traffic uses,
 * generous enough for a browser loading a page and its assets (or a few users behind one NAT), tight
 * enough that one address cannot take more than a small share of an origin. nginx's `limit_req
 * zone=$binary_remote_addr rate=50r/s burst=100 nodelay` does the same.
 */
export const DEFAULT_RATE_LIMIT_RULE = {
  id: 'per-address',
  key: 'address',
  classes: ['public', 'cacheable', 'static'],
  per: 'client',
  ratePerSec: 50,
  burst: 100,
  // Past the burst a request waits for its turn, up to 3 s, instead of a 429: a browser loading a page
  // of a few hundred resources (or two tabs, or a reload's revalidations) gets all of them, later, at
  // the rule's rate; 3 s covers an HTTP/2 connection's 100 streams at 50/s. A flood gets the same
  // 50/s as before and its surplus the same 429s (docs/rate-limits.md, bench/RESULTS.md).
  maxDelayMs: 3000,
  maxKeys: 100000,
} as const;

/**
 * An `address` rule's second level: the addresses of one IPv4 /24 share a budget this many times the
 * rule's (rate and burst). Whoever holds a /24 has 254 addresses to rotate; an office or a campus
 * with public addresses rarely sends 16 busy browsers' worth from one /24.
 */
export const DEFAULT_PREFIX_FACTOR = 16;

/**
 * Requests waiting for their turn (a rule's `maxDelayMs`) at most, in the whole process, by default
 * (defense.rateLimit.maxWaiting): past it a request past its burst is refused at once, as without the
 * wait. Each waiting request holds its connection (or stream) and context anyway, which the connection
 * caps bound; this bounds the timers and the contexts kept.
 */
export const DEFAULT_MAX_WAITING = 10000;

/** The methods that change something at the origin (RFC 9110 §9.2.1: not safe), which a cache never answers. */
export const UNSAFE_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * The second rule in force when the operator writes none: unsafe methods (a login, a form, a search
 * by POST) from clients that are not known (no clearance, no session the origin granted and that
 * behaves as one client's, no valid JWT), per address, on every class. A person submits a form every
 * few seconds at most and a page's POSTs come a few at once: 20 at once then one a second never meets
 * them. A credential-stuffing or form flood is what an unknown client sending more looks like, and
 * each of those requests costs the origin a password hash or a write that no cache can absorb. Known
 * clients are not counted here (the per-address rule and the session budgets cover them).
 */
export const DEFAULT_UNSAFE_RATE_LIMIT_RULE = {
  id: 'unsafe-unknown',
  key: 'address',
  methods: UNSAFE_METHODS,
  clients: 'unknown',
  per: 'client',
  ratePerSec: 1,
  burst: 20,
  // Its /24 and /48 levels share the general factor (16/s, burst 320): a distributed login flood
  // sends 1/s per /24 or less, so a smaller factor stops nothing more and only refuses the people of
  // an office or a carrier NAT, who share one /24 and whose refusals would turn into bans.
  prefixFactor: DEFAULT_PREFIX_FACTOR,
  maxKeys: 100000,
} as const;

/**
 * Another rule in force when the operator writes none (checked before `unsafe-unknown`, see the
 * default list below): unsafe methods from every client, known or
 * not, per address, on every class, 5/s with a burst of 50 (×16 per /24 and /48: 80/s, burst 800).
 * `unsafe-unknown` skips a known client, and a session is cheap to own (an account of one's own past
 * its probation): without this rule that one cookie would carry an unlimited login or form flood to
 * critical and authenticated routes, which the per-address rule leaves alone. Five times the unknown
 * pace and a burst of 50 leave room for what a signed-in person does (a page's few POSTs together, a
 * burst of saves or autosaves, an app's API writes a few a second) and stop a scripted one at 5/s.
 */
export const DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE = {
  id: 'unsafe-all',
  key: 'address',
  methods: UNSAFE_METHODS,
  clients: 'all',
  per: 'client',
  ratePerSec: 5,
  burst: 50,
  prefixFactor: DEFAULT_PREFIX_FACTOR,
  maxKeys: 100000,
} as const;

export const RateLimitRuleSchema = Obj(
  {
    id: Type.String({
      pattern: '^[A-Za-z0-9_.-]{1,64}$',
      description: 'Rule id: in metrics (`rule` label), logs, the decision header and RateLimit-Policy. Unique.',
    }),
    key: Type.Union(
      RATE_LIMIT_KEYS.map((k) => Type.Literal(k)),
      {
        description:
          'What a client is counted by: `address` (an IPv6 client by its /64, `defense.ipv6PrefixLength`), `prefix` (its /24 for IPv4, /64 for IPv6), `session` (the `sessionCookie` cookie) or `apiKey` (the `apiKeyHeader` header). A request without the session cookie or API key is not counted by a session or apiKey rule (pair it with an address rule).',
      },
    ),
    prefixFactor: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 100000,
        description: `For \`key: address\`: the addresses of one IPv4 /24 also share one budget of \`prefixFactor\` × \`ratePerSec\` and \`burst\` (rule id \`<id>/24\`), and the /64s of one IPv6 /48 likewise (rule id \`<id>/48\`; not when \`defense.ipv6PrefixLength\` is 48 or less), so rotating addresses inside a /24 or /64s inside a /48 meets a limit too. 0: none. Default ${DEFAULT_PREFIX_FACTOR}.`,
      }),
    ),
    classes: Type.Optional(
      Type.Array(Type.Union(CLASSES.map((c) => Type.Literal(c))), {
        minItems: 1,
        uniqueItems: true,
        description: 'Route classes the rule applies to (all when absent).',
      }),
    ),
    routes: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        minItems: 1,
        uniqueItems: true,
        description: 'Route names the rule applies to (all when absent). With `classes` too, a route must match both.',
      }),
    ),
    methods: Type.Optional(
      Type.Array(Type.Union(RULE_METHODS.map((m) => Type.Literal(m))), {
        minItems: 1,
        uniqueItems: true,
        description: 'Request methods the rule applies to (all when absent).',
      }),
    ),
    clients: Type.Union([Type.Literal('all'), Type.Literal('unknown')], {
      default: 'all',
      description:
        '`all`: every request the rule applies to counts; `unknown`: only requests from clients that are not known (no valid clearance, no origin-granted session behaving as one client\u2019s, no valid JWT: docs/challenge.md). A forged cookie is not known: the check verifies it.',
    }),
    per: Type.Union([Type.Literal('client'), Type.Literal('route')], {
      default: 'client',
      description:
        '`client`: one budget per client across every route the rule covers; `route`: one budget per client and route.',
    }),
    ratePerSec: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1000000,
      description: 'Sustained requests per second allowed per key (may be below 1: 0.5 is one every two seconds).',
    }),
    burst: Type.Integer({
      minimum: 1,
      maximum: 1000000,
      description: 'Requests a key with a full budget may send at once.',
    }),
    maxDelayMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 60000,
        description:
          'A request past the burst whose turn comes within this many ms waits for it instead of a 429 (nginx `limit_req burst=… delay=…`): at most `maxDelayMs` × `ratePerSec` requests of a key wait at once; past them, 429. 0 (the default for a written rule): refused at once. The default `per-address` rule has 3000. Not with `scope: global` (its leases decide at once).',
      }),
    ),
    scope: Type.Union([Type.Literal('node'), Type.Literal('global')], {
      default: 'node',
      description:
        '`node`: each node counts alone; `global`: one budget across every node of the cluster, through token leases from the store (`cluster.leaseMs`; docs/cluster.md). Best for keys with volume (API keys, sessions): each new key costs one store operation.',
    }),
    maxKeys: Type.Integer({
      minimum: 16,
      maximum: 10000000,
      default: 100000,
      description:
        'Memory budget: keys tracked exactly at most (about 100 bytes each). Past it, new keys share a fixed hashed table (stricter, never looser).',
    }),
  },
  { description: 'One rate limit: a GCRA budget of `burst` requests refilled at `ratePerSec`, per key.' },
);

export const RateLimitSchema = Obj(
  {
    mode: GuardModeSchema('enforce', 'Rate limits'),
    maxWaiting: Type.Integer({
      minimum: 0,
      maximum: 1000000,
      default: DEFAULT_MAX_WAITING,
      description:
        'Most requests waiting for their turn (a rule\u2019s `maxDelayMs`) at once in the process; past it a request past its burst is refused at once. Past half of it the wait a request may take shrinks in proportion (none at the cap): whoever holds the longest waits is refused first, and room stays for short ones.',
    }),
    rules: Type.Array(RateLimitRuleSchema, {
      maxItems: 64,
      // unsafe-all first: it asks nothing of the client, so a flood past its budget is refused before
      // unsafe-unknown checks a credential (a clearance's MAC, a JWT's signature: ~160 µs for ES256).
      default: [DEFAULT_RATE_LIMIT_RULE, DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE, DEFAULT_UNSAFE_RATE_LIMIT_RULE],
      description: `Rules, each checked in turn; the first one exceeded answers 429. Default: one rule per address on classes public, cacheable and static, ${DEFAULT_RATE_LIMIT_RULE.ratePerSec}/s with a burst of ${DEFAULT_RATE_LIMIT_RULE.burst}, then a wait of up to ${DEFAULT_RATE_LIMIT_RULE.maxDelayMs / 1000} s for a turn; one per address for ${DEFAULT_UNSAFE_RATE_LIMIT_RULE.methods.join(', ')} from every client, on every class, ${DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE.ratePerSec}/s with a burst of ${DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE.burst}; and one per address for the same methods from clients that are not known, ${DEFAULT_UNSAFE_RATE_LIMIT_RULE.ratePerSec}/s with a burst of ${DEFAULT_UNSAFE_RATE_LIMIT_RULE.burst} (each with its /24 and /48 level ${DEFAULT_PREFIX_FACTOR}×). Writing rules replaces all three.`,
    }),
    sessionCookie: Type.String({
      pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$",
      default: 'sid',
      description: 'Cookie that `key: session` rules count by.',
    }),
    apiKeyHeader: Type.String({
      pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$",
      default: 'x-api-key',
      description: 'Header that `key: apiKey` rules count by (its value is never logged).',
    }),
  },
  {
    default: {},
    description: 'Rate limits per address, prefix, session or API key, per class and route (docs/rate-limits.md).',
  },
);
