// The lean parser on its own: what it accepts, what it refuses and with which code, and that a head
// or a chunked body split anywhere (down to a byte at a time) parses exactly as in one piece.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkedDecoder, HeadParser, headersObject } from './parser.ts';

interface Parsed {
  end: number;
  method: string;
  url: string;
  minor: number;
  raw: string[];
  contentLength: number;
  chunked: boolean;
  connClose: boolean;
  hasUpgrade: boolean;
}

/** Parse `text` fed in pieces of `step` bytes (0: whole), as the connection does (the buffer grows). */
function parse(text: string | Buffer, step = 0, maxFields = 100): Parsed | string {
  const all = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
  const p = new HeadParser(maxFields);
  let r = -1;
  for (let n = step === 0 ? all.length : step; ; n = Math.min(all.length, n + step)) {
    r = p.execute(all.subarray(0, n), 0, n);
    if (r !== -1 || n >= all.length) break;
  }
  if (r === -2) return p.error;
  if (r === -1) return 'incomplete';
  return {
    end: r,
    method: p.method(),
    url: p.url(all, 0),
    minor: p.versionMinor,
    raw: p.rawHeaders(all, 0),
    contentLength: p.contentLength,
    chunked: p.chunked,
    connClose: p.connClose,
    hasUpgrade: p.hasUpgrade,
  };
}

const GOOD =
  'POST /a/b?c=d HTTP/1.1\r\nHost: a.test\r\nX-Empty:\r\nX-Pad: \t spaced value \t\r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\n\r\nbody';

test('a valid head: method, target, version, fields (OWS trimmed) and framing', () => {
  const r = parse(GOOD) as Parsed;
  assert.equal(typeof r, 'object', String(r));
  assert.equal(r.method, 'POST');
  assert.equal(r.url, '/a/b?c=d');
  assert.equal(r.minor, 1);
  assert.deepEqual(r.raw, [
    'Host',
    'a.test',
    'X-Empty',
    '',
    'X-Pad',
    'spaced value',
    'Content-Length',
    '12',
    'Connection',
    'keep-alive, Close',
  ]);
  assert.equal(r.contentLength, 12);
  assert.equal(r.connClose, true);
  assert.equal(GOOD.slice(r.end), 'body');
});

test('a head split at every point, and a byte at a time, parses as in one piece', () => {
  const whole = parse(GOOD);
  for (let step = 1; step < 40; step++) assert.deepEqual(parse(GOOD, step), whole, `step ${step}`);
  const lf = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';
  for (let cut = 1; cut < lf.length; cut++) {
    const p = new HeadParser(10);
    const b = Buffer.from(lf);
    assert.equal(p.execute(b.subarray(0, cut), 0, cut), -1);
    assert.equal(p.execute(b, 0, b.length), b.length, `cut at ${cut}`);
  }
});

test('empty lines before a request line are skipped (as llhttp); HTTP/1.0 is read', () => {
  const r = parse('\r\n\r\nGET / HTTP/1.0\r\n\r\n') as Parsed;
  assert.equal(r.method, 'GET');
  assert.equal(r.minor, 0);
});

const SMUGGLING = 'RMP_ERR_EDGE_SMUGGLING';
const BAD = 'RMP_ERR_EDGE_BAD_REQUEST';
const REFUSED: [string, string][] = [
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n', SMUGGLING],
  ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\n Host: a\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-\x00A: 1\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\r\nHost: a\r\n: novalue\r\n\r\n', SMUGGLING],
  ['GET / HTTP/1.1\nHost: a\n\n', BAD],
  ['GET / HTTP/2.0\r\nHost: a\r\n\r\n', BAD],
  ['GET / HTTP/1.2\r\nHost: a\r\n\r\n', BAD],
  ['GET / HTTP/11\r\nHost: a\r\n\r\n', BAD],
  ['GET / http/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET /a b HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET  / HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['G(T / HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET / HTTP/1.1 \r\nHost: a\r\n\r\n', BAD],
  ['\x16\x03\x01\x02\x00', BAD],
  ['get / HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['FOO / HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['PRI * HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n', BAD],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-A: \x7f\r\n\r\n', SMUGGLING],
];

test('every ambiguous or malformed head is refused, with the code the node engine gives', () => {
  for (const [text, code] of REFUSED) {
    assert.equal(parse(text), code, JSON.stringify(text));
    // The same refusal when the bytes arrive one at a time.
    assert.equal(parse(text, 1), code, `byte at a time: ${JSON.stringify(text)}`);
  }
});

test('duplicate and missing Host pass the parser: the edge phase refuses them (both engines alike)', () => {
  assert.deepEqual((parse('GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n') as Parsed).raw, ['Host', 'a', 'host', 'b']);
  assert.deepEqual((parse('GET / HTTP/1.1\r\n\r\n') as Parsed).raw, []);
});

test('fields past maxFields are checked for framing but not kept (the edge phase counts them)', () => {
  const many = Array.from({ length: 20 }, (_, i) => `X-${i}: ${i}\r\n`).join('');
  const r = parse(`GET / HTTP/1.1\r\n${many}Content-Length: 3\r\n\r\n`, 0, 5) as Parsed;
  assert.equal(r.raw.length, 10);
  assert.equal(r.contentLength, 3, 'a framing field after the kept ones still frames the body');
  assert.equal(parse(`GET / HTTP/1.1\r\n${many}Content-Length: 3\r\nContent-Length: 3\r\n\r\n`, 0, 5), SMUGGLING);
});

test('req.headers follows node:http: first value wins for Host and the like, cookies joined, set-cookie a list', () => {
  const h = headersObject(['Host', 'a', 'host', 'b', 'Cookie', 'x=1', 'cookie', 'y=2', 'Accept', 'a', 'accept', 'b']);
  assert.equal(h.host, 'a');
  assert.equal(h.cookie, 'x=1; y=2');
  assert.equal(h.accept, 'a, b');
  assert.deepEqual(headersObject(['Set-Cookie', 'a', 'set-cookie', 'b'])['set-cookie'], ['a', 'b']);
  // A plain object, as node:http's: a field named __proto__ sets nothing.
  assert.equal(Object.getPrototypeOf(headersObject(['__proto__', 'x'])), Object.prototype);
  // A name the prototype has is a field like any other (node:http gives `x`, not Object's source joined).
  assert.equal(headersObject(['Constructor', 'x']).constructor, 'x');
  assert.equal(headersObject(['constructor', 'x', 'constructor', 'y']).constructor, 'x, y');
});

/** Decode a chunked body fed in pieces of `step` bytes; the data, the bytes left after it, or the error. */
function dechunk(text: string, step = 0): { data: string; rest: string } | string {
  const all = Buffer.from(text, 'latin1');
  const d = new ChunkedDecoder(1024);
  let data = '';
  let i = 0;
  while (i < all.length && !d.done) {
    const end = step === 0 ? all.length : Math.min(all.length, i + step);
    while (i < end && !d.done) {
      const next = d.next(all, i, end);
      if (next < 0) return d.error;
      data += all.toString('latin1', d.dataStart, d.dataEnd);
      i = next;
    }
  }
  return d.done ? { data, rest: all.toString('latin1', i) } : 'incomplete';
}

test('a chunked body with extensions and trailers decodes the same whole or a byte at a time', () => {
  const body = '5\r\nhello\r\n7;ext=1;q="a b"\r\n, world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nGET /next';
  const whole = dechunk(body);
  assert.deepEqual(whole, { data: 'hello, world0123456789', rest: 'GET /next' });
  for (let step = 1; step < 12; step++) assert.deepEqual(dechunk(body, step), whole, `step ${step}`);
});

test('invalid chunk framing is refused', () => {
  for (const [text, code] of [
    ['zz\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['+4\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    [' 4\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['4 \r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['0x4\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['4\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['4\r\nabcdX\r\n0\r\n\r\n', SMUGGLING],
    ['4\r\nabcd\n0\r\n\r\n', SMUGGLING],
    ['ffffffffffffffffff\r\n', SMUGGLING],
    ['4;a\x00b\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['4;a\nb\r\nabcd\r\n0\r\n\r\n', SMUGGLING],
    ['0\r\n folded: x\r\n\r\n', SMUGGLING],
    ['0\r\nX-T: a\x00\r\n\r\n', SMUGGLING],
    ['0\r\n\n', SMUGGLING],
    // Trailer fields follow the head's rules (llhttp refuses each of these, the node engine with them).
    ['0\r\nNoColon\r\n\r\n', SMUGGLING],
    ['0\r\nX-T : a\r\n\r\n', SMUGGLING],
    ['0\r\nX\xe9: a\r\n\r\n', SMUGGLING],
    ['0\r\nContent-Length: 5\r\n\r\n', SMUGGLING],
    ['0\r\ntransfer-encoding: chunked\r\n\r\n', SMUGGLING],
  ] as const) {
    assert.equal(dechunk(text), code, JSON.stringify(text));
    assert.equal(dechunk(text, 1), code, `byte at a time: ${JSON.stringify(text)}`);
  }
  assert.equal(dechunk(`0\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`), 'RMP_ERR_EDGE_HEADERS_TOO_LARGE');
  // Names that only begin like the framing fields are ordinary trailers.
  for (const name of ['Content-Lengths', 'Content-Lengt', 'Transfer-Encodings', 'content-type', 'te'])
    assert.deepEqual(dechunk(`0\r\n${name}: 1\r\n\r\n`, 1), { data: '', rest: '' }, name);
});

test('field names: every spelling kept as sent, lower-cased for req.headers as toLowerCase would', () => {
  // Known spellings (constants), other capitalisations of them, near misses and unknown names.
  const names = [
    'Host',
    'HOST',
    'hOst',
    'User-Agent',
    'user-agent',
    'User-agent',
    'Accept',
    'Accepts',
    'Acceptx',
    'X-Y',
  ];
  const names2 = [
    'Sec-Fetch-Mode',
    'sec-fetch-mode',
    'Sec-Fetch-Modf',
    'Cookie',
    'COOKIE',
    'Priority',
    'X-Forwarded-For',
  ];
  for (const list of [names, names2]) {
    const text = `GET / HTTP/1.1\r\n${list.map((n, i) => `${n}: v${i}\r\n`).join('')}\r\n`;
    const all = Buffer.from(text, 'latin1');
    const p = new HeadParser(100);
    assert.equal(p.execute(all, 0, all.length), all.length);
    const raw = p.rawHeaders(all, 0);
    assert.deepEqual(
      raw.filter((_, i) => i % 2 === 0),
      list,
    );
    assert.deepEqual(
      p.lowerNames,
      list.map((n) => n.toLowerCase()),
    );
    assert.deepEqual(headersObject(raw, p.lowerNames), headersObject(raw));
  }
});
