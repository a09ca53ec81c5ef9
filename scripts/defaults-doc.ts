// The table of docs/defaults.md: every default on the protection path, its value read from the config
// schema (or, for the few that are code rather than settings, from the constant that holds them), and
// why it is safe without knowing the site. A default that changes in the schema changes its row when
// `npm run docs` runs; test/docs.test.ts fails when the committed page drifts. A reason may depend on
// the value (`why` keyed by the value's JSON), so a changed default cannot keep a reason written for
// another value: a value without a reason stops the generator.
import { ConfigSchema } from '../src/config/schema.ts';
import { CACHED_BY_DEFAULT } from '../src/pipeline/runtime.ts';
import { TRAFFIC_CLASSES } from '../src/core/traffic.ts';

type Node = { default?: unknown; properties?: Record<string, Node>; items?: Node };

/** The schema's default at a dotted path; `[]` steps into an array's items (`routes[].cache.staleIfErrorMs`). */
export function schemaDefault(path: string): unknown {
  let node: Node | undefined = ConfigSchema as unknown as Node;
  for (const part of path.split('.')) {
    const name = part.endsWith('[]') ? part.slice(0, -2) : part;
    node = node?.properties?.[name];
    if (part.endsWith('[]')) node = node?.items;
  }
  if (node === undefined) throw new Error(`docs/defaults.md: no setting ${path} in the schema`);
  return node.default;
}

interface Row {
  area: string;
  /** Setting paths whose schema defaults make the value, or null when `value` says it. */
  settings: string[] | null;
  /** The value as text, for rows that are code rather than one setting. */
  value?: () => string;
  /** Why it is safe: one text, or one per value (keyed by the value's JSON). */
  why: string | Record<string, string>;
}

const fmt = (v: unknown): string => (v === undefined ? '(none)' : `\`${JSON.stringify(v)}\``);

function rule(r: Record<string, unknown>): string {
  const scope = [
    r.methods === undefined ? '' : (r.methods as string[]).join('/'),
    r.clients === 'unknown' ? 'from unknown clients' : '',
    r.classes === undefined ? 'every class' : `classes ${(r.classes as string[]).join(', ')}`,
  ]
    .filter((s) => s !== '')
    .join(' ');
  const factor = r.key === 'address' ? ((r.prefixFactor as number | undefined) ?? 16) : 0;
  const level = factor > 0 ? `; per /24 and IPv6 /48: ×${factor}` : '';
  const wait =
    typeof r.maxDelayMs === 'number' && r.maxDelayMs > 0 ? `, then a wait of up to ${r.maxDelayMs / 1000} s` : '';
  return `\`${r.id}\`: per ${r.key}, ${scope}, ${r.ratePerSec}/s, burst ${r.burst}${wait}${level}`;
}

const ROWS: Row[] = [
  {
    area: 'admission (per upstream)',
    settings: ['upstreams[].admission.mode'],
    why: {
      '"off"':
        'Admits everything: nothing is queued or shed at the gateway, the origin sees what it would see without Rempart. Safe, but it protects nothing (docs/admission.md).',
      '"adaptive"':
        'Learns the origin\u2019s concurrency from its latency and holds the surplus in a priority queue with per-class deadlines instead of handing the origin more than it can serve; nothing is refused while the origin keeps up (docs/admission.md).',
      '"static"':
        'Holds a fixed number of requests at the origin; the surplus waits in the queue. Needs the origin\u2019s worker count to be right.',
    },
  },
  {
    area: 'admission queue',
    settings: [
      'admission.queue.timeoutMs.critical',
      'admission.queue.timeoutMs.public',
      'admission.fairness.maxSharePercent',
    ],
    why: 'A queued request waits at most its class\u2019s deadline, then gets a stale copy or 503 with Retry-After; one prefix holds at most this share of the queue, so a flood from one network cannot push others out.',
  },
  {
    area: 'cache: which routes',
    settings: null,
    value: () =>
      `on for classes ${[...CACHED_BY_DEFAULT].map((c) => `\`${c}\``).join(', ')}; off for ${TRAFFIC_CLASSES.filter(
        (c) => !CACHED_BY_DEFAULT.has(c),
      )
        .map((c) => `\`${c}\``)
        .join(', ')} (\`routes[].cache.enabled\`)`,
    why: 'Only what the origin addresses to shared caches is stored (next row), so an origin that says nothing is not cached. Logged-in and payment routes are one person\u2019s answers: switched on only by hand.',
  },
  {
    area: 'cache: what is stored',
    settings: null,
    value: () =>
      'GET 200/301 with `public` or `s-maxage` (a bare `max-age` only where the operator switched the cache on); never with `Set-Cookie`, `private`, `no-store`, `no-cache`, `Vary: *`, nor for a request carrying a Cookie, Authorization or the API-key header (`x-api-key`). No heuristic freshness',
    why: 'A route cached only by default was never declared shared: only what a shared cache may store without doubt. A bare `max-age` is also what origins send browsers for one person\u2019s page; the key varies on no cookie or credential, so an answer to a request with one is never stored, even marked public (as Varnish passes them), though it may be answered from a public copy. Where the operator switched the cache on: RFC 9111 (a cookie does not count; credentials need `public`/`s-maxage`). docs/cache.md.',
  },
  {
    area: 'cache: key',
    settings: null,
    value: () =>
      'the whole request target (class `cacheable`: the path without the query); `routes[].cache.queryParams`',
    why: 'A default-on cache changes nothing the origin receives: each distinct target is its own entry. A route of class `cacheable` says its answers do not depend on the query, so random query strings cannot bust it.',
  },
  {
    area: 'stale-while-revalidate, stale-if-error',
    settings: ['routes[].cache.staleWhileRevalidateMs', 'routes[].cache.staleIfErrorMs'],
    why: 'Only a copy the origin once called fresh is served stale: for 10 s while one background request refreshes it, and for a day only when the origin fails (refused, reset, timeout, 5xx) or the request is shed. An error page in its place helps nobody.',
  },
  {
    area: 'cache memory',
    settings: ['cache.maxBytes', 'cache.maxObjectBytes'],
    why: 'LRU within a fixed budget, every byte charged; a larger body streams through uncached.',
  },
  {
    area: 'rate limits',
    settings: null,
    value: () => (schemaDefault('defense.rateLimit.rules') as Record<string, unknown>[]).map(rule).join('; '),
    why: 'A browser loading a page and its assets, or a few people behind one NAT, stay under 50/s on average; a heavy page\u2019s first load, its reload or two tabs at once (hundreds of requests within a second) go past the burst, and their overflow waits for its turn (up to 3 s: an HTTP/2 connection\u2019s 100 streams at 50/s) instead of a 429, so the page is whole, later; a flood past those places is refused as before. A person submits a form every few seconds at most and a page sends its few POSTs together: 20 at once then one a second is never met, while a login or form flood from one address or /24 is cut before the origin, which no cache can spare (each POST costs a password hash or a write). Known clients (clearance, a session the origin granted, a JWT) are not counted by `unsafe-unknown`; its /24 level is the general ×16, since a distributed flood sends 1/s per /24 or less and an office or carrier NAT shares one /24. `unsafe-all` counts every client at 5 times that pace with a burst of 50, room for a signed-in person, so that one session of an attacker\u2019s own does not carry an unlimited login flood to critical routes (docs/rate-limits.md).',
  },
  {
    area: 'rate-limit mode',
    settings: ['defense.rateLimit.mode'],
    why: '429 with Retry-After only past a budget; each 429 is an offence towards a ban.',
  },
  {
    area: 'attack level',
    settings: ['defense.level.override', 'defense.level.surgeFactor', 'defense.level.warmupSeconds'],
    why: 'Computed from the traffic against its own learned baseline; nothing is decided on the level during the warm-up (docs/attack-level.md).',
  },
  {
    area: 'challenge',
    settings: ['defense.challenge.mode', 'defense.challenge.atLevel', 'defense.challenge.difficultyBits.underAttack'],
    why: 'Only unknown clients, only while the level is under_attack: a few hundred ms of proof of work for a browser, with a no-JavaScript door; calm traffic never sees it (docs/challenge.md).',
  },
  {
    area: 'bans',
    settings: [
      'defense.bans.mode',
      'defense.bans.offences.threshold',
      'defense.bans.offences.windowMs',
      'defense.bans.offences.refusalSpacingMs',
      'defense.bans.offences.refusalsPerOffence',
      'defense.bans.ttlMs',
    ],
    why: 'Only a client with 20 offences within 2 s (signatures, ignored challenges; 429s count once per 50 ms and once per 25, so about a second of refusals or 476 at once) is banned, for a minute at first, escalating for repeat offenders: a person, even one whose heavy page overflows the rate limit by dozens of requests, never collects that (docs/bans.md).',
  },
  {
    area: 'signatures',
    settings: ['defense.signatures.mode'],
    why: 'Learned traffic signatures are logged and counted, not enforced, until an operator has seen what they would block (docs/signatures.md).',
  },
  {
    area: 'waiting room',
    settings: ['routes[].waitingRoom.enabled'],
    why: 'Off: it needs a route the operator knows can take visitors in line (GET pages); admission queues and sheds without it.',
  },
  {
    area: 'request size',
    settings: ['limits.maxBodyBytes', 'limits.maxHeaderBytes', 'limits.maxHeaderCount', 'limits.maxUrlBytes'],
    why: 'Above what browsers and ordinary APIs send (uploads beyond 10 MiB set `routes[].maxBodyBytes`), far below what would let one request hold much memory.',
  },
  {
    area: 'client timeouts',
    settings: ['limits.headersTimeoutMs', 'limits.requestTimeoutMs', 'limits.idleTimeoutMs'],
    why: 'A slow client (Slowloris, slow POST) is cut after these; a person on a slow phone sends headers within seconds.',
  },
  {
    area: 'connections',
    settings: ['limits.maxConnections', 'limits.maxConnectionsPerAddress'],
    why: 'A browser opens 6 to 8 connections per host; 256 leaves room for a NAT of many people while one address cannot hold the gateway\u2019s sockets.',
  },
  {
    area: 'upstream timeouts',
    settings: ['upstreams[].connectTimeoutMs', 'upstreams[].headersTimeoutMs', 'upstreams[].bodyTimeoutMs'],
    why: 'A stuck origin frees the gateway\u2019s request (502/504, or a stale copy) instead of piling connections up.',
  },
  {
    area: 'circuit breaker',
    settings: ['upstreams[].circuitBreaker.consecutiveFailures', 'upstreams[].circuitBreaker.openMs'],
    why: 'After 5 failures in a row the origin gets 5 s of rest; requests meanwhile get a stale copy or the status page (docs/failover.md).',
  },
];

export function renderDefaultsTable(): string {
  const out = ['| what | default | why it is safe |', '| --- | --- | --- |'];
  for (const r of ROWS) {
    let value: string;
    let reasonKey = '';
    if (r.settings === null) value = r.value!();
    else {
      const parts = r.settings.map((s) => {
        const v = schemaDefault(s);
        if (reasonKey === '') reasonKey = JSON.stringify(v);
        return `\`${s}\`: ${fmt(v)}`;
      });
      value = parts.join('<br>');
    }
    let why: string;
    if (typeof r.why === 'string') why = r.why;
    else {
      const w = r.why[reasonKey];
      if (w === undefined) throw new Error(`docs/defaults.md: no reason written for ${r.area} = ${reasonKey}`);
      why = w;
    }
    out.push(`| ${r.area} | ${value.replaceAll('|', '\\|')} | ${why.replaceAll('|', '\\|')} |`);
  }
  return out.join('\n');
}

const BEGIN = '<!-- defaults:begin';
const END = '<!-- defaults:end -->';

/** docs/defaults.md as written, with the generated table between its markers. */
export function renderDefaultsMd(current: string): string {
  const begin = current.indexOf(BEGIN);
  const end = current.indexOf(END);
  if (begin === -1 || end < begin) throw new Error('docs/defaults.md lacks its defaults:begin/end markers');
  const head = current.slice(0, current.indexOf('\n', begin) + 1);
  return `${head}${renderDefaultsTable()}\n${current.slice(end)}`;
}
