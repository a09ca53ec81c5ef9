// WebSocket (HTTP Upgrade) pass-through. Only a WebSocket GET on a route with `websocket: true`
// becomes a tunnel (`wantsTunnel`, asked by Node's parser through shouldUpgradeCallback); any other
// request carrying Upgrade is an ordinary request and crosses the phases like any other. A tunnel's
// handshake has crossed every phase too (admission holds its slot until the tunnel closes).
//
// The handshake is forwarded with hop-by-hop fields cleaned but Connection/Upgrade kept. Only once
// the upstream answers 101 are bytes piped both ways until either side closes. Any other answer is
// an ordinary response, written through the request's ServerResponse (counted, its status recorded)
// and the connection closed: a refused upgrade must never leave a raw tunnel open, or the next
// requests on that connection would reach the upstream without passing through the phases.
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { RequestContext } from '../pipeline/context.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import { RempartError, type ErrorCode } from '../core/errors.ts';
import { hostName, normalizeHost } from '../phases/identify/host.ts';
import { normalizePath } from '../phases/identify/normalize-path.ts';
import { clientResponseHeaders } from '../pipeline/headers.ts';
import { failExchange, tunnelRequestOptions, type ForwardHooks } from '../pipeline/forward.ts';

export function isWebSocketUpgrade(value: string | undefined): boolean {
  return value !== undefined && value.trim().toLowerCase() === 'websocket';
}

/**
 * Whether this request may become a tunnel: a WebSocket GET, without a body, whose route allows
 * WebSocket. Anything else carrying Upgrade (h2c, a WebSocket handshake on a route that does not
 * allow it, a flood of GETs dressed as handshakes) is served as an ordinary request. The route is
 * looked up as the `identify` and `route` phases will; after the phases, the tunnel is opened only
 * if the route they chose allows it too.
 */
export function wantsTunnel(req: http.IncomingMessage, rt: Runtime): boolean {
  if (!rt.websocket || req.method !== 'GET' || !isWebSocketUpgrade(req.headers.upgrade)) return false;
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0'))
    return false;
  const url = req.url ?? '/';
  if (url.charCodeAt(0) !== 47 /* '/' */) return false;
  const q = url.indexOf('?');
  const path = normalizePath(q === -1 ? url : url.slice(0, q));
  if (path === null) return false;
  // The same host the `identify` phase will route on; a Host it would refuse makes no tunnel.
  const host = normalizeHost(h.host ?? '', 80);
  if (host === null) return false;
  return rt.matchRoute('GET', hostName(host), path)?.websocket === true;
}

export interface TunnelHooks {
  /** The upstream switched protocols: the tunnel owns the client socket from here on. */
  onSwitched(ctx: RequestContext): void;
  /** A tunnel that switched is closed (both sockets destroyed): `done` runs now. */
  onClosed(ctx: RequestContext): void;
}

/** Answer a timed-out or failed handshake as the forward handler would: 502/504 and the status page. */
function failHandshake(ctx: RequestContext, hooks: ForwardHooks, code: ErrorCode, status: number, err: Error): void {
  if (!ctx.finished) failExchange(ctx, hooks, code, status, err);
  hooks.onUpstreamEnd?.(ctx);
}

export function tunnelUpgrade(
  ctx: RequestContext,
  head: Buffer,
  via: string,
  hooks: ForwardHooks,
  tunnel: TunnelHooks,
  tunnelIdleTimeoutMs = 300_000,
): void {
  const upstream = ctx.upstream!;
  const client = ctx.req.socket as net.Socket;
  // Its own connection (a tunnel holds it for life); the timeout covers the connect, then headersTimeoutMs.
  const options = tunnelRequestOptions(ctx, via);
  const req = upstream.tls ? https.request(options) : http.request(options);
  ctx.forwardStartMs = performance.now();
  let connected = false;
  let answered = false;
  // The exchange is over for admission (answered whole, failed, or switched): set once.
  let settled = false;
  let server: net.Socket | null = null;
  let response: http.IncomingMessage | null = null;
  // The client leaving before the answer closes its response (`done` runs) and ends the handshake.
  ctx.forwardHandler = {
    abort: () => {
      req.destroy();
      server?.destroy();
    },
  };
  const fail = (code: ErrorCode, status: number, err: Error) => {
    if (settled) return;
    settled = true;
    req.destroy();
    failHandshake(ctx, hooks, code, status, err);
  };

  req.on('socket', (socket) => {
    socket.once(upstream.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
      socket.setTimeout(upstream.config.headersTimeoutMs);
    });
  });
  req.on('timeout', () => {
    if (!answered) fail('RMP_ERR_UPSTREAM_TIMEOUT', 504, new RempartError('RMP_ERR_UPSTREAM_TIMEOUT'));
    else if (response !== null)
      response.destroy(new RempartError('RMP_ERR_UPSTREAM_TIMEOUT')); // a body that stalls
    else req.destroy();
  });
  req.on('error', (err: Error & { code?: string }) => {
    if (answered) return;
    if (!connected) return fail('RMP_ERR_UPSTREAM_CONNECT', 502, err);
    fail(err.code?.startsWith('HPE_') ? 'RMP_ERR_UPSTREAM_BAD_RESPONSE' : 'RMP_ERR_UPSTREAM_RESET', 502, err);
  });

  // 101: the upstream switched protocols; from here on it is a byte tunnel.
  req.on('upgrade', (res: http.IncomingMessage, socket: net.Socket, upstreamHead: Buffer) => {
    answered = true;
    settled = true;
    server = socket;
    socket.setTimeout(0);
    if (ctx.finished || client.destroyed) return void socket.destroy();
    ctx.status = 101;
    ctx.upstreamStatus = 101;
    const raw = res.rawHeaders;
    hooks.onResponseHead?.(
      ctx,
      101,
      raw.map((h) => Buffer.from(h, 'latin1')),
    );
    tunnel.onSwitched(ctx);
    let text = `HTTP/1.1 101 ${res.statusMessage || 'Switching Protocols'}\r\n`;
    let priorVia = '';
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() === 'via') priorVia = priorVia === '' ? raw[i + 1]! : `${priorVia}, ${raw[i + 1]}`;
      else text += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    const extra = ctx.responseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i += 2) text += `${extra[i]}: ${extra[i + 1]}\r\n`;
    text += `Via: ${priorVia === '' ? '' : `${priorVia}, `}1.1 ${via}\r\n\r\n`;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      client.destroy();
      socket.destroy();
      tunnel.onClosed(ctx);
    };
    client.write(text);
    if (upstreamHead.length > 0) {
      ctx.responseBytes += upstreamHead.length;
      client.write(upstreamHead);
    }
    if (head.length > 0) socket.write(head);
    socket.on('error', end);
    socket.on('close', end);
    client.on('error', end);
    client.on('close', end);
    // What the origin sends down the tunnel counts as response bytes (the exfiltration guard), and
    // the tunnel is cut where it would cross the identity's byte quota.
    socket.on('data', (chunk: Buffer) => {
      ctx.responseBytes += chunk.length;
      if (ctx.responseBytes > ctx.responseByteBudget) {
        ctx.cutShort('RMP_ERR_EXFILTRATION');
        end();
      }
    });
    // An idle tunnel holds a client socket and an upstream socket: close it after a silence both ways
    // longer than limits.tunnelIdleTimeoutMs (WebSocket apps that idle longer send pings).
    socket.setTimeout(tunnelIdleTimeoutMs, end);
    client.setTimeout(tunnelIdleTimeoutMs, end);
    socket.pipe(client);
    client.pipe(socket);
  });

  // Anything but 101: an ordinary answer (a 403, a 426…), relayed through the request's response
  // like any forwarded answer (it says Connection: close), then the connection ends.
  req.on('response', (up: http.IncomingMessage) => {
    answered = true;
    response = up;
    up.socket?.setTimeout(upstream.config.bodyTimeoutMs, () =>
      up.destroy(new RempartError('RMP_ERR_UPSTREAM_TIMEOUT')),
    );
    const status = up.statusCode ?? 502;
    ctx.upstreamStatus = status;
    const res = ctx.res;
    if (ctx.finished || res.headersSent) {
      settled = true;
      up.destroy();
      hooks.onUpstreamEnd?.(ctx);
      return;
    }
    const raw = up.rawHeaders.map((h) => Buffer.from(h, 'latin1'));
    hooks.onResponseHead?.(ctx, status, raw);
    ctx.status = status;
    try {
      const headers = clientResponseHeaders(raw, via);
      if (ctx.responseHeaders !== null) headers.push(...ctx.responseHeaders);
      res.writeHead(status, headers);
    } catch (err) {
      // An upstream header Node refuses to write (invalid characters): the upstream is at fault.
      up.destroy();
      return fail('RMP_ERR_UPSTREAM_BAD_RESPONSE', 502, err as Error);
    }
    let upError: Error | null = null;
    up.on('data', (chunk: Buffer) => {
      ctx.responseBytes += chunk.length;
      if (!res.write(chunk)) {
        up.pause();
        res.once('drain', () => up.resume());
      }
    });
    up.on('end', () => {
      if (settled) return;
      settled = true;
      hooks.onUpstreamEnd?.(ctx);
      res.end();
    });
    up.on('error', (err) => (upError = err));
    // Closed before its end: reset or timed out mid-body.
    up.on('close', () => {
      const err = upError ?? new RempartError('RMP_ERR_UPSTREAM_RESET');
      fail(err instanceof RempartError ? err.code : 'RMP_ERR_UPSTREAM_RESET', 502, err);
    });
  });
  req.end();
}
