// What a forwarded request tells its upstream's circuit breaker: `failover`'s onDone, run once the
// request is over (every forwarded request crossed every phase, so it always runs), and the tunnel
// entry at the switch to a WebSocket tunnel (which then clears forwardStartMs, so done feeds nothing).
// Connect errors, timeouts and resets count at once, through the forward hooks (onUpstreamError,
// feedBreakerError). The breaker judges connect failures alone and response failures only with those
// of other clients and paths (src/upstream/breaker.ts): each failure carries its client's prefix and path.
import type { RequestContext } from '../../pipeline/context.ts';
import type { ErrorCode } from '../../core/errors.ts';
import { isConnectFailure } from '../../upstream/errors.ts';

/** Outcomes of forwarded requests feed their upstream's breaker; a request never forwarded says nothing. */
export function feedBreaker(ctx: RequestContext): void {
  const u = ctx.upstream;
  if (u === null || ctx.forwardStartMs === 0) return;
  const s = ctx.upstreamStatus;
  // 503 is not a failure: an overloaded origin answering 503 to its surplus is alive and serving the
  // rest. Opening the breaker on it would turn partial service into none for openMs (admission
  // control is the answer to overload); 502 and 504 say the origin's own backends are gone, or that
  // this request's path is slow or broken there: the breaker tells one from the other.
  if (s === 502 || s === 504) u.breaker.onResponseFailure(ctx.clientPrefix, ctx.path);
  else if (s !== 0) {
    // A head below 500 then a reset mid-body was already counted as a failure: not a success too.
    if (s < 500 && ctx.decision !== 'upstream_error') u.breaker.onSuccess();
  } else if (ctx.decision === 'stale' && ctx.reason.startsWith('RMP_ERR_UPSTREAM_')) {
    // A stale copy stood in for an error. Only its code is left: a timeout may have been the
    // connect's or the answer's, so only a connect error counts as unreachable.
    if (ctx.reason === 'RMP_ERR_UPSTREAM_CONNECT') u.breaker.onConnectFailure();
    else u.breaker.onResponseFailure(ctx.clientPrefix, ctx.path);
  }
}

/** A forwarded request failed with `err` (classified `code`): its upstream's breaker counts it. */
export function feedBreakerError(ctx: RequestContext, code: ErrorCode, err: Error): void {
  const u = ctx.upstream;
  // Out of descriptors or ports here is no news about the upstream (upstream/errors.ts).
  if (u === null || code === 'RMP_ERR_RESOURCES_EXHAUSTED') return;
  if (isConnectFailure(err)) u.breaker.onConnectFailure();
  else u.breaker.onResponseFailure(ctx.clientPrefix, ctx.path);
}
