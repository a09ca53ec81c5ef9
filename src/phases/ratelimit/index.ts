// Phase `rateLimit`: Rate limits per client key and class (GCRA); 429 with Retry-After and RateLimit headers.
// (Stub: lets everything through; filled in by the defence work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createRateLimitPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'rateLimit',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
