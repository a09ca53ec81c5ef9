// Phase `ban`: A request from a banned address on a connection opened before the ban is refused with 403.
// (Stub: lets everything through; filled in by the defence work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createBanPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'ban',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
