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

// Human units. A key's unit is in its name (…Ms, …Sec, …Seconds, …Bytes; docs/config.md), so the
// same rule serves every schema fragment without each declaring it: where a number of
// milliseconds, seconds or bytes is expected, `30s`, `5m` or `64KiB` is accepted too and converted
// before validation (src/config/load.ts). The schema itself keeps integers: the code reads numbers.
export type Unit = 'ms' | 'sec' | 'hours' | 'days' | 'bytes';

/** The unit a key's name promises, if any. `ratePerSec` is a rate, not a duration. */
export function unitOfKey(key: string): Unit | undefined {
  if (/Ms$/.test(key)) return 'ms';
  if (/PerSec(ond)?$/.test(key)) return undefined;
  if (/(Sec|Seconds)$/.test(key)) return 'sec';
  if (/Hours$/.test(key)) return 'hours';
  if (/Days$/.test(key)) return 'days';
  if (/Bytes$/.test(key)) return 'bytes';
  return undefined;
}

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const UNIT_MS: Record<Exclude<Unit, 'bytes'>, number> = { ms: 1, sec: 1000, hours: 3_600_000, days: 86_400_000 };
// SI prefixes are powers of 1000 and IEC prefixes powers of 1024 (IEC 80000-13): 10MB is 10 000 000
// bytes, 10MiB is 10 485 760. `B` alone is bytes.
const SIZE: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

export const DURATION_PATTERN = '^\\s*([0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h|d)\\s*)+$';
export const SIZE_PATTERN = '^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT][iI]?[bB]|[bB])\\s*$';

export const UNIT_EXAMPLES: Record<Unit, string> = {
  ms: 'e.g. 500ms, 30s, 5m, 1h',
  sec: 'e.g. 30s, 5m, 1h',
  hours: 'e.g. 12h, 7d',
  days: 'e.g. 30d',
  bytes: 'e.g. 64KiB, 10MB, 1GiB',
};

/**
 * A value as written for a key of this unit, converted to the number the schema expects;
 * a plain number (or a string of one, as `${VAR}` gives) is taken as already in that unit.
 * Returns an error message (without the key) when the text is not a duration or size, or does not
 * come to a whole number where the schema asks an integer.
 */
export function convertUnit(unit: Unit, text: string, integer: boolean): number | string {
  const t = text.trim();
  const quoted = JSON.stringify(text);
  if (/^-?[0-9]+(\.[0-9]+)?$/.test(t)) return Number(t);
  let n: number;
  if (unit === 'bytes') {
    const m = /^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)$/.exec(t);
    const factor = m ? SIZE[m[2]!.toLowerCase()] : undefined;
    // `mb` is not `Mb` (megabits) in some tools; bytes is the only reading here, as `MB`.
    if (!m || factor === undefined)
      return `${quoted} is not a size (${UNIT_EXAMPLES.bytes}; KB and MB are powers of 1000, KiB and MiB of 1024)`;
    n = Number(m[1]) * factor;
  } else {
    if (!new RegExp(DURATION_PATTERN).test(t)) return `${quoted} is not a duration (${UNIT_EXAMPLES[unit]})`;
    const parts = t.matchAll(/([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)/g);
    let ms = 0;
    for (const p of parts) ms += Number(p[1]) * DURATION_MS[p[2]!]!;
    n = ms / UNIT_MS[unit];
  }
  // 0.1 * 1e6 is 100000.00000000001: round off float noise, not real fractions.
  const rounded = Math.round(n);
  if (Math.abs(n - rounded) < 1e-6) n = rounded;
  if (integer && !Number.isInteger(n)) {
    const name = unit === 'bytes' ? 'bytes' : unit === 'ms' ? 'milliseconds' : unit === 'sec' ? 'seconds' : unit;
    return `${quoted} is ${n} ${name}: a whole number is needed`;
  }
  return n;
}

/**
 * The `tls` block of a connection Rempart makes (an upstream's, the cluster store's): `caFile`, `certFile`,
 * `keyFile` (read by src/core/tls-files.ts). `caFile` and `certFile` say whose; the key and the block's
 * description are the caller's too.
 */
export function TlsFilesSchema(d: { caFile: string; certFile: string; block: string }) {
  return Type.Optional(
    Obj(
      {
        caFile: Type.Optional(Type.String({ minLength: 1, description: d.caFile })),
        certFile: Type.Optional(Type.String({ minLength: 1, description: d.certFile })),
        keyFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              "The unencrypted PEM private key of `certFile`; keep the file readable by Rempart's user only. " +
              'Never logged.',
          }),
        ),
      },
      { description: d.block },
    ),
  );
}

/** Where a config cross-check reports a problem: the key path and what is wrong there (src/config/load.ts). */
export type AddProblem = (path: (string | number)[], message: string) => void;

/** A client certificate comes with its key, and a key with its certificate: `at` is the `tls` block's path. */
export function checkTlsPair(t: unknown, at: (string | number)[], add: AddProblem): void {
  if (t === null || typeof t !== 'object') return;
  const x = t as { certFile?: unknown; keyFile?: unknown };
  if (x.certFile !== undefined && x.keyFile === undefined)
    add([...at, 'keyFile'], 'a client certificate (`certFile`) needs its private key (`keyFile`)');
  if (x.keyFile !== undefined && x.certFile === undefined)
    add([...at, 'certFile'], '`keyFile` is the key of a client certificate: give `certFile` too');
}
