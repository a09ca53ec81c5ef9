import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clientResponseHeaders, clientResponsePairs } from './headers.ts';

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

test('the client pairs made from offsets are those made from undici pairs: hop-by-hop out, named fields out, Via joined', () => {
  const cases: (readonly [string, string])[][] = [
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
  ];
  for (const fields of cases) {
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
