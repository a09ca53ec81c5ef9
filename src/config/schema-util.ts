// Building blocks shared by the config schema (src/config/schema.ts) and the fragments each defence
// phase keeps next to its code (src/phases/*/schema.ts).
import { Type, type ObjectOptions, type TProperties } from '@sinclair/typebox';

/** A strict object: unknown keys are an error. */
export function Obj<T extends TProperties>(properties: T, options: ObjectOptions = {}) {
  return Type.Object(properties, { additionalProperties: false, ...options });
}

/** A guard's mode: `off`, `observe` (decide, count, log, let through) or `enforce`. */
export function GuardModeSchema(defaultMode: 'off' | 'observe' | 'enforce', what: string) {
  return Type.Union([Type.Literal('off'), Type.Literal('observe'), Type.Literal('enforce')], {
    default: defaultMode,
    description: `${what}: \`off\` does nothing, \`observe\` decides, counts and logs but lets the request through, \`enforce\` acts.`,
  });
}
