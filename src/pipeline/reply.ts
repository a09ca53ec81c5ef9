// Local replies: the answers Rempart gives itself (refusals, upstream failures). Small JSON bodies
// naming the code from the error table, no caching, and the connection closed whenever the request
// body may still be on the wire (it could otherwise be read as the next request).
import type { Socket } from 'node:net';
import {
  STATUS_CODES,
  validateHeaderName,
  validateHeaderValue,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
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

/** The fields of every local reply; the reply's own headers (ctx.replyHeaders) replace or add to them. */
const JSON_BASE: readonly string[] = [
  'content-type',
  'application/json',
  'cache-control',
  'no-store',
  // Never read as anything but what it says (a text/plain body sniffed as HTML would be a page).
  'x-content-type-options',
  'nosniff',
];
const TEXT_BASE: readonly string[] = ['content-type', 'text/plain; charset=utf-8', ...JSON_BASE.slice(2)];

/**
 * The base fields merged with a phase's constant headers, checked once: keyed by the headers object,
 * so only frozen ones are kept (made once at start-up or cached by their phase: shed's Retry-After
 * variants, a page's CSP set, a rate limit's set for one wait). A refusal then costs no merge and no
 * per-field check of these (the lean engine's writeCheckedHead); an object made per request is merged
 * and checked per request, and never kept (the map would grow with the requests).
 */
const MERGED_JSON = new WeakMap<Readonly<Record<string, string>>, readonly string[]>();
const MERGED_TEXT = new WeakMap<Readonly<Record<string, string>>, readonly string[]>();

function merge(base: readonly string[], headers: Readonly<Record<string, string>>): string[] {
  const out = base.slice();
  for (const name in headers) {
    const value = headers[name]!;
    const i = indexOfName(out, name);
    if (i === -1) out.push(name, value);
    else out[i + 1] = value;
  }
  return out;
}

/** The even index of `name` in flat [name, value, …] pairs, or -1. */
function indexOfName(pairs: readonly string[], name: string): number {
  for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === name) return i;
  return -1;
}

/** What the lean engine's response offers (pipeline/forward.ts): a head from pairs already checked. */
interface CheckedHeadWriter {
  writeCheckedHead?(status: number, checked: readonly string[], extra: readonly string[] | null): void;
}

export function sendLocalReply(ctx: RequestContext): void {
  const res = ctx.res;
  if (res.headersSent || ctx.finished) return;
  if (ctx.replyStored !== null) return sendStoredReply(ctx);
  const status = ctx.replyStatus;
  const text = ctx.replyBody !== '';
  const body = text ? ctx.replyBody : errorBody(ctx.reason);
  ctx.status = status;
  const own = ctx.replyHeaders;
  let fixed: readonly string[];
  let checked = true;
  if (own === null) fixed = text ? TEXT_BASE : JSON_BASE;
  else if (Object.isFrozen(own)) {
    const cache = text ? MERGED_TEXT : MERGED_JSON;
    let m = cache.get(own);
    if (m === undefined) {
      const pairs = merge(text ? TEXT_BASE : JSON_BASE, own);
      for (let i = 0; i < pairs.length; i += 2) {
        validateHeaderName(pairs[i]!);
        validateHeaderValue(pairs[i]!, pairs[i + 1]!);
      }
      m = pairs;
      cache.set(own, m);
    }
    fixed = m;
  } else {
    fixed = merge(text ? TEXT_BASE : JSON_BASE, own);
    checked = false;
  }
  const extra: string[] = ['content-length', String(Buffer.byteLength(body))];
  if (status === 400 || bodyMayBePending(ctx)) {
    // Once: the fixed set may say it already (the ban phase's); another value there is replaced.
    const at = indexOfName(fixed, 'connection');
    if (at === -1) extra.push('connection', 'close');
    else if (fixed[at + 1] !== 'close') {
      const copy = fixed.slice();
      copy[at + 1] = 'close';
      fixed = copy;
    }
    markClosing(ctx);
  }
  const added = ctx.responseHeaders;
  if (added !== null) {
    for (let i = 0; i < added.length; i += 2) {
      const name = added[i]!;
      const value = added[i + 1]!;
      // A field of the fixed set given again: that set is copied and the value replaces it there (a
      // cookie is added: several phases may each set one, a clearance and a waiting-room pass).
      if (indexOfName(fixed, name) !== -1) {
        const copy = fixed.slice();
        const at = indexOfName(copy, name);
        if (name === 'set-cookie') copy.push(name, value);
        else copy[at + 1] = value;
        fixed = copy;
        checked = false;
        continue;
      }
      const at = name === 'set-cookie' ? -1 : indexOfName(extra, name);
      if (at === -1) extra.push(name, value);
      else extra[at + 1] = value;
    }
  }
  const lean = res as unknown as CheckedHeadWriter;
  if (checked && lean.writeCheckedHead !== undefined) lean.writeCheckedHead(status, fixed, extra);
  else res.writeHead(status, fixed.concat(extra));
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
