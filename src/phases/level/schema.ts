// Config fragment for the attack level (defense.level), part of the one schema. The thresholds are
// explained in docs/attack-level.md.
import { Type } from '@sinclair/typebox';
import { Obj } from '../../core/schema-util.ts';

export const ATTACK_LEVEL_OVERRIDES = ['auto', 'calm', 'elevated', 'under_attack'] as const;

export const AttackLevelSchema = Obj(
  {
    override: Type.Union(
      [Type.Literal('auto'), Type.Literal('calm'), Type.Literal('elevated'), Type.Literal('under_attack')],
      {
        default: 'auto',
        description:
          'Pin the attack level (`calm`, `elevated`, `under_attack`) or let detection set it (`auto`). `PUT /api/level` overrides it too, until `DELETE /api/level`.',
      },
    ),
    surgeFactor: Type.Number({
      minimum: 1.5,
      maximum: 1000,
      default: 4,
      description: 'Pressure: requests per second (global, or of any one route) at this many times its calm baseline.',
    }),
    minRatePerSecond: Type.Number({
      minimum: 0.1,
      default: 20,
      description:
        'Floor under every baseline (a surge is measured against at least this rate), and the least traffic per second for the mix signals (never-seen share, shifts) to count.',
    }),
    queueShare: Type.Number({
      exclusiveMinimum: 0,
      default: 0.5,
      description:
        'Pressure: requests queued at an upstream\u2019s admission gate, as a share of its concurrency limit (origin saturation).',
    }),
    shedShare: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.02,
      description:
        'Pressure: share of requests shed by admission control (503) or sent to the waiting room in the last second.',
    }),
    noveltyShare: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.3,
      description:
        'Newcomers: share of requests from never-seen prefixes above its calm average (0.3: 30 points more than usual). New visitors alone never make an attack: with a surge they do only when the path mix shifts too.',
    }),
    paceShare: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.3,
      description:
        'Strangeness: share of requests from clients (an IPv4 address, an IPv6 /64) sending faster than calm\u2019s fastest (twice the recent count only 2 % of calm\u2019s requests reach), above its calm share.',
    }),
    shiftDistance: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: 0.4,
      description:
        'Total variation distance between the last seconds\u2019 and calm\u2019s distribution of a feature. User agents, header orders, JA4 and HTTP/2 fingerprints: strangeness (with a surge: under attack); prefixes: newcomers. Also the share of requests on path shapes or methods calm rarely asked for: drift. Newcomers and drift are each `elevated` alone, under attack with a surge only together.',
    }),
    holdFactor: Type.Number({
      minimum: 0.1,
      maximum: 1,
      default: 0.7,
      description:
        'Hysteresis: a level is left only when its signals have been below this fraction of their thresholds for `fallSeconds`.',
    }),
    riseSeconds: Type.Integer({
      minimum: 1,
      maximum: 30,
      default: 2,
      description:
        'Rise: a level is entered when its signals held in this many of the last riseSeconds + 1 ticks (one tick per second).',
    }),
    severeFactor: Type.Number({
      minimum: 1,
      maximum: 1000,
      default: 1.5,
      description:
        'Fast rise: a tick whose load (pressure) and client behaviour (strangeness: other software, header order or per-client pace than calm\u2019s) are both at this many times their thresholds enters `under_attack` at once, without the `riseSeconds` wait (an attack\u2019s first second is otherwise forwarded as calm); it stays only if the `riseSeconds` rule confirms it within `riseSeconds` ticks, or when it repeats within `fallSeconds` of an unconfirmed one. A crowd browsing like calm\u2019s clients has no strangeness, whatever its load or novelty; new visitors on new paths (drift and newcomers) keep the `riseSeconds` confirmation. 1000: never at once.',
    }),
    fallSeconds: Type.Integer({
      minimum: 1,
      maximum: 3600,
      default: 20,
      description:
        'Fall: one level down after this many consecutive quiet seconds (under attack → calm takes twice this).',
    }),
    baselineHalfLifeSeconds: Type.Integer({
      minimum: 10,
      default: 600,
      description:
        'Half-life of the rate baselines and of the calm sketches, learned only while calm (attack traffic never enters them).',
    }),
    warmupSeconds: Type.Integer({
      minimum: 0,
      default: 60,
      description:
        'Calm seconds to learn before the mix signals count (after a start, every prefix is never-seen). Pressure counts from the start.',
    }),
    familiarPrefixes: Obj(
      {
        capacity: Type.Integer({
          minimum: 1000,
          maximum: 50_000_000,
          default: 200_000,
          description: 'Prefixes one generation of the Bloom filter holds (about 1.25 bytes each, two generations).',
        }),
        retentionHours: Type.Number({
          exclusiveMinimum: 0,
          default: 168,
          description: 'How long a prefix seen while calm stays familiar (between half this and this).',
        }),
      },
      { default: {}, description: 'The /24 and /64 prefixes seen while calm, against which "never seen" is judged.' },
    ),
  },
  {
    default: {},
    description:
      'Attack-level detection: calm → elevated → under attack (docs/attack-level.md). Detection blocks nothing; guards read the level.',
  },
);
