// Services phases use from one another, named here so no phase imports another phase's module for
// behaviour: the phase that provides one implements the interface, the composition root hands it to
// those that use it (src/pipeline/env.ts). Each is a plain object built once, called per request
// without allocating.
import type { RequestContext } from './context.ts';

/**
 * A stored copy that may stand in for a failure: the cache phase (src/phases/cache) implements it;
 * admission (a shed, pipeline/shed.ts) and failover's `unavailable` (no usable upstream) use it.
 */
export interface StaleSource {
  /**
   * Call after the verb that answers the failure (refuse, failUpstream): if this request has a stored
   * copy within its stale-if-error window, make it the reply instead (decision `stale`, the reason
   * kept: the code of the answer it replaces) and return true. The caller answers either way.
   */
  serveStaleIfAny(ctx: RequestContext): boolean;
}
