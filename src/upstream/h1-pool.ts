// The lean engine's upstream pool (issue 17, step 3): a keep-alive pool of raw HTTP/1.1 connections
// to one origin server, in place of undici's Pool when `server.engine` is `lean` and the upstream is
// plain http. It takes undici's dispatch(options, handler) call with the legacy handler (onConnect,
// onHeaders, onData, onComplete, onError), so pipeline/forward.ts drives either pool the same way.
//
// What it does per request: one buffer for the request head (and a small body), written once; the
// response parsed as strictly as requests are (status line, field bytes, Content-Length digits only,
// Transfer-Encoding exactly `chunked`, never both): an upstream that answers with ambiguous framing, or
// with bytes past the end of its response (response splitting), is answered 502 and its connection
// closed, so it can never desynchronise a client connection. Bodies stream with backpressure (onData
// false pauses the upstream socket, resume() restarts it). Timeouts (connect, head, body gap, idle
// keep-alive) are one coarse pass per pool, not a timer per socket or per request.
import net from 'node:net';
import type { Dispatcher } from 'undici';
import {
  ChunkedDecoder,
  connectionKind,
  equalsLower,
  FieldKind,
  fieldKind,
  TCHAR,
  type UpstreamHead,
  VALCH,
} from '../core/http1.ts';
import { holdClock, monoNow, releaseClock } from '../core/clock.ts';

export interface H1PoolOptions {
  readonly host: string;
  readonly port: number;
  /** The Host field sent when the request carries none (an HTTP/1.0 client's), as undici sends: `url.host`. */
  readonly authority: string;
  readonly connections: number;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** Largest response head read (as undici's maxHeaderSize in runtime.ts). */
const MAX_HEAD_BYTES = 65536;
/** Bodies up to this size go in the same buffer (and write) as the request head. */
const JOIN_LIMIT = 16 * 1024;
const SWEEP_MS = 250;

function upstreamError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}
function badResponse(why: string): Error {
  // classifyUpstreamError reads HPE_* as an unparsable response: 502 RMP_ERR_UPSTREAM_BAD_RESPONSE.
  return Object.assign(new Error(`invalid upstream response: ${why}`), { code: 'HPE_INVALID_RESPONSE' });
}

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;

// Response head states.
const R_VERSION = 0;
const R_STATUS = 1;
const R_REASON = 2;
const R_LINE_LF = 3;
const R_FIELD_START = 4;
const R_NAME = 5;
const R_OWS = 6;
const R_VALUE = 7;
const R_VALUE_LF = 8;
const R_HEAD_LF = 9;
const VERSION = 'HTTP/1.';

/** Strict response head parser: offsets while scanning, resumable across reads (exported for tests). */
export class ResponseHead implements UpstreamHead {
  state = R_VERSION;
  pos = 0;
  status = 0;
  minor = 1;
  /** [nameStart, nameEnd, valueStart, valueEnd] relative to the head start. */
  fields: number[] = [];
  /** Per field, its FieldKind (core/http1.ts): what every reader after the parser goes by. */
  kinds: number[] = [];
  /** Bit `1 << kind` for every kind present. */
  mask = 0;
  nameStart = 0;
  nameEnd = 0;
  valueStart = 0;
  valueEnd = 0;
  contentLength = -1;
  sawEncoding = false;
  chunked = false;
  close = false;
  error = '';

  reset(): void {
    this.state = R_VERSION;
    this.pos = 0;
    this.status = 0;
    this.fields.length = 0;
    this.kinds.length = 0;
    this.mask = 0;
    this.contentLength = -1;
    this.sawEncoding = false;
    this.chunked = false;
    this.close = false;
    this.error = '';
  }

  #fail(why: string): number {
    this.error = why;
    return -2;
  }

  /** Offset past the head (relative to base), -1 for more bytes, -2 on an error. */
  execute(buf: Buffer, base: number, end: number): number {
    let i = base + this.pos;
    let state = this.state;
    for (; i < end; i++) {
      const c = buf[i]!;
      const at = i - base;
      switch (state) {
        case R_VERSION:
          if (at < 7) {
            if (c !== VERSION.charCodeAt(at)) return this.#fail('status line');
          } else if (at === 7) {
            if (c !== 0x30 && c !== 0x31) return this.#fail('version');
            this.minor = c - 0x30;
          } else if (c !== SP) return this.#fail('status line');
          else state = R_STATUS;
          break;
        case R_STATUS: {
          const d = c - 0x30;
          const n = at - 9;
          if (n < 3) {
            if (d < 0 || d > 9) return this.#fail('status code');
            this.status = this.status * 10 + d;
          } else if (c === SP) state = R_REASON;
          else if (c === CR) state = R_LINE_LF;
          else return this.#fail('status line');
          break;
        }
        case R_REASON:
          if (c === CR) state = R_LINE_LF;
          else if (VALCH[c] !== 1) return this.#fail('reason phrase');
          break;
        case R_LINE_LF:
        case R_VALUE_LF:
          if (c !== LF) return this.#fail('bare CR');
          state = R_FIELD_START;
          break;
        case R_FIELD_START:
          if (TCHAR[c] === 1) {
            this.nameStart = at;
            state = R_NAME;
          } else if (c === CR) state = R_HEAD_LF;
          else return this.#fail('field line');
          break;
        case R_NAME: {
          // The rest of the name in one tight loop (no state dispatch per byte).
          let j = i;
          while (j < end && TCHAR[buf[j]!] === 1) j++;
          // Out of bytes: the loop's i++ leaves i at end, where the next call resumes in this state.
          if (j === end) {
            i = j - 1;
            break;
          }
          i = j;
          if (buf[j] !== 0x3a) return this.#fail('field name');
          this.nameEnd = j - base;
          state = R_OWS;
          break;
        }
        case R_OWS:
          if (c === SP || c === HTAB) break;
          if (c === CR) {
            this.valueStart = this.valueEnd = at;
            state = R_VALUE_LF;
            if (!this.#field(buf, base)) return -2;
            break;
          }
          if (VALCH[c] !== 1) return this.#fail('field value');
          this.valueStart = at;
          this.valueEnd = at + 1;
          state = R_VALUE;
          break;
        case R_VALUE: {
          // The rest of the value in one tight loop: most of a head's bytes are values.
          let last = base + this.valueEnd;
          let j = i;
          for (; j < end; j++) {
            const b = buf[j]!;
            if (VALCH[b] !== 1) break;
            if (b !== SP && b !== HTAB) last = j + 1;
          }
          this.valueEnd = last - base;
          if (j === end) {
            i = j - 1;
            break;
          }
          i = j;
          if (buf[j] !== CR) return this.#fail('field value');
          state = R_VALUE_LF;
          if (!this.#field(buf, base)) return -2;
          break;
        }
        case R_HEAD_LF:
          if (c !== LF) return this.#fail('bare CR');
          this.state = state;
          this.pos = at + 1;
          if (this.sawEncoding && (this.contentLength !== -1 || !this.chunked))
            return this.#fail('ambiguous framing (Transfer-Encoding)');
          return at + 1;
      }
    }
    this.state = state;
    this.pos = i - base;
    return -1;
  }

  #field(buf: Buffer, base: number): boolean {
    this.fields.push(this.nameStart, this.nameEnd, this.valueStart, this.valueEnd);
    const ns = base + this.nameStart;
    const vs = base + this.valueStart;
    const ve = base + this.valueEnd;
    let kind = fieldKind(buf, ns, this.nameEnd - this.nameStart);
    if (kind === FieldKind.Connection) kind = connectionKind(buf, vs, ve);
    this.kinds.push(kind);
    this.mask |= 1 << kind;
    if (kind === FieldKind.ContentLength) {
      if (this.contentLength !== -1 || ve === vs || ve - vs > 15) {
        this.error = 'Content-Length';
        return false;
      }
      let v = 0;
      for (let j = vs; j < ve; j++) {
        const d = buf[j]! - 0x30;
        if (d < 0 || d > 9) {
          this.error = 'Content-Length';
          return false;
        }
        v = v * 10 + d;
      }
      this.contentLength = v;
    } else if (kind === FieldKind.Hop && this.nameEnd - this.nameStart === 17) {
      // The one hop-by-hop name of 17 bytes: Transfer-Encoding.
      if (this.sawEncoding) {
        this.error = 'Transfer-Encoding';
        return false;
      }
      this.sawEncoding = true;
      this.chunked = ve - vs === 7 && equalsLower(buf, vs, 'chunked');
    } else if (kind === FieldKind.Connection || kind === FieldKind.ConnectionNames) {
      for (let j = vs; j + 5 <= ve; j++) if (equalsLower(buf, j, 'close')) this.close = true;
    }
    return true;
  }
}

type Body = Dispatcher.DispatchOptions['body'];

/**
 * What a handler that takes the exchange itself (onExchange) may do with it: no function made per
 * request for it, as undici's abort and resume callbacks are.
 */
export interface H1Exchange {
  abort(err?: Error): void;
  /** The handler can take more of the body (after onData or onHeadBytes said false). */
  resume(): void;
}

/** One request on its way: the handler, and (for an undici-style handler only) its callbacks. */
class Exchange implements H1Exchange {
  readonly pool: H1Pool;
  readonly opts: Dispatcher.DispatchOptions;
  readonly handler: Dispatcher.DispatchHandler;
  conn: UpConn | null = null;
  done = false;
  /** monoNow() when it first had to wait for a connection (0: never waited). */
  created = 0;
  /**
   * Sent on a reused connection, an idempotent method with a replayable body, no answer head handed on
   * yet: may be sent again once if the connection dies under it.
   */
  retryable = false;
  /** Sent again after a reused connection died under it: it goes out on a new connection only. */
  fresh = false;
  #abortFn: ((err?: Error) => void) | null = null;
  #resumeFn: (() => void) | null = null;

  constructor(pool: H1Pool, opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
    this.pool = pool;
    this.opts = opts;
    this.handler = handler;
  }

  abort(err?: Error): void {
    this.fail(err ?? upstreamError('UND_ERR_ABORTED', 'Request aborted'), true);
  }

  resume(): void {
    this.conn?.resumeBody(this);
  }

  /** abort() as a function, for a handler that wants undici's onConnect callback (made on first use). */
  get abortFn(): (err?: Error) => void {
    return (this.#abortFn ??= (err?: Error) => this.abort(err));
  }

  /** resume() as a function, for undici's onHeaders callback (made on first use). */
  get resumeFn(): () => void {
    return (this.#resumeFn ??= () => this.resume());
  }

  fail(err: Error, destroy: boolean): void {
    if (this.done) return;
    this.done = true;
    const c = this.conn;
    this.conn = null;
    if (c !== null && destroy) c.destroy();
    this.pool.unqueue(this);
    (this.handler as LegacyHandler).onError?.(err);
  }
}

/** undici's raw header pairs (a Buffer per name and per value) from the parser's offsets. */
function rawPairs(buf: Buffer, base: number, f: readonly number[]): Buffer[] {
  const raw = new Array<Buffer>(f.length / 2);
  for (let k = 0, j = 0; k < f.length; k += 4, j += 2) {
    raw[j] = buf.subarray(base + f[k]!, base + f[k + 1]!);
    raw[j + 1] = buf.subarray(base + f[k + 2]!, base + f[k + 3]!);
  }
  return raw;
}

/**
 * undici's legacy handler methods, as pipeline/forward.ts's ForwardHandler implements them, and the
 * pool's own head callback: the response head as the parser left it, `buf` and per field
 * [nameStart, nameEnd, valueStart, valueEnd] relative to `base` (names are tchar, values field bytes:
 * both already checked) with its kind (UpstreamHead). Valid only during the call; a handler that has it
 * is not given onHeaders.
 */
export interface LegacyHandler {
  /**
   * In place of onConnect: the exchange itself (abort, resume as methods). A handler that has it is
   * given onHeadBytes' exchange too, and no callback is made for it.
   */
  onExchange?(x: H1Exchange): void;
  onHeadBytes?(status: number, buf: Buffer, base: number, head: UpstreamHead, x: H1Exchange): boolean;
  /** onData for the last bytes of a body with a Content-Length: onComplete follows in the same call. */
  onLastData?(chunk: Buffer): boolean;
  onConnect?(abort: (err?: Error) => void): void;
  onHeaders?(status: number, raw: Buffer[], resume: () => void, text: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: Buffer[] | null): void;
  onError?(err: Error): void;
}

const kUp = Symbol('rempart.upConn');
type UpSocket = net.Socket & { [kUp]: UpConn };

/**
 * Every upstream socket reads into this one buffer (`onread`): no 64 KiB allocation and shrink per read,
 * no Readable push and 'data' event. Its bytes are copied out at once (exactly what was read, from
 * Buffer's small-allocation pool), since raw header fields and body chunks handed to the handler may be
 * kept (a cache tap, a queued answer). Reading is synchronous on the one JS thread: one buffer serves all.
 */
const READ_BUF = Buffer.allocUnsafe(64 * 1024);
function onUpRead(this: UpSocket, n: number): boolean {
  const chunk = Buffer.allocUnsafe(n);
  READ_BUF.copy(chunk, 0, 0, n);
  const c = this[kUp];
  // The answer's head, body and finish read the clock once (core/clock.ts).
  holdClock();
  try {
    c.onData(chunk);
  } finally {
    releaseClock();
  }
  // false stops reading (the handler is full); resumeBody() restarts it (socket.resume()).
  return !c.paused;
}
function onUpClose(this: UpSocket): void {
  this[kUp].onClose();
}
function onUpError(this: UpSocket, err: Error): void {
  this[kUp].lastError = err;
}
function onUpConnect(this: UpSocket): void {
  this[kUp].onConnect();
}
function onUpDrain(this: UpSocket): void {
  this[kUp].bodyDrained();
}

/** One upstream connection: at most one exchange at a time (no pipelining). */
class UpConn {
  readonly pool: H1Pool;
  readonly socket: UpSocket;
  connected = false;
  exchange: Exchange | null = null;
  /** Requests this connection carried (a first request is never retried: the origin saw it fresh). */
  served = 0;
  readonly head = new ResponseHead();
  chunks: ChunkedDecoder | null = null;
  buf: Buffer | null = null;
  start = 0;
  end = 0;
  own = false;
  /** -2: reading a head; -1: chunked body; -3: body to the connection's end; >= 0 bytes left. */
  bodyLeft = -2;
  paused = false;
  reusable = true;
  /** monoNow() of the last event the timeouts measure from. */
  since: number;
  lastError: Error | null = null;
  drainWaiter: (() => void) | null = null;
  /** A request body is being written (pump). */
  pumping = false;

  constructor(pool: H1Pool) {
    this.pool = pool;
    this.since = monoNow();
    const s = net.connect({
      host: pool.opts.host,
      port: pool.opts.port,
      noDelay: true,
      onread: { buffer: READ_BUF, callback: onUpRead },
    }) as UpSocket;
    s[kUp] = this;
    s.on('connect', onUpConnect);
    s.on('close', onUpClose);
    s.on('error', onUpError);
    s.on('drain', onUpDrain);
    this.socket = s;
  }

  onConnect(): void {
    this.connected = true;
    this.since = monoNow();
    const x = this.exchange;
    if (x !== null) this.send(x);
  }

  /** Give this connection an exchange (connected already, or once it connects). */
  assign(x: Exchange, now: number): void {
    this.exchange = x;
    x.conn = this;
    x.retryable = this.served > 0 && isIdempotent(x.opts.method) && isReplayable(x.opts.body);
    this.served++;
    this.head.reset();
    this.bodyLeft = -2;
    this.since = now;
    if (this.connected) this.send(x);
  }

  send(x: Exchange): void {
    const o = x.opts;
    const headers = o.headers as string[];
    let head = `${o.method} ${o.path} HTTP/1.1\r\n`;
    let hasLength = false;
    let hasHost = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      if (name.length === 14 && sameName(name, 'content-length')) hasLength = true;
      else if (name.length === 4 && sameName(name, 'host')) hasHost = true;
      head += `${name}: ${headers[i + 1]}\r\n`;
    }
    // HTTP/1.1 requires exactly one Host toward the origin, whatever the client sent (HTTP/1.0 may omit it).
    if (!hasHost) head += `host: ${this.pool.opts.authority}\r\n`;
    const body = o.body;
    const s = this.socket;
    if (body == null) {
      if (!hasLength && (o.method === 'POST' || o.method === 'PUT' || o.method === 'PATCH'))
        head += 'content-length: 0\r\n';
      s.write(`${head}connection: keep-alive\r\n\r\n`, 'latin1');
      return;
    }
    if (typeof body === 'string' || body instanceof Uint8Array) {
      const data =
        typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.length);
      if (!hasLength) head += `content-length: ${data.length}\r\n`;
      head += 'connection: keep-alive\r\n\r\n';
      if (data.length > JOIN_LIMIT) {
        s.cork();
        s.write(head, 'latin1');
        s.write(data);
        s.uncork();
        return;
      }
      // One buffer, one write: head and body together.
      const out = Buffer.allocUnsafe(head.length + data.length);
      out.write(head, 0, 'latin1');
      data.copy(out, head.length);
      s.write(out);
      return;
    }
    // A stream or async iterable: as it comes, with backpressure; chunked when its length is unknown.
    head += hasLength
      ? 'connection: keep-alive\r\n\r\n'
      : 'transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n';
    s.write(head, 'latin1');
    void this.pump(x, body as AsyncIterable<Buffer>, !hasLength);
  }

  async pump(x: Exchange, body: AsyncIterable<Buffer>, chunked: boolean): Promise<void> {
    const s = this.socket;
    this.pumping = true;
    try {
      for await (const piece of body) {
        if (x.done || x.conn !== this) return;
        const chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
        if (chunk.length === 0) continue;
        let ok: boolean;
        if (chunked) {
          s.cork();
          s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
          s.write(chunk);
          ok = s.write('\r\n', 'latin1');
          s.uncork();
        } else ok = s.write(chunk);
        if (!ok) await new Promise<void>((r) => (this.drainWaiter = r));
      }
      if (chunked && !x.done && x.conn === this) s.write('0\r\n\r\n', 'latin1');
    } catch (err) {
      // The body failed on the way (over the limit, its client left): the exchange fails with its error.
      x.fail(err as Error, true);
    } finally {
      this.pumping = false;
    }
  }

  bodyDrained(): void {
    const w = this.drainWaiter;
    this.drainWaiter = null;
    w?.();
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
    const carry = Buffer.allocUnsafe(Math.max(1024, 2 * (len + chunk.length)));
    this.buf.copy(carry, 0, this.start, this.end);
    chunk.copy(carry, len);
    this.buf = carry;
    this.start = 0;
    this.end = len + chunk.length;
    this.own = true;
  }

  onData(chunk: Buffer): void {
    const x = this.exchange;
    if (x === null) {
      // Bytes nobody asked for (after a complete response, or on an idle connection): the origin is
      // out of step with us; nothing it sends on this connection can be trusted to frame an answer.
      this.destroy();
      return;
    }
    // While the head is awaited, `since` stays at the request's start: headersTimeoutMs is a total, as
    // undici's, and a head dripped a byte at a time does not push it back. Body bytes restart the gap clock.
    if (this.bodyLeft !== -2) this.since = monoNow();
    this.#append(chunk);
    this.parse(x);
  }

  parse(x: Exchange): void {
    while (this.buf !== null && !this.paused && this.exchange === x && !x.done) {
      if (this.bodyLeft === -2) {
        if (!this.#head(x)) return;
        continue;
      }
      if (!this.#body(x)) return;
    }
  }

  #consumed(): void {
    if (this.start >= this.end) {
      this.buf = null;
      this.own = false;
    }
  }

  #head(x: Exchange): boolean {
    const buf = this.buf!;
    const base = this.start;
    const h = this.head;
    const r = h.execute(buf, base, this.end);
    if (r === -1) {
      if (this.end - base > MAX_HEAD_BYTES) x.fail(badResponse('head too large'), true);
      return false;
    }
    if (r === -2) {
      x.fail(badResponse(h.error), true);
      return false;
    }
    this.start = base + r;
    this.#consumed();
    const status = h.status;
    // Below 100 is no status at all (llhttp refuses it): read as a 1xx, the answer after it would be
    // taken for this one.
    if (status < 100) {
      x.fail(badResponse('status code'), true);
      return false;
    }
    if (status < 200) {
      // 1xx (100 Continue, 103 Early Hints): informational, the answer follows. A 101 here is wrong.
      if (status === 101) {
        x.fail(badResponse('unexpected 101'), true);
        return false;
      }
      h.reset();
      return true;
    }
    if (h.close || h.minor === 0) this.reusable = false;
    const noBody = x.opts.method === 'HEAD' || status === 204 || status === 304;
    if (noBody) {
      this.bodyLeft = 0;
      // A 204 or 304 whose head announces a body (a length, chunked): an origin that sends those bytes
      // anyway, a moment later, would have them read as the answer to the next request on this
      // connection, another client's (response queue poisoning: an upload served as `HTTP/1.1 200 …`).
      // Such a connection is not reused. A HEAD answer carries a GET's Content-Length by rule, so it
      // stays reusable (a HEAD flood must not open a connection each): an origin that sends a HEAD
      // its body late is the one case left (the node engine's undici pool has it too).
      if (x.opts.method !== 'HEAD' && (h.chunked || h.contentLength > 0)) this.reusable = false;
    } else if (h.chunked) {
      this.bodyLeft = -1;
      if (this.chunks === null) this.chunks = new ChunkedDecoder(MAX_HEAD_BYTES);
      else this.chunks.reset();
    } else if (h.contentLength >= 0) this.bodyLeft = h.contentLength;
    else {
      this.bodyLeft = -3;
      this.reusable = false;
    }
    x.retryable = false;
    // The body's gap clock starts with the head.
    this.since = monoNow();
    const handler = x.handler as LegacyHandler;
    // A handler that reads the head as offsets gets them (no Buffer per field); else undici's pairs.
    const more =
      handler.onHeadBytes !== undefined
        ? handler.onHeadBytes(status, buf, base, h, x)
        : handler.onHeaders?.(status, rawPairs(buf, base, h.fields), x.resumeFn, '');
    if (more === false) this.pause();
    if (x.done || this.exchange !== x) return false;
    if (this.bodyLeft === 0) {
      this.#complete(x);
      return false;
    }
    return true;
  }

  #body(x: Exchange): boolean {
    const buf = this.buf!;
    const handler = x.handler as LegacyHandler;
    if (this.bodyLeft >= 0 || this.bodyLeft === -3) {
      const avail = this.end - this.start;
      const take = this.bodyLeft === -3 ? avail : Math.min(this.bodyLeft, avail);
      const chunk = buf.subarray(this.start, this.start + take);
      this.start += take;
      if (this.bodyLeft >= 0) this.bodyLeft -= take;
      this.#consumed();
      if (take > 0) {
        // The last bytes of a body with a length: the handler may keep them for its end (next call).
        const more =
          this.bodyLeft === 0 && handler.onLastData !== undefined ? handler.onLastData(chunk) : handler.onData?.(chunk);
        if (more === false) this.pause();
      }
      if (x.done || this.exchange !== x) return false;
      if (this.bodyLeft === 0) {
        this.#complete(x);
        return false;
      }
      return this.buf !== null;
    }
    const d = this.chunks!;
    const next = d.next(buf, this.start, this.end);
    if (next < 0) {
      x.fail(badResponse('chunked framing'), true);
      return false;
    }
    this.start = next;
    this.#consumed();
    if (d.dataEnd > d.dataStart && handler.onData?.(buf.subarray(d.dataStart, d.dataEnd)) === false) this.pause();
    if (x.done || this.exchange !== x) return false;
    if (d.done) {
      this.#complete(x);
      return false;
    }
    return this.buf !== null;
  }

  #complete(x: Exchange): void {
    // Bytes past the end of the answer: response splitting, or an origin out of step. Never reused;
    // nor while the request body is still going out (an early answer): the next request would be
    // written into the middle of it.
    if (this.buf !== null || this.pumping) this.reusable = false;
    this.buf = null;
    this.exchange = null;
    x.conn = null;
    x.done = true;
    this.bodyLeft = -2;
    this.since = monoNow();
    (x.handler as LegacyHandler).onComplete?.(null);
    if (this.reusable && !this.paused && !x.opts.reset) this.pool.release(this);
    else this.destroy();
  }

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resumeBody(x: Exchange): void {
    if (this.exchange !== x || !this.paused) return;
    this.paused = false;
    this.socket.resume();
    this.parse(x);
  }

  onClose(): void {
    this.pool.forget(this);
    const x = this.exchange;
    this.exchange = null;
    if (x === null || x.done) return;
    if (this.bodyLeft === -3) {
      // A body delimited by the connection's end: complete now.
      x.conn = null;
      x.done = true;
      (x.handler as LegacyHandler).onComplete?.(null);
      return;
    }
    x.conn = null;
    // A reused connection the origin closed as the request went out (its FIN on the way), or after a
    // part of a head (an origin closing its keep-alive connections at its own pace, restarting): sent
    // again once, on a new connection. Not on another idle one: with an origin that closes every
    // connection after an answer, that one is as dead, and its failure was a 502. Nothing of the answer
    // reached the handler (x.retryable is cleared at the final head), and an idempotent request may be
    // repeated (RFC 9110 §9.2.2); nginx, too, does not count a cached connection's failure as a try.
    // The new connection's first request is not retryable (served 0): one retry at most.
    // Not by a destroyed pool (its sweep is stopped: the new connection would have no timeout, and would
    // keep the process alive at a gateway's stop): the pool itself closed this one.
    if (x.retryable && !this.pool.destroyed) {
      x.retryable = false;
      x.fresh = true;
      this.pool.enqueue(x, true);
      return;
    }
    const e = this.lastError;
    const code = (e as { code?: string } | null)?.code;
    x.fail(
      !this.connected && e !== null
        ? e
        : upstreamError(code === 'ECONNRESET' || code === 'EPIPE' ? code : 'UND_ERR_SOCKET', 'other side closed'),
      false,
    );
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The pool's sweep: connect, head and body-gap timeouts for the exchange, idle time for the rest. */
  sweep(now: number, o: H1PoolOptions): void {
    const x = this.exchange;
    const idle = now - this.since;
    if (x === null) {
      if (idle > o.keepAliveTimeoutMs) this.destroy();
      return;
    }
    if (!this.connected) {
      if (idle > o.connectTimeoutMs) x.fail(upstreamError('UND_ERR_CONNECT_TIMEOUT', 'Connect Timeout Error'), true);
    } else if (this.bodyLeft === -2) {
      if (idle > o.headersTimeoutMs) x.fail(upstreamError('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error'), true);
    } else if (!this.paused && o.bodyTimeoutMs > 0 && idle > o.bodyTimeoutMs)
      x.fail(upstreamError('UND_ERR_BODY_TIMEOUT', 'Body Timeout Error'), true);
  }
}

/**
 * Methods that may be sent again after a reset (RFC 9110 §9.2.2): the origin may have acted on a request
 * it read before closing, and a POST or PATCH acted on twice is a double order. undici fails those.
 */
/** ASCII case-insensitive equality of a field name (tchar only) with a lower-case name of the same length. */
function sameName(name: string, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) if ((name.charCodeAt(k) | 0x20) !== lower.charCodeAt(k)) return false;
  return true;
}

function isIdempotent(method: string): boolean {
  return method === 'GET' || method === 'HEAD' || method === 'OPTIONS' || method === 'PUT' || method === 'DELETE';
}

function isReplayable(body: Body): boolean {
  return body == null || typeof body === 'string' || body instanceof Uint8Array;
}

/** A keep-alive pool to one origin server. dispatch() is undici's, for the calls forward.ts makes. */
export class H1Pool {
  readonly opts: H1PoolOptions;
  readonly all = new Set<UpConn>();
  readonly idle: UpConn[] = [];
  readonly waiting: Exchange[] = [];
  #waitHead = 0;
  #closed = false;
  /** destroy() was called: every connection is being closed and no exchange is sent again. */
  destroyed = false;
  readonly #timer: NodeJS.Timeout;

  constructor(opts: H1PoolOptions) {
    this.opts = opts;
    // The sweep runs after the sockets are next read, not from its timer: after a stall (a long callback,
    // a GC pause) Node runs the timers that fell due before it reads what arrived meanwhile, and an answer
    // waiting unread in the socket was timed out (a 504 for an origin that had answered in time).
    const sweep = () => this.#sweep();
    this.#timer = setInterval(() => setImmediate(sweep), SWEEP_MS).unref();
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const x = new Exchange(this, options, handler);
    if (this.#closed) {
      queueMicrotask(() => x.fail(upstreamError('UND_ERR_DESTROYED', 'The client is destroyed'), false));
      return false;
    }
    const legacy = handler as LegacyHandler;
    if (legacy.onExchange !== undefined) legacy.onExchange(x);
    else legacy.onConnect?.(x.abortFn);
    if (x.done) return true;
    this.enqueue(x, false);
    return true;
  }

  enqueue(x: Exchange, front: boolean): void {
    // One clock read for the idle check and the exchange's head timeout.
    const now = monoNow();
    let c: UpConn | undefined;
    if (!x.fresh) {
      c = this.idle.pop();
      // An idle connection close to its keep-alive limit may be closed by the origin as we write.
      while (c !== undefined && (c.socket.destroyed || now - c.since > this.opts.keepAliveTimeoutMs)) {
        c.destroy();
        c = this.idle.pop();
      }
    }
    // A retry (fresh) takes a new connection. At the cap it waits at the front, and the next connection
    // freed makes room for it (release). No idle one is left to close for it here: the dead connection was
    // forgotten first (onClose), so the cap is reached only if a waiting exchange took that slot, and
    // exchanges wait only while no connection is idle.
    if (c === undefined && this.all.size < this.opts.connections) {
      c = new UpConn(this);
      this.all.add(c);
    }
    if (c !== undefined) {
      c.assign(x, now);
      return;
    }
    if (x.created === 0) x.created = now;
    if (front && this.#waitHead > 0) this.waiting[--this.#waitHead] = x;
    else this.waiting.push(x);
  }

  unqueue(x: Exchange): void {
    const i = this.waiting.indexOf(x, this.#waitHead);
    if (i !== -1) this.waiting.splice(i, 1);
  }

  #next(): Exchange | undefined {
    while (this.#waitHead < this.waiting.length) {
      const x = this.waiting[this.#waitHead++]!;
      if (this.#waitHead > 1024 && this.#waitHead * 2 > this.waiting.length) {
        this.waiting.splice(0, this.#waitHead);
        this.#waitHead = 0;
      }
      if (!x.done) return x;
    }
    this.waiting.length = 0;
    this.#waitHead = 0;
    return undefined;
  }

  /** A connection is free: the next waiting exchange, or the idle list. */
  release(c: UpConn): void {
    if (this.#closed) return c.destroy();
    const x = this.#next();
    if (x === undefined) this.idle.push(c);
    else if (!x.fresh) c.assign(x, c.since);
    else {
      // A retry waited for a slot: this reused connection makes room for a new one. Out of the count now
      // (its close comes later, and forget() then finds nothing to do).
      this.all.delete(c);
      c.destroy();
      this.enqueue(x, true);
    }
  }

  forget(c: UpConn): void {
    this.all.delete(c);
    const i = this.idle.indexOf(c);
    if (i !== -1) this.idle.splice(i, 1);
    // Room for a new connection: a waiting exchange gets one.
    if (!this.#closed && this.all.size < this.opts.connections) {
      const x = this.#next();
      if (x !== undefined) this.enqueue(x, true);
    }
  }

  #sweep(): void {
    if (this.#closed && this.all.size === 0) clearInterval(this.#timer);
    const now = monoNow();
    for (const c of this.all) c.sweep(now, this.opts);
    for (let i = this.#waitHead; i < this.waiting.length; i++) {
      const x = this.waiting[i]!;
      if (!x.done && now - x.created > this.opts.headersTimeoutMs + this.opts.connectTimeoutMs)
        x.fail(upstreamError('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error'), false);
    }
  }

  /** No new requests; the idle connections close now, the busy ones after their answer. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }

  async destroy(): Promise<void> {
    this.#closed = true;
    this.destroyed = true;
    clearInterval(this.#timer);
    for (const x of this.waiting.splice(0))
      x.fail(upstreamError('UND_ERR_DESTROYED', 'The client is destroyed'), false);
    for (const c of [...this.all]) c.destroy();
  }
}
