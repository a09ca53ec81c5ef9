// The one table of Rempart's error and decision codes. Every local reply and every failure names
// one of these codes; docs/errors.md is generated from this table and a test fails when it drifts.
// Codes are stable and never reused (fastify's FST_ERR_* discipline).

export type ErrorSource = 'client' | 'upstream' | 'internal' | 'config' | 'policy';

export interface ErrorSpec {
  readonly status: number;
  readonly source: ErrorSource;
  /** Whether the client may retry the same request as is (later, or elsewhere). */
  readonly retryable: boolean;
  readonly message: string;
}

export const ERRORS = {
  RMP_ERR_EDGE_BAD_REQUEST: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The request could not be parsed as HTTP/1.0 or 1.1, names another version, or uses PRI (the HTTP/2 preface method).',
  },
  RMP_ERR_EDGE_SMUGGLING: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The request framing is ambiguous (Transfer-Encoding with Content-Length, duplicate or invalid Content-Length, unsupported Transfer-Encoding, obs-fold, bare LF); refused and never forwarded.',
  },
  RMP_ERR_EDGE_EXPECTATION: {
    status: 417,
    source: 'client',
    retryable: false,
    message: 'The request carries an Expect other than 100-continue, which Rempart does not meet (RFC 9110 §10.1.1).',
  },
  RMP_ERR_EDGE_BAD_PATH: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The path cannot be normalised safely (a fragment, an encoded slash or backslash, a backslash, an encoded control character or overlong UTF-8, a dot segment with `;` parameters, or a broken percent-escape); routes and the origin must see the same path.',
  },
  RMP_ERR_EDGE_BAD_HOST: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The Host is missing (required in HTTP/1.1), or it (or the absolute-form target’s authority) is not a host name, IPv4 or [IPv6] address with an optional port 1-65535: userinfo, spaces, a second colon or a bad port. Routes, the cache and the origin must see the same host.',
  },
  RMP_ERR_EDGE_DUPLICATE_HOST: {
    status: 400,
    source: 'client',
    retryable: false,
    message: 'More than one Host header field (RFC 9112 §3.2).',
  },
  RMP_ERR_EDGE_URL_TOO_LONG: {
    status: 414,
    source: 'client',
    retryable: false,
    message: 'The request target is longer than limits.maxUrlBytes.',
  },
  RMP_ERR_EDGE_HEADERS_TOO_LARGE: {
    status: 431,
    source: 'client',
    retryable: false,
    message: 'The request head is larger than limits.maxHeaderBytes or has more than limits.maxHeaderCount fields.',
  },
  RMP_ERR_EDGE_BODY_TOO_LARGE: {
    status: 413,
    source: 'client',
    retryable: false,
    message: "The request body is larger than the route's maxBodyBytes.",
  },
  RMP_ERR_EDGE_TIMEOUT: {
    status: 408,
    source: 'client',
    retryable: true,
    message:
      'The client did not send its request head or body in time (limits.headersTimeoutMs, limits.requestTimeoutMs).',
  },
  RMP_ERR_EDGE_CONN_LIMIT: {
    status: 0,
    source: 'policy',
    retryable: true,
    message: 'Connection closed on accept: limits.maxConnections or limits.maxConnectionsPerAddress reached.',
  },
  RMP_ERR_EDGE_PIPELINE_LIMIT: {
    status: 0,
    source: 'client',
    retryable: false,
    message:
      'Connection closed: more than twice limits.maxPipelinedRequests requests unanswered on it (pipelined in one go without reading the replies); counted as an offence.',
  },
  RMP_ERR_EDGE_SLOW_READ: {
    status: 0,
    source: 'client',
    retryable: true,
    message:
      'Connection closed: its replies waited on the client to read for longer than limits.slowReadTimeoutMs, or replies queued behind an earlier one passed limits.maxQueuedReplyBytes.',
  },
  RMP_ERR_EDGE_H2_RAPID_RESET: {
    status: 0,
    source: 'client',
    retryable: false,
    message:
      'HTTP/2 connection closed (GOAWAY ENHANCE_YOUR_CALM): the client reset more streams within a second than listeners[].http2.maxResetsPerSecond (Rapid Reset); counted as an offence.',
  },
  RMP_ERR_EDGE_H2_FLOOD: {
    status: 0,
    source: 'client',
    retryable: false,
    message:
      'HTTP/2 connection closed (GOAWAY): a flood of frames that carry no request (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, empty DATA, CONTINUATION past the header limit) or a header block past the limits; counted as an offence.',
  },
  RMP_ERR_EDGE_IDLE_RECLAIMED: {
    status: 0,
    source: 'policy',
    retryable: true,
    message:
      'An idle keep-alive connection closed to make room for new clients (open connections near limits.maxConnections).',
  },
  RMP_ERR_EDGE_PROXY_PROTOCOL: {
    status: 0,
    source: 'client',
    retryable: false,
    message: 'Connection closed: missing, malformed or untrusted PROXY protocol header.',
  },
  RMP_ERR_EDGE_AMBIGUOUS_IDENTITY: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The session cookie or API key header a rate limit or the exfiltration guard counts by was sent with more than 4 different values (up to 4 are each counted).',
  },
  RMP_ERR_ROUTE_NOT_FOUND: {
    status: 404,
    source: 'client',
    retryable: false,
    message: 'No route matches this host, path and method.',
  },
  RMP_ERR_TUNNEL_LIMIT: {
    status: 503,
    source: 'policy',
    retryable: true,
    message: 'limits.maxTunnels WebSocket tunnels are open already; the handshake was not forwarded.',
  },
  RMP_ERR_ROUTE_NO_WEBSOCKET: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'A WebSocket upgrade ended on a route that does not allow tunnels (routes[].websocket); no tunnel was opened.',
  },
  RMP_ERR_ADMISSION_SHED: {
    status: 503,
    source: 'policy',
    retryable: true,
    message:
      'Shed by admission control: the upstream is at its concurrency limit and the queue had no place for this request (full, evicted by a higher class, or this client at its share). Retry after Retry-After.',
  },
  RMP_ERR_ADMISSION_QUEUE_TIMEOUT: {
    status: 503,
    source: 'policy',
    retryable: true,
    message:
      "Shed by admission control: the request waited in the queue past its class's deadline (admission.queue.timeoutMs) and is not served late. Retry after Retry-After.",
  },
  RMP_ERR_WAITING_ROOM: {
    status: 503,
    source: 'policy',
    retryable: true,
    message:
      "The route's waiting room is open (its class is saturated): the visitor holds a signed ticket and is shown its place in line and an estimated wait; retry after Retry-After with the ticket cookie.",
  },
  RMP_ERR_UPSTREAM_CONNECT: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The upstream refused or failed the connection.',
  },
  RMP_ERR_RESOURCES_EXHAUSTED: {
    status: 503,
    source: 'internal',
    retryable: true,
    message:
      'Rempart could not open a connection to the upstream for want of a resource of its own (file descriptors, ephemeral ports, socket buffers: EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS). Not charged to the upstream: its circuit breaker and health check ignore it, so service resumes as soon as the resource is back.',
  },
  RMP_ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    source: 'upstream',
    retryable: true,
    message: 'The upstream sent no response head within headersTimeoutMs.',
  },
  RMP_ERR_UPSTREAM_RESET: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message:
      'The upstream closed the connection before or during the response; mid-body, the client connection is closed.',
  },
  RMP_ERR_UPSTREAM_BAD_RESPONSE: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The upstream sent a response that is not valid HTTP/1.1.',
  },
  RMP_ERR_UPSTREAM_STATUS: {
    status: 502,
    source: 'upstream',
    retryable: true,
    message: 'The upstream answered 5xx; recorded as the reason when a stale cached copy was served instead.',
  },
  RMP_ERR_UPSTREAM_UNAVAILABLE: {
    status: 503,
    source: 'upstream',
    retryable: true,
    message:
      "The route's upstream and its fallback are unavailable (circuit breaker open or health check failing) and no stale copy exists; answered with the status page and Retry-After.",
  },
  RMP_ERR_CLIENT_ABORTED: {
    status: 0,
    source: 'client',
    retryable: false,
    message: 'The client went away before the response was complete.',
  },
  RMP_ERR_SHUTDOWN_CUT: {
    status: 0,
    source: 'internal',
    retryable: true,
    message:
      'The request was still in flight at the end of a graceful stop (`shutdown.drainSeconds`); its connection was closed. Logged with decision `aborted`.',
  },
  RMP_ERR_INTERNAL: {
    status: 500,
    source: 'internal',
    retryable: true,
    message: 'An unexpected error inside Rempart; it is logged with a stack.',
  },
  RMP_ERR_CONFIG_INVALID: {
    status: 0,
    source: 'config',
    retryable: false,
    message: 'The configuration file is invalid; every problem is listed with file, line and key path.',
  },
  RMP_ERR_ADMIN_FORBIDDEN: {
    status: 403,
    source: 'policy',
    retryable: false,
    message:
      'The admin listener refuses non-loopback clients unless admin.allowRemote is set; an admin API token of scope `read` cannot act.',
  },
  RMP_ERR_ADMIN_HOST: {
    status: 421,
    source: 'policy',
    retryable: false,
    message:
      'The admin listener answers only to Host `localhost`, an IP address or a name in admin.allowedHosts (DNS rebinding guard).',
  },
  RMP_ERR_ADMIN_UNAUTHORIZED: {
    status: 401,
    source: 'policy',
    retryable: false,
    message: 'The admin API needs a valid bearer token (stored as a hash; created with `rempart token create`).',
  },
  RMP_ERR_ADMIN_NOT_FOUND: {
    status: 404,
    source: 'client',
    retryable: false,
    message: 'No admin API endpoint at this path.',
  },
  RMP_ERR_ADMIN_BAD_REQUEST: {
    status: 400,
    source: 'client',
    retryable: false,
    message:
      'The admin API call was malformed (bad JSON, a missing or invalid field, a method the endpoint does not take); the message says which.',
  },
  RMP_ERR_BANNED: {
    status: 403,
    source: 'policy',
    retryable: true,
    message:
      'The client address or its prefix is banned (by a rule, for repeated offences, or by an operator) until the ban expires. On accept the connection is reset before any HTTP is parsed; a request already on an open connection gets 403.',
  },
  RMP_ERR_RATE_LIMITED: {
    status: 429,
    source: 'policy',
    retryable: true,
    message:
      'A rate limit for this client (address, prefix, session or API key) and route class was exceeded; retry after Retry-After (RateLimit headers say the policy).',
  },
  RMP_ERR_CHALLENGE: {
    status: 403,
    source: 'policy',
    retryable: true,
    message:
      'A proof-of-work challenge stands between this unknown client and the route (the attack level or a rule asks for one). Browsers solve it on an interstitial page, clients without JavaScript wait through a refresh, API clients solve the JSON challenge (docs/challenge.md).',
  },
  RMP_ERR_CHALLENGE_FAILED: {
    status: 403,
    source: 'client',
    retryable: true,
    message:
      'The challenge solution is invalid, expired, already used, or for another client; a fresh challenge is given.',
  },
  RMP_ERR_SIGNATURE_BLOCKED: {
    status: 403,
    source: 'policy',
    retryable: false,
    message:
      'The request matches a blocking rule mined from attack traffic (signatures) or configured by the operator.',
  },
  RMP_ERR_EXFILTRATION: {
    status: 429,
    source: 'policy',
    retryable: true,
    message:
      'This identity went past its quota on a sensitive route (documents per hour or bytes per day); the request is refused and an alert raised. Retry after Retry-After.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** An error that carries a code from the table. */
export class RempartError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].message, options);
    this.name = 'RempartError';
    this.code = code;
  }
  get status(): number {
    return ERRORS[this.code].status;
  }
}
