// Phase `signatures`: Mines heavy-hitter signatures and applies their rules (challenge or block) under attack.
// (Stub: lets everything through; filled in by the defence work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createSignaturesPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'signatures',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
