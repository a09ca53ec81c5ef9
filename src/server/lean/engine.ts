// The lean HTTP/1.1 engine (issue 17, `server.engine: lean`): in place of the node:http server, the
// accept layer hands each connection (after caps, bans, PROXY protocol and TLS) to `handle`, and
// lean/connection.ts parses and answers it. It feeds the same HTTP/1.1 entry (entry.ts: pipelining
// bound, the context, `done`, upgrades) and so the same request cycle as the node engine. Timeouts
// are one coarse pass over the connections (from the entry's sweep), not a timer per socket.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../../core/errors.ts';
import { holdClock, monoNow, releaseClock } from '../../core/clock.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import type { TrackedSocket } from '../connections.ts';
import { wantsTunnel } from '../upgrade.ts';
import { LeanConnection } from './connection.ts';
import type { LeanHead, LeanResponse } from './message.ts';

export interface LeanEngineOptions {
  readonly getRuntime: () => Runtime;
  /** limits.maxHeaderBytes at start (a restart applies a change, as with the node engine). */
  readonly maxHeaderBytes: number;
  /** The entry's request handler (pipelining bound, context, cycle). */
  readonly onRequest: (req: IncomingMessage, res: ServerResponse) => void;
  /** Asked before a parsed head becomes a request: false when the connection was closed (a flood). */
  readonly requestGate: (s: TrackedSocket) => boolean;
  /** A WebSocket handshake on a route that allows tunnels: the socket leaves the engine. */
  readonly onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** A request refused before it existed (parse error, timeout): counted. */
  readonly onParseError: (code: ErrorCode) => void;
}

const kConn = Symbol('rempart.leanConnection');
type LeanSocket = TrackedSocket & { [kConn]: LeanConnection };

// Shared listeners (`this` is the socket): nothing made per connection but the connection itself.
function onData(this: LeanSocket, chunk: Buffer): void {
  // Every request parsed from these bytes reads the clock once (core/clock.ts).
  holdClock();
  try {
    this[kConn].onData(chunk);
  } finally {
    releaseClock();
  }
}
function onDrain(this: LeanSocket): void {
  this[kConn].onDrain();
}
function onClose(this: LeanSocket): void {
  this[kConn].onClose();
}
function onError(this: LeanSocket): void {
  this.destroy();
}

export class LeanEngine {
  readonly opts: LeanEngineOptions;
  readonly maxHeaderBytes: number;
  readonly connections = new Set<LeanConnection>();

  constructor(opts: LeanEngineOptions) {
    this.opts = opts;
    this.maxHeaderBytes = opts.maxHeaderBytes;
  }

  /** Take a connection from the accept layer (already counted, tracked and TLS-wrapped). */
  handle(socket: Socket): void {
    const s = socket as LeanSocket;
    const c = new LeanConnection(this, s, monoNow());
    s[kConn] = c;
    this.connections.add(c);
    s.on('data', onData);
    s.on('drain', onDrain);
    s.on('close', onClose);
    s.on('error', onError);
    // Paused by the PROXY protocol reader (its leftover bytes were unshifted): flow now.
    s.resume();
  }

  /** Fields kept per request: one more than the limit, so the `edge` phase sees the excess (431). */
  maxFields(): number {
    return this.opts.getRuntime().config.limits.maxHeaderCount + 1;
  }

  idleTimeoutMs(): number {
    return this.opts.getRuntime().config.limits.idleTimeoutMs;
  }

  #keepAliveMs = -1;
  #keepAliveLines = '';
  /** `Connection: keep-alive` and `Keep-Alive: timeout=<s>` lines, made again only when the limit changes. */
  keepAliveLines(): string {
    const ms = this.idleTimeoutMs();
    if (ms !== this.#keepAliveMs) {
      this.#keepAliveMs = ms;
      this.#keepAliveLines = `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(ms / 1000)}\r\n`;
    }
    return this.#keepAliveLines;
  }

  gate(s: TrackedSocket): boolean {
    return !s.destroyed && this.opts.requestGate(s);
  }

  isTunnel(req: LeanHead): boolean {
    return wantsTunnel(req as unknown as IncomingMessage, this.opts.getRuntime());
  }

  onRequest(req: LeanHead, res: LeanResponse): void {
    this.opts.onRequest(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  }

  onUpgrade(req: LeanHead, socket: Socket, head: Buffer): void {
    req.upgrade = true;
    this.opts.onUpgrade(req as unknown as IncomingMessage, socket, head);
  }

  onParseError(code: ErrorCode): void {
    this.opts.onParseError(code);
  }

  /** The socket leaves the engine (a tunnel): no more reading, sweeping or answering here. */
  detach(c: LeanConnection): void {
    this.connections.delete(c);
    c.socket.removeListener('data', onData);
    c.socket.removeListener('drain', onDrain);
    // As node:http hands an upgraded socket over: neither flowing nor paused, for its new reader.
    (c.socket as { readableFlowing: boolean | null }).readableFlowing = null;
  }

  forget(c: LeanConnection): void {
    this.connections.delete(c);
  }

  /** Header, request and idle timeouts: one pass over the connections. */
  sweep(now: number): void {
    const l = this.opts.getRuntime().config.limits;
    for (const c of this.connections) c.sweep(now, l.headersTimeoutMs, l.requestTimeoutMs, l.idleTimeoutMs);
  }
}
