// The accept layer: decides about a connection before any HTTP byte is parsed. It enforces the
// global and per-address connection caps, reads a PROXY protocol header from trusted balancers,
// terminates TLS, then hands the socket to the HTTP server. Later defences (bans) plug in here,
// because refusing on accept costs a fraction of refusing a parsed request.
import net from 'node:net';
import tls from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import { isTrusted, type Runtime } from '../core/runtime.ts';
import { parseProxyHeader } from './proxy-protocol.ts';
import { kPeerAddress } from './symbols.ts';

export interface ConnectionTable {
  /** Open connections per address. Bounded: an entry exists only while that address has an open
   *  connection, and open connections are capped by limits.maxConnections. */
  readonly perAddress: Map<string, number>;
  total: number;
}

export interface AcceptOptions {
  proxyProtocol: boolean;
  /** The listener's TLS context (re-read on reload), or null for plain HTTP. */
  getSecureContext: (() => tls.SecureContext) | null;
  httpServer: HttpServer;
  getRuntime: () => Runtime;
  table: ConnectionTable;
  metrics: Metrics;
  log: Logger;
}

export function createConnectionTable(): ConnectionTable {
  return { perAddress: new Map(), total: 0 };
}

export function createAcceptServer(opts: AcceptOptions): net.Server {
  const { table, metrics } = opts;
  const release = (address: string) => {
    table.total--;
    const n = table.perAddress.get(address)! - 1;
    if (n <= 0) table.perAddress.delete(address);
    else table.perAddress.set(address, n);
    metrics.connectionsActive.dec();
  };

  const server = net.createServer({ noDelay: true }, (socket) => {
    const peer = socket.remoteAddress ?? '';
    const limits = opts.getRuntime().config.limits;
    if (table.total >= limits.maxConnections || (table.perAddress.get(peer) ?? 0) >= limits.maxConnectionsPerAddress) {
      metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_CONN_LIMIT' });
      socket.on('error', noop);
      socket.resetAndDestroy();
      return;
    }
    table.total++;
    table.perAddress.set(peer, (table.perAddress.get(peer) ?? 0) + 1);
    metrics.connectionsActive.inc();
    socket.once('close', () => release(peer));

    if (opts.proxyProtocol && isTrusted(opts.getRuntime().trustedProxies, peer)) readProxyHeader(socket, peer, opts);
    else handOver(socket, peer, opts);
  });
  server.on('error', (err) => opts.log.error({ err }, 'listener error'));
  return server;
}

function handOver(socket: net.Socket, address: string, opts: AcceptOptions): void {
  let conn: net.Socket = socket;
  if (opts.getSecureContext !== null) {
    const tlsSocket = new tls.TLSSocket(socket, { isServer: true, secureContext: opts.getSecureContext(), ALPNProtocols: ['http/1.1'] });
    // A failed handshake is the client's problem, not ours: count and drop.
    tlsSocket.on('error', () => tlsSocket.destroy());
    socket.on('error', noop);
    conn = tlsSocket;
  }
  (conn as net.Socket & { [kPeerAddress]?: string })[kPeerAddress] = address;
  opts.metrics.connectionsAccepted.inc();
  opts.httpServer.emit('connection', conn);
}

function readProxyHeader(socket: net.Socket, peer: string, opts: AcceptOptions): void {
  let buf: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => fail('timeout waiting for PROXY header'), opts.getRuntime().config.limits.headersTimeoutMs);
  const fail = (why: string) => {
    clearTimeout(timer);
    opts.metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_PROXY_PROTOCOL' });
    opts.log.debug({ peer, why }, 'PROXY protocol refused');
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const r = parseProxyHeader(buf);
    if (r.kind === 'partial') return;
    socket.removeListener('data', onData);
    socket.pause();
    if (r.kind === 'invalid') return fail(r.why);
    clearTimeout(timer);
    if (buf.length > r.headerBytes) socket.unshift(buf.subarray(r.headerBytes));
    handOver(socket, r.address ?? peer, opts);
    // Bytes that came with the PROXY header (often the whole first request) wait in the socket's
    // buffer. A TLS socket reads them itself (so the raw socket must stay paused); Node's HTTP parser
    // reads straight from the handle and would never see them, so let the socket flow to deliver them.
    if (opts.getSecureContext === null && socket.readableLength > 0) socket.resume();
  };
  socket.on('data', onData);
  socket.on('error', noop);
  // A peer that leaves before its header is complete: no timer left holding the socket.
  socket.once('close', () => clearTimeout(timer));
}

function noop(): void {}
