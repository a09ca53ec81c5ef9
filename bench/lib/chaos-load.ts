// Load for the chaos drills (bench/chaos.ts, test/chaos.test.ts): closed-loop clients, each on its
// own keep-alive connection (or a fresh connection per request), that sort every answer by kind —
// origin 200, cache hit, stale copy, fallback upstream, each refusal by status and error code, a
// body cut short, a connection error, a hang — so a drill can say what clients saw during a fault
// and when service came back, not just a request rate.
import http from 'node:http';

export interface ChaosRequest {
  method?: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
}

export interface ChaosLoadOptions {
  port: number;
  clients: number;
  /** Pause after each answer, per client (ms). */
  periodMs: number;
  /** What client `i` asks for its `n`-th request. */
  request: (i: number, n: number) => ChaosRequest;
  /** A request without a complete answer after this long is a hang (destroyed and counted). */
  hangMs?: number;
  /** A new connection per request (what a client arriving now sees) instead of one keep-alive each. */
  fresh?: boolean;
  localAddress?: string;
}

/** One answered (or failed) request: start and end in ms from the load's start, and its kind. */
export interface Shot {
  start: number;
  end: number;
  kind: string;
}

/** Kinds that are a success for the client: the origin's answer, a cached or stale copy, the fallback. */
export const SERVED = new Set(['200', 'cache hit', 'stale', 'fallback']);

/** A 2xx answer, or `<status> <error code>` (`<status> page` for an HTML page), or a transport failure. */
function kindOf(res: http.IncomingMessage, body: string): string {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) {
    const cache = String(res.headers['x-cache'] ?? '');
    if (cache === 'STALE') return 'stale';
    if (cache === 'HIT') return 'cache hit';
    if (body.includes('"channel":"sms"')) return 'fallback';
    return '200';
  }
  try {
    const code = (JSON.parse(body) as { error?: { code?: string } }).error?.code;
    if (typeof code === 'string') return `${status} ${code.replace(/^RMP_ERR_/, '')}`;
  } catch {
    // not JSON
  }
  return `${status} ${/^\s*</.test(body) ? 'page' : 'other'}`;
}

export class ChaosLoad {
  readonly shots: Shot[] = [];
  readonly t0 = performance.now();
  #running = true;
  readonly #loops: Promise<void>[] = [];
  readonly #opts: ChaosLoadOptions;

  constructor(opts: ChaosLoadOptions) {
    this.#opts = opts;
    for (let i = 0; i < opts.clients; i++) this.#loops.push(this.#loop(i));
  }

  /** Ms since the load started. */
  now(): number {
    return performance.now() - this.t0;
  }

  /** Stop sending; resolves once every request in flight has its outcome. */
  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }

  async #loop(i: number): Promise<void> {
    const o = this.#opts;
    const agent = o.fresh ? false : new http.Agent({ keepAlive: true, maxSockets: 1 });
    // Clients start spread over one period, not all in the same millisecond.
    await sleep((o.periodMs * i) / Math.max(1, o.clients));
    for (let n = 0; this.#running; n++) {
      const start = this.now();
      const kind = await this.#one(o.request(i, n), agent);
      this.shots.push({ start, end: this.now(), kind });
      if (kind.startsWith('conn '))
        await sleep(Math.max(o.periodMs, 50)); // no busy loop on refusals
      else if (o.periodMs > 0) await sleep(o.periodMs);
    }
    if (agent) agent.destroy();
  }

  #one(r: ChaosRequest, agent: http.Agent | false): Promise<string> {
    const o = this.#opts;
    return new Promise((resolve) => {
      let settled = false;
      const done = (kind: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(kind);
      };
      const headers: Record<string, string> = { accept: 'application/json', ...r.headers };
      if (r.body !== undefined) {
        headers['content-type'] ??= 'application/json';
        headers['content-length'] = String(Buffer.byteLength(r.body));
      }
      const req = http.request(
        {
          host: '127.0.0.1',
          port: o.port,
          method: r.method ?? 'GET',
          path: r.path,
          headers,
          agent,
          localAddress: o.localAddress,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            if (body.length < 4096) body += c;
          });
          res.on('end', () => done(res.complete ? kindOf(res, body) : 'cut short'));
          res.on('aborted', () => done('cut short'));
          res.on('error', () => done('cut short'));
        },
      );
      const timer = setTimeout(() => {
        done('hang');
        req.destroy();
      }, o.hangMs ?? 10_000);
      req.on('error', (err: NodeJS.ErrnoException) => done(`conn ${err.code ?? err.message}`));
      req.end(r.body);
    });
  }
}

export interface LoadSummary {
  sent: number;
  served: number;
  /** Kinds with their counts, most frequent first. */
  kinds: Array<[string, number]>;
  failed: number;
  hangs: number;
  maxLatencyMs: number;
}

export function summarize(shots: Shot[]): LoadSummary {
  const counts = new Map<string, number>();
  let maxLatencyMs = 0;
  for (const s of shots) {
    counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
    maxLatencyMs = Math.max(maxLatencyMs, s.end - s.start);
  }
  const kinds = [...counts].sort((a, b) => b[1] - a[1]);
  const served = kinds.filter(([k]) => SERVED.has(k)).reduce((s, [, n]) => s + n, 0);
  return {
    sent: shots.length,
    served,
    kinds,
    failed: shots.length - served,
    hangs: counts.get('hang') ?? 0,
    maxLatencyMs,
  };
}

/**
 * Ms from `fromMs` (the fault removed) to the end of the first request sent after it that got one
 * of `kinds` (default: the origin's own 200), or null if none did.
 */
export function recoveryMs(
  shots: Shot[],
  fromMs: number,
  kinds: ReadonlySet<string> = new Set(['200']),
): number | null {
  let best: number | null = null;
  for (const s of shots) if (s.start >= fromMs && kinds.has(s.kind) && (best === null || s.end < best)) best = s.end;
  return best === null ? null : best - fromMs;
}

/** Requests sent after `fromMs` that were not served (a fault that is over should leave none). */
export function failedAfter(shots: Shot[], fromMs: number): number {
  return shots.filter((s) => s.start >= fromMs && !SERVED.has(s.kind)).length;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
