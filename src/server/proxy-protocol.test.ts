import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProxyHeader } from './proxy-protocol.ts';

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v2(verCmd: number, famProto: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = verCmd;
  head[1] = famProto;
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([SIG, head, body]);
}

function v2ipv6(groups: number[]): Buffer {
  const body = Buffer.alloc(36);
  groups.forEach((g, i) => body.writeUInt16BE(g, i * 2));
  body.writeUInt16BE(1, 16 + 14); // dst ::1
  body.writeUInt16BE(5555, 32);
  body.writeUInt16BE(443, 34);
  return v2(0x21, 0x21, body);
}

const V1 = Buffer.from('PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n');
const V2_IPV4 = v2(0x21, 0x11, Buffer.from([198, 51, 100, 4, 127, 0, 0, 1, 0x15, 0xb3, 0x00, 0x50]));

test('a v1 header is parsed into the source address and its length', () => {
  assert.deepEqual(parseProxyHeader(V1), { kind: 'ok', address: '198.51.100.4', headerBytes: V1.length });
  const withRequest = Buffer.concat([V1, Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
  assert.deepEqual(parseProxyHeader(withRequest), { kind: 'ok', address: '198.51.100.4', headerBytes: V1.length });
});

test('every strict prefix of a v1 header is partial', () => {
  for (let n = 0; n < V1.length; n++)
    assert.deepEqual(parseProxyHeader(V1.subarray(0, n)), { kind: 'partial' }, `prefix of ${n} bytes`);
});

test('every strict prefix of a v2 header is partial', () => {
  for (let n = 0; n < V2_IPV4.length; n++)
    assert.deepEqual(parseProxyHeader(V2_IPV4.subarray(0, n)), { kind: 'partial' }, `prefix of ${n} bytes`);
  assert.deepEqual(parseProxyHeader(V2_IPV4), { kind: 'ok', address: '198.51.100.4', headerBytes: 28 });
});

test('a v1 TCP6 header keeps the source address as sent', () => {
  const buf = Buffer.from('PROXY TCP6 2001:db8::1 ::1 5555 443\r\n');
  assert.deepEqual(parseProxyHeader(buf), { kind: 'ok', address: '2001:db8::1', headerBytes: buf.length });
});

test('v1 UNKNOWN keeps the peer address (null), with or without addresses after it', () => {
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { kind: 'ok', address: null, headerBytes: 15 });
  const long = Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n');
  assert.deepEqual(parseProxyHeader(long), { kind: 'ok', address: null, headerBytes: long.length });
});

test('malformed v1 headers are invalid', () => {
  for (const text of [
    'PROXY TCP4 198.51.100.4 127.0.0.1 5555\r\n',
    'PROXY TCP4 198.51.100.4 127.0.0.1 5555 80 extra\r\n',
    'PROXY TCP4 256.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXY TCP4 01.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXY TCP4 2001:db8::1 127.0.0.1 5555 80\r\n',
    'PROXY TCP6 198.51.100.4 ::1 5555 80\r\n',
    'PROXY TCP4 198.51.100.4 127.0.0.1 65536 80\r\n',
    'PROXY TCP4 198.51.100.4 127.0.0.1 -1 80\r\n',
    'PROXY TCP4  198.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXY UDP4 198.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXY tcp4 198.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXX TCP4 198.51.100.4 127.0.0.1 5555 80\r\n',
    'PROXY TCP4 198.51.100.4\n127.0.0.1 5555 80\r\n',
  ]) {
    assert.equal(parseProxyHeader(Buffer.from(text)).kind, 'invalid', JSON.stringify(text));
  }
});

test('a v1 header without CRLF within 107 bytes is invalid, not partial forever', () => {
  assert.equal(parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(96)}`)).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from(`PROXY TCP6 ${'a'.repeat(100)}\r\n`)).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(90)}`)).kind, 'partial');
});

test('a wrong first byte or signature is invalid as soon as it is seen', () => {
  assert.equal(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from('PR0')).kind, 'invalid');
  assert.equal(parseProxyHeader(Buffer.from([0x16, 0x03, 0x01])).kind, 'invalid');
  const badSig = Buffer.from(V2_IPV4);
  badSig[5] = 0x0e;
  assert.equal(parseProxyHeader(badSig.subarray(0, 6)).kind, 'invalid');
});

test('v2 headers with a wrong version, an unknown command, a short block or a huge length are invalid', () => {
  const v1InV2 = Buffer.from(V2_IPV4);
  v1InV2[12] = 0x11;
  assert.equal(parseProxyHeader(v1InV2).kind, 'invalid');
  const cmd2 = Buffer.from(V2_IPV4);
  cmd2[12] = 0x22;
  assert.equal(parseProxyHeader(cmd2).kind, 'invalid');
  assert.equal(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(8))).kind, 'invalid');
  assert.equal(parseProxyHeader(v2(0x21, 0x21, Buffer.alloc(20))).kind, 'invalid');
  const huge = Buffer.concat([SIG, Buffer.from([0x21, 0x11, 0xff, 0xff])]);
  assert.equal(parseProxyHeader(huge).kind, 'invalid');
});

test('v2 LOCAL and non-IP families keep the peer address (null) and skip the whole block', () => {
  assert.deepEqual(parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0))), { kind: 'ok', address: null, headerBytes: 16 });
  assert.deepEqual(parseProxyHeader(v2(0x20, 0x11, Buffer.alloc(12))), { kind: 'ok', address: null, headerBytes: 28 });
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x31, Buffer.alloc(216))), {
    kind: 'ok',
    address: null,
    headerBytes: 232,
  });
  assert.deepEqual(parseProxyHeader(v2(0x21, 0x00, Buffer.alloc(0))), { kind: 'ok', address: null, headerBytes: 16 });
});

test('v2 TLVs after the address block count towards the header length', () => {
  const body = Buffer.concat([
    Buffer.from([203, 0, 113, 7, 127, 0, 0, 1, 0, 1, 0, 2]),
    Buffer.from([0x04, 0x00, 0x02, 0x00, 0x00]),
  ]);
  const buf = v2(0x21, 0x11, body);
  assert.deepEqual(parseProxyHeader(buf), { kind: 'ok', address: '203.0.113.7', headerBytes: 16 + 17 });
  assert.deepEqual(parseProxyHeader(buf.subarray(0, buf.length - 1)), { kind: 'partial' });
});

test('v2 IPv6 source addresses are compressed as RFC 5952 says', () => {
  const cases: [number[], string][] = [
    [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], '2001:db8::7'],
    [[0, 0, 0, 0, 0, 0, 0, 0], '::'],
    [[0, 0, 0, 0, 0, 0, 0, 1], '::1'],
    [[1, 0, 0, 0, 0, 0, 0, 0], '1::'],
    [[0x2001, 0xdb8, 0, 1, 0, 0, 0, 1], '2001:db8:0:1::1'], // the longest run, not the first
    [[0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], '2001:db8::1:0:0:1'], // equal runs: the first
    [[0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    [[0x2001, 0xdb8, 0xabcd, 0x12, 0, 0, 0xff, 0x0a], '2001:db8:abcd:12::ff:a'], // no leading zeros, lower case
    [[0xfe80, 0, 0, 0, 0x0202, 0xb3ff, 0xfe1e, 0x8329], 'fe80::202:b3ff:fe1e:8329'],
  ];
  for (const [groups, want] of cases) {
    const r = parseProxyHeader(v2ipv6(groups));
    assert.deepEqual(r, { kind: 'ok', address: want, headerBytes: 52 }, want);
  }
});

test('v2 IPv6 compression agrees with the WHATWG URL serialiser on random addresses', () => {
  let seed = 0x2545f491;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  for (let i = 0; i < 500; i++) {
    // Mostly zeros, so runs of every length and position occur.
    const groups = Array.from({ length: 8 }, () => (rand() < 0.6 ? 0 : Math.floor(rand() * 0x10000)));
    const r = parseProxyHeader(v2ipv6(groups));
    assert.equal(r.kind, 'ok');
    const text = groups.map((g) => g.toString(16)).join(':');
    const canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    assert.equal((r as { address: string }).address, canonical, text);
  }
});
