// The request and response classes of the HTTP/2 entry: node:http2's compatibility objects, made to
// read as the HTTP/1.1 ones the phases were written against, and made safe to write to.
// - H2Request: rawHeaders without pseudo-headers, Host from `:authority`, the Cookie crumbs joined
//   (RFC 9113 §8.2.3), and a body of unknown length marked `transfer-encoding: chunked` in `headers`
//   (the forward path streams it as it streams an HTTP/1.1 chunked body).
// - H2Response: writeHead drops what HTTP/2 forbids (connection-specific fields: node:http2 throws
//   on them, and an upstream sending `Connection` or `HTTP2-Settings` must not crash or wedge a reply)
//   and keeps the first of a field HTTP/2 allows once.
// Both are node:http2's own classes (createServer's Http2ServerRequest / Http2ServerResponse options):
// the HTTP/1.1 path pays nothing for them.
import http2 from 'node:http2';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { ReadableOptions } from 'node:stream';
import type { RequestContext } from '../../pipeline/context.ts';

/** Fields that describe one HTTP/1.1 connection: never sent on an HTTP/2 stream (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'te',
]);

/** Fields node:http2 takes only once per head (lib/internal/http2/util.js kSingleValueHeaders). */
const SINGLE_VALUE = new Set([
  'access-control-allow-credentials',
  'access-control-max-age',
  'access-control-request-method',
  'age',
  'authorization',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'dnt',
  'etag',
  'expires',
  'from',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'range',
  'referer',
  'retry-after',
  'tk',
  'upgrade-insecure-requests',
  'user-agent',
  'x-content-type-options',
]);

export class H2Request extends http2.Http2ServerRequest {
  /** The fields as an HTTP/1.1 request would carry them: Host first, no pseudo-header, one Cookie. */
  readonly h1Raw: string[];
  /** The decoded head's size as HPACK counts it (RFC 7541 §4.1: name, value and 32 per field). */
  readonly headBytes: number;

  /** The connection's books (set by the entry): its request bytes count toward what the client asked for. */
  counter: { payload: number } | null = null;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, options: ReadableOptions, raw: string[]) {
    super(stream, headers, options, raw);
    this.h1Raw = h1View(headers, raw, stream.endAfterHeaders);
    let bytes = 0;
    for (let i = 0; i < raw.length; i++) bytes += raw[i]!.length;
    this.headBytes = bytes + 16 * raw.length;
  }

  // node:http2 hands each DATA frame's bytes to push(): counted as payload for the entry's flood rule.
  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (this.counter !== null && chunk !== null) this.counter.payload += (chunk as Buffer).length;
    return super.push(chunk, encoding);
  }
}
// `rawHeaders` is an accessor of node:http2's class; TypeScript's types call it a property.
Object.defineProperty(H2Request.prototype, 'rawHeaders', {
  get(this: H2Request) {
    return this.h1Raw;
  },
});

/**
 * The HTTP/1.1 reading of an HTTP/2 head. `headers` (node:http2's object, cookies already joined) gains
 * `host` from `:authority` and, for a body without Content-Length, `transfer-encoding: chunked`.
 * A Host field that names another authority than `:authority` is kept beside it: the edge phase refuses
 * the two as a duplicate Host (RFC 9113 §8.3.1: such a request is malformed).
 */
function h1View(headers: IncomingHttpHeaders, raw: string[], ended: boolean): string[] {
  const authority = headers[':authority'];
  const out: string[] = [];
  if (authority !== undefined) {
    out.push('host', authority);
    if (headers.host === undefined) headers.host = authority;
  }
  let cookieAt = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    if (name === 'host' && raw[i + 1] === authority) continue;
    if (name === 'cookie') {
      if (cookieAt !== -1) continue;
      cookieAt = out.length;
      out.push(name, headers.cookie as string);
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  // HTTP/2 frames the body itself: no Content-Length and no END_STREAM on the head is a body of
  // unknown length, which is what a chunked HTTP/1.1 body is to the forward path and the limits.
  if (!ended && headers['content-length'] === undefined) headers['transfer-encoding'] = 'chunked';
  return out;
}

type Head = Record<string, string | number | readonly string[] | undefined> | readonly string[];

export class H2Response extends http2.Http2ServerResponse {
  /** The request's context (the entry's `done` reads it on close). */
  ctx: RequestContext | null = null;
  /** The entry's books of the connection (kept here: a closed stream no longer names its session). */
  owner: object | null = null;
  /** performance.now() when a write first waited on the client's flow-control window (0: not waiting). */
  stallSince = 0;

  override writeHead(status: number, a?: unknown, b?: unknown): this {
    const head = (b ?? (typeof a === 'string' ? undefined : a)) as Head | undefined;
    try {
      super.writeHead(status, head === undefined ? undefined : (forH2(head) as never));
    } catch (err) {
      // node:http2 keeps the fields of a failed writeHead: a second answer (the error reply) would fail
      // on them again. Cleared, the gateway's own reply can still go out.
      for (const name of this.getHeaderNames()) this.removeHeader(name);
      throw err;
    }
    return this;
  }
}

/** A head with what HTTP/2 forbids removed, one copy of each single-value field (the first). */
function forH2(head: Head): string[] | Record<string, string | number | readonly string[] | undefined> {
  if (Array.isArray(head)) {
    const flat = head as readonly string[];
    const out: string[] = [];
    let seen: Set<string> | null = null;
    for (let i = 0; i < flat.length; i += 2) {
      const lower = String(flat[i]).toLowerCase();
      if (CONNECTION_SPECIFIC.has(lower) || lower.charCodeAt(0) === 58) continue;
      if (SINGLE_VALUE.has(lower)) {
        if (seen?.has(lower)) continue;
        (seen ??= new Set()).add(lower);
      }
      out.push(lower, flat[i + 1]!);
    }
    return out;
  }
  const out: Record<string, string | number | readonly string[] | undefined> = {};
  const obj = head as Record<string, string | number | readonly string[] | undefined>;
  for (const name in obj) {
    const lower = name.toLowerCase();
    if (CONNECTION_SPECIFIC.has(lower) || lower.charCodeAt(0) === 58) continue;
    const value = obj[name];
    out[lower] = SINGLE_VALUE.has(lower) && Array.isArray(value) ? value[0] : value;
  }
  return out;
}
