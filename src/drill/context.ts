// State shared by every simulated client of one run: target, recorder, stop flags, request cap.
import type { ResolvedTarget } from './safety.ts';
import type { Recorder } from './stats.ts';
import type { Attack } from './scenario.ts';

export interface RunContext {
  target: ResolvedTarget;
  /** http://ip:port actually dialled (the Host header carries the URL's host). */
  dialOrigin: string;
  hostHeader: string;
  deadlineMs: number;
  rec: Recorder;
  /** Set when the run ends: loops stop issuing requests. */
  stopped: boolean;
  /** Set once sockets are being torn down: errors from then on are ours, not the target's. */
  closing: boolean;
  maxRequests: number;
  /** Called when the request cap is hit (stops the run). */
  onCap: () => void;
  /** First distinct local errors, for the report. */
  warn: (message: string) => void;
}

/** Counts one request against the cap; false when the run must not send it. */
/**
 * The whole arrivals in `x` (a rate × a time): floored, but not below a whole number it misses by a
 * float's rounding. An attack's window end − start, two sums of a performance.now() reading, is
 * 1699.9999999999998 ms as often as 1700: such a run sent one arrival fewer than its rate called for, and
 * the report's sent + not sent fell short of it (test/drill.test.ts, CI: 678 + 0 of 680).
 */
export function wholeArrivals(x: number): number {
  return Math.floor(x + 1e-6);
}

export function takeRequest(ctx: RunContext): boolean {
  if (ctx.stopped) return false;
  if (ctx.rec.issued >= ctx.maxRequests) {
    ctx.onCap();
    return false;
  }
  ctx.rec.issued++;
  return true;
}

const TIMEOUT_CODES = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'ETIMEDOUT',
]);
/** The target (or something in front of it) refused or cut the connection. */
const REFUSED_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'ECONNABORTED',
  'HPE_INVALID_CONSTANT',
]);

export type ErrorKind = 'timeout' | 'refused' | 'local';

export function classifyError(err: unknown): ErrorKind {
  const e = err as { code?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code ?? '';
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  if (REFUSED_CODES.has(code)) return 'refused';
  return 'local';
}

export function errorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return `${e?.code ?? 'error'}: ${e?.message ?? String(err)}`;
}

export const USER_AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0',
  'Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1',
];

/** What every attack shares: its run context, its place in the scenario, its address block and its
 *  time window (startSec and durationSec from the scenario, made absolute). */
export class AttackWindow {
  readonly ctx: RunContext;
  readonly index: number;
  readonly spec: Attack;
  readonly block: number;
  readonly startMs: number;
  readonly endMs: number;
  finished = false;

  constructor(ctx: RunContext, index: number, spec: Attack, block: number, runStartMs: number) {
    this.ctx = ctx;
    this.index = index;
    this.spec = spec;
    this.block = block;
    this.startMs = runStartMs + spec.startSec * 1000;
    this.endMs = this.startMs + spec.durationSec * 1000;
  }
}
