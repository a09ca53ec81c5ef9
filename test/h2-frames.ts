// A raw HTTP/2 client for the attack tests (test/h2-attacks.test.ts): frames built by hand, so a test
// can send what no well-behaved library would (a reset right after every request, a flood of control
// frames, a header block that decodes to far more than it weighs, a window never opened), over TLS
// with ALPN h2. Only what the tests need: HPACK without Huffman, static-table references, literals.
import tls from 'node:tls';

export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

export const Flags = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  ENHANCE_YOUR_CALM: 11,
} as const;

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** SETTINGS with [id, value] pairs (1 header table size, 3 max concurrent streams, 4 initial window size). */
export function settings(pairs: [number, number][] = []): Buffer {
  const p = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, value], i) => {
    p.writeUInt16BE(id, 6 * i);
    p.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, p);
}

export function rstStream(streamId: number, code: number = ErrorCode.CANCEL): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code, 0);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function ping(data = 0): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(data, 4);
  return frame(FrameType.PING, 0, 0, p);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

/** An HPACK integer with an `n`-bit prefix, the prefix's high bits set to `mask`. */
function hpackInt(value: number, n: number, mask: number): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const out = [mask | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

export const hpack = {
  /** A field from the static or dynamic table (RFC 7541 §6.1): 2 `:method GET`, 4 `:path /`, 7 `:scheme https`. */
  indexed: (index: number): Buffer => hpackInt(index, 7, 0x80),
  /** A literal field without indexing, new name (§6.2.2). */
  literal: (name: string, value: string): Buffer =>
    Buffer.concat([Buffer.from([0]), hpackString(name), hpackString(value)]),
  /** A literal field added to the dynamic table, new name (§6.2.1): later referenced as index 62. */
  literalIndexed: (name: string, value: string): Buffer =>
    Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]),
  /** A literal field, the name from the table at `index` (1 `:authority`, 4 `:path`). */
  literalNamed: (index: number, value: string): Buffer => Buffer.concat([hpackInt(index, 4, 0), hpackString(value)]),
};

/** The header block of `GET path` to `authority` over https. */
export function getBlock(path = '/', authority = 'localhost', extra: Buffer[] = []): Buffer {
  return Buffer.concat([
    hpack.indexed(2),
    hpack.indexed(7),
    hpack.literalNamed(4, path),
    hpack.literalNamed(1, authority),
    ...extra,
  ]);
}

export function headers(streamId: number, block: Buffer, endStream = true, endHeaders = true): Buffer {
  const flags = (endStream ? Flags.END_STREAM : 0) | (endHeaders ? Flags.END_HEADERS : 0);
  return frame(FrameType.HEADERS, flags, streamId, block);
}

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export interface RawH2 {
  readonly socket: tls.TLSSocket;
  /** Every frame received so far. */
  readonly frames: Frame[];
  /** The GOAWAY's error code once one came, else null. */
  goaway(): number | null;
  /** Streams the server reset, with the code. */
  resets(): Map<number, number>;
  /** Streams that got a response head. */
  answered(): Set<number>;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  write(b: Buffer): boolean;
  close(): void;
}

/**
 * Open a TLS connection with ALPN h2 and send the preface with `initialSettings`. Frames received are
 * collected; the server's SETTINGS are acknowledged (as any client would) and PINGs answered unless `quiet`.
 */
export async function connectRaw(
  port: number,
  initialSettings: [number, number][] = [],
  opts: { localAddress?: string; quiet?: boolean } = {},
): Promise<RawH2> {
  // localAddress reaches the TCP socket; tls's types do not list it.
  const options = { host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false };
  const socket = tls.connect({ ...options, localAddress: opts.localAddress } as tls.ConnectionOptions);
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('close', () => reject(new Error('closed before the handshake')));
  });
  if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN chose ${socket.alpnProtocol}`);
  const frames: Frame[] = [];
  let buf = Buffer.alloc(0);
  let isClosed = false;
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const f = {
        type: buf[3]!,
        flags: buf[4]!,
        streamId: buf.readUInt32BE(5) & 0x7fffffff,
        payload: buf.subarray(9, 9 + len),
      };
      buf = buf.subarray(9 + len);
      frames.push(f);
      if (opts.quiet) continue;
      if (f.type === FrameType.SETTINGS && (f.flags & Flags.ACK) === 0 && !socket.destroyed)
        socket.write(frame(FrameType.SETTINGS, Flags.ACK, 0));
    }
  });
  const closed = new Promise<void>((r) =>
    socket.once('close', () => {
      isClosed = true;
      r();
    }),
  );
  socket.write(Buffer.concat([PREFACE, settings(initialSettings)]));
  return {
    socket,
    frames,
    goaway() {
      const g = frames.find((f) => f.type === FrameType.GOAWAY);
      return g === undefined ? null : g.payload.readUInt32BE(4);
    },
    resets() {
      const m = new Map<number, number>();
      for (const f of frames) if (f.type === FrameType.RST_STREAM) m.set(f.streamId, f.payload.readUInt32BE(0));
      return m;
    },
    answered() {
      return new Set(frames.filter((f) => f.type === FrameType.HEADERS).map((f) => f.streamId));
    },
    closed,
    isClosed: () => isClosed,
    write: (b) => (socket.destroyed ? false : socket.write(b)),
    close: () => socket.destroy(),
  };
}
