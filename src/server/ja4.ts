// JA4 (FoxIO, technical_details/JA4.md of github.com/FoxIO-LLC/ja4) of a TLS ClientHello, read from
// the first bytes of a TCP connection before the TLS socket takes it (src/server/accept.ts). It names
// the client's TLS stack: a script sending a browser's headers over Node's or Go's TLS still shows its
// own ciphers and extensions, which header checks alone cannot see.
//
//   JA4 = a_b_c
//   a: t (TLS over TCP), version (highest of supported_versions, else the hello's), d/i (SNI or not),
//      cipher count, extension count (GREASE left out, SNI and ALPN counted, capped at 99), first and
//      last character of the first ALPN value ('00' when none)
//   b: sha256 of the ciphers as 4-hex, sorted, comma-joined: first 12 hex ('000000000000' when none)
//   c: sha256 of the extensions sorted (SNI and ALPN left out) + '_' + signature algorithms in order
//
// The parser reads only the bytes it was given, checks every length against what is left, and
// answers '' for anything that is not a ClientHello: a malformed hello costs its sender a fingerprint,
// never the process (TLS then refuses it as it would have). Records are reassembled when a hello spans
// several (post-quantum key shares make hellos of 1.8 KB and more), up to what the caller buffered.
import { hash } from 'node:crypto';

/** The largest ClientHello read (its handshake length); a larger one gets no fingerprint. */
export const HELLO_MAX_BYTES = 16 * 1024;
/**
 * Records a hello may span. Real clients send one (two when a censorship tool splits it); many tiny
 * records would make each arriving byte cost a walk over all of them.
 */
export const HELLO_MAX_RECORDS = 8;

const EXT_SNI = 0x0000;
const EXT_ALPN = 0x0010;
const EXT_SIGNATURE_ALGORITHMS = 0x000d;
const EXT_SUPPORTED_VERSIONS = 0x002b;
const NO_HASH = '000000000000';

/** GREASE values (RFC 8701): 0x?a?a with both bytes equal. */
export function isGrease(v: number): boolean {
  return (v & 0x0f0f) === 0x0a0a && v >> 8 === (v & 0xff);
}

function hex4(v: number): string {
  return v.toString(16).padStart(4, '0');
}

function versionCode(v: number): string {
  switch (v) {
    case 0x0304:
      return '13';
    case 0x0303:
      return '12';
    case 0x0302:
      return '11';
    case 0x0301:
      return '10';
    case 0x0300:
      return 's3';
    case 0x0002:
      return 's2';
    default:
      return '00';
  }
}

function isAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** The ALPN part of JA4_a from the first protocol's bytes [start, end) (JA4.md "ALPN Extension Value"). */
function alpnCode(b: Buffer, start: number, end: number): string {
  if (end <= start) return '00';
  const first = b[start]!;
  const last = b[end - 1]!;
  if (isAlnum(first) && isAlnum(last)) return String.fromCharCode(first, last);
  const h = (first >> 4).toString(16) + (last & 0x0f).toString(16);
  return h;
}

function hash12(s: string): string {
  return s === '' ? NO_HASH : hash('sha256', s, 'hex').slice(0, 12);
}

/**
 * The handshake message carried by the TLS records at the start of `buf`, when it is a ClientHello:
 * its body (without the 4-byte handshake header), null while more bytes are needed, or 'invalid'.
 * Allocates only when the hello spans several records.
 */
export function clientHelloBody(buf: Buffer): Buffer | null | 'invalid' {
  let fragments: Buffer[] | null = null;
  let have = 0;
  let need = -1; // handshake bytes (header included), once the header is read
  let first: Buffer | null = null;
  let off = 0;
  for (let records = 0; need === -1 || have < need; records++) {
    if (records === HELLO_MAX_RECORDS) return 'invalid';
    if (buf.length < off + 5) return buf.length > 0 && buf[0] !== 0x16 ? 'invalid' : null;
    // Record header: content type 22 (handshake), version 3.x, a length a plaintext record may have.
    if (buf[off] !== 0x16 || buf[off + 1] !== 0x03) return 'invalid';
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384) return 'invalid';
    if (buf.length < off + 5 + len) return null;
    const frag = buf.subarray(off + 5, off + 5 + len);
    off += 5 + len;
    if (first === null) first = frag;
    else (fragments ??= [first]).push(frag);
    have += len;
    if (need === -1 && have >= 4) {
      const head = fragments === null ? first : Buffer.concat(fragments);
      if (head[0] !== 0x01) return 'invalid'; // not a ClientHello
      need = 4 + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
      if (need > HELLO_MAX_BYTES) return 'invalid';
    }
  }
  const all = fragments === null ? first! : Buffer.concat(fragments);
  return all.subarray(4, need);
}

/**
 * How many bytes `buf` must hold before reading it again can tell more (the end of the record being
 * received, or of the next record header): a reader that gets a hello byte by byte parses it a few
 * times, not once per byte. Walks at most HELLO_MAX_RECORDS record headers.
 */
export function helloBytesWanted(buf: Buffer): number {
  let off = 0;
  for (let records = 0; records < HELLO_MAX_RECORDS; records++) {
    if (buf.length < off + 5) return off + 5;
    off += 5 + buf.readUInt16BE(off + 3);
    if (buf.length < off) return off;
  }
  return off + 5;
}

/**
 * The JA4 of the ClientHello at the start of `buf` (TLS records as received), null while the hello
 * is incomplete, '' when the bytes are not a well-formed ClientHello.
 *
 * @example ja4FromRecords(firstBytes) // 't13d1516h2_8daaf6152771_e5627efa2ab1'
 */
export function ja4FromRecords(buf: Buffer): string | null {
  const body = clientHelloBody(buf);
  if (body === null) return null;
  if (body === 'invalid') return '';
  return ja4FromHelloBody(body);
}

/** The JA4 of a ClientHello body (after the handshake header), '' when it is malformed. */
export function ja4FromHelloBody(b: Buffer): string {
  const n = b.length;
  let p = 34; // legacy_version (2) + random (32)
  if (n < p + 1) return '';
  const helloVersion = b.readUInt16BE(0);
  p += 1 + b[p]!; // session id
  if (n < p + 2) return '';
  const cipherBytes = b.readUInt16BE(p);
  p += 2;
  if (cipherBytes % 2 !== 0 || n < p + cipherBytes) return '';
  const ciphers: string[] = [];
  for (let i = p; i < p + cipherBytes; i += 2) {
    const c = b.readUInt16BE(i);
    if (!isGrease(c)) ciphers.push(hex4(c));
  }
  p += cipherBytes;
  if (n < p + 1) return '';
  p += 1 + b[p]!; // compression methods
  if (p > n) return '';
  const exts: string[] = [];
  let extCount = 0;
  let sni = false;
  let alpn = '00';
  let version = helloVersion;
  let sigs = '';
  if (p < n) {
    if (n < p + 2) return '';
    const end = p + 2 + b.readUInt16BE(p);
    p += 2;
    if (end > n) return '';
    while (p < end) {
      if (end < p + 4) return '';
      const type = b.readUInt16BE(p);
      const len = b.readUInt16BE(p + 2);
      const d = p + 4;
      p = d + len;
      if (p > end) return '';
      if (isGrease(type)) continue;
      extCount++;
      if (type === EXT_SNI) sni = true;
      else if (type === EXT_ALPN) {
        // protocol_name_list: u16 length, then u8-length names; only the first counts.
        if (len >= 3) {
          const l = b[d + 2]!;
          alpn = d + 3 + l <= p ? alpnCode(b, d + 3, d + 3 + l) : '00';
        }
      } else exts.push(hex4(type));
      if (type === EXT_SUPPORTED_VERSIONS && len >= 1) {
        let best = -1;
        const stop = Math.min(p, d + 1 + b[d]!);
        for (let i = d + 1; i + 1 < stop; i += 2) {
          const v = b.readUInt16BE(i);
          if (!isGrease(v) && v > best) best = v;
        }
        if (best !== -1) version = best;
      } else if (type === EXT_SIGNATURE_ALGORITHMS && len >= 2) {
        const stop = Math.min(p, d + 2 + b.readUInt16BE(d));
        let list = '';
        for (let i = d + 2; i + 1 < stop; i += 2) {
          const v = b.readUInt16BE(i);
          if (!isGrease(v)) list += list === '' ? hex4(v) : `,${hex4(v)}`;
        }
        sigs = list;
      }
    }
  }
  const count = (x: number) => (x > 99 ? '99' : x < 10 ? `0${x}` : String(x));
  const a = `t${versionCode(version)}${sni ? 'd' : 'i'}${count(ciphers.length)}${count(extCount)}${alpn}`;
  ciphers.sort();
  exts.sort();
  const c = exts.join(',') + (sigs === '' ? '' : `_${sigs}`);
  return `${a}_${hash12(ciphers.join(','))}_${hash12(c)}`;
}
