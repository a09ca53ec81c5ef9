// Config fragment for signature mining (defense.signatures), part of the one schema. See docs/signatures.md.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../core/schema-util.ts';

const Action = Type.Union([Type.Literal('challenge'), Type.Literal('block')], {
  description:
    '`challenge`: unknown clients get the proof-of-work challenge; `block`: 403 `RMP_ERR_SIGNATURE_BLOCKED` and an offence towards a ban.',
});

const StaticRule = Obj({
  id: Type.String({
    pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$',
    description: 'Rule id, in metrics, logs and the decision header.',
  }),
  match: Obj(
    {
      prefix: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 64,
          description: 'Client prefix as Rempart writes it: `203.0.113` (a /24) or `2001:db8:0:1::/64`.',
        }),
      ),
      pathShape: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 200,
          description: 'Path shape, ids replaced (`/track/:id`, `/api/orders/:n`).',
        }),
      ),
      userAgent: Type.Optional(
        Type.String({ minLength: 1, maxLength: 200, description: 'Substring of the User-Agent (case-sensitive).' }),
      ),
      method: Type.Optional(Type.String({ pattern: '^[A-Z]{1,16}$', description: 'Request method.' })),
      headerOrder: Type.Optional(
        Type.String({
          pattern: '^[0-9a-f]{8}$',
          description: 'Header-order fingerprint (as listed by `GET /api/signatures`).',
        }),
      ),
      ja4: Type.Optional(
        Type.String({
          pattern: '^[tqd][0-9a-z]{2}[di][0-9]{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$',
          description:
            'JA4 fingerprint of the client\u2019s TLS ClientHello, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1` (in the `ja4` field of the log line; docs/signatures.md).',
        }),
      ),
      h2: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 512,
          description:
            'HTTP/2 fingerprint (Akamai format), e.g. `1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p` (the `h2fp` field of the log line).',
        }),
      ),
    },
    { minProperties: 1, description: 'Every given feature must match.' },
  ),
  action: Action,
});

export const SignaturesSchema = Obj(
  {
    mode: GuardModeSchema('observe', 'Signature rules'),
    autoApply: Type.Boolean({
      default: true,
      description:
        'Apply proposed rules without approval while the level is `under_attack` (in `observe` mode they are only counted and logged).',
    }),
    sampleEvery: Type.Integer({
      minimum: 1,
      maximum: 10000,
      default: 4,
      description: 'Sample at most one request in this many into the sketches.',
    }),
    maxSamplesPerSecond: Type.Integer({
      minimum: 10,
      default: 2000,
      description: 'Sample less often when traffic is heavy: one in max(sampleEvery, rate / maxSamplesPerSecond).',
    }),
    k: Type.Integer({
      minimum: 8,
      maximum: 1024,
      default: 64,
      description: 'Counters per feature and window (Space-Saving): the memory bound.',
    }),
    minShare: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.2,
      description: 'Propose a rule for a value making at least this share of the last seconds\u2019 traffic…',
    }),
    liftFactor: Type.Number({ minimum: 1, default: 5, description: '…and at least this many times its calm share.' }),
    minSamples: Type.Integer({
      minimum: 1,
      default: 30,
      description: '…and seen in at least this many sampled requests of the window.',
    }),
    blockShare: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.6,
      description:
        'Propose `block` instead of `challenge` for a prefix, user agent or header order making at least this share while (almost) never seen when calm (< 0.1 %).',
    }),
    maxRules: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 32,
      description: 'Mined rules kept at most (proposed, approved or rejected).',
    }),
    ruleTtlSeconds: Type.Integer({
      minimum: 10,
      default: 600,
      description: 'A mined rule expires this long after its evidence was last seen.',
    }),
    rules: Type.Array(StaticRule, {
      default: [],
      maxItems: 1000,
      description: 'Rules written by the operator: always in force (subject to `mode`).',
    }),
  },
  {
    default: {},
    description: 'Heavy-hitter signatures mined from attack traffic, proposed as rules (docs/signatures.md).',
  },
);
