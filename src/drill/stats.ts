// Run-time counters: per-class legit results, per-attack outcomes and a 1-second timeline.
// Everything is preallocated or grows by one small record per second: memory stays bounded.
import { Histogram } from './histogram.ts';

export const LEGIT_CLASSES = ['home', 'tracking', 'vault', 'approvals'] as const;
export type LegitClass = (typeof LEGIT_CLASSES)[number];
export type LegitFailure = 'status' | 'challenge' | 'timeout' | 'error';

export class ClassStats {
  requests = 0;
  ok = 0;
  status = 0;
  challenge = 0;
  timeout = 0;
  error = 0;
  hist = new Histogram();
  /** Requests that met a challenge the user solved (then retried once: counted by the retry's outcome). */
  challengesSolved = 0;
  /** Requests that were put in a waiting room first (then let in, or still in line at the end). */
  waited = 0;
  /** Of those, the ones still in line when the run ended. */
  stillWaiting = 0;
  /** Of those, the ones let in whose request then failed all the same (shed behind the room, say). */
  letInRefused = 0;
  /** Requests in a waiting room's line right now (in `waited` and `stillWaiting` at report time if never settled). */
  inLine = 0;
  /** Time spent in line by the ones let in. */
  waitHist = new Histogram();
}

/** Outcome of one attack request (or slow connection). */
export type AttackOutcome = 'blocked' | 'refused' | 'passed' | 'timeout' | 'other';

export class AttackStats {
  sent = 0;
  /** Dropped by the generator's in-flight cap: never sent. */
  notSent = 0;
  blocked = 0;
  /** Of the blocked, connections refused or reset before any answer (a ban on accept). */
  refused = 0;
  /** performance.now() of the first refused connection, -1 if none. */
  firstRefusedMs = -1;
  passed = 0;
  timeout = 0;
  /** Answered without X-Origin and without a blocking status (e.g. a proxy's 502/504 or its cache). */
  other = 0;
  /** Local errors (e.g. cannot bind): not the target's doing. */
  error = 0;
  /** Slow attacks: connections still open when the attack ended (they tied up a slot somewhere). */
  held = 0;
  /** Slow attacks: connections open right now / most open at once. */
  open = 0;
  maxOpen = 0;
}

export interface Second {
  legitOk: number;
  legitFail: number;
  hist: Histogram;
  attackSent: number;
  attackBlocked: number;
  attackPassed: number;
  attackTimeout: number;
  attackOther: number;
  attackNotSent: number;
  slowOpen: number;
  originReceivedAttack: number | null;
  originReceivedLegit: number | null;
  originServed: number | null;
  originRejected: number | null;
  originUtilPct: number | null;
  originBusyMsPerSec: number | null;
  originQueued: number | null;
  attackLevel: number | null;
  decisions: Record<string, number> | null;
}

function newSecond(): Second {
  return {
    legitOk: 0,
    legitFail: 0,
    hist: new Histogram(),
    attackSent: 0,
    attackBlocked: 0,
    attackPassed: 0,
    attackTimeout: 0,
    attackOther: 0,
    attackNotSent: 0,
    slowOpen: 0,
    originReceivedAttack: null,
    originReceivedLegit: null,
    originServed: null,
    originRejected: null,
    originUtilPct: null,
    originBusyMsPerSec: null,
    originQueued: null,
    attackLevel: null,
    decisions: null,
  };
}

export class Recorder {
  readonly startMs: number;
  readonly maxSeconds: number;
  readonly seconds: Second[] = [];
  readonly classes: Record<LegitClass, ClassStats> = {
    home: new ClassStats(),
    tracking: new ClassStats(),
    vault: new ClassStats(),
    approvals: new ClassStats(),
  };
  readonly attacks: AttackStats[];
  /** Requests issued (legit + attack), checked against the run's request cap. */
  issued = 0;
  /** Real users' failures by what answered them (an error code, `origin 503`, `timeout`…), at most 64 keys. */
  readonly legitReasons: Record<string, number> = {};

  legitReason(key: string): void {
    if (this.legitReasons[key] !== undefined) this.legitReasons[key]++;
    else if (Object.keys(this.legitReasons).length < 64) this.legitReasons[key] = 1;
  }

  constructor(startMs: number, maxSeconds: number, attackCount: number) {
    this.startMs = startMs;
    this.maxSeconds = maxSeconds;
    this.attacks = Array.from({ length: attackCount }, () => new AttackStats());
  }

  /** The bucket for "now"; late completions after the end land in the last bucket. */
  second(nowMs = performance.now()): Second {
    let i = Math.floor((nowMs - this.startMs) / 1000);
    if (i < 0) i = 0;
    if (i > this.maxSeconds) i = this.maxSeconds;
    while (this.seconds.length <= i) this.seconds.push(newSecond());
    return this.seconds[i]!;
  }

  legit(cls: LegitClass, latencyMs: number, failure: LegitFailure | null): void {
    const c = this.classes[cls];
    const s = this.second();
    c.requests++;
    c.hist.recordMs(latencyMs);
    s.hist.recordMs(latencyMs);
    if (failure === null) {
      c.ok++;
      s.legitOk++;
    } else {
      c[failure]++;
      s.legitFail++;
    }
  }

  /** A request met a waiting room's page for the first time: it is in line until waitingRoom() settles it. */
  enteredLine(cls: LegitClass): void {
    this.classes[cls].inLine++;
  }

  /** A request that went through a waiting room: let in after waitedMs and served or refused, or still in line at the end. */
  waitingRoom(cls: LegitClass, waitedMs: number, outcome: 'served' | 'refused' | 'waiting'): void {
    const c = this.classes[cls];
    c.waited++;
    if (c.inLine > 0) c.inLine--;
    if (outcome === 'waiting') c.stillWaiting++;
    else {
      c.waitHist.recordMs(waitedMs);
      if (outcome === 'refused') c.letInRefused++;
    }
  }

  /** Visits (a user's run of pages), by whether the user came back with its cookies, and whether a challenge was shown. */
  readonly visits = { returning: 0, returningChallenged: 0, fresh: 0, freshChallenged: 0 };

  visit(returning: boolean, challenged: boolean): void {
    if (returning) {
      this.visits.returning++;
      if (challenged) this.visits.returningChallenged++;
    } else {
      this.visits.fresh++;
      if (challenged) this.visits.freshChallenged++;
    }
  }

  attackSent(i: number): void {
    this.attacks[i]!.sent++;
    this.second().attackSent++;
  }

  attackNotSent(i: number): void {
    this.attacks[i]!.notSent++;
    this.second().attackNotSent++;
  }

  attackOutcome(i: number, outcome: AttackOutcome): void {
    const a = this.attacks[i]!;
    const s = this.second();
    if (outcome === 'blocked') {
      a.blocked++;
      s.attackBlocked++;
    } else if (outcome === 'passed') {
      a.passed++;
      s.attackPassed++;
    } else if (outcome === 'timeout') {
      a.timeout++;
      s.attackTimeout++;
    } else if (outcome === 'refused') {
      a.blocked++;
      a.refused++;
      s.attackBlocked++;
      if (a.firstRefusedMs < 0) a.firstRefusedMs = performance.now();
    } else {
      a.other++;
      s.attackOther++;
    }
  }
}
