// Phase `ban`: a request from a banned address (or prefix) on a keep-alive connection opened before its
// ban gets 403 RMP_ERR_BANNED and `Connection: close`; new connections are refused on accept
// (src/server/accept.ts). It also catches clients behind a trusted proxy, whose address only the
// request names. Lists the ban endpoints of the admin API (docs/bans.md).
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import { decide } from '../../pipeline/guard.ts';
import { BanTable } from './table.ts';
import type { DefenseDeps } from '../../pipeline/env.ts';
import { ApiError, bodyObject, type AdminRoute } from '../../pipeline/admin-route.ts';
import { parseTarget } from './target.ts';

// Frozen: the reply keeps its merged, checked head fields (pipeline/reply.ts).
const CLOSE = Object.freeze({ connection: 'close' });
/** Longest ban an operator may set through the API: 30 days. */
const MAX_TTL_SEC = 2592000;

export function createBanPhase(deps: DefenseDeps): Phase {
  const table = deps.bans instanceof BanTable ? deps.bans : null;
  return {
    name: 'ban',
    onRequest(ctx) {
      if (table === null) {
        if (!deps.bans.isBanned(ctx.clientAddress)) return Verdict.Continue;
        return decide(deps, ctx, 'ban', 'enforce', 'RMP_ERR_BANNED', 'ban', 403, '', CLOSE)
          ? Verdict.Reply
          : Verdict.Continue;
      }
      const e = table.lookup(ctx.clientAddress);
      if (e === null) return Verdict.Continue;
      const mode = table.mode;
      if (mode === 'off') return Verdict.Continue;
      return decide(deps, ctx, 'ban', mode, 'RMP_ERR_BANNED', e.ruleId || 'ban', 403, '', CLOSE)
        ? Verdict.Reply
        : Verdict.Continue;
    },
  };
}

/** GET, POST /api/bans and DELETE /api/bans/:target (docs/bans.md). */
export function banAdminRoutes(deps: DefenseDeps): readonly AdminRoute[] {
  const table = deps.bans instanceof BanTable ? deps.bans : null;
  const list: AdminRoute['handler'] = (req) => {
    if (table === null) throw new ApiError('this ban list cannot be listed', 501);
    const limitText = req.query.get('limit');
    const limit = limitText === null ? 1000 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100000)
      throw new ApiError('limit must be an integer from 1 to 100000');
    return { status: 200, body: { mode: table.mode, active: table.activeCount(), bans: table.list(limit) } };
  };

  const add: AdminRoute['handler'] = (req) => {
    const body = bodyObject(req.body);
    for (const k of Object.keys(body))
      if (k !== 'target' && k !== 'ttlSec' && k !== 'reason')
        throw new ApiError(`unknown field ${JSON.stringify(k)} (expected target, ttlSec, reason)`);
    const { target, ttlSec, reason } = body;
    if (typeof target !== 'string')
      throw new ApiError(
        'target must be a string: an address (203.0.113.7) or a prefix (203.0.113.0/24, 2001:db8::/64)',
      );
    const t = parseTarget(target);
    if (t === null)
      throw new ApiError(
        `target ${JSON.stringify(target.slice(0, 80))} is neither an address nor a prefix of at least /8 (IPv4) or /16 (IPv6)`,
      );
    if (typeof ttlSec !== 'number' || !Number.isInteger(ttlSec) || ttlSec < 1 || ttlSec > MAX_TTL_SEC)
      throw new ApiError(`ttlSec must be an integer from 1 to ${MAX_TTL_SEC}`);
    if (
      reason !== undefined &&
      (typeof reason !== 'string' || reason.length > 200 || /[\u0000-\u001f\u007f]/.test(reason))
    )
      throw new ApiError('reason must be a string of at most 200 printable characters');
    if (deps.bans instanceof BanTable && deps.bans.mode === 'off')
      throw new ApiError('bans are off (defense.bans.mode)', 409);
    const by = `operator:${req.who}`;
    const why = reason === undefined || reason === '' ? 'operator' : reason;
    if (table === null) {
      deps.bans.ban(t.display, ttlSec * 1000, why, '', by);
      return { status: 201, body: { target: t.display, ttlSec } };
    }
    const e = table.banEntry(t.display, ttlSec * 1000, why, '', by);
    if (e === null) throw new ApiError('the ban was not made', 409);
    return { status: 201, body: table.view(e) };
  };

  const lift: AdminRoute['handler'] = (req) => {
    const raw = req.params.target ?? '';
    const t = parseTarget(raw);
    if (t === null)
      throw new ApiError(
        `target ${JSON.stringify(raw.slice(0, 80))} is neither an address nor a prefix (URL-encode the slash: 203.0.113.0%2F24)`,
      );
    if (!deps.bans.unban(t.display, `operator:${req.who}`))
      return {
        status: 404,
        body: { error: { code: 'RMP_ERR_ADMIN_NOT_FOUND', message: `${t.display} is not banned` } },
      };
    return { status: 200, body: { target: t.display, lifted: true } };
  };
  return [
    { method: 'GET', path: '/api/bans', scope: 'read', handler: list },
    { method: 'POST', path: '/api/bans', scope: 'operator', handler: add },
    { method: 'DELETE', path: '/api/bans/:target', scope: 'operator', handler: lift },
  ];
}

export const banPhase: PhaseModule = {
  name: 'ban',
  folder: 'ban',
  summary:
    '403 with `Connection: close` for a banned address (or prefix) on a connection opened before its ban, or ' +
    'behind a trusted proxy ([bans.md](bans.md))',
  codes: ['RMP_ERR_BANNED'],
  create: (env) => createBanPhase(env),
  adminRoutes: (_phase, env) => banAdminRoutes(env),
};
