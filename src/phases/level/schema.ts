// Config fragment for the attack level (defense.level), part of the one schema.
import { Type } from '@sinclair/typebox';
import { Obj } from '../../config/schema-util.ts';

export const AttackLevelSchema = Obj(
  {
    override: Type.Union([Type.Literal('auto'), Type.Literal('calm'), Type.Literal('elevated'), Type.Literal('under_attack')], {
      default: 'auto',
      description: 'Pin the attack level (`calm`, `elevated`, `under_attack`) or let detection set it (`auto`). The admin API can override it too.',
    }),
  },
  { default: {}, description: 'Attack-level detection: calm → elevated → under attack (docs/defense.md).' },
);
