// Signature rules: mined from the sketches while the level is raised (a value whose share of the
// last seconds' traffic is far above its calm share), or written by the operator. Each mined rule
// carries its evidence and a state the operator can change through the admin API. The rules in
// force are indexed per feature (Map value → rule) so a request pays one Map lookup per feature
// that has a rule, and nothing at all when no rule is in force.
import type { RequestContext } from '../../pipeline/context.ts';
import type { Config } from '../../config/schema.ts';
import { AttackLevel } from '../../pipeline/env.ts';
import type { TrafficObserver } from '../level/traffic.ts';
import { round3 } from '../level/traffic.ts';
import {
  FEATURES,
  FeatureIndex,
  featureValue,
  pathShape,
  headerOrderHash,
  NO_FINGERPRINT,
  type FeatureName,
} from '../level/features.ts';

export type SignaturesConfig = Config['defense']['signatures'];
export type RuleAction = 'challenge' | 'block';
/** `proposed` (mined, waiting: in force only under attack with autoApply), `approved`, `rejected`, `configured` (the operator's file). */
export type RuleState = 'proposed' | 'approved' | 'rejected' | 'configured';

export interface Evidence {
  readonly feature: FeatureName;
  readonly value: string;
  /** Sampled requests with this value in the current window (about `count × sampleEvery` requests). */
  readonly count: number;
  readonly sampleEvery: number;
  /** Share of the current window's sampled traffic, and of calm's. */
  readonly share: number;
  readonly baselineShare: number;
  readonly firstSeenWallMs: number;
  readonly lastSeenWallMs: number;
}

export interface SignatureRule {
  readonly id: string;
  readonly source: 'mined' | 'config';
  action: RuleAction;
  state: RuleState;
  /** Mined rules: the one feature and value they match. */
  readonly feature: FeatureName | null;
  readonly value: string | null;
  /** Configured rules: every given feature must match. */
  readonly match: Readonly<Partial<Record<FeatureName, string>>> | null;
  evidence: Evidence | null;
  /** Who approved or rejected it, when an operator did. */
  decidedBy: string | null;
  /** Requests the rule matched while in force. */
  hits: number;
  /** Monotonic ms after which a mined rule is forgotten (refreshed while its evidence holds). */
  expiresAtMs: number;
}

/** FNV-1a, 8 hex digits: stable ids for mined rules, so a value proposed again updates one rule. */
function shortHash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** Features whose value identifies the sender (who), not what was asked: only these may be blocked outright. */
const BLOCKABLE: ReadonlySet<FeatureName> = new Set(['prefix', 'userAgent', 'headerOrder', 'ja4', 'h2']);
/** Fingerprint features: their "no fingerprint" value (plain HTTP, HTTP/1.1) says how a client came, not who it is. */
const FINGERPRINTS: ReadonlySet<FeatureName> = new Set(['ja4', 'h2']);
/** "Never seen when calm": a calm share under this. */
const NEVER_SEEN_SHARE = 0.001;

export class SignatureRules {
  readonly #mined = new Map<string, SignatureRule>();
  #configured: SignatureRule[] = [];
  #configuredFrom: SignaturesConfig['rules'] | null = null;
  /** In force, per feature (index as FEATURES): value → rule, or null when no rule on that feature. */
  readonly #byFeature: Array<Map<string, SignatureRule> | null> = FEATURES.map(() => null);
  #staticInForce: SignatureRule[] = [];
  /** Rules in force now; 0 makes the phase a single comparison. */
  inForce = 0;
  /** The level the index was built for (autoApply depends on it). */
  builtForLevel: AttackLevel = AttackLevel.calm;
  /** Proposals dropped because maxRules were kept. */
  dropped = 0;

  get minedCount(): number {
    return this.#mined.size;
  }

  #syncConfigured(config: SignaturesConfig): void {
    if (config.rules === this.#configuredFrom) return;
    this.#configuredFrom = config.rules;
    const seen = new Set<string>();
    this.#configured = [];
    for (const r of config.rules) {
      if (seen.has(r.id)) continue; // first one wins; ids are unique by intent
      seen.add(r.id);
      this.#configured.push({
        id: r.id,
        source: 'config',
        action: r.action,
        state: 'configured',
        feature: null,
        value: null,
        match: { ...r.match },
        evidence: null,
        decidedBy: null,
        hits: 0,
        expiresAtMs: Infinity,
      });
    }
  }

  /**
   * Propose rules from the sketches: values with share ≥ minShare, ≥ liftFactor × their calm share,
   * and ≥ minSamples samples. Returns the newly proposed rules (for the log). Also forgets expired ones.
   */
  mine(traffic: TrafficObserver, config: SignaturesConfig, nowMs: number, nowWallMs: number): SignatureRule[] {
    const fresh: SignatureRule[] = [];
    for (const [id, r] of this.#mined) if (r.expiresAtMs <= nowMs) this.#mined.delete(id);
    for (let f = 0; f < FEATURES.length; f++) {
      const feature = FEATURES[f]!;
      const cur = traffic.current[f]!;
      const base = traffic.baseline[f]!;
      if (cur.total <= 0 || base.total <= 0) continue;
      for (const h of cur.top()) {
        const count = h.count - h.error;
        if (count < config.minSamples) break; // top() is sorted by guaranteed count
        const share = count / cur.total;
        if (share < config.minShare) continue;
        if (h.value === NO_FINGERPRINT && FINGERPRINTS.has(feature)) continue;
        const baselineShare = base.upper(h.value) / base.total;
        if (share < config.liftFactor * baselineShare) continue;
        const action: RuleAction =
          BLOCKABLE.has(feature) && share >= config.blockShare && baselineShare < NEVER_SEEN_SHARE
            ? 'block'
            : 'challenge';
        const id = `sig-${feature.toLowerCase()}-${shortHash(h.value)}`;
        let rule = this.#mined.get(id);
        const firstSeenWallMs = rule?.evidence?.firstSeenWallMs ?? (h.firstSeenMs || nowWallMs);
        const evidence: Evidence = {
          feature,
          value: h.value,
          count: Math.round(count),
          sampleEvery: traffic.sampleEvery,
          share: round3(share),
          baselineShare: round3(baselineShare),
          firstSeenWallMs,
          lastSeenWallMs: nowWallMs,
        };
        if (rule === undefined) {
          if (this.#mined.size >= config.maxRules) {
            this.dropped++;
            continue;
          }
          rule = {
            id,
            source: 'mined',
            action,
            state: 'proposed',
            feature,
            value: h.value,
            match: null,
            evidence,
            decidedBy: null,
            hits: 0,
            expiresAtMs: 0,
          };
          this.#mined.set(id, rule);
          fresh.push(rule);
        } else {
          rule.evidence = evidence;
          // Stronger evidence may turn a proposed challenge into a block; never what an operator decided.
          if (rule.state === 'proposed' && action === 'block') rule.action = 'block';
        }
        rule.expiresAtMs = nowMs + config.ruleTtlSeconds * 1000;
      }
    }
    return fresh;
  }

  /** Rebuild the index of rules in force for this level and config. */
  rebuild(level: AttackLevel, config: SignaturesConfig): void {
    this.#syncConfigured(config);
    this.builtForLevel = level;
    for (let f = 0; f < FEATURES.length; f++) this.#byFeature[f] = null;
    this.#staticInForce = [];
    this.inForce = 0;
    if (config.mode === 'off') return;
    for (const r of this.#mined.values()) {
      const on =
        r.state === 'approved' || (r.state === 'proposed' && config.autoApply && level === AttackLevel.underAttack);
      if (!on) continue;
      const f = FeatureIndex[r.feature!];
      let m = this.#byFeature[f];
      if (m === null || m === undefined) this.#byFeature[f] = m = new Map();
      m.set(r.value!, r);
      this.inForce++;
    }
    this.#staticInForce = this.#configured;
    this.inForce += this.#configured.length;
  }

  /** The rule in force this request matches (a block before a challenge), or null. */
  match(ctx: RequestContext): SignatureRule | null {
    let found: SignatureRule | null = null;
    for (let f = 0; f < FEATURES.length; f++) {
      const m = this.#byFeature[f];
      if (m === null || m === undefined) continue;
      const r = m.get(featureValue(ctx, f));
      if (r === undefined) continue;
      if (r.action === 'block') return r;
      found ??= r;
    }
    const statics = this.#staticInForce;
    for (let i = 0; i < statics.length; i++) {
      const r = statics[i]!;
      if (!matchesStatic(ctx, r.match!)) continue;
      if (r.action === 'block') return r;
      found ??= r;
    }
    return found;
  }

  get(id: string): SignatureRule | undefined {
    return this.#mined.get(id) ?? this.#configured.find((r) => r.id === id);
  }

  list(): SignatureRule[] {
    return [
      ...this.#configured,
      ...[...this.#mined.values()].sort((a, b) => (b.evidence?.share ?? 0) - (a.evidence?.share ?? 0)),
    ];
  }

  /** Whether the rule is in the index now. */
  isInForce(rule: SignatureRule): boolean {
    if (rule.source === 'config') return this.#staticInForce.includes(rule);
    const m = this.#byFeature[FeatureIndex[rule.feature!]];
    return m !== null && m !== undefined && m.get(rule.value!) === rule;
  }
}

function matchesStatic(ctx: RequestContext, m: Readonly<Partial<Record<FeatureName, string>>>): boolean {
  if (m.prefix !== undefined && ctx.clientPrefix !== m.prefix) return false;
  if (m.method !== undefined && ctx.req.method !== m.method) return false;
  if (m.userAgent !== undefined) {
    const ua = ctx.req.headers['user-agent'];
    if (ua === undefined || ua.indexOf(m.userAgent) === -1) return false;
  }
  if (m.pathShape !== undefined && pathShape(ctx.path) !== m.pathShape) return false;
  if (m.headerOrder !== undefined && headerOrderHash(ctx.req.rawHeaders) !== m.headerOrder) return false;
  if (m.ja4 !== undefined && ctx.ja4 !== m.ja4) return false;
  if (m.h2 !== undefined && ctx.h2Fingerprint !== m.h2) return false;
  return true;
}
