// runDrill: loads a scenario, checks the target is safe, runs legit users and attackers for a
// bounded time and request count, observes origin/proxy, and returns (and optionally writes) the report.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadScenario, MAX_ADDRESSES, MAX_SECONDS, SLOW_KINDS, ScenarioError, type Scenario } from './scenario.ts';
import { resolveTarget } from './safety.ts';
import { Recorder } from './stats.ts';
import type { RunContext } from './context.ts';
import { startLegit, LEGIT_BLOCK } from './legit.ts';
import { RateAttack } from './attacks.ts';
import { SlowAttack } from './slow.ts';
import { RapidResetAttack } from './rapid-reset.ts';
import { OriginPoller, MetricsPoller } from './pollers.ts';
import { buildReport, progressLine, type DrillReport } from './report.ts';
import { renderHtml } from './html.ts';

export const DEFAULT_MAX_REQUESTS = 2_000_000;
/** How long in-flight requests may finish after the end before sockets are torn down. */
const GRACE_MS = 1500;
const TICK_MS = 10;

export interface DrillOptions {
  /** Built-in name, YAML path, or a scenario returned by validateScenario()/loadScenario(). */
  scenario: string | Scenario;
  target: string;
  /** Overrides the scenario's duration; attack times are scaled proportionally. */
  seconds?: number;
  /** Multiplies every legit population's user count. */
  scale?: number;
  originUrl?: string;
  originWorkers?: number;
  metricsUrl?: string;
  /** Directory for report.json/report.html/progress.log; none written when undefined. */
  reportDir?: string;
  quiet?: boolean;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Abort = stop early (Ctrl-C); the report is still produced. */
  signal?: AbortSignal;
  maxRequests?: number;
  deadlineMs?: number;
  allowRemote?: boolean;
  iOwnThisTarget?: boolean;
}

/** Applies --seconds and --scale; re-validates so limits still hold. */
export function adjustScenario(sc: Scenario, seconds?: number, scale?: number): Scenario {
  const out: Scenario = structuredClone(sc);
  if (seconds !== undefined) {
    if (!Number.isFinite(seconds) || seconds < 1 || seconds > MAX_SECONDS)
      throw new ScenarioError(sc.source, [`--seconds: must be in [1, ${MAX_SECONDS}] (got ${seconds})`]);
    const f = seconds / sc.seconds;
    out.seconds = seconds;
    for (const a of out.attacks) {
      a.startSec = a.startSec * f;
      a.durationSec = Math.max(0.1, a.durationSec * f);
    }
  }
  if (scale !== undefined) {
    if (!Number.isFinite(scale) || scale <= 0)
      throw new ScenarioError(sc.source, [`--scale: must be a positive number (got ${scale})`]);
    for (const l of out.legit) l.users = Math.round(l.users * scale);
    const total = out.legit.reduce((s, l) => s + l.users, 0);
    if (total > MAX_ADDRESSES)
      throw new ScenarioError(sc.source, [`--scale: ${total} users exceeds the limit of ${MAX_ADDRESSES}`]);
  }
  return out;
}

export async function runDrill(opts: DrillOptions): Promise<DrillReport> {
  // A Scenario object is one validateScenario()/loadScenario() returned: already checked.
  const base: Scenario = typeof opts.scenario === 'string' ? await loadScenario(opts.scenario) : opts.scenario;
  const scenario = adjustScenario(base, opts.seconds, opts.scale);
  const safety = { allowRemote: opts.allowRemote, iOwnThisTarget: opts.iOwnThisTarget };
  const target = await resolveTarget(opts.target, '--target', safety);
  if (opts.originUrl) await resolveTarget(opts.originUrl, '--origin', safety);
  if (opts.metricsUrl) await resolveTarget(opts.metricsUrl, '--metrics', safety);
  const maxRequests = opts.maxRequests ?? DEFAULT_MAX_REQUESTS;
  const deadlineMs = opts.deadlineMs ?? scenario.deadlineMs;
  const warnings: string[] = [];
  if (!target.bindSources)
    warnings.push('source addresses not bound (target is not IPv4 loopback): every client shares one address');

  const originPoller = opts.originUrl ? new OriginPoller(opts.originUrl, opts.originWorkers ?? null) : null;
  const metricsPoller = opts.metricsUrl ? new MetricsPoller(opts.metricsUrl) : null;
  // Baselines before any traffic, so totals count this run only.
  await Promise.all([
    originPoller?.sample().then((s) => {
      if (s) {
        originPoller.first = s;
        originPoller.last = s;
      }
    }),
    metricsPoller?.poll(null),
  ]);

  const startedAt = new Date();
  const startMs = performance.now();
  const rec = new Recorder(startMs, scenario.seconds + 2, scenario.attacks.length);
  let stoppedBy: 'time' | 'signal' | 'request-cap' | null = null;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((r) => {
    resolveFinished = r;
  });
  /** The first reason to stop wins. */
  const finish = (reason: 'time' | 'signal' | 'request-cap') => {
    if (stoppedBy !== null) return;
    stoppedBy = reason;
    resolveFinished();
  };
  const warned = new Set<string>();
  const ctx: RunContext = {
    target,
    dialOrigin: `http://${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port}`,
    hostHeader: target.url.host,
    deadlineMs,
    rec,
    stopped: false,
    closing: false,
    maxRequests,
    onCap: () => finish('request-cap'),
    warn: (m) => {
      const key = m.slice(0, 120);
      if (warned.size < 20 && !warned.has(key)) {
        warned.add(key);
        warnings.push(m);
      }
    },
  };

  const crowd = startLegit(ctx, scenario.legit);
  let block = LEGIT_BLOCK + 1; // attackers: 127.2.x.y, 127.3.x.y, ...
  const attackers = scenario.attacks.map((a, i) =>
    SLOW_KINDS.has(a.kind)
      ? new SlowAttack(ctx, i, a, block++, startMs)
      : a.kind === 'rapid-reset'
        ? new RapidResetAttack(ctx, i, a, block++, startMs)
        : new RateAttack(ctx, i, a, block++, startMs),
  );
  const ticker = setInterval(() => {
    const now = performance.now();
    for (const a of attackers) a.tick(now);
  }, TICK_MS);

  const progressLines: string[] = [];
  const out = opts.progressStream ?? process.stderr;
  const tty = Boolean(out.isTTY);
  let lastPrintSec = 0;
  const everySecond = setInterval(() => {
    let open = 0;
    for (const a of rec.attacks) open += a.open;
    rec.second().slowOpen = open;
    void originPoller?.poll(rec);
    void metricsPoller?.poll(rec);
    const elapsedSec = (performance.now() - startMs) / 1000;
    const line = progressLine(rec, elapsedSec, scenario.seconds, originPoller);
    progressLines.push(line);
    if (opts.quiet) return;
    if (tty) out.write(`\r${line}\x1b[K`);
    else if (elapsedSec - lastPrintSec >= 5) {
      lastPrintSec = elapsedSec;
      out.write(`${line}\n`);
    }
  }, 1000);

  const endTimer = setTimeout(() => finish('time'), scenario.seconds * 1000);
  const onAbort = () => finish('signal');
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  await finished;
  ctx.stopped = true;
  clearTimeout(endTimer);
  clearInterval(ticker);
  const stoppedAt = performance.now();
  for (const a of attackers) if (a instanceof RateAttack) a.settle(stoppedAt);
  opts.signal?.removeEventListener('abort', onAbort);
  const durationSec = (performance.now() - startMs) / 1000;
  for (const a of attackers) if (a instanceof SlowAttack || a instanceof RapidResetAttack) a.end();
  // Let in-flight requests land (bounded), then tear every socket down.
  await Promise.race([crowd.done, new Promise((r) => setTimeout(r, GRACE_MS))]);
  clearInterval(everySecond);
  await Promise.all([originPoller?.poll(rec), metricsPoller?.poll(rec)]);
  ctx.closing = true;
  await Promise.all([crowd.close(), ...attackers.map((a) => a.close()), originPoller?.close(), metricsPoller?.close()]);
  if (!opts.quiet && tty) out.write('\n');

  const report = buildReport({
    scenario,
    target: opts.target,
    startedAt,
    durationSec,
    stoppedBy: stoppedBy ?? 'time',
    rec,
    warnings,
    maxRequests,
    deadlineMs,
    users: crowd.users,
    scale: opts.scale ?? 1,
    originPoller,
    metricsPoller,
    originUrl: opts.originUrl ?? null,
    metricsUrl: opts.metricsUrl ?? null,
    originWorkers: opts.originWorkers ?? null,
    bindSources: target.bindSources,
  });
  if (opts.reportDir) {
    const dir = path.resolve(opts.reportDir);
    await mkdir(dir, { recursive: true });
    report.files = {
      json: path.join(dir, 'report.json'),
      html: path.join(dir, 'report.html'),
      progress: path.join(dir, 'progress.log'),
    };
    await writeFile(report.files.json, `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(report.files.html, renderHtml(report));
    await writeFile(report.files.progress, `${progressLines.join('\n')}\n`);
  }
  return report;
}
