// The Akamai HTTP/2 fingerprint over hand-built frames: Chromium's and Firefox's published values,
// what is left out (ACKs, stream WINDOW_UPDATEs, frames after HEADERS, frames cut short), and bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import {
  captureH2Preface,
  H2_CAPTURE_IDLE_MS,
  H2_CAPTURE_MAX_BYTES,
  H2_PREFACE,
  h2BytesWanted,
  h2FingerprintFromPreface,
  h2PrefaceComplete,
  pseudoHeaderOrder,
  pseudoOrderFromHeaderBlock,
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

test('h2PrefaceComplete: false until the first HEADERS frame is whole; h2BytesWanted says how far to read', () => {
  const bytes = Buffer.concat([H2_PREFACE, settings([[1, 1]]), windowUpdate(0, 1), headers(1)]);
  for (let cut = 0; cut < bytes.length; cut++)
    assert.equal(h2PrefaceComplete(bytes.subarray(0, cut)), false, `cut ${cut}`);
  assert.equal(h2PrefaceComplete(bytes), true);
  assert.equal(h2PrefaceComplete(Buffer.from('GET /')), true, 'not h2: nothing to wait for');
  const marks = [24, 24 + 9, 24 + 15, 24 + 15 + 9, 24 + 15 + 13, 24 + 15 + 13 + 9, bytes.length];
  assert.equal(h2BytesWanted(bytes.subarray(0, 3)), 24);
  for (let i = 0; i + 1 < marks.length; i++) assert.equal(h2BytesWanted(bytes.subarray(0, marks[i]!)), marks[i + 1]);
});

// HPACK blocks by hand (RFC 7541): 0x82 :method GET, 0x87 :scheme https, 0x84 :path /, 0x41 :authority
// with incremental indexing and a literal value, 0x04 :path without indexing, 0x10 never-indexed literal name.
const lit = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);
const CHROME_BLOCK = Buffer.concat([Buffer.from([0x82, 0x41]), lit('example.com'), Buffer.from([0x87, 0x84])]);

test('pseudoOrderFromHeaderBlock reads the pseudo-headers of an HPACK block without decoding it', () => {
  assert.equal(pseudoOrderFromHeaderBlock(CHROME_BLOCK), 'm,a,s,p');
  const firefox = Buffer.concat([
    Buffer.from([0x82, 0x04]),
    lit('/x?y'),
    Buffer.from([0x41]),
    lit('a.b'),
    Buffer.from([0x87]),
  ]);
  assert.equal(pseudoOrderFromHeaderBlock(firefox), 'm,p,a,s');
  // A regular header ends them (user-agent is static 58); a dynamic-table size update is no field.
  const withUa = Buffer.concat([Buffer.from([0x3f, 0xe1, 0x1f, 0x82, 0x7a]), lit('curl'), Buffer.from([0x84])]);
  assert.equal(pseudoOrderFromHeaderBlock(withUa), 'm');
  // :protocol as a plain literal name; a Huffman-coded ':' name is a pseudo-header left unnamed.
  const connect = Buffer.concat([
    Buffer.from([0x02]),
    lit('CONNECT'),
    Buffer.from([0x00]),
    lit(':protocol'),
    lit('websocket'),
  ]);
  assert.equal(pseudoOrderFromHeaderBlock(connect), 'm,r');
  const huff = Buffer.concat([Buffer.from([0x10, 0x82, 0xb8, 0x00]), lit('v'), Buffer.from([0x84])]);
  assert.equal(pseudoOrderFromHeaderBlock(huff), 'p');
  // A reference to the dynamic table, a cut, nonsense: what was read so far, never a throw.
  assert.equal(pseudoOrderFromHeaderBlock(Buffer.from([0x82, 0xbe, 0x84])), 'm');
  assert.equal(pseudoOrderFromHeaderBlock(Buffer.from([0x82, 0x41, 0x7f])), 'm,a');
  assert.equal(pseudoOrderFromHeaderBlock(Buffer.from([0x80])), '');
  assert.equal(pseudoOrderFromHeaderBlock(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), '');
  for (let cut = 0; cut <= CHROME_BLOCK.length; cut++)
    assert.equal(typeof pseudoOrderFromHeaderBlock(CHROME_BLOCK.subarray(0, cut)), 'string');
});

test('the fingerprint reads the order from the first HEADERS frame, padded or with priority', () => {
  const head = Buffer.concat([H2_PREFACE, settings([[2, 0]]), windowUpdate(0, 9)]);
  assert.equal(h2FingerprintFromPreface(Buffer.concat([head, frame(1, 0x5, 1, CHROME_BLOCK)])), '2:0|9|0|m,a,s,p');
  const padded = Buffer.concat([Buffer.from([3]), CHROME_BLOCK, Buffer.from([0x7f, 0x7f, 0x7f])]);
  assert.equal(h2FingerprintFromPreface(Buffer.concat([head, frame(1, 0x5 | 0x8, 1, padded)])), '2:0|9|0|m,a,s,p');
  const prio = Buffer.concat([Buffer.from([0x80, 0, 0, 0, 255]), CHROME_BLOCK]);
  assert.equal(h2FingerprintFromPreface(Buffer.concat([head, frame(1, 0x5 | 0x20, 1, prio)])), '2:0|9|0|m,a,s,p');
  // Given an order, the frame's is not read.
  assert.equal(h2FingerprintFromPreface(Buffer.concat([head, frame(1, 0x5, 1, CHROME_BLOCK)]), 's,p'), '2:0|9|0|s,p');
  // Cut inside the HEADERS frame: the pseudo-headers that arrived.
  assert.equal(
    h2FingerprintFromPreface(Buffer.concat([head, frame(1, 0x5, 1, CHROME_BLOCK)]).subarray(0, head.length + 10)),
    '2:0|9|0|m',
  );
});

test('a real node:http2 client: captured, put back, served, and the order read from HPACK matches node:http2\u2019s', async () => {
  const h2 = http2.createServer();
  const seen: Array<{ fp: string; order: string }> = [];
  h2.on('stream', (stream, _headers, _flags, rawHeaders) => {
    const socket = stream.session!.socket as unknown as { fp: string };
    seen.push({ fp: socket.fp, order: pseudoHeaderOrder(rawHeaders as unknown as string[]) });
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  const server = net.createServer((socket) => {
    captureH2Preface(socket, 5000, (bytes) => {
      (socket as unknown as { fp: string }).fp = h2FingerprintFromPreface(bytes);
      h2.emit('connection', socket);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as net.AddressInfo).port;
    const client = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 20 } });
    for (const headers of [
      { ':method': 'GET', ':authority': 'x', ':scheme': 'http', ':path': '/a' },
      { ':path': '/b', ':method': 'GET', ':scheme': 'http', ':authority': 'x' },
    ]) {
      const req = client.request(headers);
      req.resume();
      await new Promise((r) => req.on('end', r));
    }
    client.close();
    assert.equal(seen.length, 2);
    const [first, second] = seen as [{ fp: string; order: string }, { fp: string; order: string }];
    // One connection, one fingerprint: the first request's order, as node:http2 decoded it.
    assert.match(first.fp, /^4:1048576(;[0-9:;]+)?\|(00|\d+)\|0\|m,a,s,p$/);
    assert.equal(first.fp.split('|')[3], first.order);
    assert.equal(second.fp, first.fp);
    assert.equal(second.order, 'p,m,s,a');
  } finally {
    server.close();
  }
});

test('captureH2Preface: a flight dribbled byte by byte, then not h2, then silence until the timeout', async () => {
  const flight = Buffer.concat([H2_PREFACE, settings([[1, 7]]), frame(1, 0x5, 1, CHROME_BLOCK), Buffer.from('after')]);
  const got: Array<{ bytes: number; fp: string; rest: string }> = [];
  const server = net.createServer((socket) => {
    captureH2Preface(socket, 300, (bytes) => {
      let rest = '';
      socket.on('data', (d) => {
        rest += d.toString('latin1');
        if (rest.length >= bytes.length && !socket.writableEnded) {
          got.push({ bytes: bytes.length, fp: h2FingerprintFromPreface(bytes), rest });
          socket.end();
        }
      });
      if (bytes.length === 0) {
        got.push({ bytes: 0, fp: '', rest: '' });
        socket.end();
      }
      socket.resume();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const send = async (chunks: Buffer[]) => {
    const c = net.connect(port, '127.0.0.1');
    c.setNoDelay(true);
    c.on('error', () => {}); // the server may close before the last bytes are written
    const closed = new Promise((r) => c.once('close', r));
    c.resume();
    await new Promise((r) => c.once('connect', r));
    for (const b of chunks) {
      if (c.destroyed) break;
      c.write(b);
      await new Promise((r) => setImmediate(r));
    }
    await closed;
  };
  try {
    await send([...flight].map((b) => Buffer.from([b])));
    await send([Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
    await send([]);
    assert.equal(got.length, 3);
    // Every byte given back, in order, after the capture (here, the HEADERS frame and 'after').
    assert.equal(got[0]!.fp, '1:7|00|0|m,a,s,p');
    assert.ok(got[0]!.rest.startsWith(H2_PREFACE.toString('latin1')));
    assert.ok(got[0]!.rest.length >= flight.length - 5);
    assert.equal(got[1]!.fp, '');
    assert.equal(got[1]!.rest, 'GET / HTTP/1.1\r\n\r\n');
    assert.equal(got[2]!.bytes, 0, 'silence: done with nothing at the timeout');
  } finally {
    server.close();
  }
});

test('a client that waits for the server\u2019s SETTINGS before its first request is not kept waiting', async () => {
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    stream.end();
  });
  const fps: string[] = [];
  const server = net.createServer((socket) => {
    // A timeout far past the test's: only the idle pause after SETTINGS can end the capture.
    captureH2Preface(socket, 600_000, (bytes) => {
      fps.push(h2FingerprintFromPreface(bytes));
      h2.emit('connection', socket);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    c.on('error', () => {});
    await new Promise((r) => c.once('connect', r));
    c.write(Buffer.concat([H2_PREFACE, settings([[2, 0]])]));
    // The server's SETTINGS comes once node:http2 has the connection.
    const first = await new Promise<Buffer>((r) => c.once('data', r));
    assert.equal(first[3], 4, 'a SETTINGS frame');
    c.destroy();
    assert.deepEqual(fps, ['2:0|00|0|']);
    assert.ok(H2_CAPTURE_IDLE_MS <= 100);
  } finally {
    server.close();
  }
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
