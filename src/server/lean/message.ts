// The lean engine's request and response objects: the part of node:http's IncomingMessage and
// ServerResponse that the phases, the cycle and pipeline/forward.ts read and write (found with grep:
// headers, rawHeaders, method, url, httpVersion*, complete, socket, the body as a stream; writeHead,
// write, end, writeContinue, destroy, headersSent, writableEnded/Finished/NeedDrain, socket,
// shouldKeepAlive, the 'drain', 'socket', 'finish' and 'close' events). The RequestContext takes them
// as its req/res, so both engines feed the same cycle unchanged.
//
// A response head is made as one string and goes out with the first body bytes in one corked write
// (one writev); a response queued behind earlier ones on its connection (pipelining) keeps its bytes
// until its turn, as node:http does, and answers are sent in request order.
import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { wallNow } from '../../core/clock.ts';
import { FieldKind, latin1, type UpstreamHead } from '../../core/http1.ts';
import { clientResponsePairs } from '../../pipeline/headers.ts';

/** What a message needs of its connection (lean/connection.ts). */
export interface MessageConnection {
  readonly socket: Socket;
  /** The request body was read by its consumer: parse more of it. */
  onBodyRead(): void;
  /** Write the response's last bytes, and finish it once they are flushed (in order). */
  finishing(res: LeanResponse, last: string | Buffer): void;
  /** Cork the connection until the end of this tick: everything written meanwhile goes in one writev. */
  cork(): void;
  /** Flush a held small answer (flushPending) at the end of this tick, without corking. */
  endOfTick(): void;
  /** The `Connection: keep-alive` and `Keep-Alive: timeout=<seconds>` lines of a response head. */
  keepAliveLines(): string;
}

/** What the engine and a response read of a request, with or without a body. */
export interface LeanHead {
  readonly method: string;
  readonly httpVersionMinor: number;
  readonly headers: Record<string, string | string[]>;
  readonly conn: MessageConnection;
  upgrade: boolean;
}

export class LeanRequest extends Readable implements LeanHead {
  readonly method: string;
  readonly url: string;
  readonly httpVersion: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly headers: Record<string, string | string[]>;
  readonly rawHeaders: string[];
  /** The whole body was read from the connection (or there is none). */
  complete: boolean;
  socket: Socket;
  /** node:http's flag; the lean engine hands real tunnels over before a request is made. */
  upgrade: boolean;
  readonly trailers: Record<string, string>;
  readonly conn: MessageConnection;

  constructor(
    conn: MessageConnection,
    method: string,
    url: string,
    minor: number,
    rawHeaders: string[],
    headers: Record<string, string | string[]>,
    complete: boolean,
  ) {
    super();
    this.conn = conn;
    this.socket = conn.socket;
    this.method = method;
    this.url = url;
    this.httpVersionMajor = 1;
    this.httpVersionMinor = minor;
    this.httpVersion = minor === 1 ? '1.1' : '1.0';
    this.rawHeaders = rawHeaders;
    this.headers = headers;
    this.complete = complete;
    this.upgrade = false;
    this.trailers = {};
    if (complete) this.push(null);
  }

  override _read(): void {
    this.conn.onBodyRead();
  }
}

async function* noBytes(): AsyncGenerator<Buffer> {}

/** EventEmitter's own fields, which its methods read (and make on first use when absent). */
interface EmitterFields {
  _events: Record<string, unknown> | undefined;
  _eventsCount: number;
  _maxListeners: number | undefined;
}

/**
 * A base class with EventEmitter's prototype and without its constructor's listener table: every
 * EventEmitter method takes an absent table (`_events` undefined) and the first on() makes it.
 */
function LazyEmitterBase(this: EmitterFields): void {
  this._events = undefined;
  this._eventsCount = 0;
  this._maxListeners = undefined;
}
Object.setPrototypeOf(LazyEmitterBase.prototype, EventEmitter.prototype);
const LazyEmitter = LazyEmitterBase as unknown as typeof EventEmitter;

/**
 * A request without a body (no Content-Length above 0, no Transfer-Encoding: most requests): the fields
 * of LeanRequest and a stream that is over before it starts, without a Readable's state, its end pushed
 * and the tick that announces it. Nothing reads the body of such a request; what a caller might still
 * do with a stream is harmless here: iterate it (nothing), resume, pause, destroy, listen.
 *
 * An EventEmitter whose listener table is made by the first on() (LazyEmitter): EventEmitter's own
 * constructor made one, a dictionary-mode object, per request for nobody (nothing listens to a
 * bodiless request).
 */
export class LeanBodilessRequest extends LazyEmitter implements LeanHead {
  readonly method: string;
  readonly url: string;
  readonly httpVersion: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly headers: Record<string, string | string[]>;
  readonly rawHeaders: string[];
  readonly complete: boolean;
  socket: Socket;
  upgrade: boolean;
  readonly trailers: Record<string, string>;
  readonly conn: MessageConnection;
  destroyed: boolean;
  readonly readableEnded: boolean;

  constructor(
    conn: MessageConnection,
    method: string,
    url: string,
    minor: number,
    rawHeaders: string[],
    headers: Record<string, string | string[]>,
  ) {
    super();
    this.conn = conn;
    this.socket = conn.socket;
    this.method = method;
    this.url = url;
    this.httpVersionMajor = 1;
    this.httpVersionMinor = minor;
    this.httpVersion = minor === 1 ? '1.1' : '1.0';
    this.rawHeaders = rawHeaders;
    this.headers = headers;
    this.complete = true;
    this.upgrade = false;
    this.trailers = {};
    this.destroyed = false;
    this.readableEnded = true;
  }

  read(): null {
    return null;
  }

  resume(): this {
    return this;
  }

  pause(): this {
    return this;
  }

  destroy(): this {
    this.destroyed = true;
    return this;
  }

  [Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    return noBytes();
  }
}

/** Node's checks on outgoing header names and values (lib/_http_common.js). */
const TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function invalidHeader(name: string): Error {
  return Object.assign(new TypeError(`Invalid character in header content ["${name}"]`), { code: 'ERR_INVALID_CHAR' });
}

/** Queued output may hold this much before write() says wait (node:http's highWaterMark). */
const HIGH_WATER_MARK = 64 * 1024;
const LAST_CHUNK = '0\r\n\r\n';
const EMPTY = Buffer.alloc(0);
/** Bodies up to this size are copied behind their head into one buffer; larger ones are written as they are. */
const JOIN_LIMIT = 16 * 1024;
const CRLF = '\r\n';
/** Framing fields a head carries, by #field's answer (0 drop, 1 plain, 2 Content-Length, 3 TE, 4 Date, 5 Connection). */
const SEEN_LENGTH = 1;
const SEEN_ENCODING = 2;
const SEEN_DATE = 4;
const SEEN_CONNECTION = 8;
const FLAG_BITS = [0, 0, SEEN_LENGTH, SEEN_ENCODING, SEEN_DATE, SEEN_CONNECTION];

let dateSecond = 0;
let dateLine = '';
/** The Date field, made once a second. */
function date(): string {
  const now = wallNow();
  const s = (now / 1000) | 0;
  if (s !== dateSecond) {
    dateSecond = s;
    dateLine = `Date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

export class LeanResponse extends LazyEmitter {
  readonly req: LeanHead;
  readonly conn: MessageConnection;
  /** The connection, once this response's turn on it has come (null while earlier answers go out). */
  socket: Socket | null;
  statusCode: number;
  headersSent: boolean;
  writableEnded: boolean;
  writableFinished: boolean;
  shouldKeepAlive: boolean;
  /** The connection closes after this response (Connection: close, said by either side). */
  last: boolean;
  closed: boolean;
  /** The head, made by writeHead and sent with the first body bytes. */
  head: string;
  chunked: boolean;
  hasBody: boolean;
  /** Output held while the response waits for its turn (pipelining), and its size. */
  queued: (string | Buffer)[] | null;
  queuedBytes: number;
  needDrain: boolean;
  /** The head and first body bytes of a small answer, held by write() for end() (one write). */
  pendingOut: Buffer | string | null;

  constructor(req: LeanHead, keepAlive: boolean) {
    super();
    this.req = req;
    this.conn = req.conn;
    this.socket = null;
    this.statusCode = 200;
    this.headersSent = false;
    this.writableEnded = false;
    this.writableFinished = false;
    this.shouldKeepAlive = keepAlive;
    this.last = !keepAlive;
    this.closed = false;
    this.head = '';
    this.chunked = false;
    this.hasBody = req.method !== 'HEAD';
    this.queued = null;
    this.queuedBytes = 0;
    this.needDrain = false;
    this.pendingOut = null;
    // The events a response has, in a table of fixed shape (as Node's streams do), in place of the
    // dictionary-mode one EventEmitter's constructor makes (LazyEmitter makes none): every response
    // gets a 'close' listener (entry.ts) and emits 'finish' and 'close'.
    (this as unknown as EmitterFields)._events = {
      close: undefined,
      finish: undefined,
      drain: undefined,
      socket: undefined,
      error: undefined,
    };
  }

  get writableNeedDrain(): boolean {
    return this.socket !== null ? this.socket.writableNeedDrain : this.queuedBytes >= HIGH_WATER_MARK;
  }

  get finished(): boolean {
    return this.writableEnded;
  }

  /** Headers as an object or a flat [name, value, …] array (values may be arrays: one line each). */
  writeHead(status: number, headers?: Record<string, string | number | readonly string[]> | readonly string[]): this {
    let head = this.#statusLine(status);
    let seen = 0;
    if (headers !== undefined) {
      if (Array.isArray(headers)) {
        head = this.#pairs(head, headers as readonly (string | readonly string[])[], true);
        seen = this.#seen;
      } else {
        const h = headers as Record<string, string | number | readonly string[]>;
        for (const name in h) {
          const raw = h[name]!;
          const value = typeof raw === 'number' ? String(raw) : raw;
          const flags = this.#field(name, value, true);
          if (flags === 0) continue;
          seen |= FLAG_BITS[flags]!;
          head += fieldLines(name, value);
        }
      }
    }
    return this.#endHead(head, seen);
  }

  /**
   * writeHead with pairs whose characters are known good (the strict upstream parser checked them:
   * pipeline/forward.ts), and `extra` pairs the phases add, checked as writeHead checks everything.
   */
  writeCheckedHead(status: number, checked: readonly string[], extra: readonly string[] | null): this {
    let head = this.#pairs(this.#statusLine(status), checked, false);
    let seen = this.#seen;
    if (extra !== null) {
      head = this.#pairs(head, extra, true);
      seen |= this.#seen;
    }
    return this.#endHead(head, seen);
  }

  /**
   * The head of an upstream's answer straight from the lean pool's parse (`buf`, offsets relative to
   * `base`, a kind per field: core/http1.ts), the same bytes writeCheckedHead(clientResponsePairs(…))
   * writes: hop-by-hop and Connection fields out, Via joined and ours added, Content-Length dropped on
   * a 204; no name compared, and one string per run of adjacent `name: value` lines, sliced as they
   * came. A head with a Connection field that names other fields takes the pairs' way (the names then
   * have to be compared). `extra` (the phases' pairs) is checked as writeHead checks everything.
   */
  writeUpstreamHead(
    status: number,
    buf: Buffer,
    base: number,
    up: UpstreamHead,
    via: string,
    extra: readonly string[] | null,
  ): this {
    if ((up.mask & (1 << FieldKind.ConnectionNames)) !== 0)
      return this.writeCheckedHead(status, clientResponsePairs(buf, base, up.fields, via, up.kinds), extra);
    let head = this.#statusLine(status);
    const fields = up.fields;
    const kinds = up.kinds;
    let seen = 0;
    let priorVia = '';
    // The run of kept lines being gathered: buf[runStart, runEnd) (lines and the CRLFs between them).
    let runStart = -1;
    let runEnd = -1;
    for (let i = 0, k = 0; i < kinds.length; i++, k += 4) {
      const kind = kinds[i]!;
      const ns = base + fields[k]!;
      const ne = base + fields[k + 1]!;
      const vs = base + fields[k + 2]!;
      const ve = base + fields[k + 3]!;
      if (kind !== FieldKind.Other) {
        if (kind === FieldKind.Hop || kind === FieldKind.Connection) continue;
        if (kind === FieldKind.Via) {
          const v = latin1(buf, vs, ve);
          priorVia = priorVia === '' ? v : `${priorVia}, ${v}`;
          continue;
        }
        if (kind === FieldKind.ContentLength) {
          // Never on a 204 (as #field): the run ends before it.
          if (status === 204) continue;
          seen |= SEEN_LENGTH;
        } else if (kind === FieldKind.Date) seen |= SEEN_DATE;
      }
      // The usual line `name: value` (the parser put the colon right after the name; one space) is taken
      // as it came, and with the lines before it when nothing lies between but their CRLF (no OWS after
      // the last value, no line left out).
      if (vs === ne + 2 && buf[ne + 1] === 0x20) {
        if (runStart !== -1 && ns === runEnd + 2) {
          runEnd = ve;
          continue;
        }
        if (runStart !== -1) head += `${latin1(buf, runStart, runEnd)}\r\n`;
        runStart = ns;
        runEnd = ve;
        continue;
      }
      if (runStart !== -1) {
        head += `${latin1(buf, runStart, runEnd)}\r\n`;
        runStart = runEnd = -1;
      }
      head += `${latin1(buf, ns, ne)}: ${latin1(buf, vs, ve)}\r\n`;
    }
    if (runStart !== -1) head += `${latin1(buf, runStart, runEnd)}\r\n`;
    head += priorVia === '' ? `via: 1.1 ${via}\r\n` : `via: ${priorVia}, 1.1 ${via}\r\n`;
    if (extra !== null) {
      head = this.#pairs(head, extra, true);
      seen |= this.#seen;
    }
    return this.#endHead(head, seen);
  }

  #statusLine(status: number): string {
    if (this.headersSent) throw Object.assign(new Error('headers already sent'), { code: 'ERR_HTTP_HEADERS_SENT' });
    this.statusCode = status;
    return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`;
  }

  /** Which framing fields the last #pairs call met (FLAG_BITS). */
  #seen = 0;

  /** Append flat [name, value, …] pairs to `head`; `check`: validate their characters. */
  #pairs(head: string, pairs: readonly (string | readonly string[])[], check: boolean): string {
    let seen = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const name = pairs[i] as string;
      const value = pairs[i + 1] as string | readonly string[];
      const flags = this.#field(name, value, check);
      if (flags === 0) continue;
      head += fieldLines(name, value);
      seen |= FLAG_BITS[flags]!;
    }
    this.#seen = seen;
    return head;
  }

  /** The framing and connection fields node:http adds, then the head is ready to go with the first bytes. */
  #endHead(head: string, seen: number): this {
    const status = this.statusCode;
    if ((seen & SEEN_DATE) === 0) head += date();
    if (!this.shouldKeepAlive) this.last = true;
    const bodyAllowed = this.hasBody && status !== 204 && status !== 304 && !(status >= 100 && status < 200);
    if (!bodyAllowed) this.hasBody = false;
    else if ((seen & (SEEN_LENGTH | SEEN_ENCODING)) === 0) {
      // No length known: chunked for HTTP/1.1, the connection's end for HTTP/1.0 (as node:http).
      if (this.req.httpVersionMinor === 1) {
        this.chunked = true;
        head += 'Transfer-Encoding: chunked\r\n';
      } else this.last = true;
    }
    if ((seen & SEEN_CONNECTION) === 0) {
      head += this.last ? 'Connection: close\r\n' : this.conn.keepAliveLines();
    }
    this.head = `${head}\r\n`;
    this.headersSent = true;
    return this;
  }

  /** Validate one field; 0 drop, 1 plain, 2 Content-Length, 3 Transfer-Encoding, 4 Date, 5 Connection. */
  #field(name: string, value: string | readonly string[], check: boolean): number {
    if (check) {
      if (!TOKEN.test(name)) throw invalidHeader(name);
      if (typeof value === 'string') {
        if (INVALID_VALUE.test(value)) throw invalidHeader(name);
      } else for (const v of value) if (INVALID_VALUE.test(v)) throw invalidHeader(name);
    }
    switch (name.length) {
      case 14:
        if (!sameName(name, 'content-length')) return 1;
        // Never on a 204 (RFC 9110 §8.6; nginx drops it too): an origin's copy passed on would have a
        // downstream parser that honours it wait for bytes that never come, or take the next answer's.
        return this.statusCode === 204 ? 0 : 2;
      case 17:
        if (!sameName(name, 'transfer-encoding')) return 1;
        this.chunked = typeof value === 'string' && value.toLowerCase() === 'chunked';
        return 3;
      case 4:
        return sameName(name, 'date') ? 4 : 1;
      case 10:
        if (!sameName(name, 'connection')) return 1;
        if (typeof value === 'string' && value.toLowerCase().includes('close')) this.last = true;
        return 5;
      default:
        return 1;
    }
  }

  /** Invite the request body (Expect: 100-continue): only when the final head has not gone yet. */
  writeContinue(): void {
    if (this.socket === null || this.headersSent || this.socket.destroyed) return;
    this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  write(chunk: string | Buffer): boolean {
    if (this.writableEnded || this.closed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    if (!this.hasBody || chunk.length === 0) return !this.writableNeedDrain;
    const s = this.socket;
    if (s === null) return this.#queue(chunk, false);
    if (!this.chunked && this.head !== '' && chunk.length <= JOIN_LIMIT) {
      // The first bytes of a small answer: held until end() (usually in the same tick: the whole
      // answer is then one buffer and one write, its finish riding it) or the end of this tick.
      // Nothing is written now, so nothing to cork: the socket's write path stays the direct one.
      this.conn.endOfTick();
      this.pendingOut = this.#withHead(chunk);
      return true;
    }
    this.conn.cork();
    this.flushPending();
    if (this.chunked) {
      this.#flushHead(s);
      s.write(`${Buffer.byteLength(chunk).toString(16)}\r\n`, 'latin1');
      s.write(chunk);
      return s.write(CRLF, 'latin1');
    }
    return s.write(this.#withHead(chunk));
  }

  /** Write the held first bytes (the end of the tick came first, or more bytes follow). */
  flushPending(): void {
    const out = this.pendingOut;
    if (out === null) return;
    this.pendingOut = null;
    if (this.socket !== null && !this.closed) this.socket.write(out);
  }

  end(chunk?: string | Buffer): this {
    if (this.writableEnded || this.closed) return this;
    if (!this.headersSent) this.writeHead(this.statusCode);
    this.writableEnded = true;
    const body = chunk !== undefined && chunk.length > 0 && this.hasBody ? chunk : null;
    const s = this.socket;
    if (s === null) {
      if (body !== null) this.#queue(body, true);
      else if (this.chunked) this.#queue(LAST_CHUNK, true);
      else if (this.head !== '') this.#queue('', true);
      return this;
    }
    if (!this.chunked && this.#oneWrite(body)) {
      // The whole answer in one buffer (the head and body held by write(), or joined here): one
      // direct write with the finish on it, no cork and no end-of-tick flush.
      const out = this.pendingOut;
      if (out !== null) {
        this.pendingOut = null;
        this.conn.finishing(this, out);
      } else if (body !== null) this.conn.finishing(this, this.#withHead(body));
      else if (this.head !== '') {
        const head = this.head;
        this.head = '';
        this.conn.finishing(this, head);
      } else this.conn.finishing(this, EMPTY);
      return this;
    }
    this.conn.cork();
    this.flushPending();
    if (this.chunked) {
      this.#flushHead(s);
      if (body === null) this.conn.finishing(this, LAST_CHUNK);
      else {
        s.write(`${Buffer.byteLength(body).toString(16)}\r\n`, 'latin1');
        s.write(body);
        this.conn.finishing(this, `\r\n${LAST_CHUNK}`);
      }
    } else if (body !== null) this.conn.finishing(this, this.#withHead(body));
    else if (this.head !== '') {
      const head = this.head;
      this.head = '';
      this.conn.finishing(this, head);
    } else this.conn.finishing(this, EMPTY);
    return this;
  }

  /** Whether end(body) of a response with a length (not chunked) is one write: nothing held, or nothing more. */
  #oneWrite(body: string | Buffer | null): boolean {
    if (this.pendingOut !== null) return body === null;
    if (body === null || this.head === '') return true;
    return (typeof body === 'string' ? Buffer.byteLength(body) : body.length) <= JOIN_LIMIT;
  }

  /**
   * `body` with the pending head before it in one buffer when it is small (one write, one syscall for
   * the whole answer); a large body goes after the head unjoined (zero copies of it).
   */
  #withHead(body: string | Buffer): string | Buffer {
    const head = this.head;
    if (head === '') return body;
    this.head = '';
    const bodyLength = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    if (bodyLength > JOIN_LIMIT) {
      this.socket!.write(head, 'latin1');
      return body;
    }
    const out = Buffer.allocUnsafe(head.length + bodyLength);
    out.write(head, 0, 'latin1');
    if (typeof body === 'string') out.write(body, head.length, 'utf8');
    else body.copy(out, head.length);
    return out;
  }

  #flushHead(s: Socket): void {
    if (this.head === '') return;
    s.write(this.head, 'latin1');
    this.head = '';
  }

  /** Keep output until this response's turn (framing applied now, so the order of bytes is final). */
  #queue(chunk: string | Buffer, _end: boolean): boolean {
    const q = (this.queued ??= []);
    if (this.head !== '') {
      q.push(Buffer.from(this.head, 'latin1'));
      this.queuedBytes += this.head.length;
      this.head = '';
    }
    if (chunk.length > 0) {
      const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (this.chunked && chunk !== LAST_CHUNK) {
        q.push(Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'), data, Buffer.from(CRLF, 'latin1'));
        if (this.writableEnded) q.push(Buffer.from(LAST_CHUNK, 'latin1'));
      } else q.push(data);
      this.queuedBytes += data.length;
    }
    const ok = this.queuedBytes < HIGH_WATER_MARK;
    if (!ok) this.needDrain = true;
    return ok;
  }

  /** This response's turn on the connection: send what it holds (and finish it if it ended). */
  attach(s: Socket): void {
    this.socket = s;
    this.emit('socket', s);
    const q = this.queued;
    let ok = true;
    if (q !== null || this.writableEnded) {
      this.conn.cork();
      if (q !== null) for (const b of q) ok = s.write(b);
      if (this.head !== '') this.#flushHead(s);
      this.queued = null;
      this.queuedBytes = 0;
      if (this.writableEnded) this.conn.finishing(this, EMPTY);
    }
    if (this.needDrain && ok) {
      this.needDrain = false;
      this.emit('drain');
    }
  }

  /** The last bytes are flushed to the connection. */
  onFinished(): void {
    if (this.closed) return;
    this.writableFinished = true;
    this.emit('finish');
  }

  /** Once: after the finish, or when the connection closed first (then writableFinished is false). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }

  destroy(): this {
    if (!this.closed) this.conn.socket.destroy();
    return this;
  }

  // node:http surface the phases do not use but tolerant callers may: kept harmless.
  setHeader(): this {
    return this;
  }
}

/**
 * Whether a field name (tchar only: checked, or from the strict parser) is `lower` in any case, of the
 * same length, without a lower-cased copy: among tchar, only a letter's capital ORs to it with 0x20.
 */
function sameName(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

function fieldLines(name: string, value: string | readonly string[]): string {
  if (typeof value === 'string') return `${name}: ${value}\r\n`;
  let out = '';
  for (const v of value) out += `${name}: ${v}\r\n`;
  return out;
}
