// The attack level (stub: follows the override only; detection is filled in by the level work).
import { AttackLevel, type AttackLevelView } from './types.ts';

export class AttackLevelMonitor implements AttackLevelView {
  level: AttackLevel = AttackLevel.calm;
}
