// Once-a-second observers: the origin's /__origin/stats (load actually received) and Rempart's
// Prometheus /metrics (attack level, decisions). Failures are counted, never fatal.
import { Agent, request } from 'undici';
import type { Recorder } from './stats.ts';

const POLL_TIMEOUT_MS = 900;
const newAgent = () =>
  new Agent({
    headersTimeout: POLL_TIMEOUT_MS,
    bodyTimeout: POLL_TIMEOUT_MS,
    connect: { timeout: POLL_TIMEOUT_MS },
    connections: 1,
  });

async function getText(agent: Agent, url: string): Promise<string | null> {
  try {
    const res = await request(url, { dispatcher: agent, signal: AbortSignal.timeout(POLL_TIMEOUT_MS) });
    const text = await res.body.text();
    return res.statusCode === 200 ? text : null;
  } catch {
    return null;
  }
}

export interface OriginSample {
  atMs: number;
  served: number;
  rejected: number;
  busyMs: number;
  queued: number;
  inFlight: number;
  receivedAttack: number | null;
  receivedLegit: number | null;
}

export interface OriginTotals {
  polls: number;
  failures: number;
  served: number;
  rejected: number;
  busyMs: number;
  receivedAttack: number | null;
  receivedLegit: number | null;
  /** Δbusy / (workers · Δt) over the run, when workers is known. */
  utilisationPct: number | null;
  peakUtilisationPct: number | null;
  maxQueued: number;
}

export class OriginPoller {
  readonly url: string;
  readonly workers: number | null;
  readonly agent = newAgent();
  first: OriginSample | null = null;
  last: OriginSample | null = null;
  polls = 0;
  failures = 0;
  peakUtil: number | null = null;
  maxQueued = 0;

  constructor(originUrl: string, workers: number | null) {
    this.url = new URL('/__origin/stats', originUrl).href;
    this.workers = workers;
  }

  async sample(): Promise<OriginSample | null> {
    const text = await getText(this.agent, this.url);
    this.polls++;
    if (text === null) {
      this.failures++;
      return null;
    }
    try {
      const s = JSON.parse(text) as Record<string, unknown>;
      const received = s.received as { attack?: unknown; legit?: unknown } | undefined;
      const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
      return {
        atMs: performance.now(),
        served: n(s.served),
        rejected: n(s.rejected),
        busyMs: n(s.busyMs),
        queued: n(s.queued),
        inFlight: n(s.inFlight),
        receivedAttack: received && typeof received.attack === 'number' ? received.attack : null,
        receivedLegit: received && typeof received.legit === 'number' ? received.legit : null,
      };
    } catch {
      this.failures++;
      return null;
    }
  }

  /** Polls once and writes the deltas since the previous sample into the current second. */
  async poll(rec: Recorder): Promise<void> {
    const s = await this.sample();
    if (s === null) return;
    const prev = this.last;
    if (this.first === null) this.first = s;
    this.last = s;
    if (s.queued > this.maxQueued) this.maxQueued = s.queued;
    if (prev === null) return;
    const b = rec.second((prev.atMs + s.atMs) / 2); // the interval's middle: the second it mostly covers
    const dtMs = s.atMs - prev.atMs;
    b.originServed = s.served - prev.served;
    b.originRejected = s.rejected - prev.rejected;
    b.originQueued = s.queued;
    b.originBusyMsPerSec = dtMs > 0 ? ((s.busyMs - prev.busyMs) * 1000) / dtMs : 0;
    if (s.receivedAttack !== null && prev.receivedAttack !== null)
      b.originReceivedAttack = s.receivedAttack - prev.receivedAttack;
    if (s.receivedLegit !== null && prev.receivedLegit !== null)
      b.originReceivedLegit = s.receivedLegit - prev.receivedLegit;
    if (this.workers && dtMs > 0) {
      const util = Math.min(100, ((s.busyMs - prev.busyMs) / (this.workers * dtMs)) * 100);
      b.originUtilPct = util;
      if (this.peakUtil === null || util > this.peakUtil) this.peakUtil = util;
    }
  }

  close(): Promise<void> {
    return this.agent.destroy();
  }

  totals(): OriginTotals {
    const f = this.first;
    const l = this.last;
    const d = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null ? b - a : null);
    const dt = f && l ? l.atMs - f.atMs : 0;
    return {
      polls: this.polls,
      failures: this.failures,
      served: d(f?.served, l?.served) ?? 0,
      rejected: d(f?.rejected, l?.rejected) ?? 0,
      busyMs: d(f?.busyMs, l?.busyMs) ?? 0,
      receivedAttack: d(f?.receivedAttack, l?.receivedAttack),
      receivedLegit: d(f?.receivedLegit, l?.receivedLegit),
      utilisationPct:
        this.workers && f && l && dt > 0 ? Math.min(100, ((l.busyMs - f.busyMs) / (this.workers * dt)) * 100) : null,
      peakUtilisationPct: this.peakUtil,
      maxQueued: this.maxQueued,
    };
  }
}

function label(line: string, name: string): string | null {
  const m = new RegExp(`[{,]${name}="((?:[^"\\\\]|\\\\.)*)"`).exec(line);
  return m ? m[1]! : null;
}

/**
 * Parses Prometheus text: sum of rempart_requests_total by `decision`, max of rempart_attack_level,
 * rempart_refusals_total by `reason`, and rempart_admission_shed_total by `class/reason` (what a
 * failed real user's 503 was: a queue timeout, a fairness share, a full queue).
 */
export function parseMetrics(text: string): {
  attackLevel: number | null;
  decisions: Record<string, number>;
  refusals: Record<string, number>;
  shed: Record<string, number>;
} {
  let attackLevel: number | null = null;
  const decisions: Record<string, number> = {};
  const refusals: Record<string, number> = {};
  const shed: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line.length === 0 || line[0] === '#') continue;
    if (line.startsWith('rempart_attack_level ') || line.startsWith('rempart_attack_level{')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (Number.isFinite(v) && (attackLevel === null || v > attackLevel)) attackLevel = v;
    } else if (line.startsWith('rempart_requests_total{') || line.startsWith('rempart_requests_total ')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (!Number.isFinite(v)) continue;
      const key = label(line, 'decision') ?? '(none)';
      decisions[key] = (decisions[key] ?? 0) + v;
    } else if (line.startsWith('rempart_refusals_total{')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      const key = label(line, 'reason');
      if (Number.isFinite(v) && key !== null) refusals[key] = (refusals[key] ?? 0) + v;
    } else if (line.startsWith('rempart_admission_shed_total{')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      const cls = label(line, 'class');
      const reason = label(line, 'reason');
      if (Number.isFinite(v) && cls !== null && reason !== null)
        shed[`${cls}/${reason}`] = (shed[`${cls}/${reason}`] ?? 0) + v;
    }
  }
  return { attackLevel, decisions, refusals, shed };
}

/** last − first for every key of `last`, keeping only what grew. */
function grown(first: Record<string, number> | null, last: Record<string, number> | null): Record<string, number> {
  const out: Record<string, number> = {};
  if (last !== null)
    for (const k of Object.keys(last)) if (last[k]! - (first?.[k] ?? 0) > 0) out[k] = last[k]! - (first?.[k] ?? 0);
  return out;
}

export class MetricsPoller {
  readonly url: string;
  readonly agent = newAgent();
  first: Record<string, number> | null = null;
  last: Record<string, number> | null = null;
  firstReasons: { refusals: Record<string, number>; shed: Record<string, number> } | null = null;
  lastReasons: { refusals: Record<string, number>; shed: Record<string, number> } | null = null;
  lastAtMs = 0;
  maxAttackLevel: number | null = null;
  polls = 0;
  failures = 0;

  constructor(metricsUrl: string) {
    this.url = metricsUrl;
  }

  async poll(rec: Recorder | null): Promise<void> {
    const text = await getText(this.agent, this.url);
    this.polls++;
    if (text === null) {
      this.failures++;
      return;
    }
    const { attackLevel, decisions, refusals, shed } = parseMetrics(text);
    if (this.firstReasons === null) this.firstReasons = { refusals, shed };
    this.lastReasons = { refusals, shed };
    const prev = this.last;
    const prevAtMs = this.lastAtMs;
    const atMs = performance.now();
    this.lastAtMs = atMs;
    if (this.first === null) this.first = decisions;
    this.last = decisions;
    if (attackLevel !== null && (this.maxAttackLevel === null || attackLevel > this.maxAttackLevel))
      this.maxAttackLevel = attackLevel;
    if (rec === null) return;
    const b = rec.second(prev !== null ? (prevAtMs + atMs) / 2 : atMs);
    b.attackLevel = attackLevel;
    if (prev !== null) {
      const delta: Record<string, number> = {};
      for (const k of Object.keys(decisions)) delta[k] = decisions[k]! - (prev[k] ?? 0);
      b.decisions = delta;
    }
  }

  close(): Promise<void> {
    return this.agent.destroy();
  }

  totals(): {
    polls: number;
    failures: number;
    maxAttackLevel: number | null;
    decisions: Record<string, number>;
    refusals: Record<string, number>;
    shed: Record<string, number>;
  } {
    const out: Record<string, number> = {};
    if (this.last) for (const k of Object.keys(this.last)) out[k] = this.last[k]! - (this.first?.[k] ?? 0);
    return {
      polls: this.polls,
      failures: this.failures,
      maxAttackLevel: this.maxAttackLevel,
      decisions: out,
      refusals: grown(this.firstReasons?.refusals ?? null, this.lastReasons?.refusals ?? null),
      shed: grown(this.firstReasons?.shed ?? null, this.lastReasons?.shed ?? null),
    };
  }
}
