// Phase `exfiltration`: Per-identity quotas on sensitive routes; alerts and blocks bulk extraction.
// (Stub: lets everything through; filled in by the defence work.)
import type { Phase } from '../../core/pipeline.ts';
import { Verdict } from '../../core/pipeline.ts';
import type { DefenseDeps } from '../../defense/types.ts';

export function createExfiltrationPhase(_deps: DefenseDeps): Phase {
  return {
    name: 'exfiltration',
    onRequest() {
      return Verdict.Continue;
    },
  };
}
