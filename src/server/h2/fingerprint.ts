// The HTTP/2 fingerprint of a client connection, in Akamai's format (Black Hat EU 2017, "Passive
// Fingerprinting of HTTP/2 Clients"): what the client's HTTP/2 stack chose before its first request.
//
//   SETTINGS id:value;… (first SETTINGS frame, wire order) | WINDOW_UPDATE increment on stream 0
//   ('00' when none) | PRIORITY frames stream:exclusive:dependency:weight,… ('0' when none) |
//   pseudo-header order of the first request (m,a,s,p)
//
//   Chromium: 1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p
//
// Pure functions over bytes, and the capture that gets them (captureH2Preface).
//
// How the entry must capture the bytes (bounded): once TLS chose h2 (or a cleartext connection opened
// with the preface), and before node:http2 takes the socket, call captureH2Preface(socket, timeoutMs,
// done): it reads the client's first bytes into one buffer until the first HEADERS frame is whole
// (h2PrefaceComplete), or the client pauses H2_CAPTURE_IDLE_MS after its SETTINGS (a client waiting
// for the server's SETTINGS), or H2_CAPTURE_MAX_BYTES were read, or limits.headersTimeoutMs passed,
// puts them back (`socket.unshift`) and calls done(bytes). Then `socket[kH2Fingerprint] =
// h2FingerprintFromPreface(bytes)` (src/pipeline/symbols.ts) and hand the socket to the http2 server:
// its session reads the bytes put back (TLSSocket and net.Socket alike; checked on Node 24). One buffer
// per connection, dropped once the fingerprint is taken: nothing per stream. `identify` copies the value
// into ctx.h2Fingerprint for every request of the connection ('' when unknown). The pseudo-header order
// is read from the HEADERS frame's HPACK block without decoding it (the first block of a connection
// names pseudo-headers from the static table); an entry that prefers node:http2's decoding passes
// pseudoHeaderOrder(rawHeaders) of the first stream instead.
import type { Socket } from 'node:net';

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

/**
 * How many of a connection's first bytes the fingerprint needs, as far as `buf` tells: the end of the
 * frame header or frame being received, up to the end of the first HEADERS frame; `buf.length` when
 * nothing more is needed (the preface does not match, or MAX_FRAMES frames came without a HEADERS).
 * A capture joins its chunks only once this many arrived: one-byte writes cost no copy per byte.
 */
export function h2BytesWanted(buf: Buffer): number {
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, n, 0, n) !== 0) return buf.length; // not h2: nothing to wait for
  if (buf.length < H2_PREFACE.length) return H2_PREFACE.length;
  let p = H2_PREFACE.length;
  for (let frames = 0; frames < MAX_FRAMES; frames++) {
    if (p + 9 > buf.length) return p + 9;
    const end = p + 9 + buf.readUIntBE(p, 3);
    if (buf[p + 3] === FRAME_HEADERS || end > buf.length) return end;
    p = end;
  }
  return buf.length;
}

/** Whether `buf` holds all the fingerprint needs (the first HEADERS frame whole), or nothing more will help. */
export function h2PrefaceComplete(buf: Buffer): boolean {
  return h2BytesWanted(buf) <= buf.length;
}

/**
 * The Akamai HTTP/2 fingerprint from a connection's first bytes (preface, then frames up to and
 * including the first HEADERS). The pseudo-header order is read from that HEADERS frame's header block
 * (pseudoOrderFromHeaderBlock) unless `pseudoOrder` is given (e.g. from node:http2's decoded raw
 * headers, pseudoHeaderOrder). '' when the bytes do not start with the preface and a SETTINGS frame.
 * Frames cut short by the capture are left out (a HEADERS frame cut short gives the pseudo-headers it holds).
 *
 * @example h2FingerprintFromPreface(firstBytes) // '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p'
 */
export function h2FingerprintFromPreface(bytes: Buffer, pseudoOrder?: string): string {
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
    if (type === FRAME_HEADERS) {
      if (pseudoOrder === undefined && settings !== null) pseudoOrder = pseudoOrderOfHeadersFrame(bytes, d, p, flags);
      break;
    }
    if (p > bytes.length) break;
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
  return `${settings}|${windowUpdate || '00'}|${priorities || '0'}|${pseudoOrder ?? ''}`;
}

const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;

/** The pseudo-header order of a HEADERS frame whose payload is [start, end) of `bytes` (end may lie past what was captured). */
function pseudoOrderOfHeadersFrame(bytes: Buffer, start: number, end: number, flags: number): string {
  let from = start;
  let to = Math.min(end, bytes.length);
  if ((flags & FLAG_PADDED) !== 0) {
    if (from >= to) return '';
    if (end <= bytes.length) to -= bytes[from]!; // the padding is at the end: only known when the frame is whole
    from++;
  }
  if ((flags & FLAG_PRIORITY) !== 0) from += 5;
  return from < to ? pseudoOrderFromHeaderBlock(bytes.subarray(from, to)) : '';
}

/**
 * HPACK's static table (RFC 7541 Appendix A) as far as the pseudo-headers go: index → letter
 * (1 :authority, 2–3 :method, 4–5 :path, 6–7 :scheme, 8–14 :status, which a request does not send).
 */
const STATIC_PSEUDO = ['', 'a', 'm', 'm', 'p', 'p', 's', 's', '', '', '', '', '', '', ''];

/** An HPACK prefix integer (RFC 7541 §5.1) at `at` with an N-bit prefix: [value, next offset], or null when cut or absurd. */
function hpackInt(b: Buffer, at: number, bits: number): [number, number] | null {
  if (at >= b.length) return null;
  const max = (1 << bits) - 1;
  let v = b[at]! & max;
  let i = at + 1;
  if (v < max) return [v, i];
  for (let shift = 0; shift <= 21; shift += 7) {
    if (i >= b.length) return null;
    const c = b[i++]!;
    v += (c & 0x7f) * 2 ** shift;
    if ((c & 0x80) === 0) return [v, i];
  }
  return null; // more than 4 continuation bytes: no header block of a real client
}

/**
 * The order of the pseudo-headers at the start of an HPACK header block, read without decoding it:
 * the names of pseudo-headers are in the static table (a literal name starting with ':', like
 * `:protocol`, gives 'r' when plain, is skipped when Huffman-coded). Stops at the first regular header,
 * at a reference to the dynamic table (the first request of a connection has none), or at a cut.
 */
export function pseudoOrderFromHeaderBlock(block: Buffer): string {
  let out = '';
  let at = 0;
  for (let fields = 0; at < block.length && fields < 16; fields++) {
    const c = block[at]!;
    let index: number;
    let literal = true;
    if ((c & 0x80) !== 0) {
      const r = hpackInt(block, at, 7);
      if (r === null) break;
      [index, at] = r;
      literal = false;
    } else if ((c & 0xc0) === 0x40) {
      const r = hpackInt(block, at, 6);
      if (r === null) break;
      [index, at] = r;
    } else if ((c & 0xe0) === 0x20) {
      const r = hpackInt(block, at, 5); // dynamic table size update: no field
      if (r === null) break;
      at = r[1];
      continue;
    } else {
      const r = hpackInt(block, at, 4); // without indexing, or never indexed
      if (r === null) break;
      [index, at] = r;
    }
    let letter: string;
    if (index === 0 && !literal) break; // index 0 is no field (RFC 7541 §6.1)
    if (index === 0) {
      // A literal name: a string (H bit, 7-bit length).
      if (at >= block.length) break;
      const huffman = (block[at]! & 0x80) !== 0;
      const r = hpackInt(block, at, 7);
      if (r === null || r[0] === 0 || r[1] + r[0] > block.length) break;
      const first = block[r[1]]!;
      // ':' is 0x3a plain, and the 7 bits 1011100 in HPACK's Huffman code.
      const pseudo = huffman ? first >> 1 === 0x5c : first === 0x3a;
      if (!pseudo) break;
      letter = !huffman && block.toString('latin1', r[1], r[1] + r[0]) === ':protocol' ? 'r' : '';
      at = r[1] + r[0];
    } else if (index < STATIC_PSEUDO.length) letter = STATIC_PSEUDO[index]!;
    else break; // a regular header (static 15+) or the dynamic table: the pseudo-headers are over
    if (letter !== '') out += out === '' ? letter : `,${letter}`;
    if (literal) {
      // Skip the value string.
      const r = hpackInt(block, at, 7);
      if (r === null) break;
      at = r[1] + r[0];
    }
  }
  return out;
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

/**
 * How long a capture waits, once the client's SETTINGS frame is whole, for more of its first flight.
 * Browsers send the preface, SETTINGS, WINDOW_UPDATE and the first HEADERS in one flight; some clients
 * wait for the server's SETTINGS before their first request, which the server sends only once node:http2
 * has the connection: for them the capture ends after this pause (their fingerprint has what they sent,
 * and the pseudo-header order only if the entry gives it).
 */
export const H2_CAPTURE_IDLE_MS = 50;

/** Whether `buf` holds the preface and a whole first frame that is SETTINGS. */
function settingsWhole(buf: Buffer): boolean {
  const p = H2_PREFACE.length;
  return buf.length >= p + 9 && buf[p + 3] === FRAME_SETTINGS && buf.length >= p + 9 + buf.readUIntBE(p, 3);
}

/**
 * Read a new h2 connection's first bytes for its fingerprint, then put them back and call
 * `done(bytes)` (see the header comment): up to the end of the first HEADERS frame, or
 * H2_CAPTURE_IDLE_MS after the last bytes once the SETTINGS frame is whole, or H2_CAPTURE_MAX_BYTES,
 * or `timeoutMs`. A socket closed meanwhile never calls `done`. The socket is left paused: the http2
 * server resumes it.
 */
export function captureH2Preface(socket: Socket, timeoutMs: number, done: (bytes: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let have = 0;
  let want = H2_PREFACE.length + 9;
  let finished = false;
  let idle: NodeJS.Timeout | null = null;
  const finish = () => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    if (idle !== null) clearTimeout(idle);
    socket.removeListener('data', onData);
    socket.removeListener('close', onClose);
    socket.pause();
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    if (bytes.length > 0) socket.unshift(bytes);
    done(bytes);
  };
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    have += chunk.length;
    if (have >= H2_CAPTURE_MAX_BYTES) return finish();
    if (idle !== null) idle.refresh();
    if (have < want && chunks.length > 1) {
      // The first chunk is always looked at (not h2 is told at once); one-byte segments are joined every 64.
      if (chunks.length >= 64) chunks.splice(0, chunks.length, Buffer.concat(chunks));
      return;
    }
    if (chunks.length > 1) {
      const all = Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(all);
    }
    want = h2BytesWanted(chunks[0]!);
    if (want <= have) return finish();
    if (idle === null && settingsWhole(chunks[0]!)) idle = setTimeout(finish, H2_CAPTURE_IDLE_MS);
  };
  const onClose = () => {
    finished = true;
    clearTimeout(timer);
    if (idle !== null) clearTimeout(idle);
  };
  const timer = setTimeout(finish, timeoutMs);
  socket.on('data', onData);
  socket.once('close', onClose);
  socket.resume();
}
