// The fuzzing grammar: a seeded PRNG and generators of hostile HTTP/1.1 traffic (request lines, targets,
// headers, bodies, pipelined batches, PROXY protocol headers) plus byte-level mutations. Everything a
// connection sends is a pure function of (seed, connection index, first request id), so any finding can
// be replayed byte for byte (`node bench/fuzz.ts --seed S --replay K`).
//
// Every request carries a marker token naming its id (in the target and in `x-fuzz-id`), with a check
// code so a mutated token is never read as another request's. The harness correlates what the gateway
// answered with what the upstream saw through these tokens.

/** sfc32: small, fast, good enough for test generation, and seedable from a 32-bit integer. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  constructor(seed: number, stream = 0) {
    this.#a = 0x9e3779b9;
    this.#b = seed >>> 0;
    this.#c = (stream * 0x85ebca6b) >>> 0;
    this.#d = 1;
    for (let i = 0; i < 15; i++) this.next();
  }
  next(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.next() / 4294967296) * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() / 4294967296 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Pick by weight: [[weight, value], …]. */
  weighted<T>(xs: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of xs) total += w;
    let r = (this.next() / 4294967296) * total;
    for (const [w, v] of xs) {
      if (r < w) return v;
      r -= w;
    }
    return xs[xs.length - 1]![1];
  }
  hex(bytes: number): string {
    let s = '';
    for (let i = 0; i < bytes; i++) s += (this.next() & 0xff).toString(16).padStart(2, '0');
    return s;
  }
  alnum(n: number): string {
    const A = 'abcdefghijklmnopqrstuvwxyz0123456789';
    let s = '';
    for (let i = 0; i < n; i++) s += A[this.int(36)];
    return s;
  }
}

// ---- marker tokens

/** Check code of an id: 6 base-36 digits of a mixed hash, so a mutated token is almost never valid. */
function check(id: number): string {
  let h = Math.imul(id ^ 0x5bd1e995, 0x27d4eb2d);
  h = Math.imul(h ^ (h >>> 15), 0x165667b1);
  h ^= h >>> 13;
  return ((h >>> 0) % 2176782336).toString(36).padStart(6, '0');
}

/** The marker of request `id`: `fz<id base 36>q<check>`. */
export function token(id: number): string {
  return `fz${id.toString(36)}q${check(id)}`;
}

const TOKEN_RE = /fz([0-9a-z]{1,7})q([0-9a-z]{6})/g;

/** Every valid marker id in `text` (mutated markers fail their check and are ignored). */
export function tokensIn(text: string, into: number[]): void {
  if (text.indexOf('fz') === -1) return;
  TOKEN_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = TOKEN_RE.exec(text)) !== null) {
    const id = parseInt(m[1]!, 36);
    if (check(id) === m[2]) into.push(id);
  }
}

// ---- the plan of one connection

export interface GenRequest {
  id: number;
  /** Method as written (HEAD responses have no body). */
  method: string;
  bytes: Buffer;
  /**
   * A strict parser splits the stream exactly after this request: the next request starts at the
   * next byte. Responses map to requests by position only while this holds.
   */
  framed: boolean;
  /** After this request the connection may become a tunnel or be closed (Upgrade, CONNECT): stop mapping. */
  last: boolean;
  /** Ids of requests hidden inside this one's body or behind its refused framing: none may ever reach the upstream. */
  canaries: number[];
  /** Short names of the features used, for the statistics. */
  tags: string[];
}

export interface ConnPlan {
  seed: number;
  index: number;
  /** 'plain' or 'proxy' (the listener that expects a PROXY header from the trusted address). */
  listener: 'plain' | 'proxy';
  /** Source address to bind (127.0.0.0/8). */
  localAddress: string;
  /** PROXY protocol header to send first (may be broken), or null. */
  proxy: Buffer | null;
  requests: GenRequest[];
  /** How to write: the whole batch at once, in random pieces, or stop short (truncated). */
  write: 'once' | 'pieces' | 'truncate';
  /** For 'pieces' and 'truncate': byte offsets to split (truncate: the last one is where writing stops). */
  cuts: number[];
  /** Ids used by this connection: requests and canaries, from `firstId` to `firstId + idCount - 1`. */
  idCount: number;
}

export interface GrammarOptions {
  /** Source address trusted for PROXY protocol and X-Forwarded-For. */
  trustedAddress: string;
  /** Share of connections on the PROXY-protocol listener. */
  proxyShare?: number;
  /** Most requests pipelined in one connection. */
  maxBatch?: number;
  /** Long targets/headers up to this size (the gateway's limits are smaller: 414/431 paths). */
  bigBytes?: number;
}

const HOT_ADDRESSES = 24;

const METHODS: readonly (readonly [number, string])[] = [
  [60, 'GET'],
  [8, 'HEAD'],
  [12, 'POST'],
  [3, 'PUT'],
  [2, 'DELETE'],
  [2, 'OPTIONS'],
  [2, 'PATCH'],
  [1, 'TRACE'],
  [1, 'CONNECT'],
  [1, 'PRI'],
  [1, 'PROPFIND'],
  [1, 'get'],
  [1, 'G\tET'],
  [1, 'M-SEARCH'],
  [1, 'GET\u00ff'],
  [1, ''],
  [1, 'X'.repeat(40)],
  [1, 'QUERY'],
];

const USER_AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
  'curl/8.5.0',
  'python-requests/2.32',
  'Go-http-client/1.1',
  'fuzz',
  '',
  '\u00e9\u00e8',
  'Mozilla/5.0 (iPhone)',
];

/** Paths of the fuzz config's routes (bench/fuzz.ts). `{t}` is replaced by the marker. */
const PATHS: readonly (readonly [number, string])[] = [
  [14, '/{t}'],
  [10, '/page/{t}'],
  [10, '/track/P{n}?fz={t}'],
  [5, '/static/app{n}.css?fz={t}'],
  [8, '/payments/approve?fz={t}'],
  [8, '/login?fz={t}'],
  [8, '/vault/documents/{n}/{t}'],
  [4, '/vault/profile/{t}'],
  [4, '/room/{t}'],
  [3, '/slow/{t}'],
  [4, '/ws/{t}'],
  [3, '/.rempart/challenge/verify?fz={t}&return=%2F%3C%2Fscript%3E'],
  [2, '/.rempart/{t}'],
  [2, '/big/{t}'],
];

const ODD_SEGMENTS = [
  '%2e%2e/',
  '..%2f',
  '%2e/',
  './',
  '../',
  '//',
  '%2f',
  '%5c',
  '\\',
  '%00',
  '%c0%ae%c0%ae/',
  '%e0%80%ae',
  '%ff',
  '%zz',
  '%',
  '%2',
  ';jsessionid=1',
  ';x=1/',
  '#frag',
  '#',
  '%23',
  '?',
  '??',
  '&',
  '%20',
  '+',
  '~',
  '%7e',
  '\u00e9',
  '%C3%A9',
  '*',
  '@',
  ':',
  '%40evil',
  '/.',
  '/..',
  '%252e%252e/',
  '.%2e/',
  '%2E%2E/',
  '/%2e',
  '/%2E%2e',
];

const HOSTS: readonly (readonly [number, string])[] = [
  [40, 'fuzz.test'],
  [10, 'fuzz.test:8080'],
  [4, 'FUZZ.TEST'],
  [3, 'fuzz.test.'],
  [3, '127.0.0.1'],
  [3, '[::1]:80'],
  [2, 'fuzz.test:80@evil.test'],
  [2, 'user@fuzz.test'],
  [2, 'user:pw@fuzz.test:80'],
  [2, 'fuzz.test:0'],
  [2, 'fuzz.test:99999'],
  [2, 'fuzz.test:abc'],
  [2, ''],
  [1, 'fuzz.test:'],
  [1, ':80'],
  [1, 'fuzz test'],
  [1, 'fuzz.test/x'],
  [1, 'fuzz.test#x'],
  [1, 'fuzz.test?x'],
  [1, '[::1'],
  [1, 'a'.repeat(300)],
  [1, 'xn--e1afmkfd.test'],
  [1, '\u00e9.test'],
  [1, 'fuzz.test:80:80'],
  [1, '%66uzz.test'],
  [1, 'fuzz.test\\evil'],
  [1, '*'],
];

// Invalid Content-Length values only: leading zeros ('05') and surrounding whitespace are valid (RFC 9110
// §8.6, OWS is not part of a field value), so a request behind them is a pipelined one, not a canary.
const CL_ODD = [
  '-1',
  '+5',
  '0x5',
  '5,5',
  '5, 6',
  '',
  '99999999999999999999999',
  '1e3',
  '٥',
  '4294967296',
  '18446744073709551617',
  '5 5',
  '5;x',
];
const TE_ODD = [
  'chunked',
  'Chunked',
  'CHUNKED',
  ' chunked',
  'chunked ',
  'chunked\t',
  'chunked, identity',
  'identity, chunked',
  'gzip, chunked',
  'chunked, chunked',
  'xchunked',
  'chunked;q=1',
  'identity',
  'gzip',
  '',
  'chunk',
  '\u00ffchunked',
  'chunked\u000b',
];

interface HeaderLine {
  name: string;
  value: string;
}

export interface GenContext {
  rng: Rng;
  nextId: () => number;
  opts: Required<GrammarOptions>;
}

function fillPath(ctx: GenContext, template: string, tok: string): string {
  const { rng } = ctx;
  return template.replace('{t}', tok).replace('{n}', String(rng.int(rng.chance(0.8) ? 8 : 100000)));
}

/** A request target: mostly origin-form on the routes, sometimes odd forms and encodings. */
function genTarget(ctx: GenContext, tok: string, tags: string[]): string {
  const { rng } = ctx;
  let path = fillPath(ctx, rng.weighted(PATHS), tok);
  const form = rng.weighted<string>([
    [86, 'origin'],
    [5, 'absolute'],
    [2, 'authority'],
    [2, 'asterisk'],
    [2, 'empty'],
    [3, 'noslash'],
  ]);
  if (rng.chance(0.22)) {
    // Splice odd segments into the path (before any query).
    const q = path.indexOf('?');
    let p = q === -1 ? path : path.slice(0, q);
    const rest = q === -1 ? '' : path.slice(q);
    const k = rng.range(1, 3);
    for (let i = 0; i < k; i++) {
      const at = rng.int(p.length + 1);
      p = p.slice(0, at) + rng.pick(ODD_SEGMENTS) + p.slice(at);
    }
    if (p[0] !== '/') p = `/${p}`;
    path = p + rest;
    tags.push('odd-path');
  }
  if (rng.chance(0.04)) {
    path += `${path.includes('?') ? '&' : '?'}${'a'.repeat(rng.range(1000, ctx.opts.bigBytes))}`;
    tags.push('long-url');
  }
  if (rng.chance(0.03)) {
    // Raw bytes the parser may refuse: spaces, controls, high bytes.
    const at = rng.int(path.length);
    path =
      path.slice(0, at) +
      rng.pick(['\u0000', '\u007f', '\u0001', '\t', '\u00a0', '\u0085', '"', '<', '>', '{', '|', '^', '`']) +
      path.slice(at);
    tags.push('raw-byte-path');
  }
  switch (form) {
    case 'absolute':
      tags.push('absolute-form');
      return `${rng.pick(['http', 'https', 'HTTP', 'ftp', 'javascript'])}://${rng.weighted(HOSTS)}${path}`;
    case 'authority':
      tags.push('authority-form');
      return `${rng.weighted(HOSTS)}:${rng.pick(['443', '80', '0', 'x'])}`;
    case 'asterisk':
      tags.push('asterisk-form');
      return '*';
    case 'empty':
      tags.push('empty-target');
      return '';
    case 'noslash':
      tags.push('no-slash');
      return path.slice(1);
    default:
      return path;
  }
}

function genVersion(ctx: GenContext, tags: string[]): string {
  const v = ctx.rng.weighted<string>([
    [90, 'HTTP/1.1'],
    [5, 'HTTP/1.0'],
    [1, 'HTTP/2.0'],
    [1, 'HTTP/0.9'],
    [1, 'HTTP/1.2'],
    [1, 'http/1.1'],
    [1, 'HTTP/11'],
    [1, 'HTTP/1.1 '],
    [1, 'HTTX/1.1'],
    [1, 'HTTP/1.1\u0000'],
  ]);
  if (v !== 'HTTP/1.1') tags.push(`version:${JSON.stringify(v)}`);
  return v;
}

/** Ordinary headers a client sends, with the Host variants. */
function genCommonHeaders(ctx: GenContext, tok: string, tags: string[]): HeaderLine[] {
  const { rng } = ctx;
  const h: HeaderLine[] = [];
  const hostMode = rng.weighted<string>([
    [88, 'one'],
    [4, 'missing'],
    [4, 'duplicate'],
    [2, 'case'],
    [2, 'odd-syntax'],
  ]);
  if (hostMode === 'one') h.push({ name: 'Host', value: rng.weighted(HOSTS) });
  else if (hostMode === 'duplicate') {
    h.push(
      { name: 'Host', value: 'fuzz.test' },
      { name: rng.pick(['Host', 'host', 'HOST']), value: rng.pick(['evil.test', 'fuzz.test', '']) },
    );
    tags.push('dup-host');
  } else if (hostMode === 'case') h.push({ name: 'hOsT', value: rng.weighted(HOSTS) });
  else if (hostMode === 'odd-syntax') {
    h.push({ name: rng.pick(['Host ', ' Host', 'Host\t', 'Ho st']), value: 'fuzz.test' });
    tags.push('odd-host-name');
  } else tags.push('no-host');
  h.push({ name: 'x-fuzz-id', value: tok });
  if (rng.chance(0.7)) h.push({ name: 'User-Agent', value: rng.pick(USER_AGENTS) });
  if (rng.chance(0.6))
    h.push({
      name: 'Accept',
      value: rng.pick(['text/html,application/xhtml+xml', 'application/json', '*/*', 'text/html', '']),
    });
  if (rng.chance(0.3)) {
    const long = rng.chance(0.1);
    h.push({
      name: 'Accept-Encoding',
      value: long
        ? Array.from({ length: rng.range(50, 800) }, () =>
            rng.pick(['gzip', 'br', 'x-' + rng.alnum(6), 'identity;q=0']),
          ).join(', ')
        : rng.pick(['gzip, deflate, br', 'gzip', 'br;q=1.0, gzip;q=0.8', '*', 'identity']),
    });
    if (long) tags.push('long-accept-encoding');
  }
  if (rng.chance(0.25)) {
    const sid = `s${rng.int(64)}`;
    const v = rng.weighted<string>([
      [6, `sid=${sid}`],
      [2, `sid=x1; sid=${sid}`],
      [1, `a=1; sid=${sid}; b=2`],
      [1, `rempart_clearance=${rng.hex(20)}`],
      [1, `sid=; sid=${sid}`],
      [1, `${'c'.repeat(20)}=${'v'.repeat(rng.range(10, 3000))}`],
    ]);
    h.push({ name: 'Cookie', value: v });
    if (rng.chance(0.2)) {
      h.push({ name: 'Cookie', value: `sid=s${rng.int(64)}` });
      tags.push('dup-cookie');
    }
  }
  if (rng.chance(0.1))
    h.push({
      name: 'X-Forwarded-For',
      value: rng.pick([
        `203.0.113.${rng.int(256)}`,
        `2001:db8::${rng.int(65536).toString(16)}`,
        'garbage',
        `1.2.3.4, ${ctx.opts.trustedAddress}`,
        '999.1.1.1',
        '',
        '127.0.0.1, ::1',
      ]),
    });
  if (rng.chance(0.05)) h.push({ name: 'X-Forwarded-Proto', value: rng.pick(['https', 'http', 'gopher']) });
  if (rng.chance(0.05))
    h.push({
      name: 'Authorization',
      value: rng.pick([
        `Bearer ${rng.alnum(20)}.${rng.alnum(40)}.${rng.alnum(20)}`,
        'Bearer',
        'Basic Zm9vOmJhcg==',
        `Bearer ${'a'.repeat(rng.range(100, 4000))}`,
      ]),
    });
  if (rng.chance(0.05)) h.push({ name: 'x-api-key', value: rng.pick(['k1', 'k2', rng.alnum(32)]) });
  if (rng.chance(0.05))
    h.push({
      name: rng.pick(['Cache-Control', 'Pragma']),
      value: rng.pick(['no-cache', 'max-age=0', 'no-store', 'only-if-cached']),
    });
  if (rng.chance(0.04))
    h.push({ name: 'Range', value: rng.pick(['bytes=0-10', 'bytes=-1', 'bytes=0-0,1-1,2-2', 'bytes=x']) });
  if (rng.chance(0.04)) h.push({ name: 'If-None-Match', value: rng.pick(['*', '"x"', 'W/"x"']) });
  if (rng.chance(0.03)) h.push({ name: 'Via', value: '1.1 rempart' });
  if (rng.chance(0.03))
    h.push({
      name: rng.pick(['Max-Forwards', 'TE', 'Trailer', 'Keep-Alive', 'Proxy-Connection', 'Forwarded']),
      value: rng.pick(['0', 'trailers', 'x', 'for=1.2.3.4', 'timeout=1']),
    });
  return h;
}

/** Header-level oddities that are not about framing. Returns whether the result still frames strictly. */
function addOddHeaders(ctx: GenContext, h: HeaderLine[], tags: string[]): boolean {
  const { rng } = ctx;
  let framed = true;
  if (rng.chance(0.02)) {
    const n = rng.range(50, 160);
    for (let i = 0; i < n; i++) h.push({ name: `x-many-${i}`, value: String(i) });
    tags.push('many-headers');
  }
  if (rng.chance(0.02)) {
    h.push({ name: 'x-long', value: 'v'.repeat(rng.range(1000, ctx.opts.bigBytes)) });
    tags.push('long-header');
  }
  if (rng.chance(0.02)) {
    h.push({ name: 'x-high', value: '\u00e9\u00ff\u0080 ok' });
    tags.push('obs-text');
  }
  if (rng.chance(0.012)) {
    // obs-fold: refused by a strict parser.
    h.push({ name: 'x-fold', value: `a\r\n ${rng.pick(['b', 'Transfer-Encoding: chunked', 'Host: evil.test'])}` });
    tags.push('obs-fold');
    framed = false;
  }
  if (rng.chance(0.012)) {
    h.push({
      name: rng.pick(['x-nul', 'x-cr', 'x-lf', 'x-del']),
      value: `a${rng.pick(['\u0000', '\r', '\n', '\u007f', '\r\r\n'])}b`,
    });
    tags.push('ctl-in-value');
    framed = false;
  }
  if (rng.chance(0.01)) {
    h.push({ name: rng.pick(['x a', 'x:a', '', '(x)', 'x\u00e9', 'x\u0000', '\tx']), value: 'v' });
    tags.push('bad-header-name');
    framed = false;
  }
  if (rng.chance(0.008)) {
    h.push({ name: 'x-no-colon-line', value: '\u0000NOCOLON' });
    tags.push('no-colon');
    framed = false;
  }
  return framed;
}

/** An inner request used as smuggling payload: its marker is a canary that must never reach the upstream as a request. */
function innerRequest(ctx: GenContext, canaries: number[]): string {
  const id = ctx.nextId();
  canaries.push(id);
  const tok = token(id);
  return ctx.rng.pick([
    `GET /payments/approve?fz=${tok} HTTP/1.1\r\nHost: fuzz.test\r\nx-fuzz-id: ${tok}\r\n\r\n`,
    `POST /login?fz=${tok} HTTP/1.1\r\nHost: fuzz.test\r\nx-fuzz-id: ${tok}\r\nContent-Length: 3\r\n\r\nabc`,
    `GET /vault/documents/1/${tok} HTTP/1.1\r\nHost: fuzz.test\r\nx-fuzz-id: ${tok}\r\nConnection: keep-alive\r\n\r\n`,
    `GET /${tok} HTTP/1.1\r\nHost: fuzz.test\r\nx-fuzz-id: ${tok}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  ]);
}

function chunk(data: string, ext = ''): string {
  return `${Buffer.byteLength(data, 'latin1').toString(16)}${ext}\r\n${data}\r\n`;
}

interface BodyPlan {
  headers: HeaderLine[];
  body: string;
  framed: boolean;
}

/** Body and its framing headers: none, Content-Length, chunked, and the ambiguous combinations. */
function genBody(ctx: GenContext, method: string, version: string, tags: string[], canaries: number[]): BodyPlan {
  const { rng } = ctx;
  const wantsBody = method === 'POST' || method === 'PUT' || method === 'PATCH' ? rng.chance(0.85) : rng.chance(0.08);
  if (!wantsBody) {
    if (rng.chance(0.05)) return { headers: [{ name: 'Content-Length', value: '0' }], body: '', framed: true };
    return { headers: [], body: '', framed: true };
  }
  const data = () =>
    rng.weighted<string>([
      [6, `amount=${rng.int(1000)}&to=${rng.alnum(8)}`],
      [2, JSON.stringify({ user: rng.alnum(6), password: rng.alnum(10) })],
      [1, 'x'.repeat(rng.range(1000, 100000))],
      [1, String.fromCharCode(...Array.from({ length: rng.range(1, 64) }, () => rng.int(256)))],
      [1, ''],
    ]);
  const kind = rng.weighted<string>([
    [40, 'cl'],
    [22, 'chunked'],
    [4, 'cl-smuggle'],
    [4, 'chunked-smuggle'],
    [4, 'cl+te'],
    [3, 'dup-cl'],
    [3, 'odd-cl'],
    [4, 'odd-te'],
    [2, 'te-dup'],
    [2, 'chunked-odd'],
    [2, 'cl-short'],
    [1, 'te-1.0'],
  ]);
  tags.push(`body:${kind}`);
  switch (kind) {
    case 'cl': {
      const d = data();
      return {
        headers: [{ name: 'Content-Length', value: String(Buffer.byteLength(d, 'latin1')) }],
        body: d,
        framed: true,
      };
    }
    case 'cl-smuggle': {
      const d = `a=1&${innerRequest(ctx, canaries)}`;
      return {
        headers: [{ name: 'Content-Length', value: String(Buffer.byteLength(d, 'latin1')) }],
        body: d,
        framed: true,
      };
    }
    case 'chunked': {
      let b = '';
      const n = rng.range(0, 4);
      for (let i = 0; i < n; i++)
        b += chunk(
          data().slice(0, 5000),
          rng.chance(0.2) ? rng.pick([';a=b', ';a', ';a="b c"', ' ;a=b', ';' + 'e'.repeat(200)]) : '',
        );
      b += '0\r\n';
      if (rng.chance(0.15)) {
        b += rng.pick([
          'x-trailer: 1\r\n',
          'Content-Length: 5\r\n',
          'Host: evil.test\r\n',
          'Transfer-Encoding: chunked\r\n',
          'x-fuzz-id: fz0q000000\r\n',
        ]);
        tags.push('trailer');
      }
      b += '\r\n';
      const odd = b.includes(' ;');
      return {
        headers: [{ name: 'Transfer-Encoding', value: 'chunked' }],
        body: b,
        framed: version === 'HTTP/1.1' && !odd,
      };
    }
    case 'chunked-smuggle': {
      const b = `${chunk(innerRequest(ctx, canaries))}0\r\n\r\n`;
      return { headers: [{ name: 'Transfer-Encoding', value: 'chunked' }], body: b, framed: version === 'HTTP/1.1' };
    }
    case 'cl+te': {
      // The classic CL.TE / TE.CL desync: must be refused, and the inner request never forwarded.
      const inner = innerRequest(ctx, canaries);
      const te = rng.pick(TE_ODD);
      const b = rng.chance(0.5) ? `0\r\n\r\n${inner}` : `${chunk(inner)}0\r\n\r\n`;
      const clv = rng.pick([String(Buffer.byteLength(b, 'latin1')), '4', '0', '6']);
      const hs = [
        { name: 'Content-Length', value: clv },
        { name: 'Transfer-Encoding', value: te },
      ];
      if (rng.chance(0.5)) hs.reverse();
      return { headers: hs, body: b, framed: false };
    }
    case 'dup-cl': {
      const inner = innerRequest(ctx, canaries);
      const d = `abcde${inner}`;
      const hs = [
        { name: 'Content-Length', value: '5' },
        {
          name: rng.pick(['Content-Length', 'content-length']),
          value: rng.pick([String(Buffer.byteLength(d, 'latin1')), '5', '0']),
        },
      ];
      return { headers: hs, body: d, framed: false };
    }
    case 'odd-cl': {
      const inner = innerRequest(ctx, canaries);
      return { headers: [{ name: 'Content-Length', value: rng.pick(CL_ODD) }], body: `abcde${inner}`, framed: false };
    }
    case 'odd-te': {
      const inner = innerRequest(ctx, canaries);
      // Not chunked once trimmed (whitespace around the value is not part of it).
      const te = rng.pick(TE_ODD.filter((t) => t.trim().toLowerCase() !== 'chunked'));
      return {
        headers: [{ name: 'Transfer-Encoding', value: te }],
        body: `${chunk('abc')}0\r\n\r\n${inner}`,
        framed: false,
      };
    }
    case 'te-dup': {
      const inner = innerRequest(ctx, canaries);
      return {
        headers: [
          { name: 'Transfer-Encoding', value: 'chunked' },
          { name: 'Transfer-Encoding', value: rng.pick(['identity', 'chunked', 'gzip']) },
        ],
        body: `${chunk('abc')}0\r\n\r\n${inner}`,
        framed: false,
      };
    }
    case 'chunked-odd': {
      const b = rng.pick([
        'ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n',
        '-1\r\nabc\r\n0\r\n\r\n',
        '3\r\nabcdef\r\n0\r\n\r\n',
        '3\nabc\n0\n\n',
        '0x3\r\nabc\r\n0\r\n\r\n',
        ' 3\r\nabc\r\n0\r\n\r\n',
        '3 \r\nabc\r\n0\r\n\r\n',
        '3\r\nabc0\r\n\r\n',
        '3;\r\nabc\r\n0\r\n\r\n',
        '0\r\n',
        '3\r\nab',
        '\r\n\r\n',
        `3\r\nabc\r\n0\r\n\r\n${'x'.repeat(3)}`,
        '00000000000000000000003\r\nabc\r\n0\r\n\r\n',
      ]);
      return { headers: [{ name: 'Transfer-Encoding', value: 'chunked' }], body: b, framed: false };
    }
    case 'cl-short': {
      // Declares more than it sends: the next pipelined request becomes body.
      return { headers: [{ name: 'Content-Length', value: String(rng.range(10, 200)) }], body: 'short', framed: false };
    }
    default: {
      // te-1.0: Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1).
      const inner = innerRequest(ctx, canaries);
      return {
        headers: [{ name: 'Transfer-Encoding', value: 'chunked' }],
        body: `${chunk(inner)}0\r\n\r\n`,
        framed: false,
      };
    }
  }
}

/** One request (its bytes and what the oracle may assume about it). */
export function genRequest(ctx: GenContext): GenRequest {
  const { rng } = ctx;
  const id = ctx.nextId();
  const tok = token(id);
  const tags: string[] = [];
  const canaries: number[] = [];
  const method = rng.weighted(METHODS);
  const target = genTarget(ctx, tok, tags);
  let version = genVersion(ctx, tags);
  let framed = version === 'HTTP/1.1' || version === 'HTTP/1.0';
  let last = false;
  const headers = genCommonHeaders(ctx, tok, tags);
  if (!framed) tags.push('bad-version');
  if (headers.some((h) => h.name !== 'Host' && h.name.trim().toLowerCase() === 'host' && h.name !== h.name.trim()))
    framed = false;
  const body = genBody(ctx, method, version, tags, canaries);
  if (body.headers.some((h) => h.name === 'Transfer-Encoding') && version === 'HTTP/1.0') framed = false;
  if (tags.includes('body:te-1.0')) version = 'HTTP/1.0';
  framed &&= body.framed;
  headers.push(...body.headers);
  // Connection management, upgrades, Expect.
  const conn = rng.weighted<string>([
    [80, ''],
    [5, 'keep-alive'],
    [3, 'close'],
    [6, 'upgrade'],
    [2, 'upgrade-only'],
    [2, 'odd'],
    [2, 'expect'],
  ]);
  if (conn === 'keep-alive') headers.push({ name: 'Connection', value: 'keep-alive' });
  else if (conn === 'close') {
    headers.push({ name: 'Connection', value: 'close' });
    tags.push('conn-close');
  } else if (conn === 'upgrade' || conn === 'upgrade-only') {
    if (conn === 'upgrade')
      headers.push({
        name: 'Connection',
        value: rng.pick(['Upgrade', 'upgrade', 'keep-alive, Upgrade', 'Upgrade, close']),
      });
    headers.push({
      name: 'Upgrade',
      value: rng.pick(['websocket', 'websocket', 'WebSocket', 'h2c', 'TLS/1.0', 'foo', '', 'websocket, h2c']),
    });
    if (rng.chance(0.7))
      headers.push(
        { name: 'Sec-WebSocket-Key', value: 'dGhlIHNhbXBsZSBub25jZQ==' },
        { name: 'Sec-WebSocket-Version', value: '13' },
      );
    if (rng.chance(0.3)) {
      // Bytes after an upgrade request: tunnel data if the upstream switches, never a request to forward otherwise.
      tags.push('upgrade-smuggle');
    }
    tags.push(`upgrade:${conn}`);
    last = true;
  } else if (conn === 'odd') {
    headers.push({
      name: 'Connection',
      value: rng.pick(['x-fuzz-id', 'host', 'content-length', 'transfer-encoding', 'close, close', '']),
    });
    tags.push('odd-connection');
  } else if (conn === 'expect') {
    headers.push({ name: 'Expect', value: rng.pick(['100-continue', '100-Continue', 'x-expect']) });
    tags.push('expect');
  }
  if (method === 'CONNECT') last = true;
  if (!addOddHeaders(ctx, headers, tags)) framed = false;
  if (rng.chance(0.05)) {
    // Shuffle header order (signatures fingerprint it).
    for (let i = headers.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [headers[i], headers[j]] = [headers[j]!, headers[i]!];
    }
  }
  const sp = rng.chance(0.02) ? rng.pick(['  ', '\t', ' \u000b']) : ' ';
  if (sp !== ' ') {
    tags.push('odd-whitespace');
    framed = false;
  }
  const eol = rng.chance(0.015) ? rng.pick(['\n', '\r', '\r\r\n', '\n\r']) : '\r\n';
  if (eol !== '\r\n') {
    tags.push('bare-eol');
    framed = false;
  }
  const line = version === 'HTTP/0.9' ? `${method}${sp}${target}` : `${method}${sp}${target}${sp}${version}`;
  let head = line + eol;
  for (const h of headers) head += `${h.name}: ${h.value}${eol}`;
  head += eol;
  if (tags.includes('upgrade-smuggle')) body.body += innerRequest(ctx, []);
  let bytes: Buffer = Buffer.from(head + body.body, 'latin1');
  // Byte-level mutations: framing unknown from here on, and the canaries no longer hold (the framing
  // that hid them may be what was mutated).
  if (rng.chance(0.06)) {
    bytes = mutate(rng, bytes, tags);
    framed = false;
    canaries.length = 0;
  }
  if (version === 'HTTP/0.9' || method.length === 0 || /[^!#$%&'*+.^_`|~0-9A-Za-z-]/.test(method)) framed = false;
  if (target === '' || /[\u0000-\u0020\u007f-\uffff]/.test(target)) framed = false;
  return { id, method, bytes, framed, last, canaries, tags };
}

/** Byte flips, insertions, deletions, duplicated and swapped fragments. */
export function mutate(rng: Rng, input: Buffer, tags: string[]): Buffer {
  let b: Buffer = Buffer.from(input);
  const n = rng.range(1, 4);
  for (let i = 0; i < n; i++) {
    const op = rng.int(6);
    const at = rng.int(b.length);
    if (op === 0 && b.length > 0) b[at] = b[at]! ^ (1 << rng.int(8));
    else if (op === 1)
      b = Buffer.concat([
        b.subarray(0, at),
        Buffer.from([rng.pick([0, 10, 13, 32, 9, 58, 0xff, rng.int(256)])]),
        b.subarray(at),
      ]);
    else if (op === 2 && b.length > 1)
      b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + rng.range(1, 8)))]);
    else if (op === 3) {
      const len = rng.range(1, 40);
      b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]);
    } else if (op === 4) {
      const from = rng.int(b.length);
      const len = rng.range(1, 30);
      b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
    } else
      b = Buffer.concat([
        b.subarray(0, at),
        Buffer.from(
          rng.pick([
            '\r\n',
            '\r\n\r\n',
            ': ',
            '\n',
            '0\r\n\r\n',
            'Transfer-Encoding: chunked\r\n',
            'Content-Length: 0\r\n',
          ]),
        ),
        b.subarray(at),
      ]);
  }
  tags.push('mutated');
  return b;
}

// ---- PROXY protocol

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v2(verCmd: number, fam: number, addr: Buffer, lenOverride?: number): Buffer {
  const h = Buffer.alloc(16);
  V2_SIG.copy(h);
  h[12] = verCmd;
  h[13] = fam;
  h.writeUInt16BE(lenOverride ?? addr.length, 14);
  return Buffer.concat([h, addr]);
}

/** A PROXY header: mostly valid (v1 and v2, IPv4 and IPv6, LOCAL/UNKNOWN), sometimes broken. */
export function genProxyHeader(rng: Rng, tags: string[]): Buffer {
  const a4 = () => `${rng.range(1, 223)}.${rng.int(256)}.${rng.int(256)}.${rng.range(1, 254)}`;
  const a6 = () =>
    `2001:db8:${rng.int(65536).toString(16)}:${rng.int(65536).toString(16)}::${rng.range(1, 65535).toString(16)}`;
  const kind = rng.weighted<string>([
    [40, 'v1-4'],
    [10, 'v1-6'],
    [25, 'v2-4'],
    [8, 'v2-6'],
    [3, 'v1-unknown'],
    [3, 'v2-local'],
    [11, 'broken'],
  ]);
  tags.push(`proxy:${kind}`);
  switch (kind) {
    case 'v1-4':
      return Buffer.from(`PROXY TCP4 ${a4()} 127.0.0.1 ${rng.range(1024, 65535)} 80\r\n`);
    case 'v1-6':
      return Buffer.from(`PROXY TCP6 ${a6()} ::1 ${rng.range(1024, 65535)} 80\r\n`);
    case 'v1-unknown':
      return Buffer.from('PROXY UNKNOWN\r\n');
    case 'v2-4': {
      const a = Buffer.alloc(12);
      for (let i = 0; i < 8; i++) a[i] = rng.int(256);
      a[0] = rng.range(1, 223);
      a.writeUInt16BE(rng.range(1024, 65535), 8);
      a.writeUInt16BE(80, 10);
      const tlv = rng.chance(0.2) ? Buffer.from([0x04, 0x00, 0x03, 1, 2, 3]) : Buffer.alloc(0);
      return v2(0x21, 0x11, Buffer.concat([a, tlv]));
    }
    case 'v2-6': {
      const a = Buffer.alloc(36);
      a.writeUInt16BE(0x2001, 0);
      a.writeUInt16BE(0x0db8, 2);
      for (let i = 4; i < 32; i++) a[i] = rng.int(256);
      return v2(0x21, 0x21, a);
    }
    case 'v2-local':
      return v2(0x20, 0x00, Buffer.alloc(0));
    default:
      tags.push('proxy-broken');
      return rng.pick<() => Buffer>([
        () => Buffer.from(`PROXY TCP4 999.1.1.1 127.0.0.1 1 80\r\n`),
        () => Buffer.from(`PROXY TCP4 ${a4()} 127.0.0.1 99999 80\r\n`),
        () => Buffer.from(`PROXY TCP6 ${a4()} ::1 1 80\r\n`),
        () => Buffer.from(`PROXY TCP4 ${a4()}\r\n`),
        () => Buffer.from(`proxy TCP4 ${a4()} 127.0.0.1 1 80\r\n`),
        () => Buffer.from(`PROXY TCP4 ${a4()} 127.0.0.1 1 80\n`),
        () => Buffer.from(`PROXY ${'x'.repeat(200)}\r\n`),
        () => Buffer.from(`PROXY TCP4 ${a4()} 127.0.0.1 1 80\r\nPROXY TCP4 ${a4()} 127.0.0.1 1 80\r\n`),
        () => v2(0x31, 0x11, Buffer.alloc(12)),
        () => v2(0x22, 0x11, Buffer.alloc(12)),
        () => v2(0x21, 0x11, Buffer.alloc(4)),
        () => v2(0x21, 0x21, Buffer.alloc(12)),
        () => v2(0x21, 0x11, Buffer.alloc(12), 4000),
        () => v2(0x21, 0x11, Buffer.alloc(12), 60).subarray(0, 30),
        () => Buffer.concat([V2_SIG.subarray(0, 8), Buffer.from('GET / HTTP/1.1\r\n')]),
        () => Buffer.from([0x0d, 0x0a, 0x0d, 0x0a]),
        () => Buffer.alloc(0),
      ])();
  }
}

// ---- connections

/** The plan of connection `index`: a pure function of (seed, index, firstId). */
export function genConnection(seed: number, index: number, firstId: number, options: GrammarOptions): ConnPlan {
  const opts: Required<GrammarOptions> = { proxyShare: 0.25, maxBatch: 24, bigBytes: 20000, ...options };
  const rng = new Rng(seed, index + 1);
  let next = firstId;
  const ctx: GenContext = { rng, nextId: () => next++, opts };
  const tags: string[] = [];
  const listener = rng.chance(opts.proxyShare) ? 'proxy' : 'plain';
  // Source addresses: mostly fresh ones across many /24s (new clients), some hot ones that get rate
  // limited and banned, and the trusted balancer for the PROXY listener.
  const hot = rng.chance(0.2);
  const fresh = `127.${rng.range(1, 254)}.${rng.int(256)}.${rng.range(1, 254)}`;
  let localAddress = hot ? `127.0.9.${1 + (index % HOT_ADDRESSES)}` : fresh;
  let proxy: Buffer | null = null;
  if (listener === 'proxy') {
    if (rng.chance(0.9)) {
      localAddress = opts.trustedAddress;
      proxy = genProxyHeader(rng, tags);
    } else if (rng.chance(0.5)) proxy = genProxyHeader(rng, tags); // untrusted peer sending a PROXY line: plain HTTP to the gateway
  } else if (rng.chance(0.03)) {
    localAddress = opts.trustedAddress; // trusted peer on the plain listener: X-Forwarded-For is believed
  }
  const n = rng.weighted<number>([
    [30, 1],
    [20, rng.range(2, 4)],
    [30, rng.range(5, 12)],
    [20, rng.range(13, opts.maxBatch)],
  ]);
  const requests: GenRequest[] = [];
  for (let i = 0; i < n; i++) requests.push(genRequest(ctx));
  const total = requests.reduce((s, r) => s + r.bytes.length, 0);
  const write = rng.weighted<'once' | 'pieces' | 'truncate'>([
    [85, 'once'],
    [11, 'pieces'],
    [4, 'truncate'],
  ]);
  const cuts: number[] = [];
  if (write === 'pieces') {
    const k = rng.range(1, 6);
    for (let i = 0; i < k; i++) cuts.push(rng.int(total));
    if (total < 200 && rng.chance(0.3)) for (let i = 1; i < total; i++) cuts.push(i); // byte by byte
    cuts.sort((a, b) => a - b);
  } else if (write === 'truncate') cuts.push(rng.int(total));
  return { seed, index, listener, localAddress, proxy, requests, write, cuts, idCount: next - firstId };
}

/** Printable form of bytes for reports (JSON string escapes). */
export function showBytes(b: Buffer, max = 4000): string {
  const s = b.subarray(0, max).toString('latin1');
  return JSON.stringify(s) + (b.length > max ? ` …(+${b.length - max} bytes)` : '');
}
