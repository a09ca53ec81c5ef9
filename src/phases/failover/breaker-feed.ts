// What a forwarded request tells its upstream's circuit breaker: `failover`'s onDone, run once the
// request is over (every forwarded request crossed every phase, so it always runs), and the tunnel
// entry at the switch to a WebSocket tunnel (which then clears forwardStartMs, so done feeds nothing).
// Connect errors, timeouts and resets count at once, through the forward hooks (onUpstreamError).
import type { RequestContext } from '../../pipeline/context.ts';

/** Outcomes of forwarded requests feed their upstream's breaker; a request never forwarded says nothing. */
export function feedBreaker(ctx: RequestContext): void {
  const u = ctx.upstream;
  if (u === null || ctx.forwardStartMs === 0) return;
  const s = ctx.upstreamStatus;
  // 503 is not a failure: an overloaded origin answering 503 to its surplus is alive and serving the
  // rest. Opening the breaker on it would turn partial service into none for openMs (admission
  // control is the answer to overload); 502 and 504 say the origin's own backends are gone.
  if (s === 502 || s === 504) u.breaker.onFailure();
  else if (s !== 0) {
    // A head below 500 then a reset mid-body was already counted as a failure: not a success too.
    if (s < 500 && ctx.decision !== 'upstream_error') u.breaker.onSuccess();
  } else if (ctx.decision === 'stale' && ctx.reason.startsWith('RMP_ERR_UPSTREAM_')) {
    u.breaker.onFailure(); // a stale copy stood in for an error
  }
}
