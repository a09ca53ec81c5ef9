// One way for every guard to act on a decision, so modes, reason codes, rule ids, the operators'
// decision header and the metric are the same everywhere.
import type { RequestContext } from './context.ts';
import type { ErrorCode } from '../core/errors.ts';
import type { DefenseDeps, GuardMode } from './env.ts';

/**
 * A guard decided to answer `code` (status, body, headers) under rule `ruleId`. In `enforce` mode the
 * reply is set and true returned (the phase returns Verdict.Reply); in `observe` mode the decision is
 * recorded on the context (logged, counted, shown in the decision header) and false returned (the
 * phase continues); `off` never reaches here.
 */
export function decide(
  deps: DefenseDeps,
  ctx: RequestContext,
  guard: string,
  mode: GuardMode,
  code: ErrorCode,
  ruleId: string,
  status: number,
  body = '',
  headers: Record<string, string> | null = null,
): boolean {
  const enforce = mode === 'enforce';
  ctx.ruleId = ruleId;
  deps.metrics.guardDecisions.inc(guard, enforce ? 'enforced' : 'observed', code, ruleId);
  if (deps.getRuntime().config.defense.decisionHeader)
    ctx.addResponseHeader('rempart-decision', enforce ? `${code}; rule=${ruleId}` : `observed=${code}; rule=${ruleId}`);
  if (!enforce) {
    ctx.observed = code;
    return false;
  }
  ctx.refuse(code, status, body, headers);
  return true;
}

/**
 * A guard in `enforce` mode requires a challenge for this request whatever the attack level, under
 * rule `ruleId` (a signature rule with action `challenge`). The `challenge` phase, later in the list,
 * reads ctx.challengeRequiredBy and challenges an unknown client (or lets a known one by), and reports
 * the decision itself; here it is only counted as `marked`.
 */
export function requireChallenge(deps: DefenseDeps, ctx: RequestContext, guard: string, ruleId: string): void {
  ctx.challengeRequiredBy = ruleId;
  ctx.ruleId = ruleId;
  deps.metrics.guardDecisions.inc(guard, 'marked', 'RMP_ERR_CHALLENGE', ruleId);
}
