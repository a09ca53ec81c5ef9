// The drill report: totals per legit class and per attack, origin load, Rempart's view, and a
// 1-second timeline; plus the live progress line.
import { Histogram } from './histogram.ts';
import { LEGIT_CLASSES, type ClassStats, type Recorder } from './stats.ts';
import type { Scenario } from './scenario.ts';
import type { OriginPoller, MetricsPoller, OriginTotals } from './pollers.ts';

export interface ClassReport {
  requests: number;
  ok: number;
  successPct: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  failures: { status: number; challenge: number; timeout: number; error: number };
  /** Requests that met a challenge and solved it (then counted by their retry). */
  challengesSolved: number;
  /** Requests that went through a waiting room first: how many, how many still in line at the end, time in line of the admitted. */
  waitingRoom: {
    waited: number;
    stillWaiting: number;
    letInRefused: number;
    p50WaitMs: number | null;
    p95WaitMs: number | null;
  };
}

export interface AttackReport {
  kind: string;
  startSec: number;
  durationSec: number;
  addresses: number;
  ratePerSecond: number;
  connections: number;
  sent: number;
  notSent: number;
  blocked: number;
  passed: number;
  timeout: number;
  other: number;
  error: number;
  /** Slow attacks: connections still open at the end of the attack. */
  held: number;
  /** Sent but with no outcome when the run ended (still in flight at teardown). */
  unanswered: number;
  maxOpen: number;
  /** Of the blocked: connections refused or reset before any answer (a ban on accept). */
  refused: number;
  /** Seconds from the attack's start to its first connection refused on accept, or null. */
  firstRefusedAfterSec: number | null;
}

/** How fast the defence reacted: read from the per-second timeline. */
export interface MitigationReport {
  /** First attack start and last attack end, in run seconds. */
  attackStartSec: number;
  attackEndSec: number;
  /** Seconds from the start to the first second where ≥ 90% of the attack's answered requests were blocked (and so on to the end of the attack), or null. */
  blockedAfterSec: number | null;
  /** Seconds from the start to the first second Rempart's attack level read ≥ 1 / = 2, or null. */
  elevatedAfterSec: number | null;
  underAttackAfterSec: number | null;
  /** Seconds from the attack's end to the first second the level read 0 again (null if it never rose or never fell). */
  calmAfterEndSec: number | null;
}

export interface DrillReport {
  version: 1;
  tool: 'rempart drill';
  scenario: { name: string; description: string; source: string; seconds: number };
  target: string;
  startedAt: string;
  durationSec: number;
  stoppedBy: 'time' | 'signal' | 'request-cap';
  settings: {
    deadlineMs: number;
    maxRequests: number;
    scale: number;
    users: number;
    bindSources: boolean;
    originUrl: string | null;
    metricsUrl: string | null;
    originWorkers: number | null;
  };
  requestsIssued: number;
  legit: { total: ClassReport; byClass: Record<string, ClassReport> };
  attack: {
    total: Omit<AttackReport, 'kind' | 'startSec' | 'durationSec' | 'addresses' | 'ratePerSecond' | 'connections'>;
    byAttack: AttackReport[];
    /** Share of sent attack requests that reached the origin: origin-counted when possible, else answered with X-Origin. */
    reachingOriginPct: number | null;
    reachingOriginSource: 'origin-stats' | 'x-origin-header' | null;
    mitigation: MitigationReport | null;
  };
  /** Visits by real users: returning (kept their cookies from an earlier visit) or fresh, and how many met a challenge. */
  visits: {
    returning: number;
    returningChallenged: number;
    returningChallengedPct: number | null;
    fresh: number;
    freshChallenged: number;
    freshChallengedPct: number | null;
  };
  origin: (OriginTotals & { available: true }) | { available: false };
  /** `refusals`: rempart_refusals_total by reason over the run; `shed`: rempart_admission_shed_total by class/reason (what the 503s were). */
  rempart:
    | {
        available: true;
        maxAttackLevel: number | null;
        decisions: Record<string, number>;
        refusals: Record<string, number>;
        shed: Record<string, number>;
        polls: number;
        failures: number;
      }
    | { available: false };
  timeline: {
    second: number[];
    legitOk: number[];
    legitFail: number[];
    legitSuccessPct: Array<number | null>;
    p50Ms: Array<number | null>;
    p95Ms: Array<number | null>;
    p99Ms: Array<number | null>;
    attackSent: number[];
    attackBlocked: number[];
    attackPassed: number[];
    attackTimeout: number[];
    attackOther: number[];
    attackNotSent: number[];
    slowOpen: number[];
    originReceivedAttack: Array<number | null>;
    originReceivedLegit: Array<number | null>;
    originServed: Array<number | null>;
    originRejected: Array<number | null>;
    originUtilPct: Array<number | null>;
    originBusyMsPerSec: Array<number | null>;
    attackLevel: Array<number | null>;
    decisions: Record<string, Array<number | null>>;
  };
  warnings: string[];
  files?: { json: string; html: string; progress: string };
}

const round = (v: number | null, digits = 1) => (v === null ? null : Math.round(v * 10 ** digits) / 10 ** digits);
const pct = (part: number, whole: number) => (whole > 0 ? round((part / whole) * 100, 2) : null);

interface ClassCounts {
  requests: number;
  ok: number;
  status: number;
  challenge: number;
  timeout: number;
  error: number;
  hist: Histogram;
  waited: number;
  stillWaiting: number;
  letInRefused: number;
  inLine: number;
  waitHist: Histogram;
  challengesSolved: number;
}

function classReport(c: ClassCounts): ClassReport {
  return {
    requests: c.requests,
    ok: c.ok,
    successPct: pct(c.ok, c.requests),
    p50Ms: round(c.hist.percentileMs(50)),
    p95Ms: round(c.hist.percentileMs(95)),
    p99Ms: round(c.hist.percentileMs(99)),
    failures: { status: c.status, challenge: c.challenge, timeout: c.timeout, error: c.error },
    challengesSolved: c.challengesSolved,
    // Requests still in line when the run closed were never settled: they count as waited and still waiting.
    waitingRoom: {
      waited: c.waited + c.inLine,
      stillWaiting: c.stillWaiting + c.inLine,
      letInRefused: c.letInRefused,
      p50WaitMs: round(c.waitHist.percentileMs(50), 0),
      p95WaitMs: round(c.waitHist.percentileMs(95), 0),
    },
  };
}

export interface BuildInput {
  scenario: Scenario;
  target: string;
  startedAt: Date;
  durationSec: number;
  stoppedBy: DrillReport['stoppedBy'];
  rec: Recorder;
  warnings: string[];
  maxRequests: number;
  deadlineMs: number;
  users: number;
  scale: number;
  originPoller: OriginPoller | null;
  metricsPoller: MetricsPoller | null;
  originUrl: string | null;
  metricsUrl: string | null;
  originWorkers: number | null;
  bindSources: boolean;
}

export function buildReport(i: BuildInput): DrillReport {
  const { rec, scenario } = i;
  const total: ClassCounts = {
    requests: 0,
    ok: 0,
    status: 0,
    challenge: 0,
    timeout: 0,
    error: 0,
    hist: new Histogram(),
    waited: 0,
    stillWaiting: 0,
    letInRefused: 0,
    inLine: 0,
    waitHist: new Histogram(),
    challengesSolved: 0,
  };
  const byClass: Record<string, ClassReport> = {};
  for (const name of LEGIT_CLASSES) {
    const c: ClassStats = rec.classes[name];
    byClass[name] = classReport(c);
    total.requests += c.requests;
    total.ok += c.ok;
    total.status += c.status;
    total.challenge += c.challenge;
    total.timeout += c.timeout;
    total.error += c.error;
    total.hist.merge(c.hist);
    total.challengesSolved += c.challengesSolved;
    total.waited += c.waited;
    total.stillWaiting += c.stillWaiting;
    total.letInRefused += c.letInRefused;
    total.inLine += c.inLine;
    total.waitHist.merge(c.waitHist);
  }
  const byAttack: AttackReport[] = scenario.attacks.map((a, k) => {
    const s = rec.attacks[k]!;
    return {
      kind: a.kind,
      startSec: round(a.startSec, 2)!,
      durationSec: round(a.durationSec, 2)!,
      addresses: a.addresses,
      ratePerSecond: a.ratePerSecond,
      connections: a.connections,
      sent: s.sent,
      notSent: s.notSent,
      blocked: s.blocked,
      passed: s.passed,
      timeout: s.timeout,
      other: s.other,
      error: s.error,
      held: s.held,
      maxOpen: s.maxOpen,
      unanswered: Math.max(0, s.sent - s.blocked - s.passed - s.timeout - s.other - s.error - s.held),
      refused: s.refused,
      firstRefusedAfterSec:
        s.firstRefusedMs < 0 ? null : round((s.firstRefusedMs - rec.startMs) / 1000 - a.startSec, 2),
    };
  });
  const at = {
    sent: 0,
    notSent: 0,
    blocked: 0,
    passed: 0,
    timeout: 0,
    other: 0,
    error: 0,
    held: 0,
    unanswered: 0,
    maxOpen: 0,
    refused: 0,
    firstRefusedAfterSec: null as number | null,
  };
  for (const a of byAttack) {
    at.sent += a.sent;
    at.notSent += a.notSent;
    at.blocked += a.blocked;
    at.passed += a.passed;
    at.timeout += a.timeout;
    at.other += a.other;
    at.error += a.error;
    at.held += a.held;
    at.unanswered += a.unanswered;
    at.maxOpen += a.maxOpen;
    at.refused += a.refused;
    if (
      a.firstRefusedAfterSec !== null &&
      (at.firstRefusedAfterSec === null || a.firstRefusedAfterSec < at.firstRefusedAfterSec)
    )
      at.firstRefusedAfterSec = a.firstRefusedAfterSec;
  }
  const origin = i.originPoller ? i.originPoller.totals() : null;
  let reachingOriginPct: number | null = null;
  let reachingOriginSource: DrillReport['attack']['reachingOriginSource'] = null;
  if (at.sent > 0) {
    if (origin && origin.receivedAttack !== null) {
      reachingOriginPct = Math.min(100, pct(origin.receivedAttack, at.sent)!);
      reachingOriginSource = 'origin-stats';
    } else {
      reachingOriginPct = pct(at.passed, at.sent);
      reachingOriginSource = 'x-origin-header';
    }
  }

  const n = rec.seconds.length;
  const sec = rec.seconds;
  const decisionNames = new Set<string>();
  for (const s of sec) if (s.decisions) for (const k of Object.keys(s.decisions)) decisionNames.add(k);
  const decisions: Record<string, Array<number | null>> = {};
  for (const k of decisionNames) decisions[k] = sec.map((s) => (s.decisions ? (s.decisions[k] ?? 0) : null));

  const v = rec.visits;
  return {
    version: 1,
    tool: 'rempart drill',
    scenario: {
      name: scenario.name,
      description: scenario.description,
      source: scenario.source,
      seconds: scenario.seconds,
    },
    target: i.target,
    startedAt: i.startedAt.toISOString(),
    durationSec: round(i.durationSec, 2)!,
    stoppedBy: i.stoppedBy,
    settings: {
      deadlineMs: i.deadlineMs,
      maxRequests: i.maxRequests,
      scale: i.scale,
      users: i.users,
      bindSources: i.bindSources,
      originUrl: i.originUrl,
      metricsUrl: i.metricsUrl,
      originWorkers: i.originWorkers,
    },
    requestsIssued: rec.issued,
    legit: { total: classReport(total), byClass },
    attack: { total: at, byAttack, reachingOriginPct, reachingOriginSource, mitigation: mitigation(scenario, sec) },
    visits: {
      returning: v.returning,
      returningChallenged: v.returningChallenged,
      returningChallengedPct: pct(v.returningChallenged, v.returning),
      fresh: v.fresh,
      freshChallenged: v.freshChallenged,
      freshChallengedPct: pct(v.freshChallenged, v.fresh),
    },
    origin: origin
      ? {
          available: true,
          ...origin,
          utilisationPct: round(origin.utilisationPct),
          peakUtilisationPct: round(origin.peakUtilisationPct),
        }
      : { available: false },
    rempart: i.metricsPoller ? { available: true, ...i.metricsPoller.totals() } : { available: false },
    timeline: {
      second: Array.from({ length: n }, (_, k) => k),
      legitOk: sec.map((s) => s.legitOk),
      legitFail: sec.map((s) => s.legitFail),
      legitSuccessPct: sec.map((s) => pct(s.legitOk, s.legitOk + s.legitFail)),
      p50Ms: sec.map((s) => round(s.hist.percentileMs(50))),
      p95Ms: sec.map((s) => round(s.hist.percentileMs(95))),
      p99Ms: sec.map((s) => round(s.hist.percentileMs(99))),
      attackSent: sec.map((s) => s.attackSent),
      attackBlocked: sec.map((s) => s.attackBlocked),
      attackPassed: sec.map((s) => s.attackPassed),
      attackTimeout: sec.map((s) => s.attackTimeout),
      attackOther: sec.map((s) => s.attackOther),
      attackNotSent: sec.map((s) => s.attackNotSent),
      slowOpen: sec.map((s) => s.slowOpen),
      originReceivedAttack: sec.map((s) => s.originReceivedAttack),
      originReceivedLegit: sec.map((s) => s.originReceivedLegit),
      originServed: sec.map((s) => s.originServed),
      originRejected: sec.map((s) => s.originRejected),
      originUtilPct: sec.map((s) => round(s.originUtilPct)),
      originBusyMsPerSec: sec.map((s) => round(s.originBusyMsPerSec)),
      attackLevel: sec.map((s) => s.attackLevel),
      decisions,
    },
    warnings: i.warnings,
  };
}

function mitigation(scenario: Scenario, sec: Recorder['seconds']): MitigationReport | null {
  if (scenario.attacks.length === 0) return null;
  const start = Math.min(...scenario.attacks.map((a) => a.startSec));
  const end = Math.max(...scenario.attacks.map((a) => a.startSec + a.durationSec));
  const s0 = Math.floor(start);
  const s1 = Math.min(sec.length, Math.ceil(end));
  // Blocked: from some second on, every second of the attack has ≥ 90% of its answered requests blocked.
  let blockedFrom: number | null = null;
  for (let k = s1 - 1; k >= s0; k--) {
    const x = sec[k]!;
    const answered = x.attackBlocked + x.attackPassed + x.attackOther;
    if (answered === 0) continue;
    if (x.attackBlocked / answered >= 0.9) blockedFrom = k;
    else break;
  }
  let elevated: number | null = null;
  let underAttack: number | null = null;
  let rose = false;
  for (let k = s0; k < sec.length; k++) {
    const l = sec[k]!.attackLevel;
    if (l === null) continue;
    if (l >= 1 && elevated === null) elevated = k;
    if (l >= 2 && underAttack === null) underAttack = k;
    if (l >= 1) rose = true;
  }
  let calm: number | null = null;
  if (rose) {
    for (let k = Math.ceil(end); k < sec.length; k++) {
      const l = sec[k]!.attackLevel;
      if (l === 0) {
        calm = k;
        break;
      }
    }
  }
  const after = (k: number | null, from: number) => (k === null ? null : Math.max(0, round(k + 1 - from, 1)!));
  return {
    attackStartSec: start,
    attackEndSec: end,
    blockedAfterSec: after(blockedFrom, start),
    elevatedAfterSec: after(elevated, start),
    underAttackAfterSec: after(underAttack, start),
    calmAfterEndSec: calm === null ? null : Math.max(0, round(calm - end, 1)!),
  };
}

/** One status line: elapsed, legit success and p95 (last 5 s), attack sent/blocked/reaching origin. */
export function progressLine(rec: Recorder, elapsedSec: number, totalSec: number, origin: OriginPoller | null): string {
  let ok = 0;
  let all = 0;
  for (const name of LEGIT_CLASSES) {
    ok += rec.classes[name].ok;
    all += rec.classes[name].requests;
  }
  const recent = new Histogram();
  const cur = rec.seconds.length - 1;
  for (let k = Math.max(0, cur - 4); k <= cur; k++) recent.merge(rec.seconds[k]!.hist);
  let sent = 0;
  let blocked = 0;
  let passed = 0;
  for (const a of rec.attacks) {
    sent += a.sent;
    blocked += a.blocked;
    passed += a.passed;
  }
  const reached =
    origin?.first?.receivedAttack != null && origin.last?.receivedAttack != null
      ? origin.last.receivedAttack - origin.first.receivedAttack
      : null;
  const p95 = recent.percentileMs(95);
  return (
    `[${elapsedSec.toFixed(0).padStart(3)}s/${totalSec}s] legit ${all ? ((ok / all) * 100).toFixed(1) : '-'}% ok (${all} req), p95 ${p95 === null ? '-' : p95.toFixed(0)} ms | ` +
    `attack sent ${sent} blocked ${blocked} ${reached !== null ? `reached origin ${reached}` : `answered by origin ${passed}`}`
  );
}

/** Human summary printed at the end of a CLI run. */
export function summaryText(r: DrillReport): string {
  const f = (v: number | null, unit = '') => (v === null ? '-' : `${v}${unit}`);
  const lines = [
    `drill ${r.scenario.name} against ${r.target}: ${r.durationSec}s (stopped by ${r.stoppedBy}), ${r.requestsIssued} requests`,
    `legit: ${f(r.legit.total.successPct, '%')} ok of ${r.legit.total.requests}, p50 ${f(r.legit.total.p50Ms, 'ms')} p95 ${f(r.legit.total.p95Ms, 'ms')} p99 ${f(r.legit.total.p99Ms, 'ms')}`,
  ];
  for (const [name, c] of Object.entries(r.legit.byClass)) {
    if (c.requests > 0)
      lines.push(
        `  ${name.padEnd(10)} ${f(c.successPct, '%').padStart(8)} ok of ${String(c.requests).padStart(6)}  p95 ${f(c.p95Ms, 'ms')}  (failures: ${c.failures.status} status, ${c.failures.challenge} challenge, ${c.failures.timeout} timeout, ${c.failures.error} error)${c.challengesSolved > 0 ? `; ${c.challengesSolved} challenges solved` : ''}${c.waitingRoom.waited > 0 ? `; waiting room: ${c.waitingRoom.waited} waited, ${c.waitingRoom.waited - c.waitingRoom.stillWaiting} let in after p50 ${f(c.waitingRoom.p50WaitMs, 'ms')} p95 ${f(c.waitingRoom.p95WaitMs, 'ms')} in line (${c.waitingRoom.letInRefused} of them refused after), ${c.waitingRoom.stillWaiting} still in line at the end` : ''}`,
      );
  }
  const t = r.attack.total;
  if (r.attack.byAttack.length > 0) {
    lines.push(
      `attack: sent ${t.sent} (not sent ${t.notSent}), blocked ${t.blocked}, answered by origin ${t.passed}, timeout ${t.timeout}, other ${t.other}${t.held ? `, slow connections held to the end ${t.held}` : ''}${t.unanswered ? `, unanswered at the end ${t.unanswered}` : ''}; reaching origin ${f(r.attack.reachingOriginPct, '%')} (${r.attack.reachingOriginSource})`,
    );
    for (const a of r.attack.byAttack)
      lines.push(
        `  ${a.kind.padEnd(15)} sent ${a.sent} blocked ${a.blocked} (refused on accept ${a.refused}${a.firstRefusedAfterSec !== null ? `, first at +${a.firstRefusedAfterSec}s` : ''}) passed ${a.passed} timeout ${a.timeout} other ${a.other} notSent ${a.notSent}${a.held ? ` held ${a.held} (max open ${a.maxOpen})` : ''}`,
      );
    const m = r.attack.mitigation;
    if (m)
      lines.push(
        `  mitigation: ≥90% blocked from +${f(m.blockedAfterSec, 's')}; level elevated at +${f(m.elevatedAfterSec, 's')}, under attack at +${f(m.underAttackAfterSec, 's')}; calm again ${f(m.calmAfterEndSec, 's')} after the attack ended`,
      );
  }
  if (r.visits.returning + r.visits.fresh > 0)
    lines.push(
      `visits: returning ${r.visits.returning} (challenged ${r.visits.returningChallenged}, ${f(r.visits.returningChallengedPct, '%')}), fresh ${r.visits.fresh} (challenged ${r.visits.freshChallenged}, ${f(r.visits.freshChallengedPct, '%')})`,
    );
  if (r.origin.available)
    lines.push(
      `origin: served ${r.origin.served}, rejected (503) ${r.origin.rejected}, received attack ${f(r.origin.receivedAttack)} legit ${f(r.origin.receivedLegit)}, utilisation ${f(r.origin.utilisationPct, '%')} (peak ${f(r.origin.peakUtilisationPct, '%')})`,
    );
  if (r.rempart.available) {
    lines.push(
      `rempart: max attack level ${f(r.rempart.maxAttackLevel)}, decisions ${JSON.stringify(r.rempart.decisions)}`,
    );
    if (Object.keys(r.rempart.refusals).length > 0)
      lines.push(`  refusals by reason ${JSON.stringify(r.rempart.refusals)}`);
    if (Object.keys(r.rempart.shed).length > 0) lines.push(`  shed by class/reason ${JSON.stringify(r.rempart.shed)}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  if (r.files) lines.push(`report: ${r.files.html}`);
  return lines.join('\n');
}
