// Config fragments for familiarity and the proof-of-work challenge (defense.familiarity,
// defense.challenge, routes[].challenge), part of the one schema.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../config/schema-util.ts';

export const FamiliaritySchema = Obj({}, { default: {}, description: 'Which clients are known: a valid clearance, or a session the origin granted (docs/challenge.md).' });

export const ChallengeSchema = Obj(
  { mode: GuardModeSchema('enforce', 'Proof-of-work challenges') },
  { default: {}, description: 'Proof-of-work challenges for unknown clients under attack (docs/challenge.md).' },
);

export const RouteChallengeSchema = Type.Boolean({
  default: true,
  description: 'Whether unknown clients on this route may be challenged when the attack level or a rule says so.',
});
