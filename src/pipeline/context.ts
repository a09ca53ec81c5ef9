// The per-request context: one class, every field set in the constructor, so V8 gives every
// request the same hidden class and phases read plain properties.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ErrorCode } from '../core/errors.ts';
import type { CompiledRoute, CompiledUpstream } from './runtime.ts';
import type { AdmissionEntry, AdmissionGate } from '../upstream/gate.ts';
import type { PhaseResumer } from './phase.ts';

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
  /**
   * True when the tap answered the client itself (a stale copy instead of a 5xx): the upstream body is then
   * read and dropped. `headers` are the response's pairs as the client gets them (clientResponseHeaders),
   * converted once for both: the tap may keep the array (the stored copy), so the caller must not change it.
   */
  onHeaders(status: number, headers: string[]): boolean;
  /**
   * The lean pool's head judged from its facts (headers.ts upstreamHeadFacts), before any pairs are made:
   * false when onHeaders would neither answer nor keep the pairs (its books for that are done here, and
   * onHeaders is not called), true when onHeaders must be given them.
   */
  needsPairs?(status: number, facts: UpstreamHeadFacts): boolean;
  onData(chunk: Buffer): void;
  onComplete(): void;
  onError(err: Error): void;
  /** Whether the tap answered the client (the forward handler then leaves the client response alone). */
  readonly answered: boolean;
}

/** What the cache's policy reads of a response head (ResponseTap.needsPairs), as decideFromPairs finds it. */
export interface UpstreamHeadFacts {
  /** Every Cache-Control field's value joined with `, `; undefined when there is none. */
  cacheControl: string | undefined;
  /** Every Vary field's value joined with `, `. */
  vary: string;
  /** The last Age field of 1 to 10 digits, 0 without one. */
  ageSec: number;
  hasSetCookie: boolean;
}

/** Which upstream `failover` left the request on (its slot `upstreamChoice`). Plain numbers, as Verdict. */
export const UpstreamChoice = {
  /** The route's own upstream (usable, or no check ran yet: every request starts here). */
  Primary: 0,
  /** The route's fallback: the primary is unusable (breaker open, health check failing). */
  Fallback: 1,
  /** Neither is usable: only a stored copy or the status page can answer (`unavailable`). */
  None: 2,
} as const;
export type UpstreamChoice = (typeof UpstreamChoice)[keyof typeof UpstreamChoice];

/**
 * One request on its way through the phases. The fields come in groups, each with its writer named
 * (two fields have two, both named); everyone else only reads them (test/outcome-writers.test.ts checks the outcome's rule):
 * - the outcome (decision, reason, reply*) is written only by the verbs at the end of this class
 *   (refuse, answer, serveStored, failUpstream, abort, cutShort), never assigned from outside;
 * - each phase's slot is written by that phase only (its folder), read by the phases and the server
 *   parts named beside it; a phase that needs another to act calls a named function (pipeline/guard.ts
 *   requireChallenge, the StaleSource of pipeline/services.ts), it does not set the other's slot.
 * Plain fields, all set in the constructor: one hidden class for every request, no getter on the hot
 * path (a `readonly` enforced by accessors would cost a call per read).
 */
export class RequestContext {
  // --- The request, as the server entry received it (src/server, src/app). ---
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /**
   * The client connection, kept from the start: `req.socket` turns null once the request stream is
   * destroyed (a chunked body cut at maxBodyBytes), and `done` still has the connection's books to keep.
   */
  readonly socket: Socket;
  /** performance.now() when the request head was parsed. */
  readonly startMs: number;
  /** Whether the request came on an HTTP/2 stream (set by src/server/h2/entry.ts; the log line's `protocol`). */
  h2: boolean;

  // --- Identity: written by `identify` (src/phases/identify). ---
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
  /** The request path without the query string, normalised, segments' `;parameters` removed: what routes and limits judge. */
  path: string;
  /** The client's /24 (IPv4) or /64 (IPv6) prefix: the key most guards count by. */
  clientPrefix: string;
  /**
   * The JA4 fingerprint of the connection's TLS ClientHello (src/server/ja4.ts, read by the accept
   * layer), '' when unknown (plain HTTP, a malformed hello). Names the client's TLS stack.
   */
  ja4: string;
  /** The connection's HTTP/2 fingerprint (Akamai format, src/server/h2/fingerprint.ts), '' when unknown or not h2. */
  h2Fingerprint: string;

  // --- Where the request goes (what pipeline/forward.ts sends). Each field names its writers. ---
  /**
   * The request target in origin form (`/path?query`), as forwarded: set by `identify`, narrowed by
   * `cache` on a caching route to the target its key describes (nothing outside the key reaches the origin).
   */
  target: string;
  /** Set by `route`. */
  route: CompiledRoute | null;
  /** Set by `route` (the route's upstream); `failover` moves it to the route's fallback. */
  upstream: CompiledUpstream | null;

  // --- The outcome: written only by the verbs below. ---
  /** How the request ended (metrics label `decision`); `forwarded` until a verb says otherwise. */
  decision: Decision;
  /** Why the request ended as it did: a code from the error table, or '' when forwarded normally. */
  reason: ErrorCode | '';
  /** Local reply, when a phase answered. */
  replyStatus: number;
  replyBody: string;
  replyHeaders: Record<string, string> | null;
  /** A stored response to answer with instead (a cache hit or stale copy). */
  replyStored: StoredReply | null;

  // --- Guard decisions: written by the guard phases through src/pipeline/guard.ts (decide,
  // requireChallenge); the challenge's verify endpoint names its own rule. Read by the log line. ---
  /** The rule behind the guard decision this request ended with (or that a guard in observe mode would have applied), '' if none. */
  ruleId: string;
  /** The code a guard in `observe` mode would have answered with, '' if none (logged; the request went on). */
  observed: ErrorCode | '';
  /**
   * The rule of a guard (a signature rule) that requires a challenge for this request whatever the
   * level, '' if none: set by guard.ts requireChallenge, read by the `challenge` phase.
   */
  challengeRequiredBy: string;
  /** Extra headers for whatever answer is sent (flat [name, value, …]; a Set-Cookie), or null: addResponseHeader only. */
  responseHeaders: string[] | null;

  // --- Familiarity: written by the challenge guard's phases (src/phases/challenge). ---
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
  /**
   * The pace budgets the look-up held one request on (the credential's, its address's), opaque here:
   * the challenge guard's onDone gives them back when the request did not reach the origin. null: none.
   */
  heldBudget: object | null;
  heldAddressBudget: object | null;

  // --- `exfiltration` (src/phases/exfiltration). ---
  /**
   * Bytes the client may still get before a quota is crossed, Infinity when none applies. Read by the
   * tunnel (src/server/upgrade.ts): only a WebSocket tunnel is cut at it; an ordinary response that
   * crosses is served.
   */
  responseByteBudget: number;

  // --- `failover` (src/phases/failover). ---
  /**
   * Which upstream failover left the request on. Read by failover's own second phase `unavailable`
   * (after `cache`): with `None` it answers the status page unless the cache's StaleSource stands a
   * stored copy in. The cache reads no failover slot: it answers from storage before anyone waits on a dead upstream.
   */
  upstreamChoice: UpstreamChoice;

  // --- `cache` (src/phases/cache). ---
  /** The cache's decision and why, for the log line ('' when the route does not cache). */
  cache: string;
  /** Set when the upstream response may be stored or stood in for; called by pipeline/forward.ts. */
  cacheTap: ResponseTap | null;

  // --- `body` (src/phases/body). Read by pipeline/forward.ts. ---
  /** Whether the body was read ahead (then `bufferedBody` is what to forward). */
  bodyBuffered: boolean;
  bufferedBody: Buffer | AsyncIterable<Buffer> | null;

  // --- `admission` (src/phases/admission): the slot it took, given back by its releaseSlot. ---
  /** The admission gate whose slot this request holds (null when it holds none). */
  admissionGate: AdmissionGate<RequestContext> | null;
  /** The class (index in TRAFFIC_CLASSES) the slot was taken for, -1 when none. */
  admissionClass: number;
  /** Its place in the admission queue while it waits (null otherwise). */
  admissionEntry: AdmissionEntry<RequestContext> | null;

  // --- The exchange: written by the runner (pipeline/phase.ts), the forward path (pipeline/forward.ts,
  // reply.ts, server/upgrade.ts) and the server's `done` step. Phases only read them. ---
  /** Status sent to the client (0 until then). */
  status: number;
  /** Status the upstream sent (0 if none). */
  upstreamStatus: number;
  /** Response body bytes handed to the client connection (upstream bodies and stored copies; 0 for local replies). */
  responseBytes: number;
  /** Whether this request's reply stalled on the client and holds an upstream connection paused (see the gateway's pinned table). */
  pinned: boolean;
  /** Index of the last phase that ran, so `done` only unwinds what ran. */
  phaseIndex: number;
  finished: boolean;
  /** The in-flight upstream exchange, so `done` can abort it when the client leaves. */
  forwardHandler: { abort: ((err?: Error) => void) | null } | null;
  /** performance.now() when the request was dispatched to the upstream (0 if never): the limiter's RTT sample. */
  forwardStartMs: number;
  /**
   * Set by a runner that resumes waiting phases itself (server/cycle.ts): a phase that must wait may
   * then return Verdict.Wait and hand its verdict here later, instead of a promise. Null: return a promise.
   */
  resumer: PhaseResumer | null;

  constructor(req: IncomingMessage, res: ServerResponse, startMs: number) {
    this.req = req;
    this.res = res;
    this.socket = req.socket;
    this.startMs = startMs;
    this.h2 = false;
    this.clientAddress = '';
    this.peerAddress = '';
    this.peerTrusted = false;
    this.protocol = 'http';
    this.host = '';
    this.hostName = '';
    this.path = '/';
    this.clientPrefix = '';
    this.ja4 = '';
    this.h2Fingerprint = '';
    this.target = '/';
    this.route = null;
    this.upstream = null;
    this.decision = 'forwarded';
    this.reason = '';
    this.replyStatus = 0;
    this.replyBody = '';
    this.replyHeaders = null;
    this.replyStored = null;
    this.ruleId = '';
    this.observed = '';
    this.challengeRequiredBy = '';
    this.responseHeaders = null;
    this.knownState = 0;
    this.familiarity = null;
    this.heldBudget = null;
    this.heldAddressBudget = null;
    this.responseByteBudget = Infinity;
    this.upstreamChoice = UpstreamChoice.Primary;
    this.cache = '';
    this.cacheTap = null;
    this.bodyBuffered = false;
    this.bufferedBody = null;
    this.admissionGate = null;
    this.admissionClass = -1;
    this.admissionEntry = null;
    this.status = 0;
    this.upstreamStatus = 0;
    this.responseBytes = 0;
    this.pinned = false;
    this.phaseIndex = 0;
    this.finished = false;
    this.forwardHandler = null;
    this.forwardStartMs = 0;
    this.resumer = null;
  }

  /** Add a header to whatever answer is sent (local reply, stored copy or upstream response). */
  addResponseHeader(name: string, value: string): void {
    if (this.responseHeaders === null) this.responseHeaders = [name, value];
    else this.responseHeaders.push(name, value);
  }

  // The outcome verbs: the only writers of decision, reason and the reply. A phase calls one, then
  // returns Verdict.Reply; the server sends the reply (pipeline/reply.ts sendLocalReply). A later verb
  // replaces an earlier one: a stored copy may stand in for a refusal or a failure (serveStored).

  /** Refuse the request with a local reply (`body` '': the JSON error body of `code`). */
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

  /**
   * Answer with a stored copy: a fresh hit (`cache_hit`), or a `stale` copy, served while it is
   * refreshed (`code` '') or standing in for the failure `code` (an upstream error, a shed, no usable
   * upstream: the code of the answer it replaces). `headers` go out with the stored ones (Age, X-Cache).
   */
  serveStored(
    stored: StoredReply,
    decision: 'cache_hit' | 'stale',
    headers: Record<string, string>,
    code: ErrorCode | '' = '',
  ): void {
    this.decision = decision;
    this.reason = code;
    this.replyStored = stored;
    this.replyStatus = stored.status;
    this.replyHeaders = headers;
  }

  /** The upstream could not answer (connect error, timeout, reset, nothing usable): a local reply with `status`. */
  failUpstream(code: ErrorCode, status: number, body = '', headers: Record<string, string> | null = null): void {
    this.decision = 'upstream_error';
    this.reason = code;
    this.replyStatus = status;
    this.replyBody = body;
    this.replyHeaders = headers;
  }

  /**
   * The client left before its answer was complete; a request already refused or answered keeps its
   * outcome. `status` > 0: the reply to write should the connection still take one (a body read that
   * failed while the response is untouched).
   */
  abort(code: ErrorCode = 'RMP_ERR_CLIENT_ABORTED', status = 0): void {
    if (this.decision !== 'forwarded') return;
    this.decision = 'aborted';
    this.reason = code;
    if (status === 0) return;
    this.replyStatus = status;
    this.replyBody = '';
    this.replyHeaders = null;
  }

  /** A forwarded exchange Rempart cut short (a tunnel past the byte budget): the decision stays, `code` says why. */
  cutShort(code: ErrorCode): void {
    this.reason = code;
  }
}
