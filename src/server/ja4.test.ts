// JA4 against FoxIO's published values: the worked example of technical_details/JA4.md (built here
// with GREASE added, which must not count) and ClientHellos cut from the pcaps of github.com/FoxIO-LLC/ja4
// with the JA4 their python/test/testdata lists for them. Then the reader's bounds: partial records,
// hellos spanning records, and garbage, which must answer '' and never throw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  clientHelloBody,
  HELLO_MAX_BYTES,
  HELLO_MAX_RECORDS,
  helloBytesWanted,
  isGrease,
  ja4FromHelloBody,
  ja4FromRecords,
} from './ja4.ts';

const hex = (s: string) => Buffer.from(s, 'hex');
const u16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
const vec16 = (b: Buffer) => Buffer.concat([u16(b.length), b]);
const list16 = (vs: number[]) => vec16(Buffer.concat(vs.map(u16)));

/** A ClientHello body: ciphers and extensions ([type, data]) in the order given. */
function helloBody(ciphers: number[], exts: Array<[number, Buffer]>, version = 0x0303): Buffer {
  const ext = Buffer.concat(exts.map(([t, d]) => Buffer.concat([u16(t), vec16(d)])));
  return Buffer.concat([
    u16(version),
    Buffer.alloc(32, 7), // random
    Buffer.from([32]),
    Buffer.alloc(32, 9), // session id
    list16(ciphers),
    Buffer.from([1, 0]), // compression: null
    vec16(ext),
  ]);
}

/** The body as TLS records of at most `recordSize` bytes each (or of these sizes first). */
function records(body: Buffer, recordSize: number | number[] = 16384): Buffer {
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const sizes = typeof recordSize === 'number' ? [] : recordSize.slice();
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; ) {
    const frag = hs.subarray(i, i + (sizes.shift() ?? (typeof recordSize === 'number' ? recordSize : 16384)));
    out.push(Buffer.from([0x16, 3, 1]), u16(frag.length), frag);
    i += frag.length;
  }
  return Buffer.concat(out);
}

const sni = (name: string) => vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from(name))]));
const alpn = (...protos: string[]) =>
  vec16(Buffer.concat(protos.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')]))));

// JA4.md's example: ciphers and extensions in wire order, signature algorithms as listed.
const EXAMPLE_CIPHERS = [
  0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d,
  0x002f, 0x0035,
];
const SIGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
function exampleExts(alpnData: Buffer = alpn('h2', 'http/1.1')): Array<[number, Buffer]> {
  return [
    [0x1a1a, Buffer.alloc(0)], // GREASE
    [0x001b, Buffer.from([2, 0, 2])],
    [0x0000, sni('example.com')],
    [0x0033, vec16(Buffer.alloc(0))],
    [0x0010, alpnData],
    [0x4469, Buffer.alloc(0)],
    [0x0017, Buffer.alloc(0)],
    [0x002d, Buffer.from([1, 1])],
    [0x000d, list16([0x2a2a, ...SIGS])], // a GREASE algorithm must not count either
    [0x0005, Buffer.from([1, 0, 0, 0, 0])],
    [0x0023, Buffer.alloc(0)],
    [0x0012, Buffer.alloc(0)],
    [0x002b, Buffer.concat([Buffer.from([6]), u16(0x3a3a), u16(0x0304), u16(0x0303)])],
    [0xff01, Buffer.from([0])],
    [0x000b, Buffer.from([1, 0])],
    [0x000a, list16([0x001d, 0x0017])],
    [0x0015, Buffer.alloc(4)],
    [0xfafa, Buffer.from([0])], // GREASE
  ];
}

test("JA4.md's worked example: t13d1516h2_8daaf6152771_e5627efa2ab1, GREASE ignored everywhere", () => {
  const bytes = records(helloBody(EXAMPLE_CIPHERS, exampleExts()));
  assert.equal(ja4FromRecords(bytes), 't13d1516h2_8daaf6152771_e5627efa2ab1');
});

test('the version is the highest of supported_versions; without it, the hello says', () => {
  const withoutSv = exampleExts().filter(([t]) => t !== 0x002b);
  assert.match(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, withoutSv)))!, /^t12d1515h2_/);
  assert.match(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, withoutSv, 0x0301)))!, /^t10d1515h2_/);
});

test('no SNI is i; the ALPN part follows JA4.md (first and last alphanumeric, else hex, 00 when none)', () => {
  const noSni = exampleExts().filter(([t]) => t !== 0x0000);
  assert.match(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, noSni)))!, /^t13i1515h2_8daaf6152771_e5627efa2ab1$/);
  const a = (data: Buffer) => ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, exampleExts(data))))!.slice(8, 10);
  assert.equal(a(alpn('http/1.1')), 'h1');
  assert.equal(a(alpn('a')), 'aa');
  assert.equal(a(alpn('\x20\x61')), '21');
  assert.equal(a(alpn('\x30\xab')), '3b');
  assert.equal(a(alpn('\xab')), 'ab');
  assert.equal(a(alpn('')), '00');
  assert.equal(a(vec16(Buffer.alloc(0))), '00');
  // Without any ALPN extension: one extension fewer.
  const noAlpn = exampleExts().filter(([t]) => t !== 0x0010);
  assert.match(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, noAlpn)))!, /^t13d151500_8daaf6152771_e5627efa2ab1$/);
});

test('empty lists hash to 000000000000; no signature algorithms leaves no underscore', () => {
  assert.equal(ja4FromRecords(records(helloBody([], []))), 't12i000000_000000000000_000000000000');
  assert.match(ja4FromRecords(records(helloBody([0x1301], [[0x0017, Buffer.alloc(0)]])))!, /^t12i010100_/);
  // c = sha256("0017"), with no "_" after it; an empty signature_algorithms extension counts as an extension.
  const sha12 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 12);
  const c = (exts: Array<[number, Buffer]>) => ja4FromRecords(records(helloBody([0x1301], exts)))!.split('_')[2];
  assert.equal(c([[0x0017, Buffer.alloc(0)]]), sha12('0017'));
  assert.equal(
    c([
      [0x0017, Buffer.alloc(0)],
      [0x000d, list16([])],
    ]),
    sha12('000d,0017'),
  );
  assert.equal(
    c([
      [0x0017, Buffer.alloc(0)],
      [0x000d, list16([0x0403])],
    ]),
    sha12('000d,0017_0403'),
  );
});

test('GREASE values are the sixteen 0x?a?a', () => {
  const grease = [];
  for (let v = 0; v < 0x10000; v++) if (isGrease(v)) grease.push(v);
  assert.equal(grease.length, 16);
  assert.ok(grease.every((v) => (v & 0xff) === v >> 8 && (v & 0x0f) === 0x0a));
});

// ClientHellos from FoxIO's pcaps, with the JA4 their testdata gives.
const TLS12 = hex(
  '1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d22046f8617b580ac935' +
    '8e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02fcca9cca8c02cc030c00ac009c013c014' +
    '009c009d002f00350100019100000021001f00001c636f6e74696c652e73657276696365732e6d6f7a696c6c612e636f6d001700' +
    '00ff01000100000a000e000c001d00170018001901000101000b00020100002300000010000e000c02683208687474702f312e31' +
    '0005000501000000000022000a000804030503060302030033006b0069001d00208909858fbeb6ed2f1248ba5b9e2978bead0e84' +
    '0110192c61daed0096798b184400170041044d183d91f5eed35791fa982464e3b0214aaa5f5d1b78616d9b9fbebc22d11f535b2f' +
    '94c686143136aa795e6e5a875d6c08064ad5b76d44caad766e2483012748002b00050403040303000d0018001604030503060308' +
    '040805080604010501060102030201002d00020101001c000240010015007a000000000000000000000000000000000000000000' +
    '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000' +
    '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',
);
const CLOUDFLARE = hex(
  '16030100e8010000e40303858226c04fbaeddef4246093b4cfdab38f9dcfef145360e417686575cac49c7000005cc030c02cc028' +
    'c024c014c00a009f006b0039cca9cca8ccaaff8500c400880081009d003d003500c00084c02fc02bc027c023c013c009009e0067' +
    '003300be0045009c003c002f00ba0041c011c00700050004c012c0080016000a00ff0100005f0000001700150000127777772e63' +
    '6c6f7564666c6172652e636f6d000b00020100000a00080006001d00170018000d001c001a06010603efef0501050304010403ee' +
    'eeeded03010303020102030010000e000c02683208687474702f312e31',
);
const NON_ASCII_ALPN = hex(
  '1603010200010001fc03030f9e38acb9a54a7c6e00e29a70ac2feee180ff76d7f25dca84932a66a42d1e5a20bc58b92f865e6b9a' +
    'a4a6371cadcb0afe1da1c0f705209a11d52357f56d5dd9620020aaaa130113021303c02bc02fc02cc030cca9cca8c013c014009c' +
    '009d002f0035010001939a9a0000ff010001000033002b00290a0a000100001d0020cf55af2603e92f59eb321779706a18fa6b96' +
    'b16c16404c2264ed687a59401878002d00020101000500050100000000446900050003026832000d001200100403080404010503' +
    '08050501080606010010000e000c02baad08687474702f312e3100230000001b0003020002002b0007060a0a0304030300000022' +
    '002000001d636c69656e7473657276696365732e676f6f676c65617069732e636f6d00120000000a000a00080a0a001d00170018' +
    '00170000000b000201006a6a000100001500ba000000000000000000000000000000000000000000000000000000000000000000' +
    '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000' +
    '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000' +
    '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',
);

test("FoxIO's pcaps: the hellos give the JA4 their test data lists", () => {
  // pcap/tls12.pcap (Firefox to contile.services.mozilla.com), python/test/testdata/tls12.pcap.json
  assert.equal(ja4FromRecords(TLS12), 't13d1715h2_5b57614c22b0_3d5424432f57');
  // pcap/tls-alpn-h2.pcap (www.cloudflare.com, TLS 1.2, GREASE-like values in the signature algorithms)
  assert.equal(ja4FromRecords(CLOUDFLARE), 't12d4605h2_85626a9a5f7f_aaf95bb78ec9');
  // pcap/tls-non-ascii-alpn.pcapng: first ALPN 0xba 0xad. FoxIO's tools still print 99 there (their
  // testdata says t13d151699_…); JA4.md now says the hex's first and last characters: bd.
  assert.equal(ja4FromRecords(NON_ASCII_ALPN), 't13d1516bd_8daaf6152771_e5627efa2ab1');
});

test('a hello arriving in pieces: null until whole, then the same JA4; across several records too', () => {
  const whole = records(helloBody(EXAMPLE_CIPHERS, exampleExts()));
  for (let cut = 0; cut < whole.length; cut++) assert.equal(ja4FromRecords(whole.subarray(0, cut)), null, `cut ${cut}`);
  const split = records(helloBody(EXAMPLE_CIPHERS, exampleExts()), 100);
  assert.ok(split.length > whole.length + 5);
  for (let cut = 0; cut < split.length; cut++) assert.equal(ja4FromRecords(split.subarray(0, cut)), null);
  assert.equal(ja4FromRecords(split), 't13d1516h2_8daaf6152771_e5627efa2ab1');
  // The handshake header itself split across records.
  assert.equal(
    ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, exampleExts()), [2, 1, 50])),
    't13d1516h2_8daaf6152771_e5627efa2ab1',
  );
  // Eight records at most: in nine, or in two-byte records, the hello gets no fingerprint.
  assert.equal(
    ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, exampleExts()), [1, 1, 1, 1, 1, 1, 1])),
    't13d1516h2_8daaf6152771_e5627efa2ab1',
  );
  assert.equal(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, exampleExts()), [1, 1, 1, 1, 1, 1, 1, 1])), '');
  assert.equal(ja4FromRecords(records(helloBody(EXAMPLE_CIPHERS, exampleExts()), 2)), '');
  // Bytes after the hello (the client's next flight) change nothing.
  assert.equal(ja4FromRecords(Buffer.concat([whole, Buffer.alloc(50, 0x17)])), 't13d1516h2_8daaf6152771_e5627efa2ab1');
});

test('helloBytesWanted: the end of the record header or record being received', () => {
  const whole = records(helloBody(EXAMPLE_CIPHERS, exampleExts()), 100);
  assert.equal(helloBytesWanted(whole.subarray(0, 0)), 5);
  assert.equal(helloBytesWanted(whole.subarray(0, 4)), 5);
  assert.equal(helloBytesWanted(whole.subarray(0, 5)), 105);
  assert.equal(helloBytesWanted(whole.subarray(0, 104)), 105);
  assert.equal(helloBytesWanted(whole.subarray(0, 105)), 110);
  assert.equal(helloBytesWanted(whole.subarray(0, 110)), 210);
  // Feeding a reader only at those marks gives the same JA4 with a handful of parses.
  let have = 0;
  let parses = 0;
  let got: string | null = null;
  while (got === null) {
    have = Math.min(whole.length, Math.max(have + 1, helloBytesWanted(whole.subarray(0, have))));
    parses++;
    got = ja4FromRecords(whole.subarray(0, have));
  }
  assert.equal(got, 't13d1516h2_8daaf6152771_e5627efa2ab1');
  assert.ok(parses <= 2 * HELLO_MAX_RECORDS, `${parses} parses`);
});

test('not a hello: plain HTTP, another record type, another handshake, an oversize length: ""', () => {
  assert.equal(ja4FromRecords(Buffer.from('GET / HTTP/1.1\r\n\r\n')), '');
  assert.equal(ja4FromRecords(Buffer.from('G')), '');
  assert.equal(ja4FromRecords(Buffer.from([0x17, 3, 3, 0, 1, 0])), '');
  assert.equal(ja4FromRecords(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), '', 'a ServerHello');
  assert.equal(ja4FromRecords(Buffer.from([0x16, 3, 1, 0x40, 0x01, 1])), '', 'a record over 2^14');
  assert.equal(ja4FromRecords(Buffer.from([0x16, 3, 1, 0, 4, 1, 0x01, 0, 0])), '', 'a hello over HELLO_MAX_BYTES');
  assert.equal(ja4FromRecords(Buffer.from([0x16, 3, 1, 0, 0])), '', 'an empty record');
  assert.equal(HELLO_MAX_BYTES, 16384);
  assert.equal(clientHelloBody(Buffer.alloc(0)), null);
});

test('malformed bodies answer "" and never throw: every truncation, every byte flipped', () => {
  const body = helloBody(EXAMPLE_CIPHERS, exampleExts());
  for (let cut = 0; cut < body.length; cut++) {
    const r = ja4FromHelloBody(body.subarray(0, cut));
    assert.equal(typeof r, 'string');
  }
  // Lengths that lie: each byte set to 0xff in turn, the whole thing still read within its bounds.
  for (let i = 0; i < body.length; i++) {
    const b = Buffer.from(body);
    b[i] = 0xff;
    assert.equal(typeof ja4FromRecords(records(b)), 'string');
  }
  // A cipher list of odd length, an extension running past its block.
  assert.equal(ja4FromHelloBody(Buffer.concat([Buffer.alloc(35), u16(3), Buffer.alloc(5)])), '');
  const overrun = Buffer.concat([Buffer.alloc(35), list16([0x1301]), Buffer.from([1, 0]), u16(4), u16(0x0017), u16(9)]);
  assert.equal(ja4FromHelloBody(overrun), '');
});
