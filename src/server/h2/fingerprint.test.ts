// The Akamai HTTP/2 fingerprint over hand-built frames: Chromium's and Firefox's published values,
// what is left out (ACKs, stream WINDOW_UPDATEs, frames after HEADERS, frames cut short), and bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  H2_CAPTURE_MAX_BYTES,
  H2_PREFACE,
  h2FingerprintFromPreface,
  h2PrefaceComplete,
  pseudoHeaderOrder,
} from './fingerprint.ts';

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
function settings(pairs: Array<[number, number]>, flags = 0): Buffer {
  const p = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(4, flags, 0, p);
}
function windowUpdate(stream: number, inc: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(inc);
  return frame(8, 0, stream, p);
}
function priority(stream: number, exclusive: boolean, dep: number, wireWeight: number): Buffer {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(((exclusive ? 0x80000000 : 0) | dep) >>> 0);
  p[4] = wireWeight;
  return frame(2, 0, stream, p);
}
const headers = (stream: number) => frame(1, 0x5, stream, Buffer.from([0x82, 0x87, 0x84])); // HPACK: GET https /

test("Chromium's first flight gives Chromium's published fingerprint", () => {
  const bytes = Buffer.concat([
    H2_PREFACE,
    settings([
      [1, 65536],
      [2, 0],
      [4, 6291456],
      [6, 262144],
    ]),
    windowUpdate(0, 15663105),
    headers(1),
  ]);
  assert.equal(h2PrefaceComplete(bytes), true);
  assert.equal(h2FingerprintFromPreface(bytes, 'm,a,s,p'), '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p');
});

test("Firefox's older flight: PRIORITY frames with the real weight (wire + 1), exclusive bit and dependency", () => {
  const bytes = Buffer.concat([
    H2_PREFACE,
    settings([
      [1, 65536],
      [4, 131072],
      [5, 16384],
    ]),
    windowUpdate(0, 12517377),
    priority(3, false, 0, 200),
    priority(5, false, 0, 100),
    priority(7, false, 0, 0),
    priority(9, false, 7, 0),
    priority(11, false, 3, 0),
    priority(13, false, 0, 240),
    headers(15),
  ]);
  assert.equal(
    h2FingerprintFromPreface(bytes, 'm,p,a,s'),
    '1:65536;4:131072;5:16384|12517377|3:0:0:201,5:0:0:101,7:0:0:1,9:0:7:1,11:0:3:1,13:0:0:241|m,p,a,s',
  );
  assert.match(
    h2FingerprintFromPreface(Buffer.concat([H2_PREFACE, settings([]), priority(3, true, 1, 15)]), ''),
    /\|3:1:1:16\|/,
  );
});

test('no WINDOW_UPDATE is 00; ACKs, stream WINDOW_UPDATEs, later SETTINGS and frames after HEADERS are left out', () => {
  const bytes = Buffer.concat([
    H2_PREFACE,
    settings([[3, 100]]),
    settings([], 1), // an ACK
    windowUpdate(1, 999), // a stream's, not the connection's
    settings([[4, 1]]), // a second SETTINGS: only the first one is the client's defaults
    headers(1),
    windowUpdate(0, 5), // after the request: not part of the opening
  ]);
  assert.equal(h2FingerprintFromPreface(bytes, 'm,s,p,a'), '3:100|00|0|m,s,p,a');
});

test('not HTTP/2, or no SETTINGS first: ""; a frame cut by the capture is left out', () => {
  assert.equal(h2FingerprintFromPreface(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'm'), '');
  assert.equal(h2FingerprintFromPreface(H2_PREFACE, ''), '');
  assert.equal(h2FingerprintFromPreface(Buffer.concat([H2_PREFACE, windowUpdate(0, 1), settings([])]), ''), '');
  assert.equal(h2FingerprintFromPreface(Buffer.concat([H2_PREFACE, headers(1)]), ''), '');
  const full = Buffer.concat([H2_PREFACE, settings([[2, 0]]), windowUpdate(0, 7)]);
  assert.equal(h2FingerprintFromPreface(full, ''), '2:0|7|0|');
  assert.equal(h2FingerprintFromPreface(full.subarray(0, full.length - 1), ''), '2:0|00|0|');
  assert.equal(h2FingerprintFromPreface(full.subarray(0, 24 + 9 + 3), ''), '');
  // Every truncation and every flipped byte: a string, never a throw.
  const chrome = Buffer.concat([
    H2_PREFACE,
    settings([[1, 1]]),
    windowUpdate(0, 1),
    priority(3, false, 0, 1),
    headers(5),
  ]);
  for (let cut = 0; cut <= chrome.length; cut++) {
    assert.equal(typeof h2FingerprintFromPreface(chrome.subarray(0, cut), 'm'), 'string');
    assert.equal(typeof h2PrefaceComplete(chrome.subarray(0, cut)), 'boolean');
  }
  for (let i = 24; i < chrome.length; i++) {
    const b = Buffer.from(chrome);
    b[i] = 0xff;
    assert.equal(typeof h2FingerprintFromPreface(b, 'm'), 'string');
  }
});

test('bounded: a SETTINGS frame of 2,000 entries and 1,000 PRIORITY frames make a short fingerprint', () => {
  const many = settings(Array.from({ length: 2000 }, (_, i) => [i, i] as [number, number]));
  const prios = Array.from({ length: 1000 }, (_, i) => priority(2 * i + 1, false, 0, 1));
  const bytes = Buffer.concat([H2_PREFACE, many, ...prios, headers(1)]);
  const fp = h2FingerprintFromPreface(bytes, 'm,a,s,p');
  assert.ok(fp.length < 400, `${fp.length} chars`);
  assert.equal(fp.split('|')[0]!.split(';').length, 16);
  assert.equal(fp.split('|')[2]!.split(',').length, 8);
  // The capture stops waiting once 32 frames went by without a HEADERS.
  assert.equal(h2PrefaceComplete(Buffer.concat([H2_PREFACE, settings([]), ...prios.slice(0, 40)])), true);
  assert.ok(H2_CAPTURE_MAX_BYTES <= 65536);
});

test('h2PrefaceComplete: false while the preface or the frames before HEADERS are still arriving', () => {
  const bytes = Buffer.concat([H2_PREFACE, settings([[1, 1]]), windowUpdate(0, 1), headers(1)]);
  const headersAt = bytes.length - 12;
  for (let cut = 0; cut < headersAt + 9; cut++)
    assert.equal(h2PrefaceComplete(bytes.subarray(0, cut)), false, `cut ${cut}`);
  assert.equal(h2PrefaceComplete(bytes.subarray(0, headersAt + 9)), true);
  assert.equal(h2PrefaceComplete(Buffer.from('GET /')), true, 'not h2: nothing to wait for');
});

test('pseudoHeaderOrder reads the pseudo-headers in order, only the leading ones', () => {
  assert.equal(
    pseudoHeaderOrder([':method', 'GET', ':authority', 'x', ':scheme', 'https', ':path', '/', 'a', 'b']),
    'm,a,s,p',
  );
  assert.equal(
    pseudoHeaderOrder([
      ':method',
      'CONNECT',
      ':protocol',
      'websocket',
      ':scheme',
      'https',
      ':path',
      '/',
      ':authority',
      'x',
    ]),
    'm,r,s,p,a',
  );
  assert.equal(pseudoHeaderOrder(['user-agent', 'x', ':path', '/']), '');
  assert.equal(pseudoHeaderOrder([':x-unknown', '1', ':path', '/']), 'p');
});
