// Phases `familiarity` (is this client known?) and `challenge` (proof of work for unknown clients
// under attack). (Stubs: let everything through; filled in by the challenge work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createFamiliarityPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'familiarity',
    onRequest() {
      return Verdict.Continue;
    },
  };
}

export function createChallengePhase(_deps: DefenseDeps): Phase {
  return {
    name: 'challenge',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
