// The per-request context: one class, every field set in the constructor, so V8 gives every
// request the same hidden class and phases read plain properties.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorCode } from '../core/errors.ts';
import type { CompiledRoute, CompiledUpstream } from './runtime.ts';
import type { AdmissionEntry, AdmissionGate } from '../upstream/gate.ts';

/**
 * The decision a request ended with, as counted in metrics (label `decision`). `answered`: Rempart's
 * own answer that refuses nothing (the clearance given for a solved challenge).
 */
export type Decision = 'forwarded' | 'answered' | 'refused' | 'upstream_error' | 'aborted' | 'cache_hit' | 'stale';

/** Tells whether the client of a request is known (src/phases/challenge: clearance, session, JWT). */
export interface FamiliarityCheck {
  isFamiliar(ctx: RequestContext): boolean;
}

/** A stored response to answer with (the cache phase), in place of replyStatus/replyBody. */
export interface StoredReply {
  readonly status: number;
  /** Flat [name, value, …] pairs. */
  readonly headers: readonly string[];
  readonly body: Buffer;
}

/**
 * Watches the upstream response of a request the cache may store (src/phases/cache). The forward
 * handler calls it only when ctx.cacheTap is set: requests of other routes pay one null check.
 */
export interface ResponseTap {
  /** True when the tap answered the client itself (a stale copy instead of a 5xx): the upstream body is then read and dropped. */
  onHeaders(status: number, rawHeaders: Buffer[]): boolean;
  onData(chunk: Buffer): void;
  onComplete(): void;
  onError(err: Error): void;
  /** Whether the tap answered the client (the forward handler then leaves the client response alone). */
  readonly answered: boolean;
}

export class RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** performance.now() when the request head was parsed. */
  readonly startMs: number;
  /** The client address: the socket's, or from PROXY protocol / X-Forwarded-For when the peer is trusted. */
  clientAddress: string;
  /** The address of the TCP peer (a load balancer when one is trusted). */
  peerAddress: string;
  /** Whether the peer is one of clientAddress.trustedProxies (its X-Forwarded-* are believed). */
  peerTrusted: boolean;
  /** 'http' or 'https', as seen by the client. */
  protocol: string;
  /**
   * The normalised Host (src/phases/identify/host.ts), from the absolute-form target when there is one:
   * the value routes, the cache key and the origin's Host and X-Forwarded-Host all use. '' when none.
   */
  host: string;
  /** `host` without its port: what route hosts are compared with. */
  hostName: string;
  /** The request target in origin form (`/path?query`), as forwarded. */
  target: string;
  /** The request path without the query string, normalised, segments' `;parameters` removed: what routes and limits judge. */
  path: string;
  route: CompiledRoute | null;
  upstream: CompiledUpstream | null;
  decision: Decision;
  /** Why the request ended as it did: a code from the error table, or '' when forwarded normally. */
  reason: ErrorCode | '';
  /** Local reply, when a phase answered. */
  replyStatus: number;
  replyBody: string;
  replyHeaders: Record<string, string> | null;
  /** A stored response to answer with instead (a cache hit or stale copy). */
  replyStored: StoredReply | null;
  /** The cache's decision and why, for the log line ('' when the route does not cache). */
  cache: string;
  /** Set by the cache phase when the upstream response may be stored or stood in for. */
  cacheTap: ResponseTap | null;
  /** Status sent to the client (0 until then). */
  status: number;
  /** Status the upstream sent (0 if none). */
  upstreamStatus: number;
  /** Response body bytes handed to the client connection (upstream bodies and stored copies; 0 for local replies). */
  responseBytes: number;
  /**
   * Bytes the client may still get before a quota is crossed (the exfiltration guard), Infinity when
   * none applies. Only a WebSocket tunnel is cut at it: an ordinary response that crosses is served.
   */
  responseByteBudget: number;
  /** Whether this request's reply stalled on the client and holds an upstream connection paused (see the gateway's pinned table). */
  pinned: boolean;
  /** Index of the last phase that ran, so `done` only unwinds what ran. */
  phaseIndex: number;
  finished: boolean;
  /** The in-flight upstream exchange, so `done` can abort it when the client leaves. */
  forwardHandler: { abort: ((err?: Error) => void) | null } | null;
  /** performance.now() when the request was dispatched to the upstream (0 if never): the limiter's RTT sample. */
  forwardStartMs: number;
  /** The admission gate whose slot this request holds (null when it holds none). */
  admissionGate: AdmissionGate<RequestContext> | null;
  /** The class (index in TRAFFIC_CLASSES) the slot was taken for, -1 when none. */
  admissionClass: number;
  /** Its place in the admission queue while it waits (null otherwise). */
  admissionEntry: AdmissionEntry<RequestContext> | null;
  /** Whether the `body` phase read the request body ahead (then `bufferedBody` is what to forward). */
  bodyBuffered: boolean;
  bufferedBody: Buffer | AsyncIterable<Buffer> | null;
  /** Set by `failover` when neither the route's upstream nor its fallback is usable: `unavailable` answers. */
  upstreamUnavailable: boolean;
  /** The client's /24 (IPv4) or /64 (IPv6) prefix, set by `identify`: the key most guards count by. */
  clientPrefix: string;
  /**
   * Whether the client is known (a valid clearance, a session the origin granted, a valid JWT). Looked
   * up on first read only, through the check the `familiarity` phase leaves here: a request that no
   * phase asks about (calm, no rule in force, not queued) never pays for a MAC or a JWT signature.
   */
  get known(): boolean {
    if (this.knownState === 0) this.knownState = this.familiarity !== null && this.familiarity.isFamiliar(this) ? 1 : 2;
    return this.knownState === 1;
  }
  set known(value: boolean) {
    this.knownState = value ? 1 : 2;
  }
  /** 0: not looked up yet, 1: known, 2: not known. */
  knownState: 0 | 1 | 2;
  /** How to tell whether this client is known, left by the `familiarity` phase (null: never known). */
  familiarity: FamiliarityCheck | null;
  /** The rule behind the guard decision this request ended with (or that a guard in observe mode would have applied), '' if none. */
  ruleId: string;
  /** The code a guard in `observe` mode would have answered with, '' if none (logged; the request went on). */
  observed: ErrorCode | '';
  /** Set by a phase that wants the `challenge` phase to challenge this request whatever the level (a signature rule): the rule id. */
  challengeRule: string;
  /** Extra response headers a phase adds to whatever answer is sent (flat [name, value, …]; the waiting room's Set-Cookie), or null. */
  responseHeaders: string[] | null;

  constructor(req: IncomingMessage, res: ServerResponse, startMs: number) {
    this.req = req;
    this.res = res;
    this.startMs = startMs;
    this.clientAddress = '';
    this.peerAddress = '';
    this.peerTrusted = false;
    this.protocol = 'http';
    this.host = '';
    this.hostName = '';
    this.target = '/';
    this.path = '/';
    this.route = null;
    this.upstream = null;
    this.decision = 'forwarded';
    this.reason = '';
    this.replyStatus = 0;
    this.replyBody = '';
    this.replyHeaders = null;
    this.replyStored = null;
    this.cache = '';
    this.cacheTap = null;
    this.status = 0;
    this.upstreamStatus = 0;
    this.responseBytes = 0;
    this.responseByteBudget = Infinity;
    this.pinned = false;
    this.phaseIndex = 0;
    this.finished = false;
    this.forwardHandler = null;
    this.forwardStartMs = 0;
    this.admissionGate = null;
    this.admissionClass = -1;
    this.admissionEntry = null;
    this.bodyBuffered = false;
    this.bufferedBody = null;
    this.upstreamUnavailable = false;
    this.responseHeaders = null;
    this.clientPrefix = '';
    this.knownState = 0;
    this.familiarity = null;
    this.ruleId = '';
    this.observed = '';
    this.challengeRule = '';
  }

  /** Add a header to whatever answer is sent (local reply, stored copy or upstream response). */
  addResponseHeader(name: string, value: string): void {
    if (this.responseHeaders === null) this.responseHeaders = [name, value];
    else this.responseHeaders.push(name, value);
  }

  // The outcome verbs: the only writers of decision, reason and the reply. A phase calls one, then
  // returns Verdict.Reply (or Continue for a stored copy that stands ready); the server sends it.

  /** Refuse the request with a local reply; the phase then returns Verdict.Reply. */
  refuse(code: ErrorCode, status: number, body = '', headers: Record<string, string> | null = null): void {
    this.decision = 'refused';
    this.reason = code;
    this.replyStatus = status;
    this.replyBody = body;
    this.replyHeaders = headers;
  }

  /** Answer locally without refusing (the clearance for a solved challenge); `code` says why, '' if nothing went wrong. */
  answer(status: number, body: string, headers: Record<string, string> | null, code: ErrorCode | '' = ''): void {
    this.decision = 'answered';
    this.reason = code;
    this.replyStatus = status;
    this.replyBody = body;
    this.replyHeaders = headers;
  }

  /** Answer with a stored copy: a fresh hit, or a stale copy standing in (the reason a caller set stays). */
  serveStored(stored: StoredReply, decision: 'cache_hit' | 'stale'): void {
    this.decision = decision;
    this.replyStored = stored;
  }

  /** The upstream could not answer (connect error, timeout, reset, nothing usable): a local reply with `status`. */
  failUpstream(code: ErrorCode, status: number, body = '', headers: Record<string, string> | null = null): void {
    this.decision = 'upstream_error';
    this.reason = code;
    this.replyStatus = status;
    this.replyBody = body;
    this.replyHeaders = headers;
  }

  /** The client left before its answer was complete; a request already refused or answered keeps its outcome. */
  abort(code: ErrorCode = 'RMP_ERR_CLIENT_ABORTED'): void {
    if (this.decision !== 'forwarded') return;
    this.decision = 'aborted';
    this.reason = code;
  }
}
