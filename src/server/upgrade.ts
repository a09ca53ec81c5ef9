// WebSocket (HTTP Upgrade) pass-through: the handshake is forwarded with hop-by-hop fields cleaned
// but Connection/Upgrade kept. Only once the upstream answers 101 are bytes piped both ways until
// either side closes. Any other answer is relayed as an ordinary response and the client connection
// is closed: a refused upgrade must never leave a raw tunnel open, or the next requests on that
// connection would reach the upstream without passing through the phases (upgrade smuggling).
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { RequestContext } from '../core/context.ts';
import type { ErrorCode } from '../core/errors.ts';
import { clientResponseHeaders, upstreamRequestHeaders } from '../phases/upstream/headers.ts';
import { writeRawReply } from './reply.ts';

export function isWebSocketUpgrade(value: string | undefined): boolean {
  return value !== undefined && value.trim().toLowerCase() === 'websocket';
}

export function tunnelUpgrade(ctx: RequestContext, client: Duplex, head: Buffer, via: string, onEnd: () => void, onSwitched?: () => void, tunnelIdleTimeoutMs = 300_000): void {
  const upstream = ctx.upstream!;
  const options: https.RequestOptions = {
    host: upstream.host,
    port: upstream.port,
    method: ctx.req.method,
    path: ctx.target,
    // A flat [name, value, …] array: sent as is, Host included, nothing added by Node.
    // Only WebSocket is tunnelled. Any other Upgrade (h2c, TLS/1.0…) would turn the connection into a
    // tunnel the phases no longer see: it goes upstream as a plain request, Upgrade stripped, and the
    // answer is relayed as an ordinary response.
    headers: upstreamRequestHeaders(ctx, via, isWebSocketUpgrade(ctx.req.headers.upgrade)) as unknown as http.OutgoingHttpHeaders,
    agent: false,
    // Covers the connect; once connected the upstream has headersTimeoutMs to answer the handshake.
    timeout: upstream.config.connectTimeoutMs,
    servername: upstream.tls && net.isIP(upstream.host) === 0 ? upstream.host : undefined,
  };
  const req = upstream.tls ? https.request(options) : http.request(options);
  ctx.status = 0;
  let connected = false;
  let answered = false;
  let ended = false;
  let server: Duplex | null = null;

  const end = () => {
    if (ended) return;
    ended = true;
    client.destroy();
    server?.destroy();
    req.destroy();
    onEnd();
  };
  const fail = (status: number, code: ErrorCode) => {
    if (ended) return;
    ended = true;
    ctx.decision = 'upstream_error';
    ctx.reason = code;
    ctx.status = status;
    req.destroy();
    writeRawReply(client as net.Socket, status, code); // ends the client after the reply is flushed
    onEnd();
  };

  req.on('socket', (socket) => {
    socket.once(upstream.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
      socket.setTimeout(upstream.config.headersTimeoutMs);
    });
  });
  req.on('timeout', () => (answered ? end() : fail(504, 'RMP_ERR_UPSTREAM_TIMEOUT')));
  req.on('error', (err: Error & { code?: string }) => {
    if (answered) return end();
    if (!connected) return fail(502, 'RMP_ERR_UPSTREAM_CONNECT');
    fail(502, err.code?.startsWith('HPE_') ? 'RMP_ERR_UPSTREAM_BAD_RESPONSE' : 'RMP_ERR_UPSTREAM_RESET');
  });

  // 101: the upstream switched protocols; from here on it is a byte tunnel.
  req.on('upgrade', (res: http.IncomingMessage, socket: net.Socket, upstreamHead: Buffer) => {
    answered = true;
    server = socket;
    socket.setTimeout(0);
    ctx.status = 101;
    ctx.upstreamStatus = 101;
    if (ended) return void socket.destroy();
    onSwitched?.();
    let text = `HTTP/1.1 101 ${res.statusMessage || 'Switching Protocols'}\r\n`;
    let priorVia = '';
    const raw = res.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]!.toLowerCase() === 'via') priorVia = priorVia === '' ? raw[i + 1]! : `${priorVia}, ${raw[i + 1]}`;
      else text += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    text += `Via: ${priorVia === '' ? '' : `${priorVia}, `}1.1 ${via}\r\n\r\n`;
    client.write(text);
    if (upstreamHead.length > 0) client.write(upstreamHead);
    if (head.length > 0) socket.write(head);
    socket.on('error', end);
    socket.on('close', end);
    // An idle tunnel holds a client socket and an upstream socket: close it after a silence both ways
    // longer than limits.tunnelIdleTimeoutMs (WebSocket apps that idle longer send pings).
    socket.setTimeout(tunnelIdleTimeoutMs, end);
    (client as net.Socket).setTimeout?.(tunnelIdleTimeoutMs, end);
    socket.pipe(client);
    client.pipe(socket);
  });

  // Anything but 101: an ordinary answer (a 403, a 426…). Relay it, close-delimited, then close.
  req.on('response', (res: http.IncomingMessage) => {
    answered = true;
    res.socket?.setTimeout(upstream.config.bodyTimeoutMs);
    const status = res.statusCode ?? 502;
    ctx.status = status;
    ctx.upstreamStatus = status;
    if (ended) return void res.destroy();
    const headers = clientResponseHeaders(res.rawHeaders.map((h) => Buffer.from(h, 'latin1')), via);
    let text = `HTTP/1.1 ${status} ${res.statusMessage || http.STATUS_CODES[status] || ''}\r\n`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    text += 'Connection: close\r\n\r\n';
    client.write(text);
    res.on('error', end);
    res.pipe(client); // ends the client when the body is done
    res.on('end', () => {
      (client as net.Socket).destroySoon?.();
      if (!ended) {
        ended = true;
        onEnd();
      }
    });
  });

  client.on('error', end);
  client.on('close', () => {
    if (!ended && !answered) {
      ctx.decision = 'aborted';
      ctx.reason = 'RMP_ERR_CLIENT_ABORTED';
    }
    end();
  });
  req.end();
}
