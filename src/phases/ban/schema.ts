// Config fragment for bans (defense.bans), part of the one schema.
import { Obj, GuardModeSchema } from '../../config/schema-util.ts';

export const BansSchema = Obj(
  { mode: GuardModeSchema('enforce', 'Bans') },
  { default: {}, description: 'Temporary, escalating bans, refused on accept (docs/defense.md).' },
);
