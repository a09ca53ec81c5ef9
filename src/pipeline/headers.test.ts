import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clientResponseHeaders, clientResponseKept, clientResponsePairs, responseFieldsNamed } from './headers.ts';

/** A response head's fields as undici gives them (Buffer pairs) and as the lean pool does (offsets). */
function both(fields: readonly (readonly [string, string])[]): { raw: Buffer[]; buf: Buffer; offsets: number[] } {
  let text = 'HTTP/1.1 200 OK\r\n';
  const offsets: number[] = [];
  for (const [name, value] of fields) {
    const ns = text.length;
    text += `${name}: `;
    const vs = text.length;
    text += `${value}\r\n`;
    offsets.push(ns, ns + name.length, vs, vs + value.length);
  }
  const raw = fields.flatMap(([n, v]) => [Buffer.from(n, 'latin1'), Buffer.from(v, 'latin1')]);
  return { raw, buf: Buffer.from(`${text}\r\n`, 'latin1'), offsets };
}

const CASES: (readonly [string, string])[][] = [
  [
    ['Content-Length', '100'],
    ['Date', 'Sun, 06 Dec 2026 16:46:08 GMT'],
    ['Connection', 'keep-alive'],
    ['Keep-Alive', 'timeout=5'],
  ],
  [
    ['content-type', 'text/html'],
    ['TE', 'trailers'],
    ['Trailer', 'x'],
    ['UPGRADE', 'h2c'],
    ['Proxy-Connection', 'close'],
    ['Transfer-Encoding', 'chunked'],
    ['Proxy-Authenticate', 'Basic'],
    ['proxy-authorization', 'x'],
    ['Set-Cookie', 'sid=1; Path=/'],
    ['Set-Cookie', 'b=2'],
  ],
  [
    ['Connection', 'close, X-Secret, Cache-Control'],
    ['X-Secret', 'hidden'],
    ['Cache-Control', 'public'],
    ['Via', '1.1 cdn'],
    ['via', '1.0 other'],
    ['Vary', 'Accept'],
  ],
  [['X-Latin', 'caf\u00e9']],
  [
    ['Connection', 'Keep-Alive, X-Secret'],
    ['x-secret', 'hidden'],
    ['Age', '3'],
    ['Connection', 'close'],
  ],
];

test('the client pairs made from offsets are those made from undici pairs: hop-by-hop out, named fields out, Via joined', () => {
  for (const fields of CASES) {
    const { raw, buf, offsets } = both(fields);
    const expected = clientResponseHeaders(raw, 'rempart');
    assert.deepEqual(clientResponsePairs(buf, 0, offsets, 'rempart'), expected);
    // Offsets are relative to where the head starts in the buffer.
    const shifted = Buffer.concat([Buffer.from('xxxxxxx'), buf]);
    assert.deepEqual(clientResponsePairs(shifted, 7, offsets, 'rempart'), expected);
  }
  const named = both([
    ['Connection', 'X-Secret'],
    ['X-Secret', 'hidden'],
    ['Keep-Alive', 'timeout=5'],
  ]);
  assert.deepEqual(clientResponsePairs(named.buf, 0, named.offsets, 'rempart'), ['via', '1.1 rempart']);
});

test('the fields a head written as bytes keeps are the pairs, and its Via value theirs', () => {
  for (const fields of CASES) {
    const { buf, offsets } = both(fields);
    const shifted = Buffer.concat([Buffer.from('xxxxxxx'), buf]);
    const pairs = clientResponsePairs(buf, 0, offsets, 'rempart');
    const kept: number[] = [];
    const via = clientResponseKept(shifted, 7, offsets, 'rempart', kept);
    const fromKept = kept.flatMap((k) => [
      shifted.toString('latin1', 7 + offsets[k]!, 7 + offsets[k + 1]!),
      shifted.toString('latin1', 7 + offsets[k + 2]!, 7 + offsets[k + 3]!),
    ]);
    assert.deepEqual([...fromKept, 'via', via], pairs, JSON.stringify(fields));
  }
});

test("the cache policy's fields read from offsets are the pairs' own, or null when a Connection field names fields", () => {
  const names = ['cache-control', 'set-cookie', 'vary', 'age'];
  for (const fields of CASES) {
    const { buf, offsets } = both(fields);
    const got = responseFieldsNamed(buf, 0, offsets, names);
    const connections = fields.filter(([n]) => n.toLowerCase() === 'connection').map(([, v]) => v);
    if (connections.some((v) => v !== 'keep-alive' && v !== 'close')) {
      assert.equal(got, null, JSON.stringify(fields));
      continue;
    }
    const pairs = clientResponsePairs(buf, 0, offsets, 'rempart');
    const expected: string[] = [];
    for (let i = 0; i < pairs.length; i += 2)
      if (names.includes(pairs[i]!.toLowerCase())) expected.push(pairs[i]!, pairs[i + 1]!);
    assert.deepEqual(got, expected, JSON.stringify(fields));
  }
});
