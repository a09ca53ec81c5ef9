// One client connection of the lean engine: reads the socket, parses requests strictly
// (lean/parser.ts), hands each to the HTTP/1.1 entry's request handler as a LeanRequest/LeanResponse
// pair, streams request bodies with backpressure (zero-copy: body chunks are sub-ranges of what was
// read), keeps answers in request order, and answers parse errors and timeouts on the raw socket with
// the node engine's replies. Everything per connection is made once: the handlers are methods bound
// at connection time, the parser's state and offsets are reused by every request on it.
import { STATUS_CODES } from 'node:http';
import { ERRORS, RempartError, type ErrorCode } from '../../core/errors.ts';
import { holdClock, monoNow, releaseClock } from '../../core/clock.ts';
import { closingReason, errorBody } from '../../pipeline/reply.ts';
import { kPending, kReadPaused } from '../../pipeline/symbols.ts';
import type { TrackedSocket } from '../connections.ts';
import { ChunkedDecoder, HeadParser, headersObject } from './parser.ts';
import { LeanBodilessRequest, LeanRequest, LeanResponse, type LeanHead, type MessageConnection } from './message.ts';
import type { LeanEngine } from './engine.ts';

const EMPTY = Buffer.alloc(0);

export class LeanConnection implements MessageConnection {
  readonly socket: TrackedSocket;
  readonly engine: LeanEngine;
  readonly parser: HeadParser;
  chunks: ChunkedDecoder | null;
  /** Unparsed bytes: buf[start, end). `own`: buf is a carry buffer of ours that may be appended to. */
  buf: Buffer | null;
  start: number;
  end: number;
  own: boolean;
  /** The request whose body is being read (null between requests). */
  req: LeanRequest | null;
  res: LeanResponse | null;
  /** Content-Length body bytes still to read (-1: chunked). */
  bodyLeft: number;
  /** Responses not yet closed, in request order: the first one has the socket. */
  readonly queue: LeanResponse[];
  /** Responses whose last bytes were written, waiting for the write callback (in order). */
  readonly flushing: LeanResponse[];
  /** monoNow() when the head being read began (0: none being read). */
  headStart: number;
  /** monoNow() when the request whose body is being read began. */
  reqStart: number;
  /** monoNow() since when the connection is idle between requests (0: not idle). */
  idleSince: number;
  /** Nothing more is parsed here (an error, a last request, an upgrade). */
  stopped: boolean;
  /** A body consumer is full: parsing waits for it to read. */
  bodyPaused: boolean;
  /** A raw error reply waiting for the answers still owed on the connection. */
  deferred: ErrorCode | '';
  upgraded: boolean;
  /** The request being read said Connection: close (or is HTTP/1.0 without keep-alive). */
  lastRequest: boolean;
  /** Corked until the end of the tick (cork()). */
  corked: boolean;
  /** The end-of-tick flush is scheduled (cork() or endOfTick()). */
  ticking: boolean;
  readonly onFlushed: (err?: Error | null) => void;

  constructor(engine: LeanEngine, socket: TrackedSocket, now: number) {
    this.engine = engine;
    this.socket = socket;
    this.parser = new HeadParser(engine.maxFields());
    this.chunks = null;
    this.buf = null;
    this.start = 0;
    this.end = 0;
    this.own = false;
    this.req = null;
    this.res = null;
    this.bodyLeft = 0;
    this.queue = [];
    this.flushing = [];
    this.headStart = now;
    this.reqStart = 0;
    this.idleSince = 0;
    this.stopped = false;
    this.bodyPaused = false;
    this.deferred = '';
    this.upgraded = false;
    this.lastRequest = false;
    this.corked = false;
    this.ticking = false;
    this.onFlushed = this.#onFlushed.bind(this);
  }

  // --- reading ---

  onData(chunk: Buffer): void {
    if (this.stopped) return;
    this.#append(chunk);
    this.parse();
  }

  #append(chunk: Buffer): void {
    if (this.buf === null) {
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.own = false;
      return;
    }
    const len = this.end - this.start;
    if (this.own && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    // A carry of our own, grown by doubling: a head that arrives a byte at a time costs linear copying.
    // Bytes below `end` of any earlier buffer are never written again (body chunks may point into them).
    const carry = Buffer.allocUnsafe(Math.max(1024, 2 * (len + chunk.length)));
    this.buf.copy(carry, 0, this.start, this.end);
    chunk.copy(carry, len);
    this.buf = carry;
    this.start = 0;
    this.end = len + chunk.length;
    this.own = true;
  }

  /** Parse what is buffered: heads, bodies, more heads (a pipeline), until it runs out or must wait. */
  parse(): void {
    while (!this.stopped && !this.bodyPaused && this.buf !== null) {
      if (this.req !== null) {
        if (!this.#body()) break;
        continue;
      }
      if (!this.#head()) break;
    }
  }

  #consumed(): void {
    if (this.start >= this.end) {
      this.buf = null;
      this.own = false;
    }
  }

  /** Parse one head (and what came of its body); false when parsing must wait or stop. */
  #head(): boolean {
    const buf = this.buf!;
    const base = this.start;
    const p = this.parser;
    const max = this.engine.maxHeaderBytes;
    const r = p.execute(buf, base, this.end);
    if (r === -1) {
      // The partial head stays in buf (the parser resumes at its saved offset when more arrives).
      if (this.end - base > max) return this.headError('RMP_ERR_EDGE_HEADERS_TOO_LARGE');
      if (this.headStart === 0) this.headStart = monoNow();
      this.idleSince = 0;
      return false;
    }
    if (r === -2) return this.headError(p.error as ErrorCode);
    if (r - p.lineStart > max) return this.headError('RMP_ERR_EDGE_HEADERS_TOO_LARGE');
    this.start = base + r;
    this.headStart = 0;
    this.idleSince = 0;
    const method = p.method();
    const minor = p.versionMinor;
    // CONNECT makes a tunnel to anywhere: node:http without a 'connect' listener closes it; so here.
    if (method === 'CONNECT') {
      this.stopped = true;
      this.socket.destroy();
      return false;
    }
    const raw = p.rawHeaders(buf, base);
    const url = p.url(buf, base);
    const keepAlive = minor === 1 ? !p.connClose : p.connKeepAlive && !p.connClose;
    const chunked = p.chunked;
    const length = p.contentLength;
    const wantsUpgrade = p.hasUpgrade;
    p.reset();
    this.#consumed();
    const s = this.socket;
    if (!this.engine.gate(s)) {
      this.stopped = true;
      return false;
    }
    const hasBody = chunked || length > 0;
    // rawHeaders left the names' lower-case forms on the parser (nothing parsed since).
    const headers = headersObject(raw, p.lowerNames);
    const req = hasBody
      ? new LeanRequest(this, method, url, minor, raw, headers, false)
      : new LeanBodilessRequest(this, method, url, minor, raw, headers);
    if (wantsUpgrade && this.engine.isTunnel(req)) {
      this.#upgrade(req);
      return false;
    }
    const res = new LeanResponse(req, keepAlive);
    if (this.queue.length === 0) res.socket = s;
    this.queue.push(res);
    // The client said this is its last request: what follows it is not parsed (as llhttp).
    // A request carrying Upgrade that is not a tunnel is answered `Connection: close` (entry.ts), and
    // node:http parses nothing after it: neither does this engine.
    this.lastRequest = !keepAlive || wantsUpgrade;
    if (hasBody) {
      this.req = req as LeanRequest;
      this.res = res;
      this.reqStart = monoNow();
      if (chunked) {
        if (this.chunks === null) this.chunks = new ChunkedDecoder(this.engine.maxHeaderBytes);
        else this.chunks.reset();
        this.bodyLeft = -1;
      } else this.bodyLeft = length;
      // The body is read after the phases have seen the head (the parse loop goes on), as with node:http:
      // a request refused then is answered `Connection: close` while its body may be pending, and
      // nothing pipelined behind that body is served.
    } else if (this.lastRequest) this.stopped = true;
    this.engine.onRequest(req, res);
    return true;
  }

  /** Read body bytes; false when it must wait (more bytes, a full consumer) or stopped. */
  #body(): boolean {
    const req = this.req!;
    const buf = this.buf!;
    if (this.bodyLeft >= 0) {
      const take = Math.min(this.bodyLeft, this.end - this.start);
      const chunk = buf.subarray(this.start, this.start + take);
      this.start += take;
      this.bodyLeft -= take;
      this.#consumed();
      if (this.bodyLeft === 0) this.#bodyDone(req, chunk);
      else if (!this.#push(req, chunk)) return false;
      return this.buf !== null;
    }
    const d = this.chunks!;
    while (this.buf !== null) {
      const next = d.next(buf, this.start, this.end);
      if (next < 0) {
        this.bodyError(d.error as ErrorCode);
        return false;
      }
      this.start = next;
      this.#consumed();
      if (d.done) {
        this.#bodyDone(req, d.dataEnd > d.dataStart ? buf.subarray(d.dataStart, d.dataEnd) : null);
        return this.buf !== null;
      }
      if (d.dataEnd > d.dataStart && !this.#push(req, buf.subarray(d.dataStart, d.dataEnd))) return false;
    }
    return false;
  }

  #push(req: LeanRequest, chunk: Buffer): boolean {
    if (chunk.length === 0 || req.destroyed) return true;
    if (req.push(chunk)) return true;
    this.bodyPaused = true;
    this.socket.pause();
    return false;
  }

  #bodyDone(req: LeanRequest, last: Buffer | null): void {
    this.req = null;
    this.res = null;
    this.reqStart = 0;
    if (this.lastRequest) this.stopped = true;
    req.complete = true;
    if (req.destroyed) return;
    if (last !== null && last.length > 0) req.push(last);
    req.push(null);
  }

  /** The body's consumer wants more (Readable._read). */
  onBodyRead(): void {
    if (!this.bodyPaused) return;
    this.bodyPaused = false;
    if (!this.socket[kReadPaused]) this.socket.resume();
    this.parse();
  }

  // --- upgrades ---

  #upgrade(req: LeanHead): void {
    this.stopped = true;
    // Pipelined behind requests whose answers are still owed: nothing can be answered in order after
    // the handshake; close once they are out (what the node engine does, upgrade-entry.ts).
    if (this.queue.length > 0) {
      this.queue[this.queue.length - 1]!.last = true;
      return;
    }
    this.upgraded = true;
    const head = this.buf === null ? EMPTY : this.buf.subarray(this.start, this.end);
    this.buf = null;
    this.engine.detach(this);
    this.engine.onUpgrade(req, this.socket, head);
  }

  // --- writing ---

  keepAliveLines(): string {
    return this.engine.keepAliveLines();
  }

  finishing(res: LeanResponse, last: string | Buffer): void {
    this.flushing.push(res);
    const s = this.socket;
    if (s.writableLength !== 0 || s.writableCorked !== 0) {
      if (typeof last === 'string') s.write(last, 'latin1', this.onFlushed);
      else s.write(last, this.onFlushed);
      return;
    }
    // Nothing queued before it: the write is tried at once and usually goes out whole. Its finish then
    // runs in one tick shared by every connection (flushedSoon), not a write callback's tick and object
    // each. Went out in part: an empty write behind it calls back once the rest is out, as before.
    if (typeof last === 'string') s.write(last, 'latin1');
    else s.write(last);
    if (s.writableLength === 0) {
      if (!s.destroyed) flushedSoon(this);
    } else s.write(EMPTY, this.onFlushed);
  }

  cork(): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
    }
    this.endOfTick();
  }

  endOfTick(): void {
    if (this.ticking) return;
    this.ticking = true;
    process.nextTick(uncork, this);
  }

  #onFlushed(err?: Error | null): void {
    const res = this.flushing.shift();
    if (res === undefined || err) return;
    res.onFinished();
    if (this.queue[0] === res) this.queue.shift();
    const s = this.socket;
    // An unread body behind a finished answer is read and dropped, as node:http does (_dump).
    const reading = this.req;
    if (reading !== null && res.req === reading && !reading.destroyed) reading.resume();
    if (res.last) {
      this.stopped = true;
      s.end();
      s.destroySoon();
    } else if (this.queue.length === 0) this.idleSince = monoNow();
    else this.#attachQueued(s);
    res.close();
    // A parse error behind the answers owed: its turn has come.
    if (this.queue.length === 0 && this.deferred !== '') this.#flushDeferred();
  }

  /**
   * The answers waiting their turn (pipelined) go out together: the next one, and behind it each one
   * already whole, in order, in one corked write (one writev) instead of one write and one callback
   * each: 16 refusals pipelined in one read cost two writes, not sixteen. Only the first may be still
   * going (it has the connection, as before); one behind is attached only when whole, and none behind
   * one that closes the connection.
   */
  #attachQueued(s: TrackedSocket): void {
    for (let i = 0; i < this.queue.length; i++) {
      const next = this.queue[i]!;
      if (i > 0 && !next.writableEnded) return;
      if (next.socket === null) next.attach(s);
      if (!next.writableEnded || next.last) return;
    }
  }

  onDrain(): void {
    const res = this.queue[0];
    if (res !== undefined && res.socket !== null) res.emit('drain');
  }

  onClose(): void {
    this.stopped = true;
    this.engine.forget(this);
    const req = this.req;
    if (req !== null && !req.destroyed) {
      this.req = null;
      // Its consumer (the upstream exchange, a body buffer) learns the client left.
      failBody(req, new RempartError('RMP_ERR_CLIENT_ABORTED'));
    }
    for (const res of this.queue.splice(0)) res.close();
    for (const res of this.flushing.splice(0)) res.close();
  }

  // --- errors and timeouts ---

  /** A request head that cannot be parsed (or too slow): answered after the answers owed, then closed. */
  headError(code: ErrorCode): false {
    this.stopped = true;
    this.buf = null;
    this.socket.pause();
    this.engine.onParseError(code);
    if (this.queue.length > 0) this.deferred = code;
    else this.#writeRaw(code);
    return false;
  }

  /**
   * An error in the body of the request being read (bad chunk framing, too slow): a status line can
   * answer it only if its own response is the one on the wire and has not begun; otherwise close.
   */
  bodyError(code: ErrorCode): void {
    this.stopped = true;
    this.buf = null;
    this.engine.onParseError(code);
    const req = this.req;
    const res = this.res;
    this.req = null;
    this.res = null;
    if (res !== null && this.queue[0] === res && !res.headersSent) this.#writeRaw(code);
    else this.socket.destroy();
    if (req !== null && !req.destroyed) {
      // The client's doing, not the upstream's: its exchange ends as a client abort (no breaker charge);
      // the connection was answered with the real code above.
      failBody(req, new RempartError('RMP_ERR_CLIENT_ABORTED'));
    }
  }

  #flushDeferred(): void {
    const code = this.deferred;
    if (code === '') return;
    this.deferred = '';
    if (!this.socket.destroyed) this.#writeRaw(code);
  }

  #writeRaw(code: ErrorCode): void {
    const s = this.socket;
    // A reply that said Connection: close was the last answer here: no status line nobody asked for.
    if (closingReason(s) !== undefined || !s.writable) {
      s.destroySoon();
      return;
    }
    const status = ERRORS[code].status;
    const body = errorBody(code);
    s.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
    );
    s.destroySoon();
  }

  /** The coarse sweep: header, request and idle timeouts (no timer per connection). */
  sweep(now: number, headersMs: number, requestMs: number, idleMs: number): void {
    if (this.upgraded || this.socket.destroyed) return;
    if (this.req !== null) {
      if (now - this.reqStart > requestMs) this.bodyError('RMP_ERR_EDGE_TIMEOUT');
      return;
    }
    if (this.stopped) return;
    if (this.headStart > 0) {
      if (now - this.headStart > headersMs) this.headError('RMP_ERR_EDGE_TIMEOUT');
      return;
    }
    if (this.queue.length === 0 && this.socket[kPending] === 0 && this.idleSince > 0 && now - this.idleSince > idleMs)
      this.socket.destroy();
  }
}

/** Connections whose last answer went out whole at once, one entry per answer, in order. */
let flushed: LeanConnection[] = [];
let spare: LeanConnection[] = [];
function flushedSoon(c: LeanConnection): void {
  flushed.push(c);
  if (flushed.length === 1) process.nextTick(runFlushed);
}
function runFlushed(): void {
  // A finish may write the next answer on its connection: that one lands in the other list, next tick.
  const batch = flushed;
  flushed = spare;
  spare = batch;
  let error: unknown = null;
  // The finishes (and their log lines) read the clock once (core/clock.ts).
  holdClock();
  for (let i = 0; i < batch.length; i++) {
    // Each finish runs even if one before it threw (as with a callback each); the first error is rethrown.
    try {
      batch[i]!.onFlushed(null);
    } catch (err) {
      error ??= err;
    }
  }
  releaseClock();
  batch.length = 0;
  if (error !== null) throw error;
}

function uncork(c: LeanConnection): void {
  c.ticking = false;
  // A small answer whose end() did not come in this tick: its held bytes go now.
  c.queue[0]?.flushPending();
  if (!c.corked) return;
  c.corked = false;
  c.socket.uncork();
}

function noop(): void {}

/**
 * End a request body with an error its consumer sees. The error is emitted on the next tick, when the
 * consumer may have let go of it (a body buffer settled, an iterator returned): a no-op listener makes
 * sure an error nobody listens to any more is never thrown (found by the fuzz campaign: a crash).
 */
function failBody(req: LeanRequest, err: Error): void {
  req.on('error', noop);
  req.destroy(err);
}
