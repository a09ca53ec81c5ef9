// WebSocket (HTTP Upgrade) pass-through: the handshake is forwarded with hop-by-hop fields cleaned
// but Connection/Upgrade kept, then bytes are piped both ways until either side closes.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { RequestContext } from '../core/context.ts';
import { upstreamRequestHeaders } from '../phases/upstream/headers.ts';
import { writeRawReply } from './reply.ts';

export function tunnelUpgrade(ctx: RequestContext, client: Duplex, head: Buffer, via: string, onEnd: () => void): void {
  const upstream = ctx.upstream!;
  const headers = upstreamRequestHeaders(ctx, via, true);
  let text = `${ctx.req.method} ${ctx.target} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  text += '\r\n';

  const timeoutMs = upstream.config.connectTimeoutMs;
  const server = upstream.tls
    ? tls.connect({ host: upstream.host, port: upstream.port, servername: net.isIP(upstream.host) ? undefined : upstream.host, timeout: timeoutMs })
    : net.connect({ host: upstream.host, port: upstream.port, timeout: timeoutMs });
  let connected = false;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    client.destroy();
    server.destroy();
    onEnd();
  };
  server.once(upstream.tls ? 'secureConnect' : 'connect', () => {
    connected = true;
    server.setTimeout(0);
    server.write(text);
    if (head.length > 0) server.write(head);
    server.pipe(client);
    client.pipe(server);
  });
  const fail = (status: number, code: 'RMP_ERR_UPSTREAM_TIMEOUT' | 'RMP_ERR_UPSTREAM_CONNECT') => {
    if (ended) return;
    ended = true;
    ctx.decision = 'upstream_error';
    ctx.reason = code;
    ctx.status = status;
    server.destroy();
    writeRawReply(client as net.Socket, status, code); // ends the client after the reply is flushed
    onEnd();
  };
  server.on('timeout', () => (connected ? end() : fail(504, 'RMP_ERR_UPSTREAM_TIMEOUT')));
  server.on('error', () => (connected ? end() : fail(502, 'RMP_ERR_UPSTREAM_CONNECT')));
  server.on('close', end);
  client.on('error', end);
  client.on('close', end);
}
