// Forwarding to the upstream through its undici keep-alive pool. Bodies stream both ways with
// backpressure (a 1 GB upload or download passes in flat memory). Failures become clear answers:
// refused → 502, no head in time → 504, a reset mid-body closes the client connection.
// One handler object per request and no closures: this is the hot path.
// The other upstream exchanges share their pieces from here and headers.ts: a WebSocket handshake
// (server/upgrade.ts: tunnelRequestOptions, failExchange), a cache refresh (refreshRequestHeaders).
import type { OutgoingHttpHeaders } from 'node:http';
import type { RequestOptions } from 'node:https';
import { isIP } from 'node:net';
import type { Dispatcher } from 'undici';
import type { RequestContext } from './context.ts';
import { RempartError, type ErrorCode } from '../core/errors.ts';
import { classifyUpstreamError } from '../upstream/errors.ts';
export { classifyUpstreamError };
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.ts';
import { bufferRequestBody, sendContinueIfExpected } from './buffer-body.ts';
import { closingReason } from './reply.ts';

export interface ForwardHooks {
  /**
   * Send the local error reply of a failed exchange: the outcome is set already (a verb: failUpstream,
   * refuse, abort, with `code` and `status`); the hook may dress it (the status page) and sends it.
   */
  replyError(ctx: RequestContext, code: ErrorCode, status: number): void;
  /** Count an upstream failure. */
  onUpstreamError(ctx: RequestContext, code: ErrorCode, err: Error): void;
  /** Sees every upstream response head (familiarity learns origin-granted sessions from Set-Cookie). */
  onResponseHead?(ctx: RequestContext, status: number, rawHeaders: Buffer[]): void;
  /** The upstream exchange is over (its body complete, or failed): its admission slot goes back now. */
  onUpstreamEnd?(ctx: RequestContext): void;
  /** The client is not reading as fast as the upstream sends (a write had to wait for it to drain). */
  onClientBackpressure?(ctx: RequestContext): void;
  /** `bytes` more of a reply queued behind earlier ones on its connection (pipelining): false when the
   *  connection was closed for holding too much. */
  onQueuedReply?(ctx: RequestContext, bytes: number): boolean;
}

/** Legacy undici handler (onConnect/onHeaders/onData/onComplete/onError): undici's native shape,
 *  so no adapter object and no header parsing per request. */
export class ForwardHandler implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext;
  readonly hooks: ForwardHooks;
  readonly via: string;
  abort: ((err?: Error) => void) | null;
  resume: (() => void) | null;

  constructor(ctx: RequestContext, hooks: ForwardHooks, via: string) {
    this.ctx = ctx;
    this.hooks = hooks;
    this.via = via;
    this.abort = null;
    this.resume = null;
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    if (this.ctx.finished) abort(new RempartError('RMP_ERR_CLIENT_ABORTED'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: Node already answered Expect itself
    const res = this.ctx.res;
    if (res.headersSent || this.ctx.finished) return true;
    this.ctx.upstreamStatus = statusCode;
    this.hooks.onResponseHead?.(this.ctx, statusCode, rawHeaders);
    const tap = this.ctx.cacheTap;
    if (tap !== null && tap.onHeaders(statusCode, rawHeaders)) return true;
    this.ctx.status = statusCode;
    this.resume = resume;
    try {
      const headers = clientResponseHeaders(rawHeaders, this.via);
      if (this.ctx.responseHeaders !== null) headers.push(...this.ctx.responseHeaders);
      res.writeHead(statusCode, headers);
    } catch (err) {
      // An upstream header Node refuses to write (invalid characters): the upstream is at fault.
      this.abort?.(err as Error);
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
    res.once('drain', this.resume!);
    this.hooks.onClientBackpressure?.(this.ctx);
    return false;
  }

  onComplete(): void {
    this.hooks.onUpstreamEnd?.(this.ctx);
    const tap = this.ctx.cacheTap;
    if (tap !== null) {
      tap.onComplete();
      if (tap.answered) return;
    }
    this.ctx.res.end();
  }

  onError(err: Error): void {
    this.#onError(err);
    this.hooks.onUpstreamEnd?.(this.ctx);
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
  return {
    host: upstream.host,
    port: upstream.port,
    method: 'GET',
    path: ctx.target,
    // A flat [name, value, …] array: sent as is, Host included, nothing added by Node.
    headers: upstreamRequestHeaders(ctx, via, true) as unknown as OutgoingHttpHeaders,
    agent: false,
    timeout: upstream.config.connectTimeoutMs,
    servername: upstream.tls && isIP(upstream.host) === 0 ? upstream.host : undefined,
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
  const handler = new ForwardHandler(ctx, hooks, via);
  ctx.forwardHandler = handler;
  ctx.forwardStartMs = performance.now();
  // The lean engine's raw pool when there is one (upstream/h1-pool.ts), undici's otherwise: one call.
  const upstream = ctx.upstream!;
  (upstream.h1 ?? upstream.pool).dispatch(
    {
      path: ctx.target,
      method: ctx.req.method as Dispatcher.HttpMethod,
      headers: upstreamRequestHeaders(ctx, via),
      body,
      // No `blocking`: the pool never pipelines (pipelining: 1), and undici's blocking flag is never
      // cleared after a HEAD, which made every HEAD open a new upstream connection.
      // undici closes the pooled connection after every HEAD unless told otherwise (against origins
      // that wrongly send a body). A HEAD flood would then churn connections into TIME_WAIT until
      // connect() fails for everyone; keep-alive it like any request.
      reset: false,
    },
    handler,
  );
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
