// The accept layer: decides about a connection before any HTTP byte is parsed. It enforces the
// global and per-address connection caps, reads a PROXY protocol header from trusted balancers,
// reads the TLS ClientHello for its JA4 fingerprint (src/server/ja4.ts), terminates TLS, then hands
// the socket to the HTTP server. Later defences (bans) plug in here,
// because refusing on accept costs a fraction of refusing a parsed request.
import net from 'node:net';
import tls from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import { isTrusted, type Runtime } from '../pipeline/runtime.ts';
import { parseProxyHeader } from './proxy-protocol.ts';
import { kH2Fingerprint, kJa4, kPeerAddress } from '../pipeline/symbols.ts';
import { H2_PREFACE, captureH2Preface, h2FingerprintFromPreface } from './h2/fingerprint.ts';
import { HELLO_MAX_BYTES, helloBytesWanted, ja4FromRecords } from './ja4.ts';
import type { BanList } from '../pipeline/env.ts';
import { v6PrefixKey } from '../core/client-key.ts';
import {
  ADDRESS_SHARE_UNDER_PRESSURE,
  PRESSURE_RATIO,
  gateRequests,
  idleOldestFirst,
  reclaimOne,
  trackSocket,
  type ReclaimList,
  type RequestGate,
  type TrackedSocket,
} from './connections.ts';

export interface ConnectionTable {
  /** Open connections per client key (address, or IPv6 /64). Bounded: an entry exists only while that
   *  key has an open connection, and open connections are capped by limits.maxConnections. */
  readonly perAddress: Map<string, number>;
  total: number;
  /** Every open client connection as the HTTP server reads it (bounded like `total`). */
  readonly sockets: Set<TrackedSocket>;
  /** Connections with a reply waiting on the client to read (src/server/connections.ts). */
  readonly stalled: Set<TrackedSocket>;
  /** Idle keep-alive connections to close, oldest idle first, when a new one arrives at the cap. */
  readonly reclaim: ReclaimList;
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
  /** Banned addresses are reset on accept, before any byte is parsed (null: no bans). */
  bans: BanList | null;
  /** Asked before the HTTP server handles each request parsed on a connection (pipelining bound). */
  requestGate?: RequestGate;
  /** The lean engine's connection handler (`server.engine: lean`): given each connection instead of httpServer. */
  handOff?: ((socket: net.Socket) => void) | null;
  /** The listener's HTTP/2 server (src/server/h2), or null/absent for HTTP/1.1 only. */
  h2Server?: net.Server | null;
  /** Also take cleartext HTTP/2 by prior knowledge (a connection opening with the preface), without TLS. */
  h2Cleartext?: boolean;
}

const ALPN_H1 = ['http/1.1'];
// h2 first: the server's preference decides, and a client offering both gets HTTP/2.
const ALPN_H2 = ['h2', 'http/1.1'];
/** The first bytes of the HTTP/2 connection preface ("PRI * HTTP/2.0"): no HTTP/1.1 request starts so. */
const PREFACE_START = Buffer.from('PRI * HTTP/2.0');

export function createConnectionTable(): ConnectionTable {
  return {
    perAddress: new Map(),
    total: 0,
    sockets: new Set(),
    stalled: new Set(),
    reclaim: { list: [], next: 0, builtAt: -Infinity },
  };
}

/**
 * The key one address's connections are counted under: the address itself for IPv4, its /64 for
 * IPv6 (one host commonly holds a whole /64, so counting single addresses would give it 2^64 caps),
 * or the /N of defense.ipv6PrefixLength, as rate limits and bans count it.
 */
export function connectionKey(address: string, v6Bits = 64): string {
  if (address.indexOf(':') === -1 || (address.startsWith('::ffff:') && address.indexOf('.') !== -1)) return address;
  return v6Bits >= 128 ? address : v6PrefixKey(address, v6Bits);
}

export function createAcceptServer(opts: AcceptOptions): net.Server {
  const { table, metrics } = opts;
  const refuse = (
    socket: net.Socket,
    reason: 'RMP_ERR_EDGE_CONN_LIMIT' | 'RMP_ERR_BANNED' = 'RMP_ERR_EDGE_CONN_LIMIT',
  ) => {
    metrics.refusals.inc({ reason });
    socket.on('error', noop);
    socket.resetAndDestroy();
  };
  /** Count one more connection for `key`, or say no when its cap is reached. */
  const tryCount = (key: string): boolean => {
    const n = table.perAddress.get(key) ?? 0;
    const limits = opts.getRuntime().config.limits;
    if (n >= limits.maxConnectionsPerAddress) return false;
    // Near the global cap, one address may not take more than its share: the rest is for new clients.
    if (
      table.total >= limits.maxConnections * PRESSURE_RATIO &&
      n >= Math.max(1, Math.floor(limits.maxConnections * ADDRESS_SHARE_UNDER_PRESSURE))
    )
      return false;
    table.perAddress.set(key, n + 1);
    return true;
  };
  const uncount = (key: string) => {
    const n = table.perAddress.get(key)! - 1;
    if (n <= 0) table.perAddress.delete(key);
    else table.perAddress.set(key, n);
  };

  /** At the cap: close the oldest idle keep-alive connection to make room, if there is one. */
  const reclaimIdle = (): boolean => {
    const r = table.reclaim;
    if (r.next >= r.list.length) {
      // The sweep keeps the list fresh under pressure; rebuilt here at most every 100 ms (an accept
      // flood at the cap must not scan every connection each time).
      const now = performance.now();
      if (now - r.builtAt < 100) return false;
      r.list = idleOldestFirst(table.sockets);
      r.next = 0;
      r.builtAt = now;
    }
    if (!reclaimOne(r)) return false;
    metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_IDLE_RECLAIMED' });
    return true;
  };

  const hello = opts.getSecureContext === null ? null : createHelloPeek(opts);
  const server = net.createServer({ noDelay: true }, (socket) => {
    const peer = socket.remoteAddress ?? '';
    const runtime = opts.getRuntime();
    // A trusted balancer carries many clients on its connections: its own address is not capped.
    // Behind PROXY protocol the client's address is counted once the header names it.
    const trusted = isTrusted(runtime.trustedProxies, peer);
    if (!trusted && opts.bans !== null && opts.bans.isBanned(peer)) return refuse(socket, 'RMP_ERR_BANNED');
    let counted: string | null = null;
    if (!trusted) {
      const key = connectionKey(peer, runtime.config.defense.ipv6PrefixLength);
      if (!tryCount(key)) return refuse(socket);
      counted = key;
    }
    // At the cap, only a connection that would otherwise be let in may close an idle one: a banned
    // address or one over its own cap was refused above and costs no real user a connection. The
    // connection reclaimed counts until its close event: the total may pass the cap by the few being
    // closed at that moment.
    if (table.total >= runtime.config.limits.maxConnections && !reclaimIdle()) {
      if (counted !== null) uncount(counted);
      return refuse(socket);
    }
    table.total++;
    metrics.connectionsActive.inc();
    socket.once('close', () => {
      table.total--;
      metrics.connectionsActive.dec();
      if (counted !== null) uncount(counted);
    });

    if (opts.proxyProtocol && trusted) {
      readProxyHeader(socket, peer, opts, hello, (client) => {
        if (opts.bans !== null && opts.bans.isBanned(client)) {
          refuse(socket, 'RMP_ERR_BANNED');
          return false;
        }
        const key = connectionKey(client, opts.getRuntime().config.defense.ipv6PrefixLength);
        if (!tryCount(key)) {
          refuse(socket);
          return false;
        }
        counted = key;
        return true;
      });
    } else if (hello !== null) hello(socket, peer);
    else handOver(socket, peer, opts);
  });
  // Node closes a connection whose peer is in `server.blockList` before it makes a socket object:
  // the ban table's hottest bans go there (the rest are found by isBanned above).
  const bans = opts.bans;
  if (bans !== null && 'fastPath' in bans)
    Object.defineProperty(server, 'blockList', { get: () => bans.fastPath, configurable: true });
  // A listener's errors (EADDRINUSE at start, EMFILE later) are the system's, not a bug: the message
  // and code say it all; their stack names only Node's internals, and an operator reads these lines.
  server.on('error', (err: NodeJS.ErrnoException) =>
    opts.log.error({ err: err.message, code: err.code }, 'listener error'),
  );
  return server;
}

function handOver(socket: net.Socket, address: string, opts: AcceptOptions, ja4 = ''): void {
  let conn: net.Socket = socket;
  const h2 = opts.h2Server ?? null;
  if (opts.getSecureContext !== null) {
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: opts.getSecureContext(),
      ALPNProtocols: h2 === null ? ALPN_H1 : ALPN_H2,
    });
    // A failed handshake is the client's problem, not ours: count and drop.
    tlsSocket.on('error', () => tlsSocket.destroy());
    socket.on('error', noop);
    conn = tlsSocket;
    if (h2 !== null) {
      // Which server gets the connection is known once the handshake has chosen the protocol. Until
      // then no HTTP server times it: the handshake has limits.headersTimeoutMs.
      track(conn, address, opts, ja4);
      tlsSocket.setTimeout(opts.getRuntime().config.limits.headersTimeoutMs, () => tlsSocket.destroy());
      tlsSocket.once('secure', () => {
        tlsSocket.setTimeout(0);
        // tls.Server clears this when it emits secureConnection; node:http2 waits for it to be false
        // (a client's `secureConnect`, never emitted on a server socket) before it reads the connection.
        (tlsSocket as tls.TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
        if (tlsSocket.alpnProtocol !== 'h2') return toHttp1(tlsSocket, opts);
        // The connection's first bytes up to its first HEADERS frame give its HTTP/2 fingerprint; they are
        // put back for node:http2 (src/server/h2/fingerprint.ts).
        captureH2Preface(tlsSocket, opts.getRuntime().config.limits.headersTimeoutMs, (first) =>
          toH2(tlsSocket, h2, first, opts),
        );
      });
      return;
    }
  } else if (h2 !== null && opts.h2Cleartext === true) {
    track(conn, address, opts);
    return sniffPreface(socket, h2, opts);
  }
  track(conn, address, opts, ja4);
  toHttp1(conn, opts);
}

/** Count the connection in the table (the sweep, reclaim and stop read it) and mark its client address. */
function track(conn: net.Socket, address: string, opts: AcceptOptions, ja4 = ''): void {
  (conn as net.Socket & { [kPeerAddress]?: string })[kPeerAddress] = address;
  (conn as net.Socket & { [kJa4]?: string })[kJa4] = ja4;
  const tracked = trackSocket(conn);
  const { sockets, stalled } = opts.table;
  sockets.add(tracked);
  conn.once('close', () => {
    sockets.delete(tracked);
    stalled.delete(tracked);
  });
  opts.metrics.connectionsAccepted.inc();
}

/**
 * Hand an HTTP/2 connection to node:http2 once its first bytes are read (with its fingerprint). No whole
 * client preface within limits.headersTimeoutMs (a client silent after the handshake, or dribbling): closed
 * here. node:http2 never ends a session whose preface has not come: session.close() and destroy() left such
 * a connection open for good (review of issue 16).
 */
function toH2(socket: net.Socket, h2: net.Server, first: Buffer, opts: AcceptOptions): void {
  if (first.length < H2_PREFACE.length) {
    opts.metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_TIMEOUT' });
    socket.destroy();
    return;
  }
  (socket as net.Socket & { [kH2Fingerprint]?: string })[kH2Fingerprint] = h2FingerprintFromPreface(first);
  h2.emit('connection', socket);
}

function toHttp1(conn: net.Socket, opts: AcceptOptions): void {
  if (opts.handOff != null) return opts.handOff(conn);
  opts.httpServer.emit('connection', conn);
  // The server made the connection's parser just now.
  if (opts.requestGate !== undefined) gateRequests(conn, opts.requestGate);
}

/**
 * Cleartext HTTP/2 with prior knowledge: the first bytes say which protocol the client speaks. They
 * are read, put back, and the socket handed to the server that speaks it.
 */
function sniffPreface(socket: net.Socket, h2: net.Server, opts: AcceptOptions): void {
  let buf: Buffer = Buffer.alloc(0);
  socket.setTimeout(opts.getRuntime().config.limits.headersTimeoutMs, () => socket.destroy());
  // Paused after a PROXY header: its bytes are read here now.
  socket.resume();
  const onData = (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const n = Math.min(buf.length, PREFACE_START.length);
    const isH2 = buf.subarray(0, n).equals(PREFACE_START.subarray(0, n));
    if (isH2 && n < PREFACE_START.length) return;
    socket.removeListener('data', onData);
    socket.setTimeout(0);
    socket.pause();
    socket.unshift(buf);
    if (isH2)
      captureH2Preface(socket, opts.getRuntime().config.limits.headersTimeoutMs, (first) =>
        toH2(socket, h2, first, opts),
      );
    else {
      toHttp1(socket, opts);
      // Node's HTTP parser reads from the handle and would never see the bytes put back (as after a PROXY header).
      socket.resume();
    }
  };
  socket.on('data', onData);
  socket.on('error', noop);
}

function readProxyHeader(
  socket: net.Socket,
  peer: string,
  opts: AcceptOptions,
  hello: HelloPeek | null,
  admit: (client: string) => boolean,
): void {
  let buf: Buffer = Buffer.alloc(0);
  const timer = setTimeout(
    () => fail('timeout waiting for PROXY header'),
    opts.getRuntime().config.limits.headersTimeoutMs,
  );
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
    const client = r.address ?? peer;
    if (r.address !== null && !admit(client)) return;
    if (buf.length > r.headerBytes) socket.unshift(buf.subarray(r.headerBytes));
    if (hello !== null) return hello(socket, client);
    handOver(socket, client, opts);
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

/** Reads a TLS connection's ClientHello, then hands the socket over (with its JA4) as handOver does. */
type HelloPeek = (socket: net.Socket, address: string) => void;

const kPeek = Symbol('rempart.helloPeek');
interface PeekState {
  /** What arrived, joined only when `want` bytes are there (a hello in one-byte writes is not copied per byte). */
  readonly chunks: Buffer[];
  have: number;
  want: number;
  readonly address: string;
  readonly timer: NodeJS.Timeout;
}
type PeekingSocket = net.Socket & { [kPeek]?: PeekState | null };
/** Records past the hello's bound: the record headers of a hello that fills HELLO_MAX_BYTES. */
const HELLO_READ_LIMIT = HELLO_MAX_BYTES + 1024;

/**
 * The ClientHello peek of a TLS listener: read the first bytes until the ClientHello is whole (or
 * HELLO_READ_LIMIT bytes), compute its JA4, put the bytes back and hand the socket to TLS, which reads
 * them as if they had just arrived. Anything that is not a hello gets '' and goes to TLS at once, which
 * refuses it as before; no whole hello within limits.headersTimeoutMs closes the connection. The listeners are made once per listener
 * (they find the connection's state on the socket): a connection costs its state, one timer and no closure.
 */
function createHelloPeek(opts: AcceptOptions): HelloPeek {
  function finish(socket: PeekingSocket, ja4: string): void {
    const st = socket[kPeek];
    if (st === null || st === undefined) return;
    socket[kPeek] = null;
    clearTimeout(st.timer);
    socket.removeListener('data', onData);
    socket.removeListener('close', onClose);
    socket.pause();
    if (st.have > 0) socket.unshift(st.chunks.length === 1 ? st.chunks[0]! : Buffer.concat(st.chunks));
    handOver(socket, st.address, opts, ja4);
  }
  function onData(this: PeekingSocket, chunk: Buffer): void {
    const st = this[kPeek];
    if (st === null || st === undefined) return;
    st.chunks.push(chunk);
    st.have += chunk.length;
    if (st.have < st.want && st.have < HELLO_READ_LIMIT) {
      // A hello in one-byte segments: joined every 64 chunks, not kept as thousands of small buffers.
      if (st.chunks.length >= 64) st.chunks.splice(0, st.chunks.length, Buffer.concat(st.chunks));
      return;
    }
    let buf = st.chunks[0]!;
    if (st.chunks.length > 1) {
      buf = Buffer.concat(st.chunks);
      st.chunks.length = 0;
      st.chunks.push(buf);
    }
    const ja4 = ja4FromRecords(buf);
    if (ja4 !== null) finish(this, ja4);
    else if (st.have >= HELLO_READ_LIMIT) finish(this, '');
    else st.want = helloBytesWanted(buf);
  }
  // No whole hello within the headers timeout (a silent or dribbling client): closed, as a PROXY
  // header that never comes is. Handed to TLS it would hold the connection far longer (Node's header
  // timeout does not run before the handshake is done).
  const onTimeout = (socket: PeekingSocket) => {
    const st = socket[kPeek];
    if (st === null || st === undefined) return;
    socket[kPeek] = null;
    opts.metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_TIMEOUT' });
    opts.log.debug({ peer: st.address, bytes: st.have }, 'no TLS ClientHello in time');
    socket.destroy();
  };
  function onClose(this: PeekingSocket): void {
    const st = this[kPeek];
    if (st !== null && st !== undefined) clearTimeout(st.timer);
    this[kPeek] = null;
  }
  return (socket: PeekingSocket, address: string) => {
    const ms = opts.getRuntime().config.limits.headersTimeoutMs;
    socket[kPeek] = { chunks: [], have: 0, want: 5, address, timer: setTimeout(onTimeout, ms, socket) };
    socket.on('error', noop);
    socket.on('data', onData);
    socket.once('close', onClose);
    // Bytes a PROXY header brought along were put back and the socket paused: read them first.
    socket.resume();
  };
}

function noop(): void {}
