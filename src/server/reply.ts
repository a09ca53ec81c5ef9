// Local replies: the answers Rempart gives itself (refusals, upstream failures). Small JSON bodies
// naming the code from the error table, no caching, and the connection closed whenever the request
// body may still be on the wire (it could otherwise be read as the next request).
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { RequestContext } from '../core/context.ts';
import { ERRORS, type ErrorCode } from '../core/errors.ts';

/** Pre-rendered bodies, one per code: built once at start-up, not per request. */
const BODIES = new Map<string, string>();
for (const [code, spec] of Object.entries(ERRORS)) {
  BODIES.set(code, `${JSON.stringify({ error: { code, status: spec.status, message: spec.message } })}\n`);
}

export function errorBody(code: ErrorCode | ''): string {
  return BODIES.get(code) ?? BODIES.get('RMP_ERR_INTERNAL')!;
}

function bodyMayBePending(ctx: RequestContext): boolean {
  const h = ctx.req.headers;
  return !ctx.req.complete && (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0'));
}

export function sendLocalReply(ctx: RequestContext): void {
  const res = ctx.res;
  if (res.headersSent || ctx.finished) return;
  const status = ctx.replyStatus;
  const body = ctx.replyBody !== '' ? ctx.replyBody : errorBody(ctx.reason);
  ctx.status = status;
  const headers: Record<string, string | number> = {
    'content-type': ctx.replyBody !== '' ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  };
  if (ctx.replyHeaders !== null) Object.assign(headers, ctx.replyHeaders);
  if (status === 400 || bodyMayBePending(ctx)) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

/** Answer on a raw socket, for errors before a request object exists (parse errors, upgrades). */
export function writeRawReply(socket: Socket, status: number, code: ErrorCode): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = errorBody(code);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  );
  socket.destroySoon();
}
