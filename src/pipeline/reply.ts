// Local replies: the answers Rempart gives itself (refusals, upstream failures). Small JSON bodies
// naming the code from the error table, no caching, and the connection closed whenever the request
// body may still be on the wire (it could otherwise be read as the next request).
import type { Socket } from 'node:net';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { RequestContext } from './context.ts';
import { ERRORS, type ErrorCode } from '../core/errors.ts';

/** Pre-rendered bodies, one per code: built once at start-up, not per request. */
const BODIES = new Map<string, string>();
for (const [code, spec] of Object.entries(ERRORS)) {
  BODIES.set(code, `${JSON.stringify({ error: { code, status: spec.status, message: spec.message } })}\n`);
}

export function errorBody(code: ErrorCode | ''): string {
  return BODIES.get(code) ?? BODIES.get('RMP_ERR_INTERNAL')!;
}

/**
 * Set on a client socket once a local reply said `Connection: close`, to the reply's code. Node's
 * parser goes on parsing what follows on that connection (a pipelined request, or one smuggled in a
 * body whose framing was refused) and emits it as a request; the edge phase refuses such requests
 * so they never reach an upstream.
 */
export const kClosingReason = Symbol('rempart.closingReason');
type ClosingSocket = Socket & { [kClosingReason]?: ErrorCode };

export function closingReason(socket: Socket): ErrorCode | undefined {
  return (socket as ClosingSocket)[kClosingReason];
}

function bodyMayBePending(ctx: RequestContext): boolean {
  const h = ctx.req.headers;
  return (
    !ctx.req.complete &&
    (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0'))
  );
}

function markClosing(ctx: RequestContext): void {
  // An HTTP/2 stream ends alone: its connection carries other clients' requests, and no body bytes of
  // a refused stream can be read as another request.
  if (ctx.h2) return;
  const socket = ctx.socket as ClosingSocket | null;
  if (socket !== null && socket[kClosingReason] === undefined)
    socket[kClosingReason] = ctx.reason || 'RMP_ERR_EDGE_BAD_REQUEST';
}

export function sendLocalReply(ctx: RequestContext): void {
  const res = ctx.res;
  if (res.headersSent || ctx.finished) return;
  if (ctx.replyStored !== null) return sendStoredReply(ctx);
  const status = ctx.replyStatus;
  const body = ctx.replyBody !== '' ? ctx.replyBody : errorBody(ctx.reason);
  ctx.status = status;
  const headers: Record<string, string | number | string[]> = {
    'content-type': ctx.replyBody !== '' ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    // Never read as anything but what it says (a text/plain body sniffed as HTML would be a page).
    'x-content-type-options': 'nosniff',
  };
  if (ctx.replyHeaders !== null) Object.assign(headers, ctx.replyHeaders);
  if (status === 400 || bodyMayBePending(ctx)) {
    headers.connection = 'close';
    markClosing(ctx);
  }
  if (ctx.responseHeaders !== null) {
    for (let i = 0; i < ctx.responseHeaders.length; i += 2) {
      const name = ctx.responseHeaders[i]!;
      const value = ctx.responseHeaders[i + 1]!;
      const had = headers[name];
      // Several phases may each set a cookie (a clearance, a waiting-room pass): keep them all.
      if (had !== undefined && name === 'set-cookie')
        headers[name] = Array.isArray(had) ? [...had, value] : [String(had), value];
      else headers[name] = value;
    }
  }
  res.writeHead(status, headers);
  res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

/** A stored response (cache hit or stale copy): its status, headers and body, plus ctx.replyHeaders (Age, x-cache). */
function sendStoredReply(ctx: RequestContext): void {
  const stored = ctx.replyStored!;
  const headers = stored.headers.slice();
  if (ctx.replyHeaders !== null) for (const name in ctx.replyHeaders) headers.push(name, ctx.replyHeaders[name]!);
  if (ctx.responseHeaders !== null) headers.push(...ctx.responseHeaders);
  if (bodyMayBePending(ctx)) {
    headers.push('connection', 'close');
    markClosing(ctx);
  }
  ctx.status = stored.status;
  if (ctx.req.method !== 'HEAD') ctx.responseBytes = stored.body.length;
  ctx.res.writeHead(stored.status, headers);
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : stored.body);
}

/** A raw reply waiting for the responses to earlier requests on the same connection (writeRawReply). */
const kDeferredReply = Symbol('rempart.deferredReply');
type RawReplySocket = ClosingSocket & {
  _httpMessage?: ServerResponse | null;
  /** Node's parser; `incoming` is the last request it parsed (Node internals, as `_httpMessage`). */
  parser?: { incoming?: IncomingMessage | null } | null;
  [kDeferredReply]?: { status: number; code: ErrorCode };
};

/** Answer on a raw socket, for errors before a request object exists (parse errors, upgrades). */
export function writeRawReply(socket: Socket, status: number, code: ErrorCode): void {
  const s = socket as RawReplySocket;
  const inFlight = s._httpMessage;
  if (inFlight != null && !inFlight.writableFinished) {
    const last = s.parser?.incoming ?? null;
    if (last === null || last.complete) {
      // The error is in a request after those still waiting for their responses (pipelined): a
      // status line written now would reach the client first and be read as the answer to the
      // oldest one (a forwarded payment seen as refused). Answers go out in request order: this
      // one waits until they are done (flushDeferredReply), then closes the connection.
      if (s[kDeferredReply] === undefined) s[kDeferredReply] = { status, code };
      return;
    }
    // The error is in the body of the last request. If its own response is not the one on the wire,
    // or has begun, no status line can be its answer: close.
    if (inFlight.req !== last || inFlight.headersSent) {
      socket.destroy();
      return;
    }
  }
  // A local reply that said Connection: close is the last answer on this connection (a parse error
  // in bytes that followed it would otherwise get a status line the client never asked for).
  if (s[kClosingReason] !== undefined || !socket.writable) {
    socket.destroySoon();
    return;
  }
  const body = errorBody(code);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  );
  socket.destroySoon();
}

/**
 * Called when a response on `socket` is done: writes a raw reply deferred behind it once no other
 * response is pending (Node attaches the next queued response before this runs).
 */
export function flushDeferredReply(socket: Socket | null): void {
  if (socket === null) return;
  const s = socket as RawReplySocket;
  const deferred = s[kDeferredReply];
  if (deferred === undefined) return;
  const next = s._httpMessage;
  if (next != null && !next.writableFinished) return;
  s[kDeferredReply] = undefined;
  if (socket.destroyed) return;
  writeRawReply(socket, deferred.status, deferred.code);
}
