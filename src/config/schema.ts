// The one schema of Rempart's configuration file. From it come the TypeScript types (Static),
// validation and defaults (src/config/load.ts), the JSON Schema for editors (docs/config.schema.json)
// and the reference docs/config.md (scripts/gen-docs.ts; a test fails when either drifts).
// Units live in key names (…Ms, …Bytes). Every object refuses unknown keys: a typo in a
// security setting must stop start-up, not be ignored.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Obj } from '../core/schema-util.ts';
import { RateLimitSchema } from '../phases/ratelimit/schema.ts';
import { BansSchema } from '../phases/ban/schema.ts';
import { AttackLevelSchema } from '../phases/level/schema.ts';
import { ChallengeSchema, FamiliaritySchema, RouteChallengeSchema } from '../phases/challenge/schema.ts';
import { SignaturesSchema } from '../phases/signatures/schema.ts';
import { ExfiltrationSchema, RouteSensitiveSchema } from '../phases/exfiltration/schema.ts';
import { AlertsSchema } from '../control/alerts-schema.ts';
import { ClusterSchema } from '../store/schema.ts';
import { UpstreamSchema } from '../upstream/schema.ts';
import { ListenerHttp2Schema } from '../server/h2/schema.ts';

const HostPort = Type.String({
  pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.\\-]+):[0-9]{1,5}$',
  description: 'host:port to listen on, e.g. `0.0.0.0:8080` or `[::]:8080`.',
  // What a validation error prints instead of the regular expression (src/config/load.ts).
  errorHint: 'host:port, e.g. 0.0.0.0:8080 or [::]:8080',
});

const Cidr = Type.String({
  format: 'cidr',
  description: 'An IPv4 or IPv6 address or CIDR block, e.g. `10.0.0.0/8` or `::1`.',
});

import { TRAFFIC_CLASSES } from '../core/traffic.ts';
export { TRAFFIC_CLASSES, type TrafficClass } from '../core/traffic.ts';

const ClassSchema = Type.Union(
  TRAFFIC_CLASSES.map((c) => Type.Literal(c)),
  {
    description:
      'What the traffic is worth; later phases key their policies on it. `critical` (payment approvals), ' +
      '`authenticated` (a logged-in vault), `cacheable` (public, read-heavy: tracking), `public`, `static`.',
    default: 'public',
  },
);

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

const ListenerSchema = Obj(
  {
    address: HostPort,
    tls: Type.Optional(
      Obj(
        {
          certFile: Type.String({ minLength: 1, description: 'PEM certificate chain file.' }),
          keyFile: Type.String({
            minLength: 1,
            description: 'PEM private key file (read once at start and on reload; never logged).',
          }),
        },
        { description: 'Terminate TLS on this listener with these files.' },
      ),
    ),
    proxyProtocol: Type.Boolean({
      default: false,
      description:
        'Expect a PROXY protocol v1 or v2 header from peers in `clientAddress.trustedProxies` (as HAProxy\u2019s `expect-proxy` ' +
        'for trusted sources): their connections must start with one, and its source address becomes the client address. ' +
        'Connections from other peers are plain HTTP: a PROXY line they send is not honoured and is refused as a bad request.',
    }),
    http2: ListenerHttp2Schema,
  },
  { description: 'A socket Rempart accepts client traffic on.' },
);

const RouteSchema = Obj(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', description: 'Name used in logs and metrics labels.' }),
    host: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Match this Host (case-insensitive, port and one trailing dot ignored; malformed Hosts are refused first). `*.example.org` matches subdomains.',
      }),
    ),
    path: Type.String({
      pattern: '^/',
      default: '/*',
      description:
        'Match this path: exact (`/payments/approve`, which also matches `/payments/approve/`), or a prefix ending in `*` (`/vault/*`, `/*`). ASCII case is ignored; the path is matched normalised and without `;parameters`, the query string is ignored (docs/lifecycle.md#paths-and-hosts).',
    }),
    methods: Type.Optional(
      Type.Array(Type.Union(HTTP_METHODS.map((m) => Type.Literal(m))), {
        minItems: 1,
        description: 'Match only these methods.',
      }),
    ),
    upstream: Type.String({ description: 'Name of the upstream to forward to.' }),
    fallback: Type.Optional(
      Type.String({
        description:
          'Name of an upstream used instead while `upstream` has its circuit breaker open or fails its health check; the route returns to `upstream` when it recovers.',
      }),
    ),
    class: ClassSchema,
    maxBodyBytes: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Largest request body for this route; defaults to `limits.maxBodyBytes`. Over it: 413.',
      }),
    ),
    cache: Type.Optional(
      Obj(
        {
          enabled: Type.Optional(
            Type.Boolean({
              description:
                'Answer from the response cache. Defaults to on for classes `cacheable`, `public` and `static` (only responses the origin marks storable by a shared cache are kept: docs/cache.md), off for `authenticated` and `critical`.',
            }),
          ),
          queryParams: Type.Optional(
            Type.Array(Type.String({ minLength: 1 }), {
              description:
                'Query parameters that are part of the cache key (sorted, re-encoded); the origin is sent the path without `;parameters` and only these. Any other parameter is ignored by the key, so random query strings cannot bust the cache. Absent: none for class `cacheable`; for other classes the request target is keyed and forwarded whole, as it came (a default-on cache changes nothing the origin receives).',
            }),
          ),
          staleWhileRevalidateMs: Type.Integer({
            minimum: 0,
            maximum: 86400000,
            default: 10000,
            description:
              'After freshness ends, serve the stale copy this long while one background request refreshes it.',
          }),
          staleIfErrorMs: Type.Integer({
            minimum: 0,
            maximum: 2592000000,
            default: 86400000,
            description:
              'After freshness ends, serve the stale copy this long whenever the upstream fails (connection error, timeout, 5xx) or the request would be shed.',
          }),
        },
        {
          description:
            'Response cache for this route (see docs/cache.md). The response\u2019s stale-while-revalidate / stale-if-error directives can widen the stale windows.',
        },
      ),
    ),
    challenge: RouteChallengeSchema,
    sensitive: Type.Optional(RouteSensitiveSchema),
    websocket: Type.Boolean({
      default: false,
      description:
        'Let WebSocket upgrades through to the upstream as tunnels (docs/lifecycle.md). Off: a request carrying `Upgrade` is an ordinary request (Upgrade stripped, cache, admission and every phase as usual) and no tunnel is opened. A tunnel holds an admission slot of its upstream while it is open.',
    }),
    waitingRoom: Obj(
      {
        enabled: Type.Boolean({
          default: false,
          description:
            'Open a waiting room in front of this route when its class is saturated (docs/waiting-room.md). Only GET and HEAD requests enter it.',
        }),
        admitPerSecond: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 20,
          description: 'Visitors let in from the line per second while the room is open, in ticket order.',
        }),
        passTtlSec: Type.Integer({
          minimum: 1,
          maximum: 604800,
          default: 1800,
          description: 'How long a visitor let in keeps its pass (it is not sent back to the line meanwhile).',
        }),
        ticketTtlSec: Type.Integer({
          minimum: 1,
          maximum: 604800,
          default: 3600,
          description: 'How long a ticket keeps its place in line; an older ticket gets a new place at the back.',
        }),
        ticketsPerAddressPerMinute: Type.Integer({
          minimum: 1,
          maximum: 10000,
          default: 10,
          description:
            'New places in line one client address (an IPv6 /64) may take per minute; past it the request gets the waiting page without a ticket (no place taken) and retries later. A person takes one place and keeps its ticket; a bot sending requests without cookies would take a place with each.',
        }),
        force: Type.Boolean({
          default: false,
          description:
            'Treat the route\u2019s class as always saturated, so the room is always open (drills and tests). Without it the room opens only on an upstream whose `admission.mode` is not `off`.',
        }),
      },
      {
        default: {},
        description:
          'Waiting room for flash crowds: new visitors get their place in line and let in in arrival order through a signed ticket; no per-visitor state on the server.',
      },
    ),
  },
  { description: 'Which requests go where, and what they are worth. Routes are tried in order; the first match wins.' },
);

export const ConfigSchema = Obj(
  {
    version: Type.Literal(1, { description: 'Format version of this file. Always `1`.' }),
    listeners: Type.Array(ListenerSchema, { minItems: 1, description: 'Where client traffic arrives.' }),
    upstreams: Type.Array(UpstreamSchema, { minItems: 1, description: 'The services behind Rempart.' }),
    routes: Type.Array(RouteSchema, {
      minItems: 1,
      description: 'Request matching, first match wins. A request that matches no route gets 404.',
    }),
    clientAddress: Obj(
      {
        trustedProxies: Type.Array(Cidr, {
          default: [],
          description:
            'Peers whose X-Forwarded-For header or PROXY protocol header is believed. From anyone else the socket address is the client address, whatever the headers say.',
        }),
      },
      { default: {}, description: 'How the client address is decided.' },
    ),
    server: Obj(
      {
        engine: Type.Union([Type.Literal('node'), Type.Literal('lean')], {
          default: 'lean',
          description:
            'The HTTP/1.1 engine that reads client connections. `lean`: Rempart\u2019s own strict parser and connection handler on the raw sockets, and a raw keep-alive pool to plain-http upstreams (issue 17): the same phases, limits, timeouts and refusals, for a fraction of the CPU per request. `node`: the node:http server and undici\u2019s pools, as before; kept as a fallback. A change takes effect at the next restart (`rempart --engine` chooses one without editing the file).',
        }),
      },
      { default: {}, description: 'How client connections are read.' },
    ),
    limits: Obj(
      {
        maxHeaderBytes: Type.Integer({
          minimum: 1024,
          maximum: 1048576,
          default: 16384,
          description: 'Largest request head (request line and headers). Over it: 431.',
        }),
        maxHeaderCount: Type.Integer({
          minimum: 4,
          maximum: 1000,
          default: 100,
          description: 'Most request header fields. Over it: 431.',
        }),
        maxUrlBytes: Type.Integer({
          minimum: 16,
          maximum: 1048576,
          default: 8192,
          description: 'Longest request target. Over it: 414.',
        }),
        maxBodyBytes: Type.Integer({
          minimum: 0,
          default: 10485760,
          description: 'Largest request body, for routes that do not set their own. Over it: 413.',
        }),
        bufferBodyBytes: Type.Integer({
          minimum: 0,
          maximum: 16777216,
          default: 65536,
          description:
            'Request bodies up to this size are read completely before an upstream connection is taken, so a slow-POST client holds only its own socket. Larger bodies stream. 0 streams every body.',
        }),
        headersTimeoutMs: Type.Integer({
          minimum: 100,
          maximum: 600000,
          default: 10000,
          description: 'Time a client has to send a complete request head (slowloris guard). Past it: 408 and close.',
        }),
        requestTimeoutMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 60000,
          description:
            'Time a client has to send a whole request, body included (slow POST guard). Past it: 408 and close.',
        }),
        idleTimeoutMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 30000,
          description: 'An idle keep-alive client connection is closed after this long.',
        }),
        tunnelIdleTimeoutMs: Type.Integer({
          minimum: 1000,
          maximum: 86400000,
          default: 300000,
          description:
            'A WebSocket (Upgrade) tunnel with no byte either way for this long is closed, freeing its client and upstream sockets.',
        }),
        maxTunnels: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 10000,
          description:
            'Most WebSocket tunnels open (or being set up) at once, all routes together; each holds a client and an upstream socket. Beyond it a handshake is answered 503 `RMP_ERR_TUNNEL_LIMIT`.',
        }),
        maxConnections: Type.Integer({
          minimum: 1,
          maximum: 10000000,
          default: 20000,
          description:
            'Most client connections open at once, all listeners together. Beyond it new connections are closed on accept.',
        }),
        maxConnectionsPerAddress: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 256,
          description:
            'Most client connections open at once from one address (IPv6: one /64). Beyond it new ones are closed on accept. Near `maxConnections` (90 %) one address may hold at most a tenth of `maxConnections`, so the rest stays open to other clients.',
        }),
        maxPipelinedRequests: Type.Integer({
          // At least 2: reading pauses at this many, and a request whose body is still arriving must
          // have an earlier one to wait for (one alone would wait for its own body forever).
          minimum: 2,
          maximum: 10000,
          default: 32,
          description:
            'Most requests unanswered on one connection (HTTP/1.1 pipelining). At this many Rempart stops reading the connection until replies go out; past twice this many (sent in one go) the connection is closed and counted as an offence (`defense.bans.offences`).',
        }),
        maxQueuedReplyBytes: Type.Integer({
          minimum: 65536,
          maximum: 1073741824,
          default: 1048576,
          description:
            'Most bytes of forwarded replies one connection may hold while they wait behind an earlier reply (HTTP/1.1 pipelining). Past it the connection is closed (`RMP_ERR_EDGE_SLOW_READ`): a client that pipelines and does not read cannot make Rempart hold its replies.',
        }),
        slowReadTimeoutMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 60000,
          description:
            'A connection whose replies wait on a client that takes no byte of them for this long is closed (as nginx\u2019s send_timeout: between two writes the kernel accepted, not for the whole reply). The kernel takes bytes only once about a third of its send buffer (up to 4 MB) is free, so a steady reader of about 25 KB/s or more is never cut at the default. A waiting reply gives its admission slot back at once: a client\u2019s read speed never holds a slot.',
        }),
        pressureIdleTimeoutMs: Type.Integer({
          minimum: 100,
          maximum: 3600000,
          default: 2000,
          description:
            'Near `maxConnections` (90 % open) idle keep-alive connections are closed after this long instead of `idleTimeoutMs`, and a new connection at the cap closes the connection idle the longest instead of being refused.',
        }),
      },
      { default: {}, description: 'Edge hardening against malformed, oversized and slow clients.' },
    ),
    admin: Obj(
      {
        address: Type.Union([HostPort, Type.Literal('off')], {
          errorHint: 'host:port, e.g. 127.0.0.1:9180 or [::1]:9180, or off',
          default: '127.0.0.1:9180',
          description: 'Admin listener (metrics, health, the API under /api/). `off` disables it.',
        }),
        allowRemote: Type.Boolean({
          default: false,
          description: 'Accept admin connections from non-loopback addresses. Off by default.',
        }),
        allowedHosts: Type.Array(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,253}$' }), {
          default: [],
          description:
            'Host names (no port) the admin listener answers to besides `localhost` and IP addresses: a request whose Host is another name gets 421 `RMP_ERR_ADMIN_HOST`, so a web page an operator visits cannot read the listener by DNS rebinding. Add the names scrapers and operators use (`rempart-admin.internal`).',
        }),
        tokensFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'File of admin API tokens, one `NAME read|operator sha256:HEX` per line, written by `rempart token create` (it holds hashes only). REMPART_ADMIN_TOKEN adds one operator token from the environment. Without any token the API answers 401 to everyone.',
          }),
        ),
        metricsRequireToken: Type.Boolean({
          default: false,
          description:
            'Ask a bearer token (read scope is enough) on `/metrics` too. Off by default: the listener is loopback-only and the metrics are aggregates without addresses, and most scrapers run beside Rempart; turn it on with `allowRemote` (Prometheus: `authorization: { credentials_file: … }`). `/healthz` and `/readyz` never ask one (they say only `ok`).',
        }),
      },
      { default: {}, description: 'The operators\u2019 listener.' },
    ),
    shutdown: Obj(
      {
        drainSeconds: Type.Integer({
          minimum: 0,
          maximum: 3600,
          default: 10,
          description:
            'On SIGTERM, SIGINT or SIGUSR2 (an upgrade\u2019s hand-over): how long requests in flight may take to finish once the listeners stop accepting. Every reply from the start of the stop says `Connection: close`, so a keep-alive connection closes after its reply; one idle for 1 s is closed; what is still open past the drain is cut and logged `RMP_ERR_SHUTDOWN_CUT`. Also `30s`, `2m`.',
        }),
        readinessDelaySeconds: Type.Integer({
          minimum: 0,
          maximum: 600,
          default: 0,
          description:
            'On SIGTERM or SIGINT, `/readyz` on the admin listener answers 503 at once; the listeners keep serving this long before they stop accepting, so a load balancer polling `/readyz` stops sending first. Set it to the balancer\u2019s check interval times its failure threshold (Kubernetes: the readiness probe\u2019s `periodSeconds` × `failureThreshold`). 0: stop accepting at once.',
        }),
      },
      {
        default: {},
        description:
          'Graceful stop (docs/deploy.md#graceful-stop). `/healthz` stays 200 (alive) throughout; `/readyz` is 503 from the first moment of the stop.',
      },
    ),
    audit: Obj(
      {
        file: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'SQLite file of the audit trail (operator actions, attack-level changes, bans, failovers, reloads; node:sqlite, created if missing, its directory must exist). Unset: the trail is kept in memory for the life of the process only (still queryable at `/api/audit` and on the dashboard). Set it in production. A change takes effect at the next restart.',
          }),
        ),
        retentionDays: Type.Integer({
          minimum: 1,
          maximum: 3650,
          default: 90,
          description: 'Audit events older than this are deleted (checked at start and hourly).',
        }),
        maxRows: Type.Optional(
          Type.Integer({
            minimum: 1000,
            maximum: 100_000_000,
            description:
              'Rows kept at most, the oldest deleted first (every automatic ban is a row: an attacker rotating addresses makes one each). Default 100,000 in memory (about 250 bytes a row, native memory), 1,000,000 in a file. A change takes effect at the next restart.',
          }),
        ),
      },
      { default: {}, description: 'The audit trail (docs/admin-api.md#audit-trail).' },
    ),
    state: Obj(
      {
        file: Type.String({
          minLength: 1,
          default: 'auto',
          description:
            'SQLite file (node:sqlite) where bans, the attack level with its learned baselines and familiar prefixes, origin-granted sessions and used challenge solutions are kept across restarts and crashes: written every 2 s off the request path, read at start-up before the listeners accept. `auto`: `$STATE_DIRECTORY/rempart-state.db` when that variable is set (systemd `StateDirectory=`), else `rempart-state.db` beside the config file, else (no config file, e.g. `--upstream` alone; or a gateway built by code with createGateway) nothing is kept. `off`: nothing kept. A path: that file (relative to the working directory). A corrupt or unreadable file is set aside and the gateway starts empty with a warning. A change takes effect at the next restart.',
        }),
      },
      { default: {}, description: 'What survives a restart (docs/operations.md#what-survives-a-restart).' },
    ),
    logging: Obj(
      {
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
          { default: 'info', description: 'Least severity written.' },
        ),
        requests: Type.Boolean({ default: true, description: 'Write one line per request.' }),
        format: Type.Union(
          ['auto', 'json', 'pretty', 'combined'].map((l) => Type.Literal(l)),
          {
            default: 'auto',
            description:
              'How lines are written: `json` (one JSON object per line, for log pipelines), `pretty` (one readable line per request or event, for a person), `combined` (request lines in the Apache/nginx combined access-log format on standard output, every other line as JSON on standard error). `auto`: pretty when standard output is a terminal, else JSON. `--log-format` overrides it. A change takes effect at the next restart.',
          },
        ),
      },
      {
        default: {},
        description: 'Logs on standard output (pino): JSON for machines, or readable (docs/cli.md#logs).',
      },
    ),
    cache: Obj(
      {
        maxBytes: Type.Integer({
          minimum: 0,
          maximum: 68719476736,
          default: 67108864,
          description:
            'Most memory the response cache holds, bodies and headers together; least recently used entries are evicted past it.',
        }),
        maxObjectBytes: Type.Integer({
          minimum: 0,
          maximum: 1073741824,
          default: 1048576,
          description: 'Largest response body stored; larger ones pass through uncached.',
        }),
      },
      { default: {}, description: 'The in-memory response cache shared by routes that enable it (docs/cache.md).' },
    ),
    admission: Obj(
      {
        classOrder: Type.Array(ClassSchema, {
          minItems: 5,
          maxItems: 5,
          default: [...TRAFFIC_CLASSES],
          description:
            'Queue priority, highest first: each of the five classes once. Under contention a higher class is served first, and a full queue evicts the lowest class.',
        }),
        reservePercent: Obj(
          {
            critical: Type.Integer({
              minimum: 0,
              maximum: 100,
              default: 0,
              description:
                'Share of the upstream\u2019s limit (percent) `critical` requests may hold while a higher class waits.',
            }),
            authenticated: Type.Integer({
              minimum: 0,
              maximum: 100,
              default: 0,
              description: 'The same for `authenticated`.',
            }),
            cacheable: Type.Integer({
              minimum: 0,
              maximum: 100,
              default: 0,
              description: 'The same for `cacheable`: cache fills are what answers a crowd, fresh or later stale.',
            }),
            public: Type.Integer({ minimum: 0, maximum: 100, default: 0, description: 'The same for `public`.' }),
            static: Type.Integer({ minimum: 0, maximum: 100, default: 0, description: 'The same for `static`.' }),
          },
          {
            default: {},
            description:
              'Guaranteed shares under contention: a class holding fewer slots than its share of the current limit is served before the strict class order (at least one slot when its share is above 0). Unused, a share goes to the others. All 0 (the default): strict order, a lower class waits for every higher one. The shares total at most 100.',
          },
        ),
        queue: Obj(
          {
            maxEntries: Type.Integer({
              minimum: 1,
              maximum: 1000000,
              default: 1000,
              description: 'Requests waiting per upstream at most, all classes together.',
            }),
            maxEntriesPerClass: Type.Integer({
              minimum: 1,
              maximum: 1000000,
              default: 1000,
              description: 'Requests of one class waiting per upstream at most.',
            }),
            timeoutMs: Obj(
              {
                critical: Type.Integer({
                  minimum: 1,
                  maximum: 600000,
                  default: 5000,
                  description: 'Longest wait for a `critical` request; past it: 503 RMP_ERR_ADMISSION_QUEUE_TIMEOUT.',
                }),
                authenticated: Type.Integer({
                  minimum: 1,
                  maximum: 600000,
                  default: 3000,
                  description: 'Longest wait for an `authenticated` request.',
                }),
                cacheable: Type.Integer({
                  minimum: 1,
                  maximum: 600000,
                  default: 1000,
                  description: 'Longest wait for a `cacheable` request.',
                }),
                public: Type.Integer({
                  minimum: 1,
                  maximum: 600000,
                  default: 1000,
                  description: 'Longest wait for a `public` request.',
                }),
                static: Type.Integer({
                  minimum: 1,
                  maximum: 600000,
                  default: 500,
                  description: 'Longest wait for a `static` request.',
                }),
              },
              {
                default: {},
                description: 'Queue deadline per class: a request that waited this long is shed, not served late.',
              },
            ),
          },
          { default: {}, description: 'The waiting queue in front of each upstream.' },
        ),
        fairness: Obj(
          {
            key: Type.Union([Type.Literal('prefix'), Type.Literal('address'), Type.Literal('session')], {
              default: 'prefix',
              description:
                'Who a queued request belongs to: its /24 (IPv4) or /64 (IPv6) `prefix`, its exact `address`, or its `session` cookie (the prefix when it has none).',
            }),
            sessionCookie: Type.String({
              pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
              default: 'sid',
              description: 'Cookie naming the session, with `key: session`.',
            }),
            maxSharePercent: Type.Integer({
              minimum: 1,
              maximum: 100,
              default: 10,
              description: 'Share of one class\u2019s queue places one client key may hold (at least one place).',
            }),
          },
          { default: {}, description: 'Fairness within a class: one client cannot fill a class\u2019s queue.' },
        ),
      },
      {
        default: {},
        description:
          'Priority admission in front of every upstream whose `admission.mode` is not `off`. See docs/admission.md.',
      },
    ),
    statusPage: Obj(
      {
        enabled: Type.Boolean({
          default: true,
          description:
            'Answer with the status page (503) when a route and its fallback are unavailable and no stale copy exists, and in place of a bare 502/504 when the upstream cannot be reached.',
        }),
        message: Type.String({
          minLength: 1,
          maxLength: 2000,
          default: 'Our teams are mobilised to restore the service. Please try again in a few minutes.',
          description:
            'The operator\u2019s message, shown as a small HTML page to browsers and as `error.message` in JSON.',
        }),
        retryAfterSec: Type.Integer({
          minimum: 1,
          maximum: 86400,
          default: 30,
          description: 'Retry-After sent with the status page.',
        }),
      },
      { default: {}, description: 'What clients see when the service is down (docs/failover.md).' },
    ),
    waitingRoom: Obj(
      {
        keyFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'File holding the key that signs waiting-room tickets and passes (at least 32 bytes, hex or base64; never logged). The env var REMPART_WAITING_ROOM_KEY wins over it. Without either, a random key per process is used: tickets do not survive a restart nor work across nodes.',
          }),
        ),
      },
      { default: {}, description: 'Settings shared by every route\u2019s waiting room (docs/waiting-room.md).' },
    ),
    defense: Obj(
      {
        decisionHeader: Type.Boolean({
          default: false,
          description:
            'Add `Rempart-Decision: CODE; rule=ID` to every answer a guard decided (and `observed=CODE` when a guard in observe mode would have acted). For operators while tuning; off for the public by default.',
        }),
        ipv6PrefixLength: Type.Integer({
          minimum: 32,
          maximum: 128,
          default: 64,
          description:
            'An IPv6 client is counted as its /N network by rate limits (`key: address`), offences, bans, connection caps and the exfiltration guard: one host or one customer line commonly holds a whole /64, so per-address counting would give it 2^64 budgets. 128 counts single IPv6 addresses. IPv4 (and IPv4-mapped IPv6) is always counted by address, its /24 at a second level (docs/rate-limits.md).',
        }),
        rateLimit: RateLimitSchema,
        bans: BansSchema,
        level: AttackLevelSchema,
        familiarity: FamiliaritySchema,
        challenge: ChallengeSchema,
        signatures: SignaturesSchema,
        exfiltration: ExfiltrationSchema,
      },
      {
        default: {},
        description:
          'Telling attackers from customers (docs/defense.md): rate limits, bans, attack levels, familiarity, proof-of-work challenges, signatures, the exfiltration guard.',
      },
    ),
    alerts: AlertsSchema,
    cluster: ClusterSchema,
    via: Type.String({
      pattern: '^[!-~]+$',
      default: 'rempart',
      description: 'Pseudonym added to the Via header (RFC 9110 §7.6.3).',
    }),
  },
  { description: 'Rempart configuration file.' },
);

export type Config = Static<typeof ConfigSchema>;
export type ListenerConfig = Config['listeners'][number];
export type UpstreamConfig = Config['upstreams'][number];
export type RouteConfig = Config['routes'][number];
export type LimitsConfig = Config['limits'];
export type RouteCacheConfig = NonNullable<RouteConfig['cache']>;
export type AdmissionConfig = Config['admission'];
export type RouteWaitingRoomConfig = RouteConfig['waitingRoom'];
export type DefenseConfig = Config['defense'];
export type { TSchema };
