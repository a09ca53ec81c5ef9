// Request-based attackers (flood, botnet, cache-busting, login-stuffing): open-loop arrivals
// scheduled by rate, independent of responses, with a cap on unanswered requests.
import { Pool, type Dispatcher } from 'undici';
import type { Attack } from './scenario.ts';
import {
  AttackWindow,
  takeRequest,
  wholeArrivals,
  classifyError,
  errorText,
  USER_AGENTS,
  type RunContext,
} from './context.ts';
import { sourceAddress } from './safety.ts';

/** Statuses a proxy answers with when it refuses a request itself. */
const BLOCK_STATUSES = new Set([403, 429, 503, 444, 408]);

/** Scripted clients do not bother looking like browsers. */
const FLOOD_AGENTS = ['python-requests/2.32.3', 'Go-http-client/1.1', 'curl/8.5.0', 'okhttp/4.12.0'];

function browserHeaders(ctx: RunContext, ua: string): Record<string, string> {
  return {
    host: ctx.hostHeader,
    'user-agent': ua,
    accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
    'accept-language': 'fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7',
    'accept-encoding': 'gzip, deflate, br',
    'upgrade-insecure-requests': '1',
    'sec-fetch-dest': 'document',
    'sec-fetch-mode': 'navigate',
    'sec-fetch-site': 'none',
    'x-drill-kind': 'attack',
  };
}

const randDigits = () => String(Math.floor(Math.random() * 1e11)).padStart(11, '0');

export class RateAttack extends AttackWindow {
  readonly pools: Array<Pool | undefined>;
  /** Header sets, one per user agent; an address keeps its agent. */
  readonly headerSets: Record<string, string>[];
  issued = 0;
  inFlight = 0;
  nextAddress = 0;

  constructor(ctx: RunContext, index: number, spec: Attack, block: number, runStartMs: number) {
    super(ctx, index, spec, block, runStartMs);
    this.pools = new Array(spec.addresses);
    if (spec.kind === 'flood' || spec.kind === 'login-stuffing') {
      this.headerSets = FLOOD_AGENTS.map((ua) => {
        const h: Record<string, string> = {
          host: ctx.hostHeader,
          'user-agent': ua,
          accept: '*/*',
          'x-drill-kind': 'attack',
        };
        if (spec.kind === 'login-stuffing') h['content-type'] = 'application/x-www-form-urlencoded';
        return h;
      });
    } else {
      this.headerSets = USER_AGENTS.map((ua) => browserHeaders(ctx, ua));
    }
    this.onResponse = this.onResponse.bind(this);
    this.onError = this.onError.bind(this);
  }

  /** Called every few ms: issues every arrival due by now (catching up after a stall: open loop). */
  tick(nowMs: number): void {
    if (this.finished || nowMs < this.startMs) return;
    const t = (nowMs < this.endMs ? nowMs : this.endMs) - this.startMs;
    const due = wholeArrivals((t * this.spec.ratePerSecond) / 1000) - this.issued;
    for (let k = 0; k < due && !this.ctx.stopped; k++) this.fire();
    if (nowMs >= this.endMs) this.finished = true;
  }

  /**
   * At the run's end: the arrivals that fell due (by `nowMs`, within the attack's window) but were never
   * issued, because this loop fell behind (a stall longer than the time left), are counted not sent, so
   * that sent + not sent is what the rate called for and nothing goes missing from the report.
   */
  settle(nowMs: number): void {
    if (nowMs < this.startMs) return;
    const t = (nowMs < this.endMs ? nowMs : this.endMs) - this.startMs;
    const left = wholeArrivals((t * this.spec.ratePerSecond) / 1000) - this.issued;
    for (let k = 0; k < left; k++) {
      this.issued++;
      this.ctx.rec.attackNotSent(this.index);
    }
  }

  fire(): void {
    this.issued++;
    const ctx = this.ctx;
    if (this.inFlight >= this.spec.maxInFlight) {
      ctx.rec.attackNotSent(this.index);
      return;
    }
    if (!takeRequest(ctx)) return;
    const a = this.nextAddress;
    this.nextAddress = a + 1 === this.spec.addresses ? 0 : a + 1;
    let pool = this.pools[a];
    if (pool === undefined) {
      pool = new Pool(ctx.dialOrigin, {
        connections: this.spec.connections,
        pipelining: 1,
        localAddress: ctx.target.bindSources ? sourceAddress(this.block, a) : undefined, // not connect.localAddress: ignored there
        connect: { timeout: ctx.deadlineMs },
        headersTimeout: ctx.deadlineMs,
        bodyTimeout: ctx.deadlineMs,
        // Bots at human pace reconnect for each request rather than hold thousands of idle sockets.
        keepAliveTimeout: 2000,
        keepAliveMaxTimeout: 2000,
      });
      this.pools[a] = pool;
    }
    const headers = this.headerSets[a % this.headerSets.length];
    const spec = this.spec;
    let opts: Dispatcher.RequestOptions;
    switch (spec.kind) {
      case 'flood':
        opts = { method: 'GET', path: spec.path, headers };
        break;
      case 'botnet':
        // Each bot asks for a different, never-cached parcel.
        opts = {
          method: 'GET',
          path: spec.path === '/track/*' ? `/track/6A${randDigits()}` : spec.path.replace('*', randDigits()),
          headers,
        };
        break;
      case 'cache-busting':
        opts = {
          method: 'GET',
          path: `${spec.path}${spec.path.includes('?') ? '&' : '?'}x=${Math.random().toString(36).slice(2)}`,
          headers,
        };
        break;
      default: {
        const n = Math.floor(Math.random() * 200_000); // half of them are not even valid account names
        opts = {
          method: 'POST',
          path: spec.path,
          headers,
          body: `user=user${n}&password=${Math.random().toString(36).slice(2, 10)}`,
        };
      }
    }
    this.inFlight++;
    ctx.rec.attackSent(this.index);
    pool.request(opts).then(this.onResponse, this.onError);
  }

  onResponse(res: Dispatcher.ResponseData): void {
    this.inFlight--;
    res.body.dump().catch(() => {});
    if (this.ctx.closing) return;
    const rec = this.ctx.rec;
    if (res.headers['x-origin'] !== undefined) rec.attackOutcome(this.index, 'passed');
    else if (BLOCK_STATUSES.has(res.statusCode) || res.headers['rempart-challenge'] !== undefined)
      rec.attackOutcome(this.index, 'blocked');
    else rec.attackOutcome(this.index, 'other');
  }

  onError(err: unknown): void {
    this.inFlight--;
    if (this.ctx.closing) return;
    const kind = classifyError(err);
    if (kind === 'timeout') this.ctx.rec.attackOutcome(this.index, 'timeout');
    else if (kind === 'refused') this.ctx.rec.attackOutcome(this.index, 'refused');
    else {
      this.ctx.rec.attacks[this.index]!.error++;
      this.ctx.warn(`${this.spec.kind}: ${errorText(err)}`);
    }
  }

  async close(): Promise<void> {
    this.finished = true;
    await Promise.allSettled(this.pools.map((p) => p?.destroy()));
  }
}
