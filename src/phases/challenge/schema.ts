// Config fragments for familiarity and the proof-of-work challenge (defense.familiarity,
// defense.challenge, routes[].challenge), part of the one schema. Protocol: docs/challenge.md.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../core/schema-util.ts';

const JwtSchema = Obj(
  {
    algorithm: Type.Union([Type.Literal('HS256'), Type.Literal('RS256'), Type.Literal('ES256')], {
      description: 'The one algorithm accepted (a token naming another, or `none`, is refused).',
    }),
    keyFile: Type.String({
      minLength: 1,
      description:
        'HS256: a file whose text (trimmed) is the shared secret, at least 32 bytes. RS256/ES256: a PEM public key (SPKI or certificate). Read at start and on reload; never logged.',
    }),
    header: Type.String({
      pattern: '^[A-Za-z0-9-]+$',
      default: 'authorization',
      description:
        'Request header carrying the token (`authorization` expects `Bearer <token>`; any other header holds the bare token). Ignored when `cookie` is set.',
    }),
    cookie: Type.Optional(
      Type.String({
        pattern: '^[!#-+\\--:<-\\[\\]-~]+$',
        description: 'Read the token from this cookie instead of a header.',
      }),
    ),
    issuer: Type.Optional(Type.String({ minLength: 1, description: 'Required `iss` claim.' })),
    audience: Type.Optional(
      Type.String({ minLength: 1, description: 'Required `aud` claim (a string, or one of an array).' }),
    ),
    leewaySec: Type.Integer({
      minimum: 0,
      maximum: 600,
      default: 30,
      description: 'Clock skew tolerated on `exp` and `nbf`.',
    }),
  },
  { description: 'Clients presenting a JWT this key verifies (not expired, right issuer and audience) are known.' },
);

export const FamiliaritySchema = Obj(
  {
    sessionCookie: Type.String({
      pattern: '^[!#-+\\--:<-\\[\\]-~]*$',
      default: 'sid',
      description:
        'The origin\u2019s session cookie. A value first seen in a Set-Cookie of a 2xx upstream response is remembered (as a hash); later requests carrying it are known. Empty: off. Name a cookie the origin sets only on login, not on every first visit.',
    }),
    maxSessions: Type.Integer({
      minimum: 0,
      maximum: 10_000_000,
      default: 100_000,
      description:
        'Sessions remembered at most (least recently seen forgotten first); about 250 bytes each (measured: 205 granted, 240 once seen under attack).',
    }),
    sessionTtlSec: Type.Integer({
      minimum: 1,
      maximum: 2_592_000,
      default: 86_400,
      description: 'How long a remembered session stays known after it was last granted or seen.',
    }),
    sessionProbationSec: Type.Integer({
      minimum: 0,
      maximum: 86_400,
      default: 120,
      description:
        'A session the origin granted in calm to a client nobody vouched for (no clearance, no other credential) is not known for this long: bots logging in at the onset of an attack, before the level rose, do not become known by it. From `elevated` up such a grant is not remembered at all; a grant to a known client is trusted at once. 0: no probation.',
    }),
    sessionBounds: Obj(
      {
        maxPrefixes: Type.Integer({
          minimum: 1,
          maximum: 16,
          default: 6,
          description:
            'Distinct client prefixes (/24, /64) one session may be seen from within `windowSec` and stay known; from more, it is not known for the rest of the window (a cookie shared by bots, not a person moving between home, mobile and office). Counted as bits of a 60-bit mask: two prefixes may share a bit, so it may take one or two more to trip, never fewer.',
        }),
        maxUserAgents: Type.Integer({
          minimum: 1,
          maximum: 8,
          default: 3,
          description:
            'Distinct User-Agents one session may be seen with within `windowSec` and stay known (bits of a 30-bit mask).',
        }),
        windowSec: Type.Integer({
          minimum: 10,
          maximum: 86_400,
          default: 600,
          description: 'The window prefixes and User-Agents are counted in; each session starts afresh after it.',
        }),
        underAttackRatePerSec: Type.Number({
          exclusiveMinimum: 0,
          maximum: 100_000,
          default: 10,
          description:
            'Under attack, requests a second one session may make and stay known (a GCRA budget with `underAttackBurst`); past it its requests are unknown (challenged) until the budget refills.',
        }),
        underAttackBurst: Type.Integer({
          minimum: 1,
          maximum: 1_000_000,
          default: 200,
          description: 'Requests one session may make at once under attack and stay known.',
        }),
      },
      {
        default: {},
        description:
          'What keeps a session the origin granted known: one person’s use of it, not a cookie shared by a crowd (docs/challenge.md).',
      },
    ),
    budget: Obj(
      {
        ratePerMinute: Type.Number({
          exclusiveMinimum: 0,
          maximum: 1_000_000,
          default: 60,
          description:
            'From `elevated` up, requests a minute one credential (a clearance, a session the origin granted, a verified JWT) may make and stay known: a GCRA with `burst`. Past it the request is answered 429 `RMP_ERR_RATE_LIMITED` with Retry-After (a clearance earned by proof of work is a budget, not a free pass).',
        }),
        burst: Type.Integer({
          minimum: 1,
          maximum: 1_000_000,
          default: 100,
          description:
            'Requests one credential may send to the origin at once: a page and its assets (a large page has 70 requests not yet cached) with room to spare; it refills at `ratePerMinute`. Only what reaches the origin is charged (an answer from the cache costs nothing): each request is held on the budget when checked and given back if it did not reach the origin.',
        }),
        underAttackBurst: Type.Integer({
          minimum: 1,
          maximum: 1_000_000,
          default: 20,
          description:
            'The burst from `under_attack` instead of `burst`: what a page needs from the origin itself (its document and API calls; its static assets come from the cache, free), not a large uncached page. A bot that solved and then floods gets about this many requests per clearance before the 429s (which it cannot outrun: refusals spend too). Raise it if your pages load many assets the origin does not let a shared cache store.',
        }),
        perAddress: Type.Number({
          minimum: 1,
          maximum: 10_000,
          default: 10,
          description:
            'Every known client address (an IPv6 client: its /64) has a budget too, this many times one credential’s (`ratePerMinute` and `burst`), shared by every credential used from it: several clearances, sessions or JWTs from one address do not add up past it. 10: a carrier-NAT address with several people browsing at once (each well under one credential’s pace on average) fits; one client holding many credentials does not get many budgets.',
        }),
        trustedGrants: Obj(
          {
            perCredential: Type.Integer({
              minimum: 0,
              maximum: 1_000,
              default: 3,
              description:
                'Sessions the origin grants to a client known by one credential that are trusted at once, within `sessionBounds.windowSec` (a person logs in once or twice); past it a new session is not remembered from `elevated` up (on probation in calm). Each trusted session shares the pace budget of the credential that vouched for it.',
            }),
            perAddress: Type.Integer({
              minimum: 0,
              maximum: 10_000,
              default: 20,
              description:
                'Trusted sessions granted to one client address (an IPv6 client: its /64) within `sessionBounds.windowSec`, whatever credential vouched (a carrier-NAT address where several people log in fits).',
            }),
          },
          { default: {}, description: 'How many origin-granted sessions one known client may turn into trusted ones.' },
        ),
        clearanceMaxAddresses: Type.Integer({
          minimum: 0,
          maximum: 16,
          default: 3,
          description:
            'Client addresses (an IPv6 client: its /64) one clearance may be used from within `sessionBounds.windowSec` (it is already bound to one prefix and one User-Agent); from more it is a clearance shared by a farm, not known for the rest of the window (bits of a 30-bit mask: may trip one late, never early). 0: not counted.',
        }),
        shedCost: Type.Integer({
          minimum: 0,
          maximum: 1_000,
          default: 5,
          description:
            'Requests of its budget a known client that already spent half its burst pays each time admission sheds one of its requests (queue full or deadline passed): a client that keeps being shed while it keeps sending is flooding, and is soon over its budget. A client within half its burst (a person shed during an overload others cause) pays nothing. 0: shedding costs nothing.',
        }),
        banAfter: Type.Integer({
          minimum: 0,
          maximum: 1_000_000,
          default: 30,
          description:
            'Seconds within a minute in which one client address (an IPv6 client: its /64) kept sending over its budget before the Retry-After it was given had passed, that ban it (the ban table’s TTL, escalating; at most one refusal a second counts, and a first refusal never does: a page load that overruns the budget once is not an offence). 0: never.',
        }),
      },
      {
        default: {},
        description: 'One person’s pace for every credential (docs/challenge.md, "A clearance is a budget").',
      },
    ),
    jwt: Type.Optional(JwtSchema),
  },
  {
    default: {},
    description:
      'Which clients are known: a valid clearance, a session the origin granted, or a verified JWT (docs/challenge.md). Known clients skip challenges and queue ahead within their class.',
  },
);

export const ChallengeSchema = Obj(
  {
    mode: GuardModeSchema('enforce', 'Proof-of-work challenges'),
    atLevel: Type.Union([Type.Literal('elevated'), Type.Literal('under_attack')], {
      default: 'under_attack',
      description:
        'Attack level from which unknown clients on challengeable routes are challenged (a signature rule can ask for a challenge at any level).',
    }),
    difficultyBits: Obj(
      {
        elevated: Type.Integer({
          minimum: 1,
          maximum: 32,
          default: 14,
          description: 'Leading zero bits asked below `under_attack` (and for rule-triggered challenges then).',
        }),
        underAttack: Type.Integer({
          minimum: 1,
          maximum: 32,
          default: 16,
          description:
            'Leading zero bits asked while under attack. Each bit doubles the work: see the measured solve times in docs/challenge.md.',
        }),
      },
      { default: {}, description: 'Proof-of-work difficulty by attack level.' },
    ),
    difficultyRise: Obj(
      {
        freeClearances: Type.Integer({
          minimum: 1,
          maximum: 1_000_000,
          default: 16,
          description:
            'Clearances one client prefix (IPv4 /24, IPv6 /64) may buy (decayed over `halfLifeSec`) at the base difficulty; the next ones ask one more bit each time the count doubles past it.',
        }),
        maxExtraBits: Type.Integer({
          minimum: 0,
          maximum: 16,
          default: 4,
          description: 'Bits added at most (4: 16 times the work). 0: the difficulty never rises.',
        }),
        halfLifeSec: Type.Integer({
          minimum: 10,
          maximum: 86_400,
          default: 600,
          description: 'Half-life of the count of clearances a prefix bought.',
        }),
        maxPrefixes: Type.Integer({
          minimum: 0,
          maximum: 10_000_000,
          default: 65_536,
          description:
            'Prefixes counted at once (about 150 bytes each; least recently seen dropped first, which only forgets its extra bits).',
        }),
      },
      {
        default: {},
        description:
          'The work asked rises per client prefix with the clearances it already bought: re-solving is not a way around the budget.',
      },
    ),
    noScriptDelaySec: Obj(
      {
        elevated: Type.Integer({
          minimum: 0,
          maximum: 300,
          default: 3,
          description:
            'Seconds a client without JavaScript waits before its refresh earns a clearance, below `under_attack`.',
        }),
        underAttack: Type.Integer({
          minimum: 0,
          maximum: 300,
          default: 10,
          description: 'The same while under attack.',
        }),
      },
      { default: {}, description: 'The no-JavaScript door: a signed delay token redeemed by a meta refresh.' },
    ),
    noScriptPerPrefixPerMinute: Obj(
      {
        elevated: Type.Integer({
          minimum: 1,
          maximum: 100_000,
          default: 30,
          description:
            'Clearances the no-JavaScript door gives one client prefix (IPv4 /24, IPv6 /64; and 16 times that per IPv6 /48) per minute, below `under_attack`.',
        }),
        underAttack: Type.Integer({
          minimum: 1,
          maximum: 100_000,
          default: 3,
          description:
            'The same while under attack. Past it a delay token earns a fresh challenge page instead (and a new wait): a bot farm waiting in parallel gets this many clearances a minute per prefix, not one per bot.',
        }),
      },
      {
        default: {},
        description:
          'The no-JavaScript door costs no work, so it is counted: clearances it gives per client prefix and minute.',
      },
    ),
    challengeTtlSec: Type.Integer({
      minimum: 10,
      maximum: 3600,
      default: 300,
      description: 'How long a challenge (or no-JS delay token) may be solved and redeemed.',
    }),
    clearanceTtlSec: Type.Integer({
      minimum: 60,
      maximum: 604_800,
      default: 3600,
      description: 'How long a clearance lets its client skip challenges.',
    }),
    replayCapacity: Type.Integer({
      minimum: 1000,
      maximum: 10_000_000,
      default: 200_000,
      description:
        'Used solutions remembered per generation (two generations of challengeTtlSec each) so each is accepted once. When one fills early, older challenges are refused (a fresh one is given): memory stays bounded whatever is sent.',
    }),
    keyFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'File of signing keys, one per line (at least 32 bytes each, hex or base64; `#` comments): the first signs, all verify, so adding a new key on top and reloading rotates without logging anyone out. The env var REMPART_CHALLENGE_KEY (keys separated by commas) wins over it. Without either, a random key per process: clearances do not survive a restart nor work across nodes.',
      }),
    ),
    ignoredPerMinute: Type.Integer({
      minimum: 0,
      maximum: 100_000,
      default: 60,
      description:
        'Challenges an address may be given (or fail) per minute before each further one counts as a ban offence (`challenge_ignored`). 0: never. A person leaving a page is far below it; a bot ignoring challenges is not.',
    }),
  },
  { default: {}, description: 'Proof-of-work challenges for unknown clients under attack (docs/challenge.md).' },
);

export const RouteChallengeSchema = Type.Boolean({
  default: true,
  description: 'Whether unknown clients on this route may be challenged when the attack level or a rule says so.',
});
