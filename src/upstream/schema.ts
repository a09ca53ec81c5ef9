// Config fragment for upstreams (upstreams[]), part of the one schema: a service behind Rempart, as
// one server (`url`) or a pool (`servers`) with its balancing policy, outlier detection, admission
// limit (per server), circuit breaker (per upstream) and active health check (per server).
// See docs/upstreams.md.
import { Type } from '@sinclair/typebox';
import { type AddProblem, checkTlsPair, Obj, TlsFilesSchema } from '../core/schema-util.ts';

/** At most this many servers per upstream: metric label sets stay bounded, and a scan stays cheap. */
export const MAX_SERVERS = 256;

const UpstreamAdmissionSchema = Obj(
  {
    mode: Type.Union([Type.Literal('adaptive'), Type.Literal('static'), Type.Literal('off')], {
      // On by default: without it an origin that answers its surplus with a fast 503 hands those 503s
      // to real users (zero-config in the issue 13 drill matrix), and nothing holds the excess where
      // Rempart can choose who waits. It used to be opt-in because latency was measured in Rempart's
      // event loop, so a CPU-saturated Rempart throttled itself; samples now have Rempart's own stalls
      // taken out (src/upstream/stall.ts), see docs/admission.md.
      default: 'adaptive',
      description:
        'Concurrency limit towards this upstream. `adaptive` (the default) follows its latency (Gradient2: the limit falls as latency rises above its long-run baseline, and on its 5xx and timeouts); ' +
        '`static` holds `staticLimit`; `off` admits everything. See docs/admission.md.',
    }),
    initialLimit: Type.Integer({
      minimum: 1,
      maximum: 100000,
      default: 20,
      description: 'Adaptive: the limit to start from (and after a reload that changes these settings).',
    }),
    minLimit: Type.Integer({
      minimum: 1,
      maximum: 100000,
      default: 4,
      description: 'Adaptive: the limit never falls below this.',
    }),
    maxLimit: Type.Integer({
      minimum: 1,
      maximum: 100000,
      default: 1000,
      description: 'Adaptive: the limit never rises above this.',
    }),
    staticLimit: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100000,
        description:
          'Static: requests in flight to each server of this upstream at most (the upstream\u2019s limit is this times ' +
          'its servers in service). Required with `mode: static`.',
      }),
    ),
  },
  {
    default: {},
    description:
      'Admission control for this upstream: how many requests it works on at once; the rest wait in the priority queue ' +
      '(`admission`). The limits are per server: a pool of four servers in service gets four times the slots.',
  },
);

export const UpstreamSchema = Obj(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', description: 'Name used by routes, logs and metrics.' }),
    url: Type.Optional(
      Type.String({
        format: 'http-url',
        description:
          'Base URL of the service when it is one server, `http://host:port` or `https://host:port`. ' +
          'Give `url` or `servers`, not both.',
      }),
    ),
    servers: Type.Optional(
      Type.Array(
        Type.String({
          format: 'http-url',
          description: 'A server of the pool, `http://host:port` or `https://host:port`.',
        }),
        {
          minItems: 1,
          maxItems: MAX_SERVERS,
          description:
            'A pool of servers running the same service, each `http://host:port` or `https://host:port` (one scheme ' +
            'for all). Requests are spread by `balance`; each server has its own keep-alive connections, health ' +
            'and outlier detection. Give `url` or `servers`, not both. See docs/upstreams.md.',
        },
      ),
    ),
    balance: Type.Union([Type.Literal('least_request'), Type.Literal('round_robin'), Type.Literal('hash')], {
      default: 'least_request',
      description:
        'How a pool spreads requests: `least_request` (the server with the fewest requests in flight: every ' +
        'server compared in pools of up to 8, two picked at random and the less busy taken beyond, as Envoy), ' +
        '`round_robin`, or `hash` (consistent hashing on `hashKey`: a key stays on its server, and when a server ' +
        'leaves only its own keys move).',
    }),
    hashKey: Type.String({
      pattern: "^(path|client|header:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}|cookie:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64})$",
      default: 'path',
      description:
        'With `balance: hash`, what a request is hashed on: `path` (the request path, without the query), ' +
        '`client` (the client address; the /64 for IPv6), `header:<name>` or `cookie:<name>`. A request ' +
        'without the header or cookie is balanced as `least_request`.',
    }),
    connections: Type.Integer({
      minimum: 1,
      maximum: 100000,
      default: 256,
      description: 'Most keep-alive connections open to each server of this upstream.',
    }),
    connectTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: 600000,
      default: 2000,
      description: 'Time allowed to open a connection; past it the answer is 502.',
    }),
    headersTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: 3600000,
      default: 15000,
      description: 'Time allowed for the response head; past it the answer is 504.',
    }),
    bodyTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: 3600000,
      default: 30000,
      description: 'Longest silence allowed inside a response body; past it the client connection is closed.',
    }),
    keepAliveTimeoutMs: Type.Integer({
      minimum: 1,
      maximum: 600000,
      default: 4000,
      description: 'How long an idle pooled connection is kept.',
    }),
    tlsServerName: Type.Optional(
      Type.String({
        pattern:
          '^(?=.{1,253}$)(?![0-9.]+$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$',
        description:
          'For `https` servers: the name their TLS connections say (SNI) and their certificates are checked ' +
          "against (a DNS name, not an address). Default: each server's host name; none for an IP address, whose " +
          "certificate is then checked against the address. Never the client's Host (docs/upstreams.md).",
      }),
    ),
    tls: TlsFilesSchema({
      caFile:
        'For `https` servers: a PEM file of the certificate authorities their certificates are checked ' +
        "against, instead of the system's (an internal PKI, or a self-signed origin's own certificate). " +
        'Read at start and at each reload (a file that cannot be read or parsed fails the load); the ' +
        'certificate is still checked against the name (`tlsServerName`, else the host).',
      certFile:
        'For `https` servers that ask for one: the PEM certificate chain Rempart presents as a client ' +
        '(mutual TLS). Needs `keyFile`.',
      block:
        "TLS towards this upstream's `https` servers: whom to trust and what to present (nginx " +
        '`proxy_ssl_trusted_certificate`/`proxy_ssl_certificate`). Certificates are always verified.',
    }),
    admission: UpstreamAdmissionSchema,
    outlierDetection: Obj(
      {
        consecutiveFailures: Type.Integer({
          minimum: 1,
          maximum: 100000,
          default: 5,
          description:
            'Connect failures in a row from one server (refused, unreachable, connect timeout, TLS handshake) ' +
            'that take it out of its pool. No request can make a live server refuse a connection, so these ' +
            'count alone; response failures (502/504, response timeout, reset, bad response) are judged over ' +
            "`windowMs` against the server's peers instead.",
        }),
        windowMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 10000,
          description: "The rolling window a server's response failures are judged over.",
        }),
        minRequests: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 20,
          description: 'Answers from a server within `windowMs` before its response failures may take it out.',
        }),
        failurePercent: Type.Integer({
          minimum: 1,
          maximum: 100,
          default: 50,
          description:
            'Response failures (502/504, response timeout, reset after the request went out, bad response), in ' +
            "percent of a server's answers within `windowMs`, that take it out, provided they came on at least " +
            '`minPaths` paths from `minClients` client prefixes and its failure ratio is more than twice that of ' +
            'the other servers in service that fail less than this themselves (together): one client asking for ' +
            'a slow or failing path, or a path failing on every server, ejects nothing.',
        }),
        minPaths: Type.Integer({
          minimum: 1,
          maximum: 16,
          default: 3,
          description: "Distinct paths among a server's response failures within `windowMs` needed to take it out.",
        }),
        minClients: Type.Integer({
          minimum: 1,
          maximum: 16,
          default: 3,
          description:
            "Distinct client prefixes among a server's response failures within `windowMs` needed to take it " +
            "out: with `balance: hash` one client's requests all land on one server, whose peers cannot vouch " +
            'for the paths it asks for.',
        }),
        baseEjectionMs: Type.Integer({
          minimum: 1,
          maximum: 3600000,
          default: 30000,
          description:
            'How long a server is out after its first ejection; each new ejection within `maxEjectionMs` of its ' +
            'return adds this much again (as Envoy), up to `maxEjectionMs`.',
        }),
        maxEjectionMs: Type.Integer({
          minimum: 1,
          maximum: 86400000,
          default: 300000,
          description: 'The longest a server stays out for failures.',
        }),
        maxEjectedPercent: Type.Integer({
          minimum: 0,
          maximum: 100,
          default: 50,
          description:
            'Servers of a pool out of service at once (ejected for failures or failing the health check), in ' +
            'percent of the pool, at most; at least one may always be out. Past it a failing server stays in, ' +
            'so a broken health check or a cascade cannot empty the pool. A one-server upstream is not ejected ' +
            '(its circuit breaker does that job), but its health check still takes it out.',
        }),
      },
      {
        default: {},
        description:
          'Passive health per server of a pool (docs/upstreams.md): a server failing in real traffic (connect ' +
          'failures in a row, or response failures on many paths where its peers succeed) is taken out for a ' +
          'while, its requests go to the others.',
      },
    ),
    circuitBreaker: Obj(
      {
        consecutiveFailures: Type.Integer({
          minimum: 1,
          maximum: 100000,
          default: 5,
          description:
            'Connect failures in a row that reached clients (refused, unreachable, connect timeout, TLS handshake, ' +
            'after the one retry on another server of a pool) that open the breaker: no request can cause them.',
        }),
        openMs: Type.Integer({
          minimum: 1,
          maximum: 3600000,
          default: 5000,
          description: 'How long the breaker stays open before one probe request is let through (half-open).',
        }),
        windowMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 10000,
          description:
            'The rolling window response failures (502/504, response timeout, reset, bad response) are judged over.',
        }),
        minRequests: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 20,
          description: 'Answers in the window (successes and response failures) before response failures may open it.',
        }),
        failurePercent: Type.Integer({
          minimum: 1,
          maximum: 100,
          default: 50,
          description:
            'Response failures, in percent of the window\u2019s answers, that open it (with the spread below).',
        }),
        minClients: Type.Integer({
          minimum: 1,
          maximum: 64,
          default: 3,
          description:
            'Distinct client networks (IPv4 /24, IPv6 /48) among the window\u2019s response failures needed to open it: one ' +
            'client asking for a slow path cannot.',
        }),
        minPaths: Type.Integer({
          minimum: 1,
          maximum: 64,
          default: 3,
          description:
            'Distinct paths among the window\u2019s response failures needed to open it: one slow path, however ' +
            'many clients ask for it, is left to its own timeout.',
        }),
      },
      {
        default: {},
        description:
          'Passive failover: a circuit breaker counting this upstream\u2019s failures in real traffic, the pool as a whole ' +
          '(docs/failover.md, docs/upstreams.md).',
      },
    ),
    healthCheck: Type.Optional(
      Obj(
        {
          path: Type.String({
            pattern: '^/',
            default: '/healthz',
            description: 'Path requested with GET; a 2xx or 3xx answer is a success.',
          }),
          intervalMs: Type.Integer({
            minimum: 50,
            maximum: 3600000,
            default: 1000,
            description: 'Time between two checks.',
          }),
          timeoutMs: Type.Integer({
            minimum: 1,
            maximum: 600000,
            default: 500,
            description: 'A check without an answer in this time is a failure.',
          }),
          healthyThreshold: Type.Integer({
            minimum: 1,
            maximum: 100,
            default: 2,
            description: 'Successes in a row that make an unhealthy upstream healthy again.',
          }),
          unhealthyThreshold: Type.Integer({
            minimum: 1,
            maximum: 100,
            default: 2,
            description: 'Failures in a row that make a healthy upstream unhealthy.',
          }),
        },
        {
          description:
            'Active health check of each server, through that server\u2019s own keep-alive connections. An unhealthy server ' +
            'is not used (within `outlierDetection.maxEjectedPercent`); an upstream with no server in service is not ' +
            'used (its routes use their `fallback`).',
        },
      ),
    ),
  },
  { description: 'A service Rempart forwards to.' },
);

/**
 * Cross-checks of one upstream the schema cannot say (src/config/load.ts runs them): one of `url` and
 * `servers`, one scheme for all the servers (the WebSocket tunnel and the health check speak one), no
 * server twice (its share would double, and its metrics would merge).
 */
export function checkUpstreamServers(
  u: { url?: unknown; servers?: unknown },
  at: (string | number)[],
  add: AddProblem,
) {
  if (u === null || typeof u !== 'object') return;
  const hasUrl = u.url !== undefined;
  const hasServers = u.servers !== undefined;
  if (hasUrl && hasServers)
    add([...at, 'servers'], '`url` and `servers` are both given: `url` is one server, `servers` a pool; keep one');
  else if (!hasUrl && !hasServers) add(at, 'give `url` (one server) or `servers` (a pool of servers)');
  checkUpstreamTls(u, at, add);
  if (!Array.isArray(u.servers)) return;
  const seen = new Set<string>();
  let scheme = '';
  u.servers.forEach((s: unknown, i) => {
    if (typeof s !== 'string' || !URL.canParse(s)) return;
    const url = new URL(s);
    if (seen.has(url.origin)) add([...at, 'servers', i], `${JSON.stringify(s)} is listed twice`);
    seen.add(url.origin);
    if (scheme === '') scheme = url.protocol;
    else if (url.protocol !== scheme)
      add(
        [...at, 'servers', i],
        `every server of an upstream uses one scheme: ${JSON.stringify(s)} is ${url.protocol.slice(0, -1)}, the first ` +
          `is ${scheme.slice(0, -1)} (make two upstreams)`,
      );
  });
}

/** TLS settings belong to https servers only, and a client certificate comes with its key. */
function checkUpstreamTls(u: { url?: unknown; servers?: unknown }, at: (string | number)[], add: AddProblem): void {
  const x = u as { tlsServerName?: unknown; tls?: { certFile?: unknown; keyFile?: unknown } };
  const first = Array.isArray(u.servers) ? u.servers[0] : u.url;
  const https = typeof first === 'string' && URL.canParse(first) && new URL(first).protocol === 'https:';
  if (typeof first === 'string' && URL.canParse(first) && !https) {
    // Said rather than ignored: an operator who wrote them believes the connection is checked.
    for (const key of ['tlsServerName', 'tls'] as const)
      if (x[key] !== undefined)
        add([...at, key], `\`${key}\` applies to https servers; ${JSON.stringify(first)} is http`);
  }
  checkTlsPair(x.tls, [...at, 'tls'], add);
}

/** The server URLs of a validated upstream: its `servers`, or its one `url`. */
export function serverUrls(u: { url?: string; servers?: readonly string[] }): readonly string[] {
  return u.servers ?? (u.url === undefined ? [] : [u.url]);
}

/**
 * What loads but may not do what its operator expects, for `rempart check` and the start-up log: an https
 * server given by IP address without `tlsServerName` has its certificate checked against the address.
 */
export function upstreamWarnings(
  upstreams: ReadonlyArray<{ name: string; url?: string; servers?: readonly string[]; tlsServerName?: string }>,
): string[] {
  const out: string[] = [];
  for (const u of upstreams) {
    if (u.tlsServerName !== undefined) continue;
    const byAddress = serverUrls(u).filter((url) => {
      const x = new URL(url);
      return x.protocol === 'https:' && (/^\[.*\]$/.test(x.hostname) || /^[0-9.]+$/.test(x.hostname));
    });
    if (byAddress.length > 0)
      out.push(
        `upstreams ${u.name}: ${byAddress[0]} is https by IP address: its certificate is checked against the address ` +
          '(no SNI); if it names a domain, set tlsServerName',
      );
  }
  return out;
}
