// Who a sensitive route's quota belongs to. The label is what the table keys on and what logs and
// alerts show: a session id or API key is a bearer secret, so it is hashed (sha256, first 16 hex
// digits: enough to tell identities apart and to match a known session id, never enough to replay it).
import { hash } from 'node:crypto';
import type { RequestContext } from '../../pipeline/context.ts';
import { addressKey, cookieValues, headerValues, prefixKey } from '../../core/client-key.ts';
import type { ExfiltrationIdentity } from './schema.ts';

/** First 16 hex digits of sha256(value): the form in which a secret identity is kept and logged. */
export function identityHash(value: string): string {
  return hash('sha256', value, 'hex').slice(0, 16);
}

/**
 * The identities this request is counted against, into `out` (emptied first): `session:<hash>`,
 * `apiKey:<hash>`, `address:<ip or IPv6 /64>` or `prefix:<prefix>`. Usually one. A session cookie or
 * API key header sent with several values gives one identity per value (at most
 * MAX_IDENTITY_VALUES; -1 past it): the origin may read any of them, so `sid=x1; sid=<real>` must
 * count against the real session too. A request without the cookie or header is counted by its
 * address: the quota still applies to whoever pulls documents without one (a route that needs a
 * session answers such requests 401, which is not a document), and a cookie-less client cannot
 * reach a fresh quota by leaving the cookie out. An IPv6 address counts as its /64
 * (`defense.ipv6PrefixLength`), so rotating addresses inside it is no way out either.
 */
export function identitiesOf(
  ctx: RequestContext,
  kind: ExfiltrationIdentity,
  sessionCookie: string,
  apiKeyHeader: string,
  v6Bits: number,
  out: string[],
): number {
  if (kind === 'session' || kind === 'apiKey') {
    const n =
      kind === 'session'
        ? cookieValues(ctx.req.headers.cookie, sessionCookie, out)
        : ctx.req.headers[apiKeyHeader] === undefined
          ? 0
          : headerValues(ctx.req.rawHeaders, apiKeyHeader, out);
    if (n < 0) return n;
    if (n > 0) {
      for (let i = 0; i < n; i++) out[i] = `${kind}:${identityHash(out[i]!)}`;
      return n;
    }
  }
  out.length = 0;
  if (kind === 'prefix')
    out.push(`prefix:${ctx.clientPrefix !== '' ? ctx.clientPrefix : prefixKey(ctx.clientAddress)}`);
  else out.push(`address:${addressKey(ctx.clientAddress, ctx.clientPrefix, v6Bits)}`);
  return 1;
}
