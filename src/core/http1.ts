// HTTP/1.1 framing shared by both directions of the lean engine (issue 17): the character tables of
// RFC 9110/9112, and the chunked decoder (requests from clients in src/server/lean, responses from
// upstreams in src/upstream/h1-pool.ts). No request state: bytes in, offsets and verdicts out.
import type { ErrorCode } from './errors.ts';

/** tchar (RFC 9110 §5.6.2): the bytes of a method or a field name. */
export const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

/** Bytes of a field value: field-vchar, SP and HTAB (obs-text included); no other control byte. */
export const VALCH = new Uint8Array(256);
for (let c = 0x20; c <= 0x7e; c++) VALCH[c] = 1;
for (let c = 0x80; c <= 0xff; c++) VALCH[c] = 1;
VALCH[0x09] = 1;

/** Hex digit values, -1 for anything else. */
export const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}

/** Buffer's own latin1 decoder (what toString('latin1', …) calls, without its argument checks). */
type LatinBuffer = Buffer & { latin1Slice(start: number, end: number): string };
export function latin1(buf: Buffer, start: number, end: number): string {
  return (buf as LatinBuffer).latin1Slice(start, end);
}

/** ASCII case-insensitive comparison of buf[start, start + lower.length) with a lower-case string. */
export function equalsLower(buf: Buffer, start: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) if ((buf[start + k]! | 0x20) !== lower.charCodeAt(k)) return false;
  return true;
}

/**
 * What an upstream response's field is to the readers after the parser (src/upstream/h1-pool.ts records
 * one per field as it parses, from the name's length and bytes): the hop-by-hop filter, the head written
 * to the client, the cache's policy facts, familiarity's Set-Cookie. Nobody compares a name again.
 */
export const FieldKind = {
  /** Any other field: goes on to the client as it is. */
  Other: 0,
  /** Hop-by-hop (RFC 9110 §7.6.1), Connection aside: Keep-Alive, Proxy-Connection, Transfer-Encoding, TE,
   *  Trailer, Upgrade, Proxy-Authenticate, Proxy-Authorization. Never passed on. */
  Hop: 1,
  /** A Connection field whose value lists nothing but `keep-alive` / `close` tokens (and empty ones). */
  Connection: 2,
  /** A Connection field listing anything else: the fields it names are dropped too (by their names). */
  ConnectionNames: 3,
  Via: 4,
  ContentLength: 5,
  Date: 6,
  CacheControl: 7,
  SetCookie: 8,
  Vary: 9,
  Age: 10,
} as const;
export type FieldKind = (typeof FieldKind)[keyof typeof FieldKind];

/**
 * An upstream response head as the lean pool's parser leaves it: per field [nameStart, nameEnd,
 * valueStart, valueEnd] (relative to the head's start) and its kind, and `mask` with bit `1 << kind`
 * set for every kind present (a reader tells at once whether there is anything for it).
 */
export interface UpstreamHead {
  readonly fields: readonly number[];
  readonly kinds: readonly number[];
  readonly mask: number;
}

/**
 * Fields that describe one connection and never cross a proxy (RFC 9110 §7.6.1, and the de-facto
 * Keep-Alive and Proxy-Connection). The one list: request and pairs filters read it; fieldKind's switch
 * below tells the same names apart from bytes (src/core/http1.test.ts holds the two together).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/**
 * The kind of the field named buf[at, at + len) (tchar bytes, checked by the parser), Connection apart:
 * FieldKind.Connection for any Connection field (connectionKind tells which). Told by the length first:
 * a name one byte longer or shorter than a known one (`content-lengthx`) is Other.
 */
export function fieldKind(buf: Buffer, at: number, len: number): FieldKind {
  // The first byte (lower-cased) tells the candidates of one length apart: one comparison per field.
  switch (len) {
    case 2:
      return equalsLower(buf, at, 'te') ? FieldKind.Hop : FieldKind.Other;
    case 3:
      switch (buf[at]! | 0x20) {
        case 0x76:
          return equalsLower(buf, at, 'via') ? FieldKind.Via : FieldKind.Other;
        case 0x61:
          return equalsLower(buf, at, 'age') ? FieldKind.Age : FieldKind.Other;
        default:
          return FieldKind.Other;
      }
    case 4:
      switch (buf[at]! | 0x20) {
        case 0x64:
          return equalsLower(buf, at, 'date') ? FieldKind.Date : FieldKind.Other;
        case 0x76:
          return equalsLower(buf, at, 'vary') ? FieldKind.Vary : FieldKind.Other;
        default:
          return FieldKind.Other;
      }
    case 7:
      switch (buf[at]! | 0x20) {
        case 0x74:
          return equalsLower(buf, at, 'trailer') ? FieldKind.Hop : FieldKind.Other;
        case 0x75:
          return equalsLower(buf, at, 'upgrade') ? FieldKind.Hop : FieldKind.Other;
        default:
          return FieldKind.Other;
      }
    case 10:
      switch (buf[at]! | 0x20) {
        case 0x63:
          return equalsLower(buf, at, 'connection') ? FieldKind.Connection : FieldKind.Other;
        case 0x73:
          return equalsLower(buf, at, 'set-cookie') ? FieldKind.SetCookie : FieldKind.Other;
        case 0x6b:
          return equalsLower(buf, at, 'keep-alive') ? FieldKind.Hop : FieldKind.Other;
        default:
          return FieldKind.Other;
      }
    case 13:
      return equalsLower(buf, at, 'cache-control') ? FieldKind.CacheControl : FieldKind.Other;
    case 14:
      return equalsLower(buf, at, 'content-length') ? FieldKind.ContentLength : FieldKind.Other;
    case 16:
      return equalsLower(buf, at, 'proxy-connection') ? FieldKind.Hop : FieldKind.Other;
    case 17:
      return equalsLower(buf, at, 'transfer-encoding') ? FieldKind.Hop : FieldKind.Other;
    case 18:
      return equalsLower(buf, at, 'proxy-authenticate') ? FieldKind.Hop : FieldKind.Other;
    case 19:
      return equalsLower(buf, at, 'proxy-authorization') ? FieldKind.Hop : FieldKind.Other;
    default:
      return FieldKind.Other;
  }
}

/**
 * A Connection field's kind from its value buf[from, to) (field bytes): Connection when it is a list of
 * nothing but `keep-alive` and `close` (any case, OWS around, empty elements), else ConnectionNames. Errs
 * towards ConnectionNames: anything unusual is then judged by the names' own rules (headers.ts), never
 * taken for a list that names nothing.
 */
export function connectionKind(buf: Buffer, from: number, to: number): FieldKind {
  let i = from;
  while (i < to) {
    let c = buf[i]!;
    while ((c === 0x20 || c === 0x09) && i < to) c = buf[++i]!;
    if (i === to) break;
    if (c !== 0x2c) {
      const first = c | 0x20;
      if (first === 0x6b && i + 10 <= to && equalsLower(buf, i, 'keep-alive')) i += 10;
      else if (first === 0x63 && i + 5 <= to && equalsLower(buf, i, 'close')) i += 5;
      else return FieldKind.ConnectionNames;
      while (i < to && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
      if (i === to) break;
      if (buf[i] !== 0x2c) return FieldKind.ConnectionNames;
    }
    i++;
  }
  return FieldKind.Connection;
}

const CR = 13;
const LF = 10;

// Chunked body states.
const C_SIZE_FIRST = 0;
const C_SIZE = 1;
const C_EXT = 2;
const C_SIZE_LF = 3;
const C_DATA = 4;
const C_DATA_CR = 5;
const C_DATA_LF = 6;
const C_TRAILER_START = 7;
const C_TRAILER = 8;
const C_TRAILER_LF = 9;
const C_END_LF = 10;
const C_DONE = 11;
const C_TRAILER_NAME = 12;

const CONTENT_LENGTH = 'content-length';
const TRANSFER_ENCODING = 'transfer-encoding';

/** Longest chunk-size line extension accepted (llhttp caps them too; they carry nothing we forward). */
const MAX_CHUNK_EXT = 4096;

/**
 * The chunked decoder (RFC 9112 §7.1): data is handed out as sub-ranges of the input, never copied.
 * `next` returns how far it consumed; `dataStart`/`dataEnd` name the data found (dataEnd > dataStart),
 * `done` says the last chunk and the trailers were read, `error` a refusal.
 */
export class ChunkedDecoder {
  state = C_SIZE_FIRST;
  remaining = 0;
  size = 0;
  extLen = 0;
  trailerBytes = 0;
  /** Length of the trailer name being read, and whether it may still be Content-Length / Transfer-Encoding. */
  nameLen = 0;
  nameMayCl = false;
  nameMayTe = false;
  maxTrailerBytes: number;
  dataStart = 0;
  dataEnd = 0;
  error: ErrorCode | '' = '';

  constructor(maxTrailerBytes: number) {
    this.maxTrailerBytes = maxTrailerBytes;
  }

  get done(): boolean {
    return this.state === C_DONE;
  }

  #fail(code: ErrorCode): number {
    this.error = code;
    return -1;
  }

  /** Consume buf[i, end) up to the end of the next data run (or all of it); -1 on an error. */
  next(buf: Buffer, i: number, end: number): number {
    this.dataStart = this.dataEnd = i;
    let state = this.state;
    for (; i < end; i++) {
      const c = buf[i]!;
      switch (state) {
        case C_SIZE_FIRST: {
          const h = HEX[c]!;
          if (h < 0) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          this.size = h;
          this.extLen = 0;
          state = C_SIZE;
          break;
        }
        case C_SIZE: {
          const h = HEX[c]!;
          if (h >= 0) {
            this.size = this.size * 16 + h;
            if (this.size > Number.MAX_SAFE_INTEGER / 16) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          } else if (c === 0x3b) state = C_EXT;
          else if (c === CR) state = C_SIZE_LF;
          else return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        }
        case C_EXT:
          if (c === CR) state = C_SIZE_LF;
          else if (VALCH[c] !== 1 || ++this.extLen > MAX_CHUNK_EXT) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        case C_SIZE_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          if (this.size === 0) {
            state = C_TRAILER_START;
            this.trailerBytes = 0;
          } else {
            this.remaining = this.size;
            state = C_DATA;
          }
          break;
        case C_DATA: {
          const take = Math.min(this.remaining, end - i);
          this.remaining -= take;
          this.dataStart = i;
          this.dataEnd = i + take;
          this.state = this.remaining === 0 ? C_DATA_CR : C_DATA;
          return i + take;
        }
        case C_DATA_CR:
          if (c !== CR) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          state = C_DATA_LF;
          break;
        case C_DATA_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          state = C_SIZE_FIRST;
          break;
        case C_TRAILER_START:
          if (c === CR) state = C_END_LF;
          else if (TCHAR[c] === 1) {
            // A trailer field is a field as in the head (llhttp): a token, a colon without a space before
            // it; and never framing (Content-Length, Transfer-Encoding), which llhttp refuses there too.
            this.nameLen = 1;
            this.nameMayCl = (c | 0x20) === 0x63;
            this.nameMayTe = (c | 0x20) === 0x74;
            state = C_TRAILER_NAME;
          } else return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        case C_TRAILER_NAME:
          if (++this.trailerBytes > this.maxTrailerBytes) return this.#fail('RMP_ERR_EDGE_HEADERS_TOO_LARGE');
          if (TCHAR[c] === 1) {
            const k = this.nameLen++;
            if (this.nameMayCl && (k >= 14 || (c | 0x20) !== CONTENT_LENGTH.charCodeAt(k))) this.nameMayCl = false;
            if (this.nameMayTe && (k >= 17 || (c | 0x20) !== TRANSFER_ENCODING.charCodeAt(k))) this.nameMayTe = false;
          } else if (c === 0x3a) {
            if ((this.nameMayCl && this.nameLen === 14) || (this.nameMayTe && this.nameLen === 17))
              return this.#fail('RMP_ERR_EDGE_SMUGGLING');
            state = C_TRAILER;
          } else return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        case C_TRAILER:
          if (++this.trailerBytes > this.maxTrailerBytes) return this.#fail('RMP_ERR_EDGE_HEADERS_TOO_LARGE');
          if (c === CR) state = C_TRAILER_LF;
          else if (VALCH[c] !== 1) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        case C_TRAILER_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          state = C_TRAILER_START;
          break;
        case C_END_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          this.state = C_DONE;
          return i + 1;
        case C_DONE:
          this.state = state;
          return i;
      }
    }
    this.state = state;
    return i;
  }

  reset(): void {
    this.state = C_SIZE_FIRST;
    this.remaining = 0;
    this.size = 0;
    this.error = '';
  }
}
