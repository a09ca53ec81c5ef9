// The attack level: a state machine calm → elevated → under attack fed once a second by what the
// `level` phase measured (src/phases/level/traffic.ts), with hysteresis, an operator override
// (config `defense.level.override`, or `PUT /api/level`) and a bounded history of changes with
// their reasons. Detection blocks nothing: guards read `level`. Design and thresholds in
// docs/attack-level.md.
//
//            pressure, strangeness, drift or newcomers ≥ 1
//              ┌────────── (riseSeconds of riseSeconds+1 ticks) ─────────┐
//              │                                                         ▼
//          ┌───────┐                                                ┌──────────┐
//          │ calm  │ ◀──── fallSeconds quiet (signals < hold) ────── │ elevated │
//          └───────┘                                                └──────────┘
//              │ pressure ≥ 1 and behaviour shifted (straight up;     ▲      │ pressure ≥ 1 and
//              │ in one tick when pressure and strangeness ≥ severe)  │      │
//              ▼                                                      │      ▼ behaviour shifted
//          ┌──────────────┐ ─── fallSeconds without (pressure and ────┘
//          │ under_attack │      a shift ≥ holdFactor): one level down
//          └──────────────┘
//
// "Behaviour shifted": strangeness (client software or per-client pace unlike calm's), or drift and
// newcomers together (new prefixes asking for what calm never asked). A crowd, however large and
// however new its addresses, that browses like calm's clients is load, not an attack: admission
// queues and sheds it fairly, the level stays `elevated` and nobody is challenged for it.
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../core/log.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import type { AlertSink } from '../../pipeline/env.ts';
import { TrafficObserver, round3, type LevelConfig, type LevelFeatures } from './traffic.ts';
import { AttackLevel, ATTACK_LEVEL_NAMES, type AttackLevelName, type AttackLevelView } from '../../pipeline/env.ts';

export interface AttackLevelMonitorOptions {
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly alerts: AlertSink;
}

/** The three scores the level is decided from, each 1.0 at its threshold. */
export interface LevelScores {
  /** Load: surge over baseline, admission queue, sheds. */
  readonly pressure: number;
  /** How clients behave: shifted user-agent / header-order / JA4 / HTTP/2 mix, clients faster than calm's. */
  readonly strangeness: number;
  /** What is asked: paths or methods calm rarely asked for (a sale page too: an attack only with newcomers). */
  readonly drift: number;
  /** Who is new: never-seen prefixes, shifted prefix mix (new visitors, a carrier NAT: never an attack alone). */
  readonly newcomers: number;
}

export interface LevelChange {
  readonly atWallMs: number;
  readonly from: AttackLevelName;
  readonly to: AttackLevelName;
  readonly detected: AttackLevelName;
  /** `detector`, `config` (defense.level.override), or `operator:NAME` (the admin API token). */
  readonly by: string;
  readonly reasons: readonly string[];
}

export interface LevelOverride {
  readonly level: AttackLevelName;
  readonly source: 'api' | 'config';
  readonly reason: string;
  readonly by: string;
  readonly sinceWallMs: number;
}

/** What the state file keeps of the level (src/app/state-file.ts): small, written when it changes. */
export interface LevelState {
  /** Wall-clock ms when it was taken. */
  readonly savedWallMs: number;
  readonly detected: AttackLevelName;
  /** The admin API's override (not the config's: the file says that one). */
  readonly override: LevelOverride | null;
  readonly history: readonly LevelChange[];
}

const HISTORY_SIZE = 64;
/** Seconds the clients must have behaved like calm's before a raised level learns their prefixes. */
const BEHAVING_TICKS = 5;
const TICK_MS = 1000;
const NAME_TO_LEVEL: Record<AttackLevelName, AttackLevel> = {
  calm: AttackLevel.calm,
  elevated: AttackLevel.elevated,
  under_attack: AttackLevel.underAttack,
};

/** Scores of one tick's features (0 for the surge and the mix scores while warming up; 0 for the mix below minRatePerSecond). */
export function scoreFeatures(f: LevelFeatures, c: LevelConfig): LevelScores {
  // A surge is measured against a learned baseline: while warming up there is none yet (the floor
  // would make any busy start look like a surge, and the baseline learns only while calm), so only
  // the origin's own saturation (queue, sheds) counts as pressure then.
  const pressure = Math.max(
    f.warm ? f.surge / c.surgeFactor : 0,
    f.queueShare / c.queueShare,
    f.shedShare / c.shedShare,
  );
  let strangeness = 0;
  let drift = 0;
  let newcomers = 0;
  if (f.warm && f.ratePerSecond >= c.minRatePerSecond) {
    strangeness = Math.max(
      (f.pace - f.paceBaseline) / c.paceShare,
      Math.max(f.shift.userAgent, f.shift.headerOrder, f.shift.ja4, f.shift.h2) / c.shiftDistance,
    );
    // New paths, not the mix's distance: a crowd arriving lands on the home page and its assets
    // first, which re-weights calm's paths without asking for any calm never saw.
    drift = Math.max(f.unseen.pathShape, f.unseen.method) / c.shiftDistance;
    newcomers = Math.max((f.novelty - f.noveltyBaseline) / c.noveltyShare, f.shift.prefix / c.shiftDistance);
  }
  return {
    pressure: round3(pressure),
    strangeness: round3(Math.max(0, strangeness)),
    drift: round3(drift),
    newcomers: round3(Math.max(0, newcomers)),
  };
}

/** Whether clients behave unlike calm's at `bar`: other software or pace, or new prefixes asking for new paths. */
export function behaviourShifted(s: LevelScores, bar: number): boolean {
  return s.strangeness >= bar || (s.drift >= bar && s.newcomers >= bar);
}

/**
 * The level the scores call for when each must reach `bar` (1 to enter, holdFactor to stay).
 * Under attack needs both load and a change of behaviour: a crowd (returning customers on a sale
 * page, or thousands of first-time visitors behind a few carrier NATs) browsing like calm's clients
 * stays `elevated`, where admission does the work and nobody is challenged for being new.
 */
export function levelFor(s: LevelScores, bar: number): AttackLevel {
  if (s.pressure >= bar && behaviourShifted(s, bar)) return AttackLevel.underAttack;
  if (s.pressure >= bar || s.strangeness >= bar || s.drift >= bar || s.newcomers >= bar) return AttackLevel.elevated;
  return AttackLevel.calm;
}

/** Human-readable reasons: the signals at or above `bar` × their threshold. */
export function reasonsFor(f: LevelFeatures, c: LevelConfig, bar: number): string[] {
  const out: string[] = [];
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  if (f.surge >= c.surgeFactor * bar)
    out.push(
      `surge ${f.surge}× baseline${f.surgeRoute ? ` on route ${f.surgeRoute}` : ''} (${f.ratePerSecond} req/s; threshold ${c.surgeFactor}×)`,
    );
  if (f.queueShare >= c.queueShare * bar)
    out.push(`admission queue at ${f.queueShare}× the limit of ${f.queueUpstream} (threshold ${c.queueShare})`);
  if (f.shedShare >= c.shedShare * bar)
    out.push(`${pct(f.shedShare)} of requests shed (threshold ${pct(c.shedShare)})`);
  if (f.warm && f.ratePerSecond >= c.minRatePerSecond) {
    if (f.novelty - f.noveltyBaseline >= c.noveltyShare * bar)
      out.push(`${pct(f.novelty)} of requests from never-seen prefixes (calm: ${pct(f.noveltyBaseline)})`);
    if (f.pace - f.paceBaseline >= c.paceShare * bar)
      out.push(
        `${pct(f.pace)} of requests from clients faster than calm's ` +
          `(≥ ${f.paceCount} recent requests each; calm: ${pct(f.paceBaseline)})`,
      );
    for (const k of ['prefix', 'userAgent', 'headerOrder', 'ja4', 'h2', 'pathShape', 'method'] as const)
      if (f.shift[k] >= c.shiftDistance * bar)
        out.push(`${k} mix shifted by ${f.shift[k]} (threshold ${c.shiftDistance})`);
    for (const k of ['pathShape', 'method'] as const)
      if (f.unseen[k] >= c.shiftDistance * bar)
        out.push(`${pct(f.unseen[k])} of requests on ${k} values calm rarely saw (threshold ${pct(c.shiftDistance)})`);
  }
  return out;
}

export class AttackLevelMonitor implements AttackLevelView {
  /** The level in force: the override when there is one, else the detected level. Guards read this. */
  level: AttackLevel = AttackLevel.calm;
  /** What detection says, whatever the override. */
  detected: AttackLevel = AttackLevel.calm;
  /** The highest level other nodes of the cluster detect (src/store/level-sync.ts); calm alone. */
  peerLevel: AttackLevel = AttackLevel.calm;
  /** Told when an operator on this node sets or releases the override (cluster mode shares it). */
  onOverrideChange: ((override: LevelOverride | null) => void) | null = null;
  /** The last tick's measurements and scores (null before the first tick). */
  features: LevelFeatures | null = null;
  scores: LevelScores = { pressure: 0, strangeness: 0, drift: 0, newcomers: 0 };
  readonly traffic: TrafficObserver;
  readonly #opts: AttackLevelMonitorOptions;
  #apiOverride: LevelOverride | null = null;
  readonly #history: LevelChange[] = [];
  /** Levels the enter bar called for in the last ticks (newest last), for the rise rule. */
  readonly #recent: AttackLevel[] = [];
  #quietTicks = 0;
  /**
   * Ticks left for a severe rise to be confirmed by the riseSeconds rule (0: none pending), the level
   * it came from, and ticks left during which a severe tick after an unconfirmed one needs no confirmation.
   */
  #severePending = 0;
  #severeFrom: AttackLevel = AttackLevel.calm;
  #severeRepeat = 0;
  #fewNetworksTicks = 0;
  #fewNetworksSaidAt = -Infinity;
  /** Consecutive ticks whose clients behaved like calm's (no behaviour signal at the hold bar). */
  #behavingTicks = 0;
  #timer: NodeJS.Timeout | null = null;
  readonly #listeners: Array<(monitor: AttackLevelMonitor) => void> = [];

  constructor(opts: AttackLevelMonitorOptions) {
    this.#opts = opts;
    const rt = opts.getRuntime();
    this.traffic = new TrafficObserver(rt.config.defense.level, rt.config.defense.signatures, opts.clock.now());
    this.traffic.syncRoutes(rt);
    opts.metrics.defenseReaders.attackLevel = (g) => g.set(this.level);
    this.#applyInForce([]);
  }

  /** The override in force: the admin API's, else the config's, else null. */
  get override(): LevelOverride | null {
    if (this.#apiOverride !== null) return this.#apiOverride;
    const pinned = this.#opts.getRuntime().config.defense.level.override;
    return pinned === 'auto'
      ? null
      : { level: pinned, source: 'config', reason: 'defense.level.override', by: 'config', sinceWallMs: 0 };
  }

  /** Changes of the level in force, oldest first (the last 64). */
  get history(): readonly LevelChange[] {
    return this.#history;
  }

  /** Called after every tick (signature mining runs here). */
  onTick(fn: (monitor: AttackLevelMonitor) => void): void {
    this.#listeners.push(fn);
  }

  start(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.tick(), TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Measure, decide, learn if calm. Runs every second; tests call it after moving a manual clock. Never throws. */
  tick(): void {
    try {
      this.#tick();
    } catch (err) {
      this.#opts.log.error({ err }, 'attack level tick failed');
    }
  }

  /**
   * A minute where a few networks sent most requests (soloExcess ≥ 0.8 every tick at a real rate: most of
   * them beyond their networks' parts) is said in the log, at most once an hour: either few addresses or
   * networks flood (the rate limits' and bans' to answer; the level counts each IPv4 /24 or IPv6 /48 for a
   * quarter of a threshold), or every client is seen as one because the gateway sits behind a proxy missing
   * from clientAddress.trustedProxies, and then the level cannot see a surge.
   */
  #watchFewNetworks(f: LevelFeatures, minRate: number): void {
    if (f.soloExcess < 0.8 || f.ratePerSecond < minRate / 4) {
      this.#fewNetworksTicks = 0;
      return;
    }
    if (++this.#fewNetworksTicks < 60) return;
    this.#fewNetworksTicks = 0;
    const now = this.#opts.clock.now();
    if (now - this.#fewNetworksSaidAt < 3_600_000) return;
    this.#fewNetworksSaidAt = now;
    this.#opts.log.warn(
      { soloExcess: f.soloExcess, seconds: 60 },
      'a few networks sent most requests for a minute: a flood from few addresses or networks (IPv4 /24s, ' +
        'IPv6 /48s: rate limits and bans answer it), or clients seen through a proxy missing from ' +
        'clientAddress.trustedProxies (the attack level then sees no surge: docs/attack-level.md)',
    );
  }

  #tick(): void {
    const { clock, getRuntime } = this.#opts;
    const runtime = getRuntime();
    const c = runtime.config.defense.level;
    const f = this.traffic.measure(clock.now(), clock.wallMs(), runtime);
    if (f === null) {
      this.#applyInForce([]);
      return;
    }
    this.features = f;
    this.#watchFewNetworks(f, c.minRatePerSecond);
    const scores = scoreFeatures(f, c);
    this.scores = scores;
    const enter = levelFor(scores, 1);
    const hold = levelFor(scores, c.holdFactor);

    const window = c.riseSeconds + 1;
    this.#recent.push(enter);
    while (this.#recent.length > window) this.#recent.shift();
    let rise: AttackLevel = this.detected;
    // A severe onset is under attack at once (load and client behaviour both far past their bars in
    // one tick): the attack's first second is not forwarded as calm. It still needs the riseSeconds
    // confirmation to stay: unconfirmed within riseSeconds ticks (one second of people: a crowd
    // tapping a shared link, a browser restoring its tabs) it falls back, instead of holding every
    // unknown visitor to a challenge for the whole fall. A second severe tick within fallSeconds of an
    // unconfirmed one stays without confirmation: an attacker pulsing one strange second every few
    // seconds neither flaps the level nor passes as calm. Strangeness only, not drift with newcomers
    // (a campaign's new visitors on a new page).
    let held = 0;
    for (const l of this.#recent) if (l >= AttackLevel.underAttack) held++;
    if (this.#severeRepeat > 0) this.#severeRepeat--;
    const severe =
      this.detected < AttackLevel.underAttack &&
      scores.pressure >= c.severeFactor &&
      scores.strangeness >= c.severeFactor;
    let unconfirmed = false;
    if (this.#severePending > 0 && !severe) {
      if (this.detected !== AttackLevel.underAttack || held >= c.riseSeconds) this.#severePending = 0;
      else if (--this.#severePending === 0) unconfirmed = true;
    }
    if (severe) {
      rise = AttackLevel.underAttack;
      if (held < c.riseSeconds && this.#severeRepeat === 0) {
        this.#severePending = c.riseSeconds;
        this.#severeFrom = this.detected;
      }
    } else
      for (const candidate of [AttackLevel.underAttack, AttackLevel.elevated] as const) {
        if (candidate <= this.detected) break;
        let n = 0;
        for (const l of this.#recent) if (l >= candidate) n++;
        if (n >= c.riseSeconds) {
          rise = candidate;
          break;
        }
      }
    const before = this.detected;
    if (unconfirmed) {
      this.detected = this.#severeFrom;
      this.#severeRepeat = c.fallSeconds;
      this.#quietTicks = 0;
    } else if (rise > this.detected) {
      this.detected = rise;
      this.#quietTicks = 0;
    } else if (hold < this.detected) {
      if (++this.#quietTicks >= c.fallSeconds) {
        this.detected = (this.detected - 1) as AttackLevel;
        this.#quietTicks = 0;
      }
    } else this.#quietTicks = 0;

    if (this.detected !== before) {
      const reasons = unconfirmed
        ? [`severe onset not confirmed within ${c.riseSeconds} s`, ...reasonsFor(f, c, 1)]
        : this.detected > before
          ? severe
            ? [
                `severe: load and client behaviour at ${c.severeFactor}× their thresholds in one tick`,
                ...reasonsFor(f, c, 1),
              ]
            : reasonsFor(f, c, 1)
          : [
              `quiet for ${c.fallSeconds} s (signals below ${c.holdFactor} of their thresholds)`,
              ...reasonsFor(f, c, c.holdFactor),
            ];
      if (this.override !== null)
        this.#opts.log.info(
          { detected: ATTACK_LEVEL_NAMES[this.detected], override: this.override.level, reasons },
          'attack level detected (an override is in force)',
        );
      this.#applyInForce(reasons, 'detector');
    } else this.#applyInForce([]);

    // Learn only from calm: no anomaly this tick, nothing detected, nothing pinned above calm.
    // Prefixes also from a raised level whose clients have behaved like calm's for its last
    // BEHAVING_TICKS seconds (a crowd: its returning visitors are not new next time), never under
    // an override, and never from a tick with a behaviour signal at the hold bar: a flood cannot
    // teach its prefixes in while it behaves unlike calm, and one that behaves like calm is a crowd
    // to the level anyway. Counted only while the behaviour signals can be measured (warm, enough
    // traffic; a quiet second neither counts nor resets).
    if (!f.warm || scores.strangeness >= c.holdFactor || scores.drift >= c.holdFactor) this.#behavingTicks = 0;
    else if (f.ratePerSecond >= c.minRatePerSecond) this.#behavingTicks++;
    if (enter === AttackLevel.calm && this.detected === AttackLevel.calm && this.level === AttackLevel.calm) {
      this.traffic.learn(f, c, clock.now());
      this.#behavingTicks = 0; // the seconds count from the rise: a flood is not vouched for by the calm before it
    } else if (this.#behavingTicks >= BEHAVING_TICKS && this.override === null) this.traffic.learnPrefixes(clock.now());
    for (const fn of this.#listeners) fn(this);
    this.traffic.reset();
  }

  /** Pin the level (the admin API). */
  setOverride(level: AttackLevelName, reason: string, who: string): void {
    this.#apiOverride = { level, source: 'api', reason, by: who, sinceWallMs: this.#opts.clock.wallMs() };
    this.#applyInForce([`override by ${who}: ${reason}`], `operator:${who}`);
    this.onOverrideChange?.(this.#apiOverride);
  }

  /** The cluster's view: the highest level another node detects, and the override an operator set on another node (null: none). */
  applyCluster(peerLevel: AttackLevel, override: LevelOverride | null | undefined): void {
    const reasons: string[] = [];
    if (override !== undefined && JSON.stringify(override) !== JSON.stringify(this.#apiOverride)) {
      this.#apiOverride = override;
      reasons.push(
        override === null
          ? 'override released on another node'
          : `override by ${override.by} on another node: ${override.reason}`,
      );
    }
    if (peerLevel !== this.peerLevel) {
      this.peerLevel = peerLevel;
      reasons.push(`another node detects ${ATTACK_LEVEL_NAMES[peerLevel]}`);
    }
    if (reasons.length > 0) this.#applyInForce(reasons, 'cluster');
  }

  /** Release the admin API's override; false when there was none. The config's override, if any, applies again. */
  releaseOverride(who: string): boolean {
    if (this.#apiOverride === null) return false;
    this.#apiOverride = null;
    this.#applyInForce([`override released by ${who}`], `operator:${who}`);
    this.onOverrideChange?.(null);
    return true;
  }

  #applyInForce(reasons: string[], by = 'config'): void {
    const o = this.override;
    const want =
      o === null ? (this.detected > this.peerLevel ? this.detected : this.peerLevel) : NAME_TO_LEVEL[o.level];
    if (want === this.level) return;
    const from = ATTACK_LEVEL_NAMES[this.level];
    const to = ATTACK_LEVEL_NAMES[want];
    this.level = want;
    if (reasons.length === 0)
      reasons = o === null ? ['override released'] : [`override ${o.level} (${o.source}: ${o.reason})`];
    const change: LevelChange = {
      atWallMs: this.#opts.clock.wallMs(),
      from,
      to,
      detected: ATTACK_LEVEL_NAMES[this.detected],
      by,
      reasons,
    };
    this.#history.push(change);
    if (this.#history.length > HISTORY_SIZE) this.#history.shift();
    const { log, metrics, alerts } = this.#opts;
    // One line per change: this one (with the scores); the alert goes to the webhook and the audit
    // trail without logging the same change a second time.
    log.warn(
      { from, to, detected: change.detected, by, reasons, scores: this.scores, alert: 'attack_level' },
      'attack level changed',
    );
    metrics.attackLevelChanges.inc({ from, to });
    alerts.raise('attack_level', `attack level ${from} → ${to}`, { from, to, by, reasons }, true);
  }

  /** Whether enough calm was learned for the mix signals to count (defense.level.warmupSeconds). */
  get warm(): boolean {
    return this.traffic.warm(this.#opts.getRuntime().config.defense.level);
  }

  /** The level's state for the state file (the learned baselines are traffic.exportLearned()). */
  exportState(): LevelState {
    const detected = ATTACK_LEVEL_NAMES[this.detected];
    const savedWallMs = this.#opts.clock.wallMs();
    return { savedWallMs, detected, override: this.#apiOverride, history: this.#history.slice() };
  }

  /**
   * Put back the level the state file kept (start-up, before the first tick): the operator's
   * override as it was, and the detected level less one step per fallSeconds the process was down
   * (what quiet would have done; a quick restart mid-attack stays under attack). Changes the level
   * in force like any change (logged, alerted, audited: `by: restart`). `share`: tell the cluster of
   * the restored override (a process-local store, which starts empty; a shared store stays authoritative).
   */
  restoreState(state: LevelState, share = false): void {
    const c = this.#opts.getRuntime().config.defense.level;
    if (Array.isArray(state.history))
      for (const h of state.history.slice(-HISTORY_SIZE)) {
        if (h !== null && typeof h === 'object') this.#history.push(h);
      }
    while (this.#history.length > HISTORY_SIZE) this.#history.shift();
    const o = state.override;
    if (o !== null && typeof o === 'object' && Object.hasOwn(NAME_TO_LEVEL, o.level))
      this.#apiOverride = {
        level: o.level,
        source: 'api',
        reason: String(o.reason),
        by: String(o.by),
        sinceWallMs: Number(o.sinceWallMs),
      };
    const saved = Object.hasOwn(NAME_TO_LEVEL, state.detected) ? NAME_TO_LEVEL[state.detected] : AttackLevel.calm;
    const downMs = Math.max(0, this.#opts.clock.wallMs() - Number(state.savedWallMs));
    const down = Math.floor(downMs / (c.fallSeconds * 1000));
    this.detected = Math.max(AttackLevel.calm, saved - (Number.isFinite(down) ? down : saved)) as AttackLevel;
    this.#quietTicks = 0;
    this.#severePending = 0;
    this.#applyInForce(['restored from the state file after a restart'], 'restart');
    if (share && this.#apiOverride !== null) this.onOverrideChange?.(this.#apiOverride);
  }

  /** What `GET /api/level` answers. */
  snapshot(): Record<string, unknown> {
    const c = this.#opts.getRuntime().config.defense.level;
    return {
      level: ATTACK_LEVEL_NAMES[this.level],
      detected: ATTACK_LEVEL_NAMES[this.detected],
      peers: ATTACK_LEVEL_NAMES[this.peerLevel],
      override: this.override,
      scores: this.scores,
      features: this.features,
      thresholds: {
        surgeFactor: c.surgeFactor,
        minRatePerSecond: c.minRatePerSecond,
        queueShare: c.queueShare,
        shedShare: c.shedShare,
        noveltyShare: c.noveltyShare,
        paceShare: c.paceShare,
        shiftDistance: c.shiftDistance,
        holdFactor: c.holdFactor,
        riseSeconds: c.riseSeconds,
        severeFactor: c.severeFactor,
        fallSeconds: c.fallSeconds,
      },
      familiarPrefixes: this.traffic.familiar.size,
      history: this.#history.slice(-20).reverse(),
    };
  }
}
