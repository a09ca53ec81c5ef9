// The environment of the phases: PhaseEnv, the one object every PhaseModule.create receives
// (src/pipeline/phase.ts, the list in src/phases/index.ts). What several phases or the accept layer
// read lives behind the small interfaces below, so cluster mode can back them with Valkey/Redis
// without touching the phases (docs/lifecycle.md, docs/defense.md). The composition root
// (src/app/compose.ts) makes every service here before it builds any phase.
import type { StaleSource } from './services.ts';
import type { CookieSigner } from '../core/cookie-signer.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Runtime } from './runtime.ts';
import type { Phase } from './phase.ts';
import type { LeaseBroker } from '../store/leases.ts';

/** How a guard acts: `off` does nothing, `observe` decides/counts/logs but lets through, `enforce` acts. */
export type GuardMode = 'off' | 'observe' | 'enforce';
export const GUARD_MODES = ['off', 'observe', 'enforce'] as const;

/** The attack level the guards read. Plain numbers so a comparison is one instruction. */
export const AttackLevel = { calm: 0, elevated: 1, underAttack: 2 } as const;
export type AttackLevel = (typeof AttackLevel)[keyof typeof AttackLevel];
export const ATTACK_LEVEL_NAMES = ['calm', 'elevated', 'under_attack'] as const;
export type AttackLevelName = (typeof ATTACK_LEVEL_NAMES)[number];

/** Read side of the attack level (src/phases/level/monitor.ts keeps it). */
export interface AttackLevelView {
  /** The level in force: the operator's override when set, else the detected one. */
  readonly level: AttackLevel;
}

/** What the accept layer and the `ban` phase ask, and what guards and operators add to. */
export interface BanList {
  /** Whether this client address (or its prefix) is banned now. Must be cheap: it runs on every accept. */
  isBanned(address: string): boolean;
  /** Ban an address (`203.0.113.7`) or prefix (`203.0.113.0/24`, `2001:db8::/64`) for `ttlMs` (escalated for repeat bans by the table's policy when `escalate`). */
  ban(target: string, ttlMs: number, reason: string, ruleId: string, by: string, escalate?: boolean): void;
  unban(target: string, by: string): boolean;
  /** Optional: a small BlockList of the hottest bans, for net.Server's `blockList` (closed before a socket exists). */
  readonly fastPath?: import('node:net').BlockList | undefined;
  /** A guard saw this address misbehave (a 429, an ignored challenge, a blocked signature); enough offences make a ban. */
  offence(address: string, kind: string, ruleId: string): void;
}

/**
 * The shared services, made first: the defence phases' factories take this part of PhaseEnv, and so
 * do the services built from it before the phases (the challenge guard).
 */
export interface DefenseDeps {
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly level: AttackLevelView;
  readonly bans: BanList;
  readonly alerts: AlertSink;
  /** Token leases for `scope: global` rate limits (cluster mode, src/store/leases.ts); absent: every rule counts per node. */
  readonly leases?: LeaseBroker;
}

/**
 * Two phases that share one guard made asynchronously before the list is built (keys are read from
 * files): `familiarity` and `challenge` (src/phases/challenge/, ChallengeGuard).
 */
export interface ChallengePhases {
  readonly familiarity: Phase;
  readonly challenge: Phase;
}

/** The one environment of every phase module's create() (and adminRoutes()). */
export interface PhaseEnv extends DefenseDeps {
  /** The challenge guard's two phases. */
  readonly challenge: ChallengePhases;
  /** Stale copies for phases that shed or find the upstream unavailable (bound to the `cache` phase). */
  readonly stale: StaleSource;
  /** Signs the waiting room's tickets and passes; its key stays in a private field (never logged). */
  readonly roomSigner: CookieSigner;
}

/** Where guards raise alerts (src/control/alerts.ts sends them on; the audit trail records them). */
export interface AlertSink {
  /**
   * Raise an alert: always a log line, a metric, and the webhook when configured. Never throws, never
   * blocks. `logged`: the caller has already written its own line for this event (with more fields),
   * so the alert does not write a second one for the same change.
   */
  raise(kind: string, message: string, fields: Record<string, unknown>, logged?: boolean): void;
}

export type { StaleSource };
