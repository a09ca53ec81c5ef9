// Config fragment for bans (defense.bans), part of the one schema. See docs/bans.md.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../core/schema-util.ts';

const Ms = (def: number, min: number, max: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

export const BansSchema = Obj(
  {
    mode: GuardModeSchema('enforce', 'Bans'),
    maxEntries: Type.Integer({
      minimum: 16,
      maximum: 10000000,
      default: 100000,
      description:
        'Bans kept at most, active ones and expired ones remembered for escalation (about 200 bytes each). When full, expired ones go first, then the oldest automatic ban.',
    }),
    ttlMs: Ms(60000, 1000, 604800000, 'How long a first ban for offences lasts.'),
    escalation: Obj(
      {
        factor: Type.Number({
          minimum: 1,
          maximum: 100,
          default: 4,
          description: 'A repeat ban of the same target lasts this many times the previous one.',
        }),
        maxTtlMs: Ms(86400000, 1000, 2592000000, 'Escalated bans last at most this long.'),
        windowMs: Ms(
          86400000,
          0,
          2592000000,
          'A ban counts as a repeat when it comes within this long of the previous one\u2019s expiry.',
        ),
      },
      { default: {}, description: 'Repeat offenders are banned longer each time.' },
    ),
    offences: Obj(
      {
        threshold: Type.Integer({
          minimum: 1,
          maximum: 1000000,
          default: 20,
          description:
            'Offences (429s, ignored challenges, blocked signatures) from one address (an IPv6 client: its /64) within `windowMs` that make a ban.',
        }),
        windowMs: Ms(2000, 100, 3600000, 'The window offences are counted in.'),
        refusalSpacingMs: Ms(
          50,
          0,
          10000,
          'Rate-limit refusals (429) of one client closer together than this count as one offence (but see `refusalsPerOffence`): the overflow of a browser loading a heavy page at once (dozens of 429s in a few hundred ms, then nothing) does not ban it; a client refused again and again for about `threshold` × this long does. 0: every refusal counts. Never more than `windowMs` / `threshold` (a raised threshold shortens it).',
        ),
        refusalsPerOffence: Type.Integer({
          minimum: 1,
          maximum: 10000,
          default: 25,
          description:
            'Within `refusalSpacingMs` of the last counted offence, every this-many-th rate-limit refusal counts as an offence all the same: a client flooding in sub-second pulses is banned after `threshold` × this many refusals in a window (500 by default), where a page load overflows by a few dozen.',
        }),
        prefixThreshold: Type.Integer({
          minimum: 0,
          maximum: 1000000,
          default: 100,
          description:
            'Offences from the addresses of one IPv4 /24 within `windowMs`, all added up, that ban the /24 (0: never; never fewer than twice `threshold`, so one address alone cannot ban its /24). An IPv6 client is already counted and banned as its /64 (`defense.ipv6PrefixLength`).',
        }),
        maxAddresses: Type.Integer({
          minimum: 16,
          maximum: 10000000,
          default: 65536,
          description:
            'Addresses (and /24s) whose offences are counted at once (memory budget); past it the oldest count is dropped.',
        }),
      },
      {
        default: {},
        description:
          'When offences reported by the guards turn into a ban. The default only catches a client that keeps going at 10 refusals a second, refused for about a second: an honest client that gets an occasional 429, or a burst of them while a page loads, is never banned.',
      },
    ),
    nftables: Obj(
      {
        enabled: Type.Boolean({
          default: false,
          description:
            'Mirror enforced bans into nftables sets with timeouts (needs CAP_NET_ADMIN and the `nft` binary; without them it logs once and carries on).',
        }),
        family: Type.Union([Type.Literal('inet'), Type.Literal('ip'), Type.Literal('ip6')], {
          default: 'inet',
          description: 'nftables table family.',
        }),
        table: Type.String({
          pattern: '^[A-Za-z][A-Za-z0-9_]{0,31}$',
          default: 'rempart',
          description: 'Table Rempart creates and owns.',
        }),
        set: Type.String({
          pattern: '^[A-Za-z][A-Za-z0-9_]{0,28}$',
          default: 'banned',
          description: 'Base name of the sets: `<set>_v4` and `<set>_v6` (interval sets with timeouts).',
        }),
        dropRule: Type.Boolean({
          default: true,
          description:
            'Also create a chain in the table that drops packets from the sets to the listeners\u2019 ports (otherwise reference the sets from your own ruleset).',
        }),
      },
      { default: {}, description: 'Optional kernel-level mirror of the ban list (docs/bans.md).' },
    ),
  },
  {
    default: {},
    description: 'Temporary, escalating bans, refused on accept before any HTTP is parsed (docs/bans.md).',
  },
);
