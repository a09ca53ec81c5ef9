// Config fragment for signature mining (defense.signatures), part of the one schema.
import { Obj, GuardModeSchema } from '../../config/schema-util.ts';

export const SignaturesSchema = Obj(
  { mode: GuardModeSchema('observe', 'Signature rules') },
  { default: {}, description: 'Heavy-hitter signatures mined from attack traffic, proposed as rules (docs/defense.md).' },
);
