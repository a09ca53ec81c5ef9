// Who a sensitive route's quota belongs to. The label is what the table keys on and what logs and
// alerts show: a session id or API key is a bearer secret, so it is hashed (sha256, first 16 hex
// digits: enough to tell identities apart and to match a known session id, never enough to replay it).
import { hash } from 'node:crypto';
import type { RequestContext } from '../../core/context.ts';
import { cookieValue, prefixKey } from '../admission/client-key.ts';
import type { ExfiltrationIdentity } from './schema.ts';

/** First 16 hex digits of sha256(value): the form in which a secret identity is kept and logged. */
export function identityHash(value: string): string {
  return hash('sha256', value, 'hex').slice(0, 16);
}

/**
 * `session:<hash>`, `apiKey:<hash>`, `address:<ip>` or `prefix:<prefix>`. A request without the
 * session cookie or API key header is counted by its address: the quota still applies to whoever
 * pulls documents without one (a route that needs a session answers such requests 401, which is not
 * a document), and a cookie-less client cannot reach a fresh quota by leaving the cookie out.
 */
export function identityOf(ctx: RequestContext, kind: ExfiltrationIdentity, sessionCookie: string, apiKeyHeader: string): string {
  if (kind === 'session') {
    const sid = cookieValue(ctx.req.headers.cookie, sessionCookie);
    if (sid !== '') return `session:${identityHash(sid)}`;
  } else if (kind === 'apiKey') {
    const raw = ctx.req.headers[apiKeyHeader];
    const key = Array.isArray(raw) ? (raw[0] ?? '') : (raw ?? '');
    if (key !== '') return `apiKey:${identityHash(key)}`;
  } else if (kind === 'prefix') {
    return `prefix:${ctx.clientPrefix !== '' ? ctx.clientPrefix : prefixKey(ctx.clientAddress)}`;
  }
  return `address:${ctx.clientAddress}`;
}
