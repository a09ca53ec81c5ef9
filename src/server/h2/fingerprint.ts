// The HTTP/2 fingerprint of a client connection, in Akamai's format (Black Hat EU 2017, "Passive
// Fingerprinting of HTTP/2 Clients"): what the client's HTTP/2 stack chose before its first request.
//
//   SETTINGS id:value;… (first SETTINGS frame, wire order) | WINDOW_UPDATE increment on stream 0
//   ('00' when none) | PRIORITY frames stream:exclusive:dependency:weight,… ('0' when none) |
//   pseudo-header order of the first request (m,a,s,p)
//
//   Chromium: 1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p
//
// Pure functions over bytes: the h2 entry captures them, this file only reads them.
//
// How the entry must capture the bytes (bounded): on a new h2 connection, before node:http2 takes the
// socket, read the client's first bytes (the 24-byte preface, then frames) into one buffer until
// `h2PrefaceComplete(buf)` says the first HEADERS frame's header arrived, or H2_CAPTURE_MAX_BYTES were
// read, or limits.headersTimeoutMs passed; then `socket.unshift(buf)` and hand the socket to the
// http2 server (its session reads bytes already buffered on the socket). One buffer per connection,
// dropped once the fingerprint is taken: no copy per stream. Alternatively the entry may tap the
// socket's first 'data' chunks without consuming them. The pseudo-header order comes from the first
// stream's raw headers as node:http2 decoded them (HPACK is its job): `pseudoHeaderOrder(rawHeaders)`.
// The result goes on the socket (kH2Fingerprint of src/pipeline/symbols.ts); `identify` copies it into
// ctx.h2Fingerprint for every request of the connection ('' when unknown).

/** The client connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Bytes an entry buffers at most for the fingerprint; a client still short of HEADERS gets what was seen. */
export const H2_CAPTURE_MAX_BYTES = 16 * 1024;
/** Frames read at most before the first HEADERS (a client may send any number of SETTINGS, PINGs…). */
const MAX_FRAMES = 32;
/** Settings and PRIORITY frames kept at most: the fingerprint is a log field and a sketch value. */
const MAX_SETTINGS = 16;
const MAX_PRIORITIES = 8;

const FRAME_HEADERS = 0x1;
const FRAME_PRIORITY = 0x2;
const FRAME_SETTINGS = 0x4;
const FRAME_WINDOW_UPDATE = 0x8;
const FLAG_ACK = 0x1;

/** Whether `buf` (a connection's first bytes) reaches the header of the first HEADERS frame, or holds no HTTP/2 preface. */
export function h2PrefaceComplete(buf: Buffer): boolean {
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, n, 0, n) !== 0) return true; // not h2: nothing more to wait for
  let p = H2_PREFACE.length;
  for (let frames = 0; p + 9 <= buf.length && frames < MAX_FRAMES; frames++) {
    if (buf[p + 3] === FRAME_HEADERS) return true;
    p += 9 + buf.readUIntBE(p, 3);
  }
  return p + 9 <= buf.length; // past MAX_FRAMES frames: stop waiting
}

/**
 * The Akamai HTTP/2 fingerprint from a connection's first bytes (preface, then frames up to the first
 * HEADERS) and the first request's pseudo-header order ('m,a,s,p'). '' when the bytes do not start
 * with the preface and a SETTINGS frame. Frames cut short by the capture are left out.
 *
 * @example h2FingerprintFromPreface(firstBytes, 'm,a,s,p') // '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p'
 */
export function h2FingerprintFromPreface(bytes: Buffer, pseudoOrder: string): string {
  if (bytes.length < H2_PREFACE.length + 9 || bytes.compare(H2_PREFACE, 0, H2_PREFACE.length, 0, 24) !== 0) return '';
  let settings: string | null = null;
  let windowUpdate = '';
  let priorities = '';
  let priorityCount = 0;
  let p = H2_PREFACE.length;
  for (let frames = 0; p + 9 <= bytes.length && frames < MAX_FRAMES; frames++) {
    const len = bytes.readUIntBE(p, 3);
    const type = bytes[p + 3]!;
    const flags = bytes[p + 4]!;
    const stream = bytes.readUInt32BE(p + 5) & 0x7fffffff;
    const d = p + 9;
    p = d + len;
    if (type === FRAME_HEADERS || p > bytes.length) break;
    if (type === FRAME_SETTINGS && (flags & FLAG_ACK) === 0 && settings === null) {
      settings = '';
      for (let i = 0; i + 6 <= len && i < MAX_SETTINGS * 6; i += 6) {
        const pair = `${bytes.readUInt16BE(d + i)}:${bytes.readUInt32BE(d + i + 2)}`;
        settings += settings === '' ? pair : `;${pair}`;
      }
    } else if (type === FRAME_WINDOW_UPDATE && stream === 0 && len === 4 && windowUpdate === '')
      windowUpdate = String(bytes.readUInt32BE(d) & 0x7fffffff);
    else if (type === FRAME_PRIORITY && len === 5 && priorityCount < MAX_PRIORITIES) {
      const dep = bytes.readUInt32BE(d);
      // Weight on the wire is 0–255 for 1–256 (RFC 7540 §5.3.2): the format writes the real weight.
      const prio = `${stream}:${dep >>> 31}:${dep & 0x7fffffff}:${bytes[d + 4]! + 1}`;
      priorities += priorityCount++ === 0 ? prio : `,${prio}`;
    }
    // The first frame must be SETTINGS (RFC 9113 §3.4): anything else is no HTTP/2 client worth naming.
    if (settings === null) return '';
  }
  if (settings === null) return '';
  return `${settings}|${windowUpdate || '00'}|${priorities || '0'}|${pseudoOrder}`;
}

/**
 * The pseudo-header order of a request from its raw headers (flat [name, value, …], as node:http2
 * gives them): `m,a,s,p` for :method, :authority, :scheme, :path; :protocol is `r`; others are left out.
 */
export function pseudoHeaderOrder(rawHeaders: readonly string[]): string {
  let out = '';
  for (let i = 0; i < rawHeaders.length && i < 20; i += 2) {
    const name = rawHeaders[i]!;
    if (name.charCodeAt(0) !== 58 /* ':' */) break; // pseudo-headers come first (RFC 9113 §8.3)
    const c =
      name === ':method'
        ? 'm'
        : name === ':authority'
          ? 'a'
          : name === ':scheme'
            ? 's'
            : name === ':path'
              ? 'p'
              : name === ':protocol'
                ? 'r'
                : '';
    if (c !== '') out += out === '' ? c : `,${c}`;
  }
  return out;
}
