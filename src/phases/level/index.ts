// Phase `level`: Feeds attack-level detection (traffic per route, new prefixes, mix shifts); blocks nothing.
// (Stub: lets everything through; filled in by the defence work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createLevelPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'level',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
