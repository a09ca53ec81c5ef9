// Per-connection bounds a client cannot talk its way around (issue 12, findings 1, 5 and 9):
// - requests unanswered on one connection (HTTP/1.1 pipelining): past limits.maxPipelinedRequests
//   reading stops; past twice that (many requests in one write) the connection is closed and the
//   client charged an offence;
// - replies waiting on a client that does not read: past limits.slowReadTimeoutMs without the
//   socket draining once, the connection is closed (its admission slot went back when it stalled);
// - connections near limits.maxConnections: idle keep-alive connections are closed first, the
//   oldest idle first, so new clients get in;
// - a keep-alive connection that starts no request for limits.idleTimeoutMs + headersTimeoutMs is
//   closed whatever it trickles: Node's keep-alive timer is an inactivity timer, and the empty lines
//   its parser skips between requests (a CRLF every few seconds) kept it open for good.
// Everything is a few numbers on the socket and one coarse sweep (twice a second): nothing per request
// but two property writes, no timer per connection.
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { kIdleSince, kPending, kQueuedBytes, kReadPaused, kStallSince } from '../pipeline/symbols.ts';

/** A client connection as the HTTP server reads it (the TLS socket for TLS listeners). */
export interface TrackedSocket extends Socket {
  [kPending]: number;
  [kIdleSince]: number;
  [kStallSince]: number;
  [kQueuedBytes]: number;
  [kReadPaused]: boolean;
}

/** Past this share of limits.maxConnections the gateway is under connection pressure. */
export const PRESSURE_RATIO = 0.9;
/** Under pressure one address (or IPv6 /64) may hold at most this share of limits.maxConnections. */
export const ADDRESS_SHARE_UNDER_PRESSURE = 0.1;

export function trackSocket(s: Socket): TrackedSocket {
  const t = s as TrackedSocket;
  t[kPending] = 0;
  t[kIdleSince] = 0;
  t[kStallSince] = 0;
  t[kQueuedBytes] = 0;
  t[kReadPaused] = false;
  return t;
}

/** Whether the connection sits idle between keep-alive requests (not one that never sent a request). */
export function isIdle(s: TrackedSocket): boolean {
  return s[kPending] === 0 && s[kIdleSince] > 0 && !s.destroyed;
}

// Node's HTTP server reads a plain TCP socket straight from its handle (the parser consumes it), so
// socket.pause() alone does not stop it. `_paused` is the flag Node's own pipelining guard sets
// (lib/_http_server.js): the server pauses its parser after the current chunk when it sees it, and
// parser.resume() restarts it. Measured on Node 24: with it the next write is not parsed; without it, it is.
interface NodeHttpSocket {
  _paused?: boolean;
  parser?: { resume(): void } | null;
}

/** Stop reading requests from this connection (the chunk being parsed still completes). */
export function pauseReading(s: TrackedSocket): void {
  // Set every time, not once: Node's own guard may have resumed the socket on a drain meanwhile.
  s[kReadPaused] = true;
  (s as unknown as NodeHttpSocket)._paused = true;
  s.pause();
}

export function resumeReading(s: TrackedSocket): void {
  if (!s[kReadPaused]) return;
  s[kReadPaused] = false;
  const n = s as unknown as NodeHttpSocket;
  // Already resumed by Node (socketOnDrain): nothing to undo.
  if (n._paused !== true) return;
  n._paused = false;
  n.parser?.resume();
  s.resume();
}

/** Asked for each request head Node parses on a connection, before Node builds anything for it: false drops it. */
export type RequestGate = (s: TrackedSocket) => boolean;

const kNodeOnIncoming = Symbol('rempart.nodeOnIncoming');
const kGate = Symbol('rempart.gate');

interface NodeParser {
  socket: Socket | null;
  onIncoming: ((req: unknown, keepAlive: boolean) => number) | null;
  [kNodeOnIncoming]?: (req: unknown, keepAlive: boolean) => number;
  [kGate]?: RequestGate;
}

// Node parses a whole read (up to 64 KB: some 2,000 small pipelined requests) in one go, and for each
// request builds a response object it keeps until the connection's close event, which comes only
// after every socket readable in that loop turn was parsed: 500 flooding connections made a
// gigabyte of short-lived objects. Returning 2 from the parser's onIncoming is how Node itself stops
// at an upgrade: llhttp stops at the end of that head and the rest of the read is dropped unparsed.
function gatedOnIncoming(this: NodeParser, req: unknown, keepAlive: boolean): number {
  const s = this.socket as TrackedSocket | null;
  if (s === null || s.destroyed || !this[kGate]!(s)) return 2;
  return this[kNodeOnIncoming]!(req, keepAlive);
}

/** Put `gate` in front of the HTTP server's handling of each request parsed on `s` (call right after
 *  the server got the connection). Without the internals it needs it does nothing: onRequest's own
 *  check still bounds the requests, only not the parsing. */
export function gateRequests(s: Socket, gate: RequestGate): void {
  const p = (s as unknown as { parser?: NodeParser | null }).parser;
  if (p === null || p === undefined || typeof p.onIncoming !== 'function') return;
  p[kNodeOnIncoming] = p.onIncoming;
  p[kGate] = gate;
  p.onIncoming = gatedOnIncoming;
}

/** Clears a connection's stall mark once its buffered replies have all gone to the client. */
function onDrain(this: TrackedSocket): void {
  this[kStallSince] = 0;
}

/** A reply on `s` could not be written without waiting for the client: start its slow-read clock. */
export function markStalled(s: TrackedSocket, stalled: Set<TrackedSocket>, now: number): void {
  if (s[kStallSince] !== 0 || s.destroyed) return;
  s[kStallSince] = now;
  if (!stalled.has(s)) {
    stalled.add(s);
    // One listener per connection, added the first time it stalls.
    if (s.listeners('drain').indexOf(onDrain) === -1) s.on('drain', onDrain);
  }
}

const kHeld = Symbol('rempart.heldBytes');
type QueuedReply = ServerResponse & { [kHeld]?: number };

/** The reply got its connection: what it held is now the socket's to send, no longer queued. */
function onReplyAssigned(this: QueuedReply, s: TrackedSocket): void {
  s[kQueuedBytes] -= this[kHeld] ?? 0;
  this[kHeld] = 0;
}

/**
 * Count `bytes` of `res`, a reply waiting behind earlier ones on its connection `s` (the request's
 * socket, kept by its context: `req.socket` is null once the request stream is destroyed). Past `max` for the
 * connection, it is closed and false returned: a pipelining client that does not read holds at most
 * this much of forwarded replies (each one's upstream body is paused at the first full buffer anyway).
 */
export function holdQueuedReply(res: ServerResponse, s: TrackedSocket, bytes: number, max: number): boolean {
  const r = res as QueuedReply;
  if (r[kHeld] === undefined) {
    r[kHeld] = 0;
    r.once('socket', onReplyAssigned);
  }
  r[kHeld]! += bytes;
  s[kQueuedBytes] += bytes;
  if (s[kQueuedBytes] <= max) return true;
  s.destroy();
  return false;
}

export interface SweepLimits {
  maxConnections: number;
  slowReadTimeoutMs: number;
  pressureIdleTimeoutMs: number;
  idleTimeoutMs: number;
  headersTimeoutMs: number;
}

export interface SweepResult {
  slowReaders: number;
  idleClosed: number;
  /** Idle past idleTimeoutMs + headersTimeoutMs without a request: closed (RMP_ERR_EDGE_TIMEOUT). */
  idleTimedOut: number;
}

/**
 * The periodic pass: closes slow readers past their deadline, and under connection pressure the
 * idle keep-alive connections idle for more than pressureIdleTimeoutMs. Returns the idle ones left,
 * oldest idle first, for `reclaimOne` to close when a new connection arrives at the cap.
 */
export function sweep(
  sockets: ReadonlySet<TrackedSocket>,
  stalled: Set<TrackedSocket>,
  total: number,
  limits: SweepLimits,
  now: number,
  out: SweepResult,
): TrackedSocket[] {
  out.slowReaders = 0;
  out.idleClosed = 0;
  out.idleTimedOut = 0;
  for (const s of stalled) {
    const since = s[kStallSince];
    // Drained since (or never really blocked on the socket itself: a queued pipelined reply waits on
    // an earlier reply, not on the client), or gone: no longer a slow reader.
    if (since === 0 || s.destroyed || !s.writableNeedDrain) {
      s[kStallSince] = 0;
      stalled.delete(s);
    } else if (now - since > limits.slowReadTimeoutMs) {
      stalled.delete(s);
      out.slowReaders++;
      s.destroy();
    }
  }
  // Idle longer than idleTimeoutMs, plus headersTimeoutMs so that a head begun just before the idle
  // limit had its whole time (nginx: keepalive_timeout until the next request's first byte, then
  // client_header_timeout). An engine's own idle timer closes a quiet connection long before this.
  const idleLimit = limits.idleTimeoutMs + limits.headersTimeoutMs;
  for (const s of sockets) {
    if (isIdle(s) && now - s[kIdleSince] > idleLimit) {
      out.idleTimedOut++;
      s.destroy();
    }
  }
  if (total < limits.maxConnections * PRESSURE_RATIO) return [];
  const idle = idleOldestFirst(sockets);
  let i = 0;
  for (; i < idle.length && now - idle[i]![kIdleSince] > limits.pressureIdleTimeoutMs; i++) {
    out.idleClosed++;
    idle[i]!.destroy();
  }
  return i === 0 ? idle : idle.slice(i);
}

/** The idle keep-alive connections, oldest idle first. */
export function idleOldestFirst(sockets: ReadonlySet<TrackedSocket>): TrackedSocket[] {
  const idle: TrackedSocket[] = [];
  for (const s of sockets) if (isIdle(s)) idle.push(s);
  return idle.sort((a, b) => a[kIdleSince] - b[kIdleSince]);
}

/** The idle connections the last sweep found, oldest idle first, and how far accepts have used them. */
export interface ReclaimList {
  list: TrackedSocket[];
  next: number;
  builtAt: number;
}

/** Close the oldest idle keep-alive connection still idle in the list; false when none is. */
export function reclaimOne(r: ReclaimList): boolean {
  while (r.next < r.list.length) {
    const s = r.list[r.next++]!;
    if (isIdle(s)) {
      s.destroy();
      return true;
    }
  }
  return false;
}
