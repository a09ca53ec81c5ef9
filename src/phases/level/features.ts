// The request features the traffic observer (traffic.ts) counts and signatures are mined over (who:
// prefix, user agent, header order, the TLS and HTTP/2 fingerprints; what: path shape, method), and
// how each is reduced to a short, bounded string. Computed only for sampled requests and, on the
// request path, only when a rule on that feature is active (src/phases/signatures/index.ts). Here,
// beside the observer, so the signatures phase depends on the level's folder and never the reverse.
import type { RequestContext } from '../../pipeline/context.ts';

// New features go at the end: the state file keeps the calm sketches in this order.
export const FEATURES = ['prefix', 'pathShape', 'userAgent', 'headerOrder', 'method', 'ja4', 'h2'] as const;
export type FeatureName = (typeof FEATURES)[number];
export const FeatureIndex = {
  prefix: 0,
  pathShape: 1,
  userAgent: 2,
  headerOrder: 3,
  method: 4,
  ja4: 5,
  h2: 6,
} as const satisfies Record<FeatureName, number>;

/** The value of the fingerprint features when the connection has none (plain HTTP, HTTP/1.1 for `h2`). */
export const NO_FINGERPRINT = '(none)';

/** Longer values are cut: a sketch must stay bounded whatever a client sends. */
export const MAX_VALUE_CHARS = 200;
const MAX_SEGMENTS = 8;

/**
 * The shape of a path: ids replaced so `/track/6A00012345678` and `/track/6A00098765432` count as one.
 *   all digits                     → `:n`
 *   uuid, or ≥ 16 hex chars         → `:id`
 *   ≥ 8 chars with ≥ 4 digits       → `:id` (tracking numbers, order references, cache-busters)
 * At most 8 segments are kept (then `/…`), and at most 200 characters.
 *
 * @example pathShape('/api/orders/12345/items') === '/api/orders/:n/items'
 */
export function pathShape(path: string): string {
  let out = '';
  let start = 1;
  let segments = 0;
  if (path.length === 0 || path === '/') return '/';
  while (start <= path.length) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    if (++segments > MAX_SEGMENTS) {
      out += '/…';
      break;
    }
    out += '/' + segmentShape(path, start, end);
    if (out.length > MAX_VALUE_CHARS) return out.slice(0, MAX_VALUE_CHARS);
    start = end + 1;
  }
  return out;
}

function segmentShape(path: string, start: number, end: number): string {
  const len = end - start;
  if (len === 0) return '';
  let digits = 0;
  let hex = 0;
  let dashes = 0;
  for (let i = start; i < end; i++) {
    const c = path.charCodeAt(i);
    if (c >= 48 && c <= 57) digits++;
    else if ((c >= 97 && c <= 102) || (c >= 65 && c <= 70)) hex++;
    else if (c === 45) dashes++;
  }
  if (digits === len) return ':n';
  if (digits + hex === len && len >= 16) return ':id';
  if (len === 36 && dashes === 4 && digits + hex === 32) return ':id';
  if (len >= 8 && digits >= 4) return ':id';
  return len > 64 ? path.slice(start, start + 64) + '…' : path.slice(start, end);
}

/** FNV-1a 32-bit over the lower-cased header names in order: which client software sent this. */
export function headerOrderHash(rawHeaders: readonly string[]): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    for (let j = 0; j < name.length; j++) {
      let c = name.charCodeAt(j);
      if (c >= 65 && c <= 90) c += 32;
      h = Math.imul(h ^ c, 0x01000193);
    }
    h = Math.imul(h ^ 10, 0x01000193); // separator: "ab,c" ≠ "a,bc"
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

export function userAgentOf(ctx: RequestContext): string {
  const ua = ctx.req.headers['user-agent'];
  if (ua === undefined || ua === '') return '(none)';
  return ua.length > MAX_VALUE_CHARS ? ua.slice(0, MAX_VALUE_CHARS) : ua;
}

/** The value of one feature for a request (allocates for pathShape and headerOrder: sampled or rule-matching requests only). */
export function featureValue(ctx: RequestContext, feature: number): string {
  switch (feature) {
    case FeatureIndex.prefix:
      return ctx.clientPrefix;
    case FeatureIndex.pathShape:
      return pathShape(ctx.path);
    case FeatureIndex.userAgent:
      return userAgentOf(ctx);
    case FeatureIndex.headerOrder:
      return headerOrderHash(ctx.req.rawHeaders);
    case FeatureIndex.ja4:
      return ctx.ja4 === '' ? NO_FINGERPRINT : ctx.ja4;
    case FeatureIndex.h2: {
      // Bounded by its reader (src/server/h2/fingerprint.ts); cut here too, as every sketch value is.
      const fp = ctx.h2Fingerprint;
      return fp === '' ? NO_FINGERPRINT : fp.length > MAX_VALUE_CHARS ? fp.slice(0, MAX_VALUE_CHARS) : fp;
    }
    default:
      return ctx.req.method ?? '';
  }
}
