// The lean engine's HTTP/1.1 request parser: strict, table-driven, incremental, in TS. A head is
// scanned once, byte by byte through character tables, and only offsets are recorded while scanning;
// strings are made once the head is complete and valid. It resumes where it stopped when a head spans
// several reads (a 1-byte-at-a-time client costs one pass, not one per byte). Bodies are framed by
// the same strict rules (Content-Length digits only, chunk sizes in hex only, CRLF everywhere).
//
// What it refuses, and with which code (the codes the node engine gives for the same shapes, through
// llhttp's error and entry.ts's parseErrorCode, so both engines answer alike):
// - RMP_ERR_EDGE_SMUGGLING: Content-Length with Transfer-Encoding; two Content-Length fields or a list;
//   a Content-Length that is not 1*DIGIT; a Transfer-Encoding other than exactly `chunked`, twice, or on
//   HTTP/1.0; obs-fold; a bare CR or LF in the head; a control byte (NUL included) in a field; a space
//   before a colon; an invalid chunk size, extension or chunk line ending;
// - RMP_ERR_EDGE_BAD_REQUEST: a bad request line (a method llhttp does not know, a target byte outside
//   visible ASCII, a version other than HTTP/1.0 and 1.1);
// - RMP_ERR_EDGE_HEADERS_TOO_LARGE: a head (or trailer section) longer than limits.maxHeaderBytes.
// Duplicate or missing Host, the target's form, the URL length and the field count are judged by the
// `edge` and `identify` phases, on both engines alike.
import { METHODS as HTTP_METHODS } from 'node:http';
import type { ErrorCode } from '../../core/errors.ts';
import { equalsLower, latin1, TCHAR, VALCH } from '../../core/http1.ts';

export { ChunkedDecoder } from '../../core/http1.ts';

/** Bytes of a request target: visible ASCII only (llhttp refuses the rest, bytes >= 0x80 included). */
const URLCH = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) URLCH[c] = 1;

/** The methods llhttp knows (node:http's METHODS), case-sensitive: any other is a bad request there too. */
// Mapped to node:http's own strings: the method every phase compares (`=== 'GET'`) is then one string,
// not a fresh copy per request.
const METHODS = new Map(HTTP_METHODS.map((m) => [m, m]));

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;

// Head states.
const S_START = 0; // before the method (empty lines allowed here, as llhttp)
const S_START_LF = 1;
const S_METHOD = 2;
const S_URL = 3;
const S_VERSION = 4; // 'HTTP/1.x' matched byte by byte
const S_LINE_CR = 5;
const S_FIELD_START = 6;
const S_NAME = 7;
const S_OWS = 8;
const S_VALUE = 9;
const S_VALUE_LF = 10;
const S_HEAD_LF = 11;

const VERSION = 'HTTP/1.';

/** Field names whose framing meaning the parser reads itself (lower-case, compared case-insensitively). */
const F_OTHER = 0;
const F_CONTENT_LENGTH = 1;
const F_TRANSFER_ENCODING = 2;
const F_CONNECTION = 3;
const F_UPGRADE = 4;

/** The parsed head of one request: offsets into the bytes it was read from, then strings once complete. */
export class HeadParser {
  state = S_START;
  /** Scan position, relative to the head's first byte. */
  pos = 0;
  /** Where the request line begins (after leading empty lines), relative to the head's first byte. */
  lineStart = 0;
  methodEnd = 0;
  methodName = '';
  urlStart = 0;
  urlEnd = 0;
  versionMinor = 0;
  /** Field offsets (name start, name end, value start, value end), relative; up to `maxFields` fields. */
  fields: Int32Array;
  fieldCount = 0;
  /** Fields past `maxFields` are still scanned and checked, not kept (the `edge` phase refuses the count). */
  readonly maxFields: number;
  nameStart = 0;
  nameEnd = 0;
  valueStart = 0;
  valueEnd = 0;
  /** Framing: -1 without Content-Length. */
  contentLength = -1;
  chunked = false;
  sawTransferEncoding = false;
  connClose = false;
  connKeepAlive = false;
  connUpgrade = false;
  hasUpgrade = false;
  error: ErrorCode | '' = '';

  constructor(maxFields: number) {
    this.maxFields = maxFields;
    this.fields = new Int32Array(Math.min(maxFields, 32) * 4);
  }

  reset(): void {
    this.state = S_START;
    this.pos = 0;
    this.lineStart = 0;
    this.fieldCount = 0;
    this.contentLength = -1;
    this.chunked = false;
    this.sawTransferEncoding = false;
    this.connClose = false;
    this.connKeepAlive = false;
    this.connUpgrade = false;
    this.hasUpgrade = false;
    this.error = '';
  }

  /** Whether any byte of a request (beyond empty lines) has been seen. */
  get started(): boolean {
    return this.state !== S_START || this.pos > 0;
  }

  #fail(code: ErrorCode): number {
    this.error = code;
    return -2;
  }

  /**
   * Scan the head in buf[base, end) from where the last call stopped. Returns the offset (relative to
   * base) just past the head's final CRLF, -1 when more bytes are needed, -2 on an error (`error`).
   */
  execute(buf: Buffer, base: number, end: number): number {
    let i = base + this.pos;
    let state = this.state;
    for (; i < end; i++) {
      const c = buf[i]!;
      switch (state) {
        case S_START:
          if (c === CR) state = S_START_LF;
          else if (TCHAR[c] === 1) {
            this.lineStart = i - base;
            state = S_METHOD;
          } else return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          break;
        case S_START_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          state = S_START;
          break;
        case S_METHOD:
          if (TCHAR[c] === 1) break;
          if (c !== SP) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          this.methodEnd = i - base;
          {
            const at = base + this.lineStart;
            // GET, most requests: no string made for it.
            const name =
              i - at === 3 && buf[at] === 0x47 && buf[at + 1] === 0x45 && buf[at + 2] === 0x54
                ? 'GET'
                : METHODS.get(latin1(buf, at, i));
            if (name === undefined) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
            this.methodName = name;
          }
          this.urlStart = i + 1 - base;
          state = S_URL;
          break;
        case S_URL: {
          // Tight loops for the target, names and values (most of a head's bytes): no dispatch per byte.
          // Out of bytes, i is left at end - 1 (the loop's i++ then ends it) and the state resumes.
          let j = i;
          while (j < end && URLCH[buf[j]!] === 1) j++;
          if (j === end) {
            i = j - 1;
            break;
          }
          i = j;
          if (buf[j] !== SP || i - base === this.urlStart) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          this.urlEnd = i - base;
          state = S_VERSION;
          break;
        }
        case S_VERSION: {
          const k = i - base - this.urlEnd - 1;
          if (k < 7) {
            if (c !== VERSION.charCodeAt(k)) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          } else if (c === 0x30 || c === 0x31) {
            this.versionMinor = c - 0x30;
            state = S_LINE_CR;
          } else return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          break;
        }
        case S_LINE_CR:
          // A bare LF after the version is what llhttp calls an invalid version: a bad request.
          if (c !== CR) return this.#fail('RMP_ERR_EDGE_BAD_REQUEST');
          state = S_VALUE_LF;
          break;
        case S_FIELD_START:
          if (TCHAR[c] === 1) {
            this.nameStart = i - base;
            state = S_NAME;
          } else if (c === CR) state = S_HEAD_LF;
          // SP/HTAB here is obs-fold, LF a bare LF, anything else no field name: all refused as smuggling.
          else return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          break;
        case S_NAME: {
          let j = i;
          while (j < end && TCHAR[buf[j]!] === 1) j++;
          if (j === end) {
            i = j - 1;
            break;
          }
          i = j;
          // A space before the colon (`Transfer-Encoding : chunked`) is a classic smuggling shape.
          if (buf[j] !== 0x3a) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          this.nameEnd = i - base;
          state = S_OWS;
          break;
        }
        case S_OWS:
          if (c === SP || c === HTAB) break;
          if (c === CR) {
            this.valueStart = this.valueEnd = i - base;
            state = S_VALUE_LF;
            if (!this.#field(buf, base)) return -2;
            break;
          }
          if (VALCH[c] !== 1) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          this.valueStart = i - base;
          this.valueEnd = i + 1 - base;
          state = S_VALUE;
          break;
        case S_VALUE: {
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
          if (buf[j] !== CR) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          state = S_VALUE_LF;
          if (!this.#field(buf, base)) return -2;
          break;
        }
        case S_VALUE_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          state = S_FIELD_START;
          break;
        case S_HEAD_LF:
          if (c !== LF) return this.#fail('RMP_ERR_EDGE_SMUGGLING');
          this.state = state;
          this.pos = i + 1 - base;
          return this.#complete(i + 1 - base);
      }
    }
    this.state = state;
    this.pos = i - base;
    return -1;
  }

  /** The head is whole: the framing rules that need every field. */
  #complete(after: number): number {
    if (this.sawTransferEncoding) {
      if (this.contentLength !== -1 || this.versionMinor === 0 || !this.chunked)
        return this.#fail('RMP_ERR_EDGE_SMUGGLING');
    }
    return after;
  }

  /** One field is complete (name and value offsets set): keep it, and read its framing meaning. */
  #field(buf: Buffer, base: number): boolean {
    const n = this.fieldCount++;
    if (n < this.maxFields) {
      if ((n + 1) * 4 > this.fields.length) {
        const grown = new Int32Array(Math.min(this.maxFields, (n + 1) * 2) * 4);
        grown.set(this.fields);
        this.fields = grown;
      }
      const f = n * 4;
      this.fields[f] = this.nameStart;
      this.fields[f + 1] = this.nameEnd;
      this.fields[f + 2] = this.valueStart;
      this.fields[f + 3] = this.valueEnd;
    }
    const kind = fieldKind(buf, base + this.nameStart, this.nameEnd - this.nameStart);
    if (kind === F_OTHER) return true;
    const vs = base + this.valueStart;
    const ve = base + this.valueEnd;
    if (kind === F_CONTENT_LENGTH) {
      // Digits only, once: a second field (even equal), a list, a sign or hex are all ambiguous.
      if (this.contentLength !== -1 || ve === vs || ve - vs > 15) {
        this.error = 'RMP_ERR_EDGE_SMUGGLING';
        return false;
      }
      let v = 0;
      for (let j = vs; j < ve; j++) {
        const d = buf[j]! - 0x30;
        if (d < 0 || d > 9) {
          this.error = 'RMP_ERR_EDGE_SMUGGLING';
          return false;
        }
        v = v * 10 + d;
      }
      this.contentLength = v;
    } else if (kind === F_TRANSFER_ENCODING) {
      if (this.sawTransferEncoding) {
        this.error = 'RMP_ERR_EDGE_SMUGGLING';
        return false;
      }
      this.sawTransferEncoding = true;
      this.chunked = ve - vs === 7 && equalsLower(buf, vs, 'chunked');
    } else if (kind === F_CONNECTION) {
      connectionTokens(this, buf, vs, ve);
    } else this.hasUpgrade = true;
    return true;
  }

  /** The method, target and fields as strings (latin1, as node:http gives them). */
  method(): string {
    return this.methodName;
  }

  url(buf: Buffer, base: number): string {
    return latin1(buf, base + this.urlStart, base + this.urlEnd);
  }

  /** The lower-case names of the fields the last rawHeaders call made, for headersObject (read at once). */
  readonly lowerNames: string[] = [];

  /** [name, value, …] as sent, up to maxFields fields; their lower-case names in `lowerNames`. */
  rawHeaders(buf: Buffer, base: number): string[] {
    const n = Math.min(this.fieldCount, this.maxFields);
    const out = new Array<string>(n * 2);
    const lower = this.lowerNames;
    lower.length = n;
    const f = this.fields;
    for (let k = 0; k < n; k++) {
      const o = k * 4;
      const ns = base + f[o]!;
      const ne = base + f[o + 1]!;
      const known = knownName(buf, ns, ne - ns);
      if (known !== -1) {
        out[2 * k] = KNOWN_NAMES[known]!;
        lower[k] = KNOWN_LOWER[known]!;
      } else {
        const name = latin1(buf, ns, ne);
        out[2 * k] = name;
        lower[k] = name.toLowerCase();
      }
      out[2 * k + 1] = latin1(buf, base + f[o + 2]!, base + f[o + 3]!);
    }
    return out;
  }
}

/**
 * Request field names as browsers and tools spell them: a name whose bytes are exactly one of these is
 * that constant (no string made per request, and an internalised key for req.headers), its lower-case
 * form the constant beside it. Any other spelling is made from its bytes, as before.
 */
const KNOWN_NAMES: readonly string[] = [
  'Host',
  'User-Agent',
  'Accept',
  'Accept-Encoding',
  'Accept-Language',
  'Connection',
  'Cookie',
  'Content-Length',
  'Content-Type',
  'Referer',
  'Origin',
  'Cache-Control',
  'Pragma',
  'Authorization',
  'If-None-Match',
  'If-Modified-Since',
  'Upgrade-Insecure-Requests',
  'Sec-Fetch-Site',
  'Sec-Fetch-Mode',
  'Sec-Fetch-Dest',
  'Sec-Fetch-User',
  'Sec-Ch-Ua',
  'Sec-Ch-Ua-Mobile',
  'Sec-Ch-Ua-Platform',
  'Priority',
  'X-Forwarded-For',
  'X-Requested-With',
].flatMap((n) => [n, n.toLowerCase()]);
const KNOWN_LOWER: readonly string[] = KNOWN_NAMES.map((n) => n.toLowerCase());
/** Indexes into KNOWN_NAMES by name length. */
const KNOWN_BY_LENGTH: readonly (readonly number[])[] = (() => {
  const by: number[][] = [];
  KNOWN_NAMES.forEach((n, i) => {
    while (by.length <= n.length) by.push([]);
    by[n.length]!.push(i);
  });
  return by;
})();

/** The index in KNOWN_NAMES of the name buf[start, start + len) spells exactly, or -1. */
function knownName(buf: Buffer, start: number, len: number): number {
  if (len >= KNOWN_BY_LENGTH.length) return -1;
  const candidates = KNOWN_BY_LENGTH[len]!;
  next: for (let c = 0; c < candidates.length; c++) {
    const i = candidates[c]!;
    const name = KNOWN_NAMES[i]!;
    for (let k = 0; k < len; k++) if (buf[start + k] !== name.charCodeAt(k)) continue next;
    return i;
  }
  return -1;
}

function fieldKind(buf: Buffer, start: number, len: number): number {
  switch (len) {
    case 14:
      return equalsLower(buf, start, 'content-length') ? F_CONTENT_LENGTH : F_OTHER;
    case 17:
      return equalsLower(buf, start, 'transfer-encoding') ? F_TRANSFER_ENCODING : F_OTHER;
    case 10:
      return equalsLower(buf, start, 'connection') ? F_CONNECTION : F_OTHER;
    case 7:
      return equalsLower(buf, start, 'upgrade') ? F_UPGRADE : F_OTHER;
    default:
      return F_OTHER;
  }
}

/** The Connection tokens that matter to the framing: close, keep-alive, upgrade. */
function connectionTokens(p: HeadParser, buf: Buffer, vs: number, ve: number): void {
  let j = vs;
  while (j < ve) {
    while (j < ve && (buf[j] === SP || buf[j] === HTAB || buf[j] === 0x2c)) j++;
    const s = j;
    while (j < ve && buf[j] !== 0x2c) j++;
    let e = j;
    while (e > s && (buf[e - 1] === SP || buf[e - 1] === HTAB)) e--;
    const len = e - s;
    if (len === 5 && equalsLower(buf, s, 'close')) p.connClose = true;
    else if (len === 10 && equalsLower(buf, s, 'keep-alive')) p.connKeepAlive = true;
    else if (len === 7 && equalsLower(buf, s, 'upgrade')) p.connUpgrade = true;
  }
}

// Node's rules for req.headers (lib/_http_incoming.js matchKnownFields): these keep their first
// value, set-cookie is an array, cookie is joined with '; ', every other repeated field with ', '.
const FIRST_WINS = new Set([
  'content-type',
  'content-length',
  'user-agent',
  'referer',
  'host',
  'authorization',
  'proxy-authorization',
  'if-modified-since',
  'if-unmodified-since',
  'from',
  'location',
  'max-forwards',
  'retry-after',
  'etag',
  'last-modified',
  'server',
  'age',
  'expires',
]);

/**
 * req.headers as node:http builds it from rawHeaders (lower-case names, repeated fields joined): a plain
 * object with fast properties, as node:http's (a field named `__proto__` is a string: it sets nothing).
 */
export function headersObject(raw: readonly string[], lower?: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let k = 0; k < raw.length; k += 2) {
    // The parser's lower-case names when it gives them (HeadParser.lowerNames, same order).
    const name = lower !== undefined ? lower[k >> 1]! : raw[k]!.toLowerCase();
    const value = raw[k + 1]!;
    // What is there may be inherited (`constructor`: Object): only an own string or array is a field.
    const had = out[name];
    if (name === 'set-cookie') {
      if (Array.isArray(had)) had.push(value);
      else out[name] = [value];
    } else if (typeof had !== 'string') out[name] = value;
    else if (!FIRST_WINS.has(name)) out[name] = `${had}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return out;
}
