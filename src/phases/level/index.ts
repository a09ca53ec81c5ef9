// Phase `level`: feeds attack-level detection and blocks nothing. Per request it bumps counters and
// samples 1 in N requests into the feature sketches (src/phases/level/traffic.ts); the monitor
// (src/phases/level/monitor.ts) turns them into the level once a second. Also lists /api/level.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { DefenseDeps } from '../../pipeline/env.ts';
import { ATTACK_LEVEL_NAMES, type AttackLevelName } from '../../pipeline/env.ts';
import { AttackLevelMonitor } from './monitor.ts';
import { ApiError, bodyObject, type AdminRoute } from '../../pipeline/admin-route.ts';

/**
 * @example
 *   const level = new AttackLevelMonitor({ getRuntime, metrics, log, clock, alerts });
 *   const phases = [identify, edge, route, ban, createLevelPhase({ ...deps, level })];
 */
export function createLevelPhase(deps: DefenseDeps): Phase {
  const monitor = deps.level instanceof AttackLevelMonitor ? deps.level : null;
  if (monitor === null) return { name: 'level', onRequest: () => Verdict.Continue };
  const traffic = monitor.traffic;
  const clock = deps.clock;
  const wallMs = () => clock.wallMs();
  return {
    name: 'level',
    onRequest(ctx: RequestContext) {
      traffic.observe(ctx, wallMs);
      return Verdict.Continue;
    },
    onDone(ctx: RequestContext) {
      traffic.onDone(ctx);
    },
  };
}

const MAX_REASON_CHARS = 200;

/** `PUT /api/level` body: exactly `{ level, reason }`, level one of the three, reason printable text. */
export function parseOverride(body: unknown): { level: AttackLevelName; reason: string } {
  const o = bodyObject(body);
  for (const key of Object.keys(o))
    if (key !== 'level' && key !== 'reason') throw new ApiError(`unknown field "${key}" (expected level, reason)`);
  const level = o.level;
  if (typeof level !== 'string' || !(ATTACK_LEVEL_NAMES as readonly string[]).includes(level))
    throw new ApiError(
      `level must be one of ${ATTACK_LEVEL_NAMES.join(', ')} (DELETE /api/level returns to detection)`,
    );
  const reason = o.reason;
  if (
    typeof reason !== 'string' ||
    reason.trim() === '' ||
    reason.length > MAX_REASON_CHARS ||
    /[\u0000-\u001f\u007f]/.test(reason)
  )
    throw new ApiError(`reason must be 1-${MAX_REASON_CHARS} printable characters`);
  return { level: level as AttackLevelName, reason: reason.trim() };
}

/** GET, PUT and DELETE /api/level (docs/attack-level.md); none without the monitor. */
export function levelAdminRoutes(deps: DefenseDeps): readonly AdminRoute[] {
  const monitor = deps.level instanceof AttackLevelMonitor ? deps.level : null;
  if (monitor === null) return [];
  const set: AdminRoute['handler'] = (req) => {
    const { level, reason } = parseOverride(req.body);
    monitor.setOverride(level, reason, req.who);
    return { status: 200, body: monitor.snapshot() };
  };
  const release: AdminRoute['handler'] = (req) => {
    const released = monitor.releaseOverride(req.who);
    return { status: 200, body: { released, ...monitor.snapshot() } };
  };
  return [
    { method: 'GET', path: '/api/level', scope: 'read', handler: () => ({ status: 200, body: monitor.snapshot() }) },
    { method: 'PUT', path: '/api/level', scope: 'operator', handler: set },
    { method: 'DELETE', path: '/api/level', scope: 'operator', handler: release },
  ];
}

export const levelPhase: PhaseModule = {
  name: 'level',
  folder: 'level',
  summary:
    '— (counts requests per route and from never-seen prefixes, samples 1 in N into the feature sketches; a 1 s ' +
    'tick sets the attack level, `rempart_attack_level`: [attack-level.md](attack-level.md))',
  create: (env) => createLevelPhase(env),
  adminRoutes: (_phase, env) => levelAdminRoutes(env),
};
