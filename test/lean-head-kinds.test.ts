// The lean engine's client head written from the upstream parser's field kinds (LeanResponse.
// writeUpstreamHead, issue 17 part 7) is byte for byte the head written from the pairs the node engine's
// path makes by comparing names (clientResponseHeaders, then writeCheckedHead): hop-by-hop fields, fields
// named by any Connection field, Via, Content-Length on a 204, Date, over varied heads and random ones.
// The cache policy's facts and familiarity's Set-Cookie pairs from the kinds match those from the pairs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { rawRequest, startGateway, track } from './helpers.ts';
import { ResponseHead } from '../src/upstream/h1-pool.ts';
import { LeanResponse } from '../src/server/lean/message.ts';
import {
  clientResponseHeaders,
  clientResponsePairs,
  setCookiePairs,
  upstreamHeadFacts,
} from '../src/pipeline/headers.ts';
import { FieldKind } from '../src/core/http1.ts';

const conn = { socket: null, keepAliveLines: () => 'Connection: keep-alive\r\nKeep-Alive: timeout=30\r\n' };

function parse(status: number, lines: string): { buf: Buffer; head: ResponseHead } | null {
  // Shifted in its buffer: offsets are relative to the head's start.
  const buf = Buffer.from(`junkHTTP/1.1 ${status} X\r\n${lines}\r\n`, 'latin1');
  const head = new ResponseHead();
  const r = head.execute(buf, 4, buf.length);
  if (r === -2) return null;
  assert.equal(r, buf.length - 4, lines);
  return { buf, head };
}

function rawOf(buf: Buffer, head: ResponseHead): Buffer[] {
  const raw: Buffer[] = [];
  const f = head.fields;
  for (let k = 0; k < f.length; k += 4)
    raw.push(buf.subarray(4 + f[k]!, 4 + f[k + 1]!), buf.subarray(4 + f[k + 2]!, 4 + f[k + 3]!));
  return raw;
}

/** decideFromPairs' facts (src/phases/cache/index.ts), read from the client's pairs by name. */
function factsOfPairs(pairs: readonly string[]) {
  let cacheControl: string | undefined;
  let vary = '';
  let ageSec = 0;
  let hasSetCookie = false;
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i]!.toLowerCase();
    const value = pairs[i + 1]!;
    if (name === 'cache-control') cacheControl = cacheControl === undefined ? value : `${cacheControl}, ${value}`;
    else if (name === 'set-cookie') hasSetCookie = true;
    else if (name === 'vary') vary = vary === '' ? value : `${vary}, ${value}`;
    else if (name === 'age' && /^[0-9]{1,10}$/.test(value.trim())) ageSec = Number(value.trim());
  }
  return { cacheControl, vary, ageSec, hasSetCookie };
}

const EXTRAS: (string[] | null)[] = [
  null,
  ['x-cache', 'MISS'],
  ['connection', 'close', 'x-extra', 'y'],
  ['date', 'Thu, 01 Jan 1970 00:00:00 GMT'],
  ['content-length', '3'],
];

/** Both ways of writing the head of `lines` agree for every status, method, client version and extra. */
function compare(lines: string, statuses: readonly number[] = [200, 204, 304, 404, 503]): number {
  let checked = 0;
  for (const status of statuses) {
    const parsed = parse(status, lines);
    if (parsed === null) continue;
    const { buf, head } = parsed;
    const raw = rawOf(buf, head);
    const pairs = clientResponseHeaders(raw, 'rempart');
    // The pairs from the kinds are the pairs from the names.
    assert.deepEqual(clientResponsePairs(buf, 4, head.fields, 'rempart', head.kinds), pairs, lines);
    assert.deepEqual(clientResponsePairs(buf, 4, head.fields, 'rempart'), pairs, lines);
    const names = (head.mask & (1 << FieldKind.ConnectionNames)) !== 0;
    if (!names) {
      const facts = upstreamHeadFacts(buf, 4, head, { cacheControl: 'x', vary: 'x', ageSec: -1, hasSetCookie: true });
      assert.deepEqual({ ...facts }, factsOfPairs(pairs), lines);
      const cookies: string[] = [];
      for (let i = 0; i < pairs.length; i += 2)
        if (pairs[i]!.toLowerCase() === 'set-cookie') cookies.push(pairs[i]!, pairs[i + 1]!);
      assert.deepEqual(setCookiePairs(buf, 4, head), cookies, lines);
    }
    for (const method of ['GET', 'HEAD'])
      for (const minor of [0, 1])
        for (const extra of EXTRAS) {
          const out = [0, 1].map((kinds) => {
            const req = { method, httpVersionMinor: minor, headers: {}, conn, upgrade: false };
            const res = new LeanResponse(req as never, true);
            if (kinds === 1) res.writeUpstreamHead(status, buf, 4, head, 'rempart', extra);
            else res.writeCheckedHead(status, pairs, extra);
            return [res.head.replace(/\r\nDate: [^\r]*\r\n/, '\r\nDate: *\r\n'), res.chunked, res.last, res.hasBody];
          });
          assert.deepEqual(out[1], out[0], `${status} ${method} 1.${minor} ${JSON.stringify(extra)}\n${lines}`);
          checked++;
        }
  }
  return checked;
}

test('lean: a head written from the field kinds is the one written from the pairs', () => {
  const cases = [
    // node:http's origin (the benchmark's): Content-Length and Date adjacent, one slice.
    'content-length: 100\r\nDate: Mon, 07 Dec 2026 01:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n',
    '',
    // Duplicates, odd case.
    'Set-Cookie: a=1\r\nSet-Cookie: b=2; Path=/\r\nX-A: 1\r\nx-a: 2\r\nSET-COOKIE: c=3\r\n',
    'CoNnEcTiOn: KeEp-AlIvE\r\nCONTENT-LENGTH: 3\r\ndAtE: y\r\nVIA: 1.0 a\r\nvia: 1.1 b\r\nVia:\r\nX: 1\r\n',
    'Content-Length: 5\r\nContent-Type: text/plain\r\nCache-Control: public, max-age=60\r\nVary: Accept\r\n' +
      'vary: Accept-Language\r\nAge: 5\r\nAGE: 7 \r\nage: x\r\ncache-control: s-maxage=9\r\n',
    // Fields named by Connection (every Connection field), the ones it may not name, the usual ones.
    'Connection: close, X-Secret, Set-Cookie, Cache-Control\r\nX-Secret: 1\r\nSet-Cookie: s=1\r\n' +
      'Cache-Control: public\r\nDate: d\r\nX-Kept: k\r\n',
    'Connection: keep-alive\r\nX-B: 1\r\nConnection: x-b\r\nX-C: 2\r\n',
    'X-B: 1\r\nConnection: X-B\r\nConnection: keep-alive\r\nX-D: 1\r\n',
    'Connection: keep-alive, date, vary, age\r\nDate: d\r\nVary: Accept\r\nAge: 3\r\nContent-Length: 0\r\n',
    'Connection: content-length, host\r\nContent-Length: 2\r\n',
    'Connection: , close ,, keep-alive\r\nX: 1\r\nConnection: close\t,\tKEEP-ALIVE\r\nY: 2\r\n',
    'Connection: closed\r\nclosed: 1\r\n',
    'Connection: keep-alive2\r\nkeep-alive2: 1\r\n',
    'Connection: keep-alive x\r\nX: 1\r\n',
    'Connection: via\r\nVia: 1.0 kept\r\n',
    'Connection: close\u00a0\r\nX: 1\r\n',
    'Connection:\r\nX: 1\r\n',
    // Hop-by-hop, each kind; a name that is a known one plus or minus a byte.
    'Transfer-Encoding: chunked\r\nTrailer: x\r\nUpgrade: h2\r\nProxy-Connection: x\r\nTE: t\r\n' +
      'Proxy-Authenticate: x\r\nProxy-Authorization: y\r\nKeep-Alive: 1\r\nX: 1\r\n',
    'Content-Lengthx: 5\r\nContent-Length: 5\r\nConnectionx: close\r\nVia-X: 1\r\nSet-Cookie2: a\r\n' +
      'Dates: 1\r\nDat: 2\r\nVar: 3\r\nAg: 4\r\nT: 5\r\nTEs: 6\r\nCache-Contro: 7\r\nTrailers: 8\r\n',
    // Values: no space, several, a tab, empty, trailing OWS, obs-text.
    'X-A:v\r\nX-B:  v  \r\nX-C:\tv\r\nX-D:\r\nX-E: \r\nX-F: a b \r\nX-G: \tg\r\nX-H: h\t\r\n',
    'X-Latin: caf\u00e9 \u00ff\u0080\r\nContent-Length: 1\r\nX-Obs: \u00e9\r\n',
    // 204/304 with a length between other lines.
    'X-A: b\r\nContent-Length: 0\r\nX-C: d\r\n',
    'ETag: "1"\r\nContent-Length: 10\r\nDate: z\r\n',
  ];
  let n = 0;
  for (const lines of cases) n += compare(lines);
  assert.ok(n > 1000, String(n));
});

test('lean: random upstream heads give the same client head both ways', () => {
  // A small deterministic generator (no Math.random: a failure reproduces).
  let seed = 17;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const names = [
    'connection',
    'keep-alive',
    'proxy-connection',
    'transfer-encoding',
    'te',
    'trailer',
    'upgrade',
    'proxy-authenticate',
    'proxy-authorization',
    'via',
    'content-length',
    'date',
    'cache-control',
    'set-cookie',
    'vary',
    'age',
    'x-secret',
    'x-a',
    'content-type',
    'etag',
    'server',
  ];
  const values = [
    'close',
    'keep-alive',
    'x-secret',
    'x-a, close',
    'set-cookie',
    'public',
    '1',
    '',
    'caf\u00e9',
    'a  b',
  ];
  const spaces = [' ', '', '  ', '\t', ' \t'];
  let n = 0;
  for (let round = 0; round < 400; round++) {
    let lines = '';
    let sawLength = false;
    let sawEncoding = false;
    const count = rnd(9);
    for (let f = 0; f < count; f++) {
      let name = names[rnd(names.length)]!;
      name = [...name].map((c) => (rnd(3) === 0 ? c.toUpperCase() : c)).join('');
      const lower = name.toLowerCase();
      // The parser refuses a second length or encoding, and both together: those are its own tests.
      if (lower === 'content-length' || lower === 'transfer-encoding') {
        if (sawLength || sawEncoding) continue;
        if (lower === 'content-length') sawLength = true;
        else sawEncoding = true;
      }
      let value = values[rnd(values.length)]!;
      if (lower === 'content-length') value = String(rnd(100));
      if (lower === 'transfer-encoding') value = 'chunked';
      lines += `${name}:${spaces[rnd(spaces.length)]}${value}${rnd(4) === 0 ? ' ' : ''}\r\n`;
    }
    n += compare(lines, [200, 204]);
  }
  assert.ok(n > 5000, String(n));
});

test('lean upstream parser: kinds of odd-case names and two Content-Length fields', () => {
  const p = parse(200, 'CoNnEcTiOn: close\r\ncOnNeCtIoN: X-Y\r\nSET-COOKIE: a\r\nContent-Lengt: 1\r\n');
  assert.ok(p !== null);
  assert.deepEqual(p.head.kinds, [
    FieldKind.Connection,
    FieldKind.ConnectionNames,
    FieldKind.SetCookie,
    FieldKind.Other,
  ]);
  assert.equal(p.head.close, true);
  // A second Content-Length (any case) is still refused by the parser, as before the kinds.
  assert.equal(parse(200, 'content-length: 1\r\nCONTENT-LENGTH: 1\r\n'), null);
  assert.equal(parse(200, 'Transfer-Encoding: chunked\r\nContent-Length: 1\r\n'), null);
  assert.equal(parse(200, 'Transfer-Encoding: chunked\r\ntransfer-encoding: chunked\r\n'), null);
});

for (const engine of ['node', 'lean'] as const) {
  test(`${engine}: an origin's head reaches the client filtered, and its Set-Cookie is learned`, async (t) => {
    const head =
      'HTTP/1.1 200 OK\r\nCoNnEcTiOn: keep-alive\r\nX-A: 1\r\nSet-Cookie: sid=abc; Path=/\r\nContent-Length: 2\r\n' +
      'Keep-Alive: timeout=5\r\nVia: 1.0 cdn\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nX-B:  b \r\n\r\nok';
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', () => s.write(head));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const gw = await startGateway(t, url, {
      server: { engine },
      logging: { level: 'error' },
      defense: { familiarity: { sessionCookie: 'sid' } },
    });
    const sessions = gw.gateway.challenge.sessions;
    assert.equal(sessions.size, 0);
    const data = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.match(data, /^HTTP\/1\.1 200 /, data);
    assert.doesNotMatch(data, /keep-alive|timeout=5/i, data);
    assert.match(data, /\r\nvia: 1\.0 cdn, 1\.1 rempart\r\n/i, data);
    if (engine === 'lean')
      assert.ok(
        data.startsWith(
          'HTTP/1.1 200 OK\r\nX-A: 1\r\nSet-Cookie: sid=abc; Path=/\r\nContent-Length: 2\r\n' +
            'Date: Thu, 01 Jan 2026 00:00:00 GMT\r\nX-B: b\r\nvia: 1.0 cdn, 1.1 rempart\r\nConnection: close\r\n\r\nok',
        ),
        data,
      );
    assert.equal(sessions.size, 1, 'the origin-granted session is learned');
  });
}
