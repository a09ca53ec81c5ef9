// Config fragments for the exfiltration guard (defense.exfiltration, routes[].sensitive), part of the one
// schema, and the cross-check the schema alone cannot express (a sensitive route needs a quota).
import { Type } from '@sinclair/typebox';
import { type AddProblem, Obj, GuardModeSchema } from '../../core/schema-util.ts';

const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const CookieName = (description: string, def?: string) =>
  Type.String({ pattern: TOKEN, maxLength: 128, description, ...(def === undefined ? {} : { default: def }) });
const HeaderName = CookieName;

export const EXFILTRATION_IDENTITIES = ['session', 'address', 'prefix', 'apiKey'] as const;
export type ExfiltrationIdentity = (typeof EXFILTRATION_IDENTITIES)[number];

export const ExfiltrationSchema = Obj(
  {
    mode: GuardModeSchema('enforce', 'The exfiltration guard (it acts only on routes marked `sensitive`)'),
    maxIdentities: Type.Integer({
      minimum: 16,
      maximum: 10000000,
      default: 100000,
      description:
        'Identities (per sensitive route) whose counts are kept, all routes together: about 200 bytes each. When full, the least used of the least recently seen identities is forgotten, never one at or near its quota (docs/exfiltration.md).',
    }),
    alertCooldownMs: Type.Integer({
      minimum: 1000,
      maximum: 604800000,
      default: 3600000,
      description:
        'An identity past a quota on a route raises one alert per quota per this period, however many of its requests are refused meanwhile.',
    }),
    sessionCookie: CookieName(
      'Cookie naming the session, for routes with `sensitive.identity: session` that do not set their own.',
      'sid',
    ),
    apiKeyHeader: HeaderName(
      'Request header carrying the API key, for routes with `sensitive.identity: apiKey` that do not set their own.',
      'x-api-key',
    ),
  },
  { default: {}, description: 'Quotas and alerts on bulk extraction from sensitive routes (docs/exfiltration.md).' },
);

export const RouteSensitiveSchema = Obj(
  {
    documentsPerHour: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100000000,
        description:
          'Documents (2xx answers to a non-HEAD request) one identity may get from this route per hour, over a sliding hour. The request that would go past it is refused.',
      }),
    ),
    bytesPerDay: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1099511627776,
        description:
          'Response body bytes one identity may get from this route per day, over a sliding day. Checked before forwarding: the response that crosses it is served, the next request refused.',
      }),
    ),
    identity: Type.Union(
      EXFILTRATION_IDENTITIES.map((k) => Type.Literal(k)),
      {
        default: 'session',
        description:
          'Who a quota belongs to: the `session` cookie, the `address`, its /24 or /64 `prefix`, or the `apiKey` header. A request without the cookie or header is counted by its address.',
      },
    ),
    sessionCookie: Type.Optional(
      CookieName('Cookie naming the session on this route (default: `defense.exfiltration.sessionCookie`).'),
    ),
    apiKeyHeader: Type.Optional(
      HeaderName('Header carrying the API key on this route (default: `defense.exfiltration.apiKeyHeader`).'),
    ),
  },
  {
    description:
      'Mark the route sensitive: per-identity quotas (documents per hour, bytes per day), alerts and a block when exceeded (docs/exfiltration.md).',
  },
);

/** Cross-check for src/config/load.ts: a route marked sensitive must set at least one quota. */
export function checkSensitive(sensitive: unknown, at: (string | number)[], add: AddProblem): void {
  if (sensitive === null || typeof sensitive !== 'object') return;
  const s = sensitive as { documentsPerHour?: unknown; bytesPerDay?: unknown };
  if (s.documentsPerHour === undefined && s.bytesPerDay === undefined)
    add(at, 'a sensitive route needs a quota: set documentsPerHour, bytesPerDay or both');
}
