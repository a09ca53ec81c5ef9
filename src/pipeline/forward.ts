// Forwarding to the upstream: one of its servers (picked by its balancing policy, src/upstream/pool.ts)
// through that server's undici keep-alive pool. Bodies stream both ways with backpressure (a 1 GB
// upload or download passes in flat memory). Failures become clear answers: refused → 502, no head in
// time → 504, a reset mid-body closes the client connection.
// One handler object per request and no closures: this is the hot path.
//
// Retry (pools of two servers or more): an exchange that failed before any response head came back is
// sent once more, to another server in service, when repeating it cannot do harm: the connection was
// never made (refused, unreachable, connect timeout: the server never saw the request), or the method
// is GET or HEAD (a reset or a closed keep-alive connection, as when a server is killed mid-request).
// Never a POST, PUT, PATCH or DELETE that may have reached a server, never a streamed request body
// (it is gone), never after a head (the client may have part of the answer), never a response timeout
// (the request may still be running, and a slow origin would be asked twice), never twice.
// The other upstream exchanges share their pieces from here and headers.ts: a WebSocket handshake
// (server/upgrade.ts: tunnelRequestOptions, failExchange), a cache refresh (refreshRequestHeaders).
import type { OutgoingHttpHeaders } from 'node:http';
import type { RequestOptions } from 'node:https';
import type { Dispatcher } from 'undici';
import type { RequestContext, ResponseTap, UpstreamHeadFacts } from './context.ts';
import { RempartError, type ErrorCode } from '../core/errors.ts';
import { monoNow } from '../core/clock.ts';
import { classifyUpstreamError, isConnectFailure } from '../upstream/errors.ts';
import type { H1Exchange } from '../upstream/h1-pool.ts';
import { FieldKind, type UpstreamHead } from '../core/http1.ts';
export { classifyUpstreamError };
import {
  clientResponseHeaders,
  clientResponsePairs,
  setCookiePairs,
  upstreamHeadFacts,
  upstreamRequestHeaders,
} from './headers.ts';
import { bufferRequestBody, sendContinueIfExpected } from './buffer-body.ts';
import { closingReason } from './reply.ts';
import type { NamedDispatchOptions, UpstreamServer } from '../upstream/pool.ts';
import { fnv1a, tlsConnectOptions } from '../upstream/pool.ts';
import type { CompiledUpstream } from './runtime.ts';

export interface ForwardHooks {
  /**
   * Send the local error reply of a failed exchange: the outcome is set already (a verb: failUpstream,
   * refuse, abort, with `code` and `status`); the hook may dress it (the status page) and sends it.
   */
  replyError(ctx: RequestContext, code: ErrorCode, status: number): void;
  /** Count an upstream failure. */
  onUpstreamError(ctx: RequestContext, code: ErrorCode, err: Error): void;
  /**
   * Sees every upstream response head (familiarity learns origin-granted sessions from Set-Cookie): the
   * client's name/value pairs as strings (clientResponseHeaders / clientResponsePairs: hop-by-hop fields
   * and those a Connection field names already out; binary upgrades: undici's raw Buffers). A lean
   * client's head written from the pool's bytes (writeUpstreamHead) shows only its Set-Cookie fields, and
   * only when it has some: the one reader (familiarity's learnSessions) looks for Set-Cookie alone.
   */
  onResponseHead?(ctx: RequestContext, status: number, headers: readonly (Buffer | string)[]): void;
  /** The upstream exchange is over (its body complete, or failed): its admission slot goes back now. */
  onUpstreamEnd?(ctx: RequestContext): void;
  /** A failed exchange is sent again to another server of the pool (forward.ts's retry rule). */
  onRetry?(ctx: RequestContext, from: UpstreamServer, code: ErrorCode): void;
  /** The client is not reading as fast as the upstream sends (a write had to wait for it to drain). */
  onClientBackpressure?(ctx: RequestContext): void;
  /** `bytes` more of a reply queued behind earlier ones on its connection (pipelining): false when the
   *  connection was closed for holding too much. */
  onQueuedReply?(ctx: RequestContext, bytes: number): boolean;
}

/** A body's last bytes up to this size ride the response's end (onLastData): what LeanResponse joins to its head. */
const TAIL_BYTES = 16 * 1024;

/**
 * A response that can take pairs whose characters are known good (the lean engine's LeanResponse):
 * only `extra` (headers the phases add) is checked as writeHead checks everything.
 */
interface CheckedHeadWriter {
  writeCheckedHead?(status: number, checked: readonly string[], extra: readonly string[] | null): void;
  /** The head straight from the lean pool's parse (its kinds), `extra` checked: no pair made per field. */
  writeUpstreamHead?(
    status: number,
    buf: Buffer,
    base: number,
    head: UpstreamHead,
    via: string,
    extra: readonly string[] | null,
  ): void;
}

/** upstreamHeadFacts' object, reused: read within the call that fills it (the tap's needsPairs). */
const FACTS: UpstreamHeadFacts = { cacheControl: undefined, vary: '', ageSec: 0, hasSetCookie: false };

/** Legacy undici handler (onConnect/onHeaders/onData/onComplete/onError): undici's native shape,
 *  so no adapter object and no header parsing per request. */
export class ForwardHandler implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext;
  readonly hooks: ForwardHooks;
  readonly via: string;
  /** undici's abort callback (onConnect), or the lean pool's exchange (onExchange): what abort() cancels. */
  #undiciAbort: ((err?: Error) => void) | null;
  #exchange: H1Exchange | null;
  /** undici's resume callback (onHeaders); for the lean pool's exchange, #resumeFn made on first backpressure. */
  #undiciResume: (() => void) | null;
  #resumeFn: (() => void) | null;
  /** The server of this attempt (null once the attempt is over). */
  server: UpstreamServer | null;
  /** The server the request was last sent to (kept for the log line after the attempt is over). */
  lastServer: UpstreamServer | null;
  /** 0 for the first attempt, 1 for the retry. */
  attempt: number;
  /** Whether the request was sent again on a new connection after a reused one died (#staleReuse). */
  #freshTried = false;
  /** The request's key hash for `balance: hash`, or -1. */
  hash: number;
  body: Dispatcher.DispatchOptions['body'];
  attemptStartMs: number;
  /** The body's last bytes, kept for the end (onLastData). */
  tail: Buffer | null;

  constructor(ctx: RequestContext, hooks: ForwardHooks, via: string, body: Dispatcher.DispatchOptions['body']) {
    this.ctx = ctx;
    this.hooks = hooks;
    this.via = via;
    this.#undiciAbort = null;
    this.#exchange = null;
    this.#undiciResume = null;
    this.#resumeFn = null;
    this.server = null;
    this.lastServer = null;
    this.attempt = 0;
    this.hash = -1;
    this.body = body;
    this.attemptStartMs = 0;
    this.tail = null;
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#undiciAbort = abort;
    if (this.ctx.finished) abort(new RempartError('RMP_ERR_CLIENT_ABORTED'));
  }

  /** The lean engine's pool (upstream/h1-pool.ts): the exchange itself, no callback made per request. */
  onExchange(x: H1Exchange): void {
    this.#exchange = x;
    if (this.ctx.finished) x.abort(new RempartError('RMP_ERR_CLIENT_ABORTED'));
  }

  /** Cancel the attempt in flight (its client left, or its head cannot be written); nothing when none is. */
  abort(err?: Error): void {
    const x = this.#exchange;
    if (x !== null) x.abort(err);
    else this.#undiciAbort?.(err);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: Node already answered Expect itself
    if (!this.#headSeen(statusCode)) return true;
    // Converted once, for the hook, the cache tap (which may store the array as it is) and the client's
    // head. The hook sees the client's fields, as from the lean pool: a Set-Cookie that a Connection field
    // names never reaches the client, so familiarity must not learn a session from it.
    const headers = clientResponseHeaders(rawHeaders, this.via);
    // A 204 never carries a Content-Length (RFC 9110 §8.6), whatever its origin said; the lean path drops it too.
    if (statusCode === 204) dropContentLength(headers);
    this.hooks.onResponseHead?.(this.ctx, statusCode, headers);
    this.#undiciResume = resume;
    return this.#head(statusCode, headers, false, this.ctx.cacheTap);
  }

  /**
   * The lean engine's pool (upstream/h1-pool.ts): the head as the strict parser left it, offsets into
   * `buf` and a kind per field. A lean client's head is written from those (writeUpstreamHead) unless
   * pairs are read: by a cache tap that keeps them (a storable answer, a stale stand-in), or because a
   * Connection field names other fields (their names must be compared), or the client's response is
   * another engine's. Pairs are a string only for the fields that go on; neither way needs a second
   * check of the upstream's characters: the parser refused any other byte.
   */
  onHeadBytes(statusCode: number, buf: Buffer, base: number, head: UpstreamHead, _x: H1Exchange): boolean {
    if (!this.#headSeen(statusCode)) return true;
    const ctx = this.ctx;
    let tap = ctx.cacheTap;
    const lean = ctx.res as unknown as CheckedHeadWriter;
    if (lean.writeUpstreamHead !== undefined && (head.mask & (1 << FieldKind.ConnectionNames)) === 0) {
      // A tap that judged the head from its facts and keeps nothing of it is done with it.
      if (tap !== null && tap.needsPairs?.(statusCode, upstreamHeadFacts(buf, base, head, FACTS)) === false) tap = null;
      if (tap === null) {
        const hook = this.hooks.onResponseHead;
        if (hook !== undefined && (head.mask & (1 << FieldKind.SetCookie)) !== 0)
          hook(ctx, statusCode, setCookiePairs(buf, base, head));
        ctx.status = statusCode;
        try {
          lean.writeUpstreamHead(statusCode, buf, base, head, this.via, ctx.responseHeaders);
        } catch (err) {
          // A phase's header with invalid characters (the upstream's were checked by its parser).
          this.abort(err as Error);
          return false;
        }
        return true;
      }
    }
    const headers = clientResponsePairs(buf, base, head.fields, this.via, head.kinds);
    this.hooks.onResponseHead?.(ctx, statusCode, headers);
    return this.#head(statusCode, headers, true, tap);
  }

  /** The pool's books for a final head; false when the client's response is no longer this one's to write. */
  #headSeen(statusCode: number): boolean {
    const server = this.server;
    if (server !== null) {
      // Outlier detection counts as the breaker does: 502 and 504 are the server's response failure
      // (judged against its peers, src/upstream/pool.ts), 503 is an overloaded server shedding its
      // surplus (still serving), other answers are successes (timed by the request's start: no clock read).
      if (statusCode === 502 || statusCode === 504)
        server.pool?.onResponseFailure(server, this.ctx.clientPrefix, this.ctx.path, monoNow());
      else if (statusCode < 500) server.pool?.onSuccess(server, this.ctx.forwardStartMs);
    }
    if (this.ctx.res.headersSent || this.ctx.finished) return false;
    this.ctx.upstreamStatus = statusCode;
    return true;
  }

  /** The client's head: `checked` when the pairs' characters were checked already (the strict parser). */
  #head(statusCode: number, headers: string[], checked: boolean, tap: ResponseTap | null): boolean {
    const res = this.ctx.res;
    if (tap !== null && tap.onHeaders(statusCode, headers)) return true;
    this.ctx.status = statusCode;
    try {
      const extra = this.ctx.responseHeaders;
      const lean = res as unknown as CheckedHeadWriter;
      if (checked && lean.writeCheckedHead !== undefined) lean.writeCheckedHead(statusCode, headers, extra);
      else res.writeHead(statusCode, extra === null ? headers : headers.concat(extra));
    } catch (err) {
      // An upstream header Node refuses to write (invalid characters): the upstream is at fault.
      this.abort(err as Error);
      return false;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    const tap = this.ctx.cacheTap;
    if (tap !== null) {
      tap.onData(chunk);
      if (tap.answered) return true;
    }
    const res = this.ctx.res;
    this.ctx.responseBytes += chunk.length;
    // No socket yet: an earlier reply on the connection is still going out, so this one is held in
    // memory until then (a client that pipelines and never reads would make that unbounded).
    if (
      res.socket === null &&
      this.hooks.onQueuedReply !== undefined &&
      !this.hooks.onQueuedReply(this.ctx, chunk.length)
    )
      return false;
    if (res.write(chunk)) return true;
    res.once('drain', this.#resumeCallback());
    this.hooks.onClientBackpressure?.(this.ctx);
    return false;
  }

  /** What the client's 'drain' calls: undici's resume, or the lean exchange's (a function made once, here). */
  #resumeCallback(): () => void {
    const undici = this.#undiciResume;
    if (undici !== null) return undici;
    return (this.#resumeFn ??= () => this.#exchange?.resume());
  }

  /**
   * The lean engine's pool: the last bytes of the body, its end follows in the same call (onComplete). A
   * small tail is kept for res.end(tail): the whole answer then goes in one write with its finish, with
   * no end-of-tick flush scheduled for bytes held by write(). Anything else takes onData's way.
   */
  onLastData(chunk: Buffer): boolean {
    if (chunk.length > TAIL_BYTES || this.ctx.res.socket === null) return this.onData(chunk);
    const tap = this.ctx.cacheTap;
    if (tap !== null) {
      tap.onData(chunk);
      if (tap.answered) return true;
    }
    this.ctx.responseBytes += chunk.length;
    this.tail = chunk;
    return true;
  }

  onComplete(): void {
    const server = this.server;
    if (server !== null) {
      this.server = null;
      server.inFlight--;
      server.latency?.observe((monoNow() - this.attemptStartMs) / 1000);
    }
    this.hooks.onUpstreamEnd?.(this.ctx);
    const tap = this.ctx.cacheTap;
    if (tap !== null) {
      tap.onComplete();
      if (tap.answered) return;
    }
    const tail = this.tail;
    if (tail === null) this.ctx.res.end();
    else {
      this.tail = null;
      this.ctx.res.end(tail);
    }
  }

  onError(err: Error): void {
    // undici (the node engine's pool) fails a 204, or a 304 to a GET, whose head has a Content-Length
    // (RFC 9110 §8.6 allows the 304's: the length of what a 200 would carry). Such an answer is whole at
    // its head: it is completed, not turned into a cut client connection with nothing written (the lean
    // pool completes these itself and does not reuse their connection; undici has closed this one).
    if (
      (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' &&
      (this.ctx.upstreamStatus === 204 || this.ctx.upstreamStatus === 304) &&
      this.ctx.responseBytes === 0
    )
      return this.onComplete();
    const server = this.server;
    if (server !== null && server.h1 === null && this.#staleReuse(err, server)) {
      // Not a failure of the server's (the lean pool, too, retries these silently): the same server, a
      // new connection, once.
      this.#freshTried = true;
      this.server = null;
      server.inFlight--;
      this.#undiciAbort = null;
      process.nextTick(retryFresh, this, server);
      return;
    }
    if (server !== null) {
      this.server = null;
      server.inFlight--;
      const { code } = classifyUpstreamError(err);
      if (code.startsWith('RMP_ERR_UPSTREAM_')) {
        // Connect failures count in a row; any other failure is the response's (src/upstream/pool.ts).
        if (isConnectFailure(err)) server.pool?.onConnectFailure(server, monoNow());
        else server.pool?.onResponseFailure(server, this.ctx.clientPrefix, this.ctx.path, monoNow());
        const next = this.#retryTarget(err, code, server);
        if (next !== null) {
          this.hooks.onRetry?.(this.ctx, server, code);
          this.attempt = 1;
          this.#undiciAbort = null;
          this.#exchange = null;
          // Not from inside undici's own error callback: the next tick, on the other server.
          process.nextTick(retry, this, next);
          return;
        }
      }
    }
    this.#onError(err);
    this.hooks.onUpstreamEnd?.(this.ctx);
  }

  /**
   * Whether undici's reused connection died under a GET or HEAD before any of its answer was handed on
   * (the origin closed or reset it as the request went out, or after a part of a head): as the lean pool
   * does (upstream/h1-pool.ts), such a request is sent again once, on a new connection. undici does not
   * say whether the connection was reused; its SocketError says how many bytes went out on it (a reset's
   * error says it too: pool.ts serverConnector), and a new connection carried this request only: more
   * than this request's bytes (by at least the shortest request, 16 bytes) is an earlier exchange. An
   * origin that breaks off every answer on a new connection is not sent each request twice
   * (test/upstream-stale-retry.test.ts holds both sides on both engines).
   */
  #staleReuse(err: Error & { code?: string; socket?: { bytesWritten?: number } }, server: UpstreamServer): boolean {
    const code = err.code;
    if (this.#freshTried) return false;
    // The connection closed or reset under it: not undici's other SocketErrors ('bad response', an origin
    // breaking the protocol, is not a stale connection: it would be asked twice for nothing).
    if (code === 'UND_ERR_SOCKET') {
      if (err.message !== 'other side closed' && err.message !== 'closed') return false;
    } else if (code !== 'ECONNRESET' && code !== 'EPIPE') return false;
    const ctx = this.ctx;
    if (ctx.finished || ctx.upstreamStatus !== 0 || ctx.res.headersSent) return false;
    const m = ctx.req.method;
    if ((m !== 'GET' && m !== 'HEAD') || (this.body !== null && this.body !== undefined)) return false;
    const written = err.socket?.bytesWritten;
    return typeof written === 'number' && written >= requestHeadBytes(ctx, this.via, server) + 16 && server.freshRoom();
  }

  /** The retry rule of this file's head comment: the server to retry on, or null. */
  #retryTarget(err: Error & { code?: string }, code: ErrorCode, from: UpstreamServer): UpstreamServer | null {
    const ctx = this.ctx;
    if (this.attempt !== 0 || ctx.finished || ctx.upstreamStatus !== 0 || ctx.res.headersSent) return null;
    const pool = from.pool;
    if (pool === null || pool.servers.length < 2) return null;
    const body = this.body;
    if (body !== null && body !== undefined && !Buffer.isBuffer(body)) return null;
    // Named codes only: an error of unknown kind is classified RMP_ERR_UPSTREAM_CONNECT too, but
    // nothing says the request did not leave.
    const e = err.code;
    const neverSent =
      e === 'ECONNREFUSED' ||
      e === 'UND_ERR_CONNECT_TIMEOUT' ||
      e === 'EHOSTUNREACH' ||
      e === 'ENETUNREACH' ||
      e === 'ENOTFOUND' ||
      e === 'EAI_AGAIN';
    if (code === 'RMP_ERR_UPSTREAM_TIMEOUT' && e !== 'UND_ERR_CONNECT_TIMEOUT') return null;
    if (!neverSent) {
      const m = ctx.req.method;
      if (code !== 'RMP_ERR_UPSTREAM_RESET' || (m !== 'GET' && m !== 'HEAD')) return null;
    }
    return pool.pick(this.hash, from);
  }

  #onError(err: Error): void {
    const ctx = this.ctx;
    const tap = ctx.cacheTap;
    if (tap !== null) {
      tap.onError(err);
      if (tap.answered) return;
    }
    if (ctx.finished) return; // the client left; nothing to tell
    const { code, status } = classifyUpstreamError(err);
    // The request body failed on the way (too large, or its client left): the client's doing.
    if (code === 'RMP_ERR_EDGE_BODY_TOO_LARGE') ctx.refuse(code, status);
    else if (code === 'RMP_ERR_CLIENT_ABORTED') ctx.abort(code, status);
    else return failExchange(ctx, this.hooks, code, status, err);
    answerError(ctx, this.hooks, code, status);
  }
}

/**
 * The one error path of an upstream exchange (forward here, WebSocket handshakes in server/upgrade.ts):
 * the outcome (ctx.failUpstream), the failure counted (breaker, metrics, log: hooks.onUpstreamError),
 * then the answer (the status page or the JSON error body), or a cut connection once a head was sent.
 */
export function failExchange(
  ctx: RequestContext,
  hooks: ForwardHooks,
  code: ErrorCode,
  status: number,
  err: Error,
): void {
  ctx.failUpstream(code, status);
  hooks.onUpstreamError(ctx, code, err);
  answerError(ctx, hooks, code, status);
}

/** Removes every Content-Length pair from flat [name, value, …] pairs (a 204's, rare: not a hot path). */
function dropContentLength(pairs: string[]): void {
  for (let i = pairs.length - 2; i >= 0; i -= 2)
    if (pairs[i]!.length === 14 && pairs[i]!.toLowerCase() === 'content-length') pairs.splice(i, 2);
}

function answerError(ctx: RequestContext, hooks: ForwardHooks, code: ErrorCode, status: number): void {
  if (!ctx.res.headersSent) hooks.replyError(ctx, code, status);
  else ctx.res.destroy(); // mid-body: the only honest signal left is to close the connection
}

/**
 * The request of a WebSocket handshake to ctx.upstream (server/upgrade.ts): the forward path's headers
 * with Connection/Upgrade kept, and its own connection (a tunnel holds it for its whole life: it
 * cannot come from the pool). `timeout` covers the connect; the caller then gives headersTimeoutMs.
 */
export function tunnelRequestOptions(ctx: RequestContext, via: string): RequestOptions {
  const upstream = ctx.upstream!;
  // A server of the pool as a request's would be (its tunnel is not counted in its in-flight).
  const server =
    upstream.pool.pick(upstream.hashOn === null ? -1 : requestHash(ctx, upstream), null) ?? upstream.pool.servers[0]!;
  return {
    host: server.host,
    port: server.port,
    method: 'GET',
    path: ctx.target,
    // A flat [name, value, …] array: sent as is, Host included, nothing added by Node.
    headers: upstreamRequestHeaders(ctx, via, true) as unknown as OutgoingHttpHeaders,
    agent: false,
    timeout: upstream.config.connectTimeoutMs,
    servername: server.tlsName,
    ...tlsConnectOptions(server.tlsFiles),
  };
}

/** A request body that counts its bytes and fails once it passes the route's limit. */
async function* limitBody(body: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of body) {
    seen += chunk.length;
    if (seen > maxBytes) throw new RempartError('RMP_ERR_EDGE_BODY_TOO_LARGE');
    yield chunk;
  }
}

function requestBody(ctx: RequestContext): Dispatcher.DispatchOptions['body'] {
  const req = ctx.req;
  const cl = req.headers['content-length'];
  if (cl !== undefined) return cl === '0' ? null : req; // CL was checked against the limit already
  if (req.headers['transfer-encoding'] === undefined) return null;
  const max = ctx.route!.maxBodyBytes;
  // undici accepts any async iterable as a body; its types only list Readable.
  return limitBody(req, max) as unknown as Dispatcher.DispatchOptions['body'];
}

function dispatch(
  ctx: RequestContext,
  hooks: ForwardHooks,
  via: string,
  body: Dispatcher.DispatchOptions['body'],
): void {
  // A refusal on this connection said Connection: close after the edge phase let this request by
  // (possible once a later phase waits): nothing more from this socket reaches an upstream.
  const closing = closingReason(ctx.socket);
  if (closing !== undefined) {
    // Answered and its slot given back now: left unanswered, it held an admission slot until the
    // socket idled out, and four such connections held every slot (review of issue 15).
    ctx.refuse(closing, 400);
    hooks.onUpstreamEnd?.(ctx);
    answerError(ctx, hooks, closing, 400);
    return;
  }
  const upstream = ctx.upstream!;
  const handler = new ForwardHandler(ctx, hooks, via, body);
  if (upstream.hashOn !== null) handler.hash = requestHash(ctx, upstream);
  const server = upstream.pool.pick(handler.hash, null);
  if (server === null) {
    // Every server went out of service since `failover` looked (a health check just failed).
    ctx.failUpstream('RMP_ERR_UPSTREAM_UNAVAILABLE', 503);
    hooks.onUpstreamEnd?.(ctx);
    answerError(ctx, hooks, 'RMP_ERR_UPSTREAM_UNAVAILABLE', 503);
    return;
  }
  ctx.forwardHandler = handler;
  ctx.forwardStartMs = monoNow();
  send(handler, server);
}

/** One attempt of the exchange, on `server`. */
function send(handler: ForwardHandler, server: UpstreamServer, fresh = false): void {
  const ctx = handler.ctx;
  handler.server = server;
  handler.lastServer = server;
  if (server.latency !== null) handler.attemptStartMs = monoNow();
  server.inFlight++;
  const opts: NamedDispatchOptions = {
    path: ctx.target,
    method: ctx.req.method as Dispatcher.HttpMethod,
    headers: upstreamRequestHeaders(ctx, handler.via),
    body: handler.body,
    // The server as configured names the TLS connection, never the client's Host (upstream/pool.ts serverConnector).
    servername: server.host,
    // No `blocking`: the pool never pipelines (pipelining: 1), and undici's blocking flag is never
    // cleared after a HEAD, which made every HEAD open a new upstream connection.
    // undici closes the pooled connection after every HEAD unless told otherwise (against origins
    // that wrongly send a body). A HEAD flood would then churn connections into TIME_WAIT until
    // connect() fails for everyone; keep-alive it like any request.
    reset: false,
  };
  if (fresh) server.dispatchFresh(opts, handler);
  // The lean engine's raw pool when it has one (upstream/h1-pool.ts), undici's otherwise: one call.
  else (server.h1 ?? server.dispatcher).dispatch(opts, handler);
}

/** The bytes undici writes for a bodiless request's head (client-h1.js writeH1): #staleReuse's measure. */
function requestHeadBytes(ctx: RequestContext, via: string, server: UpstreamServer): number {
  const pairs = upstreamRequestHeaders(ctx, via);
  // `METHOD path HTTP/1.1\r\n`, `connection: keep-alive\r\n`, the blank line
  let n = ctx.req.method!.length + ctx.target.length + 12 + 24 + 2;
  let host = false;
  for (let i = 0; i < pairs.length; i += 2) {
    if (pairs[i] === 'host') host = true;
    n += pairs[i]!.length + pairs[i + 1]!.length + 4;
  }
  // undici's own `host: host[:port]` when the request names none
  return host ? n : n + server.label.length + 8;
}

/** The retry on a new connection to the same server (ForwardHandler #staleReuse). */
function retryFresh(handler: ForwardHandler, server: UpstreamServer): void {
  const ctx = handler.ctx;
  if (ctx.finished) {
    handler.hooks.onUpstreamEnd?.(ctx);
    return;
  }
  send(handler, server, true);
}

/** The retry of a failed first attempt, on another server. */
function retry(handler: ForwardHandler, next: UpstreamServer): void {
  const ctx = handler.ctx;
  if (ctx.finished) {
    handler.hooks.onUpstreamEnd?.(ctx);
    return;
  }
  send(handler, next);
}

/**
 * The key hash of `balance: hash` (upstreams[].hashKey): -1 when the request has no such key (it is
 * then balanced as least_request). Only hash pools pay for it.
 */
export function requestHash(ctx: RequestContext, upstream: CompiledUpstream): number {
  const on = upstream.hashOn!;
  switch (on.kind) {
    case 'path':
      return fnv1a(ctx.path);
    case 'client': {
      // The /64 (the configured prefix) for IPv6: one host's rotating privacy addresses stay together.
      const a = ctx.clientAddress;
      return fnv1a(a.indexOf(':') !== -1 && a.indexOf('.') === -1 ? ctx.clientPrefix : a);
    }
    case 'header': {
      const v = ctx.req.headers[on.name];
      if (v === undefined) return -1;
      return fnv1a(typeof v === 'string' ? v : v.join(', '));
    }
    case 'cookie': {
      const v = cookieValue(ctx.req.headers.cookie, on.name);
      return v === null ? -1 : fnv1a(v);
    }
  }
}

/** The first value of cookie `name` in a Cookie header, or null. */
function cookieValue(header: string | undefined, name: string): string | null {
  if (header === undefined) return null;
  let i = 0;
  while (i < header.length) {
    while (header.charCodeAt(i) === 0x20 || header.charCodeAt(i) === 0x3b) i++;
    const end = header.indexOf(';', i);
    const stop = end === -1 ? header.length : end;
    const eq = header.indexOf('=', i);
    if (eq !== -1 && eq < stop && eq - i === name.length && header.startsWith(name, i))
      return header.slice(eq + 1, stop).trim();
    i = stop + 1;
  }
  return null;
}

/** Send the request upstream; a body up to `bufferBodyBytes` is read whole first (slow-POST guard). */
export function forward(ctx: RequestContext, hooks: ForwardHooks, via: string, bufferBodyBytes: number): void {
  const req = ctx.req;
  if (ctx.bodyBuffered) {
    // Read ahead by the `body` phase; undici takes a Buffer or any async iterable.
    dispatch(ctx, hooks, via, ctx.bufferedBody as Dispatcher.DispatchOptions['body']);
    return;
  }
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  if (hasBody) sendContinueIfExpected(req, ctx.res);
  if (!hasBody || req.complete || bufferBodyBytes === 0) {
    dispatch(ctx, hooks, via, requestBody(ctx));
    return;
  }
  bufferRequestBody(req, bufferBodyBytes, ctx.route!.maxBodyBytes, (err, body) => {
    if (ctx.finished) return; // the client left while sending
    if (err !== null) {
      const { code, status } = classifyUpstreamError(err);
      if (code === 'RMP_ERR_CLIENT_ABORTED') ctx.abort(code, status);
      else ctx.refuse(code, status);
      if (!ctx.res.headersSent) hooks.replyError(ctx, code, status);
      return;
    }
    // undici takes a Buffer or any async iterable; its types list only Readable for the latter.
    dispatch(ctx, hooks, via, body as Dispatcher.DispatchOptions['body']);
  });
}
