// Config fragment for the `ratelimit` phase (defense.rateLimit), part of the one schema.
import { Obj, GuardModeSchema } from '../../config/schema-util.ts';

export const RateLimitSchema = Obj(
  { mode: GuardModeSchema('enforce', 'Rate limits') },
  { default: {}, description: 'Rate limits per address, prefix, session or API key, per class (docs/defense.md).' },
);
