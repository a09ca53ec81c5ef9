// Phase `signatures`: applies the signature rules in force (mined from attack traffic, or written by
// the operator) to unknown clients: a `challenge` rule requires the `challenge` phase to challenge the
// request (pipeline/guard.ts requireChallenge), a `block` rule answers 403 and counts an offence
// towards a ban. Mining runs once a second on the attack-level tick, only while the level is raised.
// Known clients (ctx.known, set by `familiarity` just before) are never matched: a rule is a guess about
// a crowd, and a customer who proved themselves must not pay for sharing a browser or a prefix with a bot.
// Also lists /api/signatures. See docs/signatures.md.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import { AttackLevel, ATTACK_LEVEL_NAMES, type DefenseDeps } from '../../pipeline/env.ts';
import { AttackLevelMonitor } from '../level/monitor.ts';
import { decide, requireChallenge } from '../../pipeline/guard.ts';
import { ApiError, type AdminRoute } from '../../pipeline/admin-route.ts';
import { SignatureRules, type SignatureRule, type RuleAction } from './rules.ts';

export interface SignaturesPhase extends Phase {
  /** The rules (configured, mined, decided by operators) the admin endpoints list and change. */
  readonly rules: SignatureRules;
}

/**
 * @example
 *   const phases = [familiarity, createSignaturesPhase(deps), challenge];
 */
export function createSignaturesPhase(deps: DefenseDeps): SignaturesPhase {
  const monitor = deps.level instanceof AttackLevelMonitor ? deps.level : null;
  const rules = new SignatureRules();
  const config = () => deps.getRuntime().config.defense.signatures;
  rules.rebuild(deps.level.level, config());

  monitor?.onTick((m) => {
    const c = config();
    if (c.mode !== 'off' && m.level >= AttackLevel.elevated && m.features?.warm === true) {
      const fresh = rules.mine(m.traffic, c, deps.clock.now(), deps.clock.wallMs());
      for (const r of fresh)
        deps.log.warn(
          { rule: r.id, action: r.action, evidence: r.evidence, level: ATTACK_LEVEL_NAMES[m.level] },
          'signature rule proposed',
        );
    }
    rules.rebuild(m.level, c);
  });
  deps.metrics.defenseReaders.signatures = (g) => g.set(rules.minedCount);

  return {
    name: 'signatures',
    rules,
    onRequest(ctx: RequestContext) {
      // autoApply follows the level: an operator's override takes effect at once, not at the next tick.
      if (deps.level.level !== rules.builtForLevel) rules.rebuild(deps.level.level, config());
      if (rules.inForce === 0) return Verdict.Continue;
      const rule = rules.match(ctx);
      // Known clients are exempt; asked only of requests a rule matches (the look-up costs a MAC or a signature check).
      if (rule === null || ctx.known) return Verdict.Continue;
      rule.hits++;
      const mode = config().mode;
      if (rule.action === 'block') {
        if (decide(deps, ctx, 'signatures', mode, 'RMP_ERR_SIGNATURE_BLOCKED', rule.id, 403)) {
          deps.bans.offence(ctx.clientAddress, 'signature', rule.id);
          return Verdict.Reply;
        }
        return Verdict.Continue;
      }
      // Enforced: the challenge phase challenges this request whatever the level (and reports the decision).
      if (mode === 'enforce') requireChallenge(deps, ctx, 'signatures', rule.id);
      else decide(deps, ctx, 'signatures', mode, 'RMP_ERR_CHALLENGE', rule.id, 403);
      return Verdict.Continue;
    },
  };
}

function view(rules: SignatureRules, r: SignatureRule) {
  return {
    id: r.id,
    source: r.source,
    state: r.state,
    action: r.action,
    inForce: rules.isInForce(r),
    match: r.match ?? { [r.feature!]: r.value },
    evidence: r.evidence,
    hits: r.hits,
    decidedBy: r.decidedBy,
  };
}

/** `POST …/approve` body: nothing, or `{ action: 'challenge' | 'block' }`. */
export function parseApproval(body: unknown): RuleAction | null {
  if (body === null) return null;
  if (typeof body !== 'object' || Array.isArray(body)) throw new ApiError('body must be a JSON object');
  const o = body as Record<string, unknown>;
  for (const key of Object.keys(o))
    if (key !== 'action') throw new ApiError(`unknown field "${key}" (expected action)`);
  if (o.action === undefined) return null;
  if (o.action !== 'challenge' && o.action !== 'block') throw new ApiError('action must be challenge or block');
  return o.action;
}

/** GET /api/signatures, POST /api/signatures/:id/approve and …/reject (docs/signatures.md). */
export function signaturesAdminRoutes(phase: SignaturesPhase, deps: DefenseDeps): readonly AdminRoute[] {
  const rules = phase.rules;
  const monitor = deps.level instanceof AttackLevelMonitor ? deps.level : null;
  const config = () => deps.getRuntime().config.defense.signatures;
  const find = (id: string): SignatureRule => {
    const r = rules.get(id);
    if (r === undefined) throw new ApiError(`no signature rule ${JSON.stringify(id.slice(0, 80))}`, 404);
    if (r.source === 'config')
      throw new ApiError(`rule ${id} is configured in defense.signatures.rules: change the file`);
    return r;
  };
  const list: AdminRoute['handler'] = () => {
    const c = config();
    return {
      status: 200,
      body: {
        mode: c.mode,
        autoApply: c.autoApply,
        level: ATTACK_LEVEL_NAMES[deps.level.level],
        sampleEvery: monitor?.traffic.sampleEvery ?? null,
        inForce: rules.inForce,
        droppedProposals: rules.dropped,
        rules: rules.list().map((r) => view(rules, r)),
        top: monitor?.traffic.top(10) ?? null,
      },
    };
  };
  const approve: AdminRoute['handler'] = (req) => {
    const action = parseApproval(req.body);
    const r = find(req.params.id!);
    r.state = 'approved';
    if (action !== null) r.action = action;
    r.decidedBy = req.who;
    rules.rebuild(deps.level.level, config());
    deps.log.warn({ rule: r.id, action: r.action, by: req.who }, 'signature rule approved');
    return { status: 200, body: view(rules, r) };
  };
  const reject: AdminRoute['handler'] = (req) => {
    if (req.body !== null) throw new ApiError('reject takes no body');
    const r = find(req.params.id!);
    r.state = 'rejected';
    r.decidedBy = req.who;
    rules.rebuild(deps.level.level, config());
    deps.log.warn({ rule: r.id, by: req.who }, 'signature rule rejected');
    return { status: 200, body: view(rules, r) };
  };
  return [
    { method: 'GET', path: '/api/signatures', scope: 'read', handler: list },
    { method: 'POST', path: '/api/signatures/:id/approve', scope: 'operator', handler: approve },
    { method: 'POST', path: '/api/signatures/:id/reject', scope: 'operator', handler: reject },
  ];
}

export const signaturesPhase: PhaseModule<SignaturesPhase> = {
  name: 'signatures',
  folder: 'signatures',
  summary:
    '403 for an unknown client matching a blocking rule; requires the challenge (`requireChallenge`, src/pipeline/guard.ts) for a ' +
    'challenging rule; known clients skip it ([signatures.md](signatures.md))',
  codes: ['RMP_ERR_SIGNATURE_BLOCKED'],
  create: (env) => createSignaturesPhase(env),
  adminRoutes: (phase, env) => signaturesAdminRoutes(phase, env),
};
