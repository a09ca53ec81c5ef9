// Header rewriting on the way to and from the upstream: hop-by-hop fields removed (RFC 9110 §7.6.1,
// including any field the Connection header names), X-Forwarded-* and Via set.
import type { RequestContext, UpstreamHeadFacts } from './context.ts';
import { normalizeAcceptEncoding } from '../core/accept-encoding.ts';
import { connectionKind, FieldKind, fieldKind, HOP_BY_HOP, latin1, type UpstreamHead } from '../core/http1.ts';

/** Request fields Rempart sets itself, so a client's copies are dropped (unless a trusted proxy sent them). */
// Expect is answered by Node itself (100 Continue) and undici refuses to send it.
// Rempart-Clearance and Rempart-Solution are credentials for Rempart, not for the origin.
const SET_BY_US = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'via',
  'expect',
  'rempart-clearance',
  'rempart-solution',
]);
/** Other ways to claim a client address. Believed only from a trusted proxy; from anyone else dropped,
 *  or an origin reading them would take a client's word for its own address. */
const CLIENT_ADDRESS_CLAIMS = new Set([
  'forwarded',
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
  'cf-connecting-ip',
  'x-cluster-client-ip',
]);
/**
 * Request fields the origin sees with other values than the client sent (set or dropped here). A cache
 * must not file an answer under the client's values of one of them: `Vary: X-Forwarded-For` would
 * file one visitor's page under the address they claimed and serve it to the next (the origin saw
 * Rempart's value, not theirs).
 */
export function rewrittenForOrigin(name: string): boolean {
  return SET_BY_US.has(name) || CLIENT_ADDRESS_CLAIMS.has(name);
}

/** End-to-end fields a client may not strip by naming them in Connection (RFC 9110 lets a sender
 *  name any field there): removing them would change what the origin answers while the cache still
 *  files the answer under the client's original values (a Vary: Accept-Language poisoning seen in review). */
const NEVER_CONNECTION_SPECIFIC = new Set([
  'host',
  'content-length',
  'content-type',
  'content-encoding',
  'authorization',
  'cookie',
  'accept',
  'accept-encoding',
  'accept-language',
  'accept-charset',
  'origin',
  'range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'if-range',
  'cache-control',
  'user-agent',
  'referer',
]);

/**
 * The Cookie header without Rempart's own cookies (the challenge's `__rempart_*`, the waiting room's
 * `rempart_wr_*`): they are Rempart's credentials, the origin has no use for them and should not see
 * them. '' when nothing is left. One indexOf for the usual request that carries none.
 */
export function withoutRempartCookies(value: string): string {
  if (value.indexOf('rempart_') === -1) return value;
  let out = '';
  for (const part of value.split(';')) {
    const pair = part.trim();
    if (pair === '' || pair.startsWith('__rempart_') || pair.startsWith('rempart_wr_')) continue;
    out = out === '' ? pair : `${out}; ${pair}`;
  }
  return out;
}

function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  // The usual value (every keep-alive origin's answer names it): nothing to split.
  if (value === undefined || value === 'keep-alive' || value === 'close') return null;
  const text = Array.isArray(value) ? value.join(',') : value;
  let set: Set<string> | null = null;
  for (const t of text.split(',')) {
    const token = t.trim().toLowerCase();
    if (token === '' || token === 'close' || token === 'keep-alive' || NEVER_CONNECTION_SPECIFIC.has(token)) continue;
    (set ??= new Set()).add(token);
  }
  return set;
}

/**
 * The names a response's Connection field adds to those of its earlier ones: a field named by any of
 * them is connection-specific (RFC 9110 §7.6.1), not only by the last.
 */
function withTokens(named: Set<string> | null, value: string): Set<string> | null {
  const more = connectionTokens(value);
  if (named === null) return more;
  if (more !== null) for (const t of more) named.add(t);
  return named;
}

/**
 * Build the flat [name, value, name, value…] array undici sends upstream. `keepUpgrade` keeps
 * Connection/Upgrade for WebSocket handshakes.
 */
export function upstreamRequestHeaders(ctx: RequestContext, via: string, keepUpgrade = false): string[] {
  const req = ctx.req;
  const raw = req.rawHeaders;
  const named = connectionTokens(req.headers.connection);
  // On a caching route the origin gets Accept-Encoding as the cache files it (cache/vary.ts): what it
  // answers is then right for every request filed under that value.
  let encodingDone = ctx.route === null || ctx.route.cache === null;
  // Host is the value routes and the cache judged (identify/host.ts), not the client's bytes: the
  // authority of an absolute-form target, lower-cased, default port dropped.
  const out: string[] = ctx.host === '' ? [] : ['host', ctx.host];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower === 'host') continue;
    if (HOP_BY_HOP.has(lower)) {
      if (keepUpgrade && (lower === 'connection' || lower === 'upgrade')) out.push(name, raw[i + 1]!);
      continue;
    }
    if (SET_BY_US.has(lower) || (named !== null && named.has(lower))) continue;
    if (!ctx.peerTrusted && CLIENT_ADDRESS_CLAIMS.has(lower)) continue;
    if (!encodingDone && lower === 'accept-encoding') {
      encodingDone = true;
      const joined = req.headers['accept-encoding'];
      const normalised = normalizeAcceptEncoding(joined === undefined ? '' : joined);
      if (normalised !== '') out.push(name, normalised);
      continue;
    }
    if (lower === 'accept-encoding' && ctx.route?.cache != null) continue; // a second field, already folded in
    if (lower === 'cookie') {
      const kept = withoutRempartCookies(raw[i + 1]!);
      if (kept !== '') out.push(name, kept);
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  // A trusted proxy's chain is extended; anyone else's is replaced by what we saw.
  const xff = req.headers['x-forwarded-for'];
  out.push(
    'x-forwarded-for',
    ctx.peerTrusted && typeof xff === 'string' ? `${xff}, ${ctx.peerAddress}` : ctx.clientAddress,
  );
  out.push('x-forwarded-proto', ctx.protocol);
  if (ctx.host !== '') out.push('x-forwarded-host', ctx.host);
  const priorVia = req.headers.via;
  out.push('via', priorVia === undefined ? `1.1 ${via}` : `${priorVia}, 1.1 ${via}`);
  return out;
}

/** Request fields a background refresh does not send: it asks for the whole current response. */
const REFRESH_DROPPED = new Set([
  // A refresh fills the entry every request shares: it asks as an anonymous visitor would.
  'cookie',
  'if-none-match',
  'if-modified-since',
  'if-match',
  'if-unmodified-since',
  'if-range',
  'range',
]);

/**
 * The request fields of a cache refresh (src/phases/cache) made on behalf of `ctx`: those the forward
 * path sends, without the conditional and range fields (the refresh stores the whole response) and
 * without cookies, Authorization or the configured API-key headers (the route's `credentialHeaders`):
 * what it stores answers everyone, so it asks as an anonymous visitor would.
 */
export function refreshRequestHeaders(ctx: RequestContext, via: string): string[] {
  const all = upstreamRequestHeaders(ctx, via);
  const credentials = ctx.route?.cache?.credentialHeaders ?? REFRESH_CREDENTIALS;
  const headers: string[] = [];
  for (let i = 0; i < all.length; i += 2) {
    const lower = all[i]!.toLowerCase();
    if (!REFRESH_DROPPED.has(lower) && !credentials.includes(lower)) headers.push(all[i]!, all[i + 1]!);
  }
  return headers;
}

/** Without a caching route (never in practice): still no Authorization. */
const REFRESH_CREDENTIALS: readonly string[] = ['authorization'];

/**
 * Turn undici's raw response head (Buffer pairs) into the flat string array res.writeHead takes,
 * without hop-by-hop fields, with our Via appended.
 */
export function clientResponseHeaders(raw: Buffer[], via: string): string[] {
  const out: string[] = [];
  let named: Set<string> | null = null;
  let priorVia = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') named = withTokens(named, raw[i + 1]!.toString('latin1'));
      continue;
    }
    if (lower === 'via') {
      priorVia = priorVia === '' ? raw[i + 1]!.toString('latin1') : `${priorVia}, ${raw[i + 1]!.toString('latin1')}`;
      continue;
    }
    out.push(name, raw[i + 1]!.toString('latin1'));
  }
  if (named !== null) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  out.push('via', priorVia === '' ? `1.1 ${via}` : `${priorVia}, 1.1 ${via}`);
  return out;
}

/**
 * clientResponseHeaders from a response head as offsets (the lean engine's upstream pool: `buf` and per
 * field [nameStart, nameEnd, valueStart, valueEnd] relative to `base`): the same pairs, with a string
 * made only for the fields that go on. The fields are told by their kinds (FieldKind, recorded by the
 * pool's parser; found here from the names when not given), not by comparing names again.
 */
export function clientResponsePairs(
  buf: Buffer,
  base: number,
  fields: readonly number[],
  via: string,
  kinds?: readonly number[],
): string[] {
  const out: string[] = [];
  let named: Set<string> | null = null;
  let priorVia = '';
  for (let k = 0; k < fields.length; k += 4) {
    const ns = base + fields[k]!;
    const ne = base + fields[k + 1]!;
    const vs = base + fields[k + 2]!;
    const ve = base + fields[k + 3]!;
    const kind = kinds !== undefined ? kinds[k >> 2]! : kindOf(buf, ns, ne, vs, ve);
    switch (kind) {
      case FieldKind.Hop:
      case FieldKind.Connection:
        // A Connection field of `keep-alive` / `close` names nothing (connectionTokens).
        continue;
      case FieldKind.ConnectionNames:
        named = withTokens(named, latin1(buf, vs, ve));
        continue;
      case FieldKind.Via: {
        const v = latin1(buf, vs, ve);
        priorVia = priorVia === '' ? v : `${priorVia}, ${v}`;
        continue;
      }
    }
    out.push(latin1(buf, ns, ne), latin1(buf, vs, ve));
  }
  if (named !== null) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
  }
  out.push('via', priorVia === '' ? `1.1 ${via}` : `${priorVia}, 1.1 ${via}`);
  return out;
}

/** A field's kind as the pool's parser records it (h1-pool.ts), for a head given without kinds. */
function kindOf(buf: Buffer, ns: number, ne: number, vs: number, ve: number): number {
  const kind = fieldKind(buf, ns, ne - ns);
  return kind === FieldKind.Connection ? connectionKind(buf, vs, ve) : kind;
}

const POLICY_KINDS =
  (1 << FieldKind.CacheControl) | (1 << FieldKind.SetCookie) | (1 << FieldKind.Vary) | (1 << FieldKind.Age);

/**
 * The cache policy's facts of a response head, from its kinds (strings only for Cache-Control, Vary and
 * Age, when present: usually none), as decideFromPairs (src/phases/cache) reads them from the client's
 * pairs. Only for a head with no ConnectionNames field (a field it names is not the client's: the pairs
 * are made then). `out` is filled and returned.
 */
export function upstreamHeadFacts(
  buf: Buffer,
  base: number,
  head: UpstreamHead,
  out: UpstreamHeadFacts,
): UpstreamHeadFacts {
  out.cacheControl = undefined;
  out.vary = '';
  out.ageSec = 0;
  out.hasSetCookie = (head.mask & (1 << FieldKind.SetCookie)) !== 0;
  if ((head.mask & POLICY_KINDS) === 0) return out;
  const fields = head.fields;
  const kinds = head.kinds;
  for (let i = 0; i < kinds.length; i++) {
    const kind = kinds[i]!;
    if (kind === FieldKind.CacheControl) {
      const v = latin1(buf, base + fields[4 * i + 2]!, base + fields[4 * i + 3]!);
      out.cacheControl = out.cacheControl === undefined ? v : `${out.cacheControl}, ${v}`;
    } else if (kind === FieldKind.Vary) {
      const v = latin1(buf, base + fields[4 * i + 2]!, base + fields[4 * i + 3]!);
      out.vary = out.vary === '' ? v : `${out.vary}, ${v}`;
    } else if (kind === FieldKind.Age) {
      const v = latin1(buf, base + fields[4 * i + 2]!, base + fields[4 * i + 3]!).trim();
      if (/^[0-9]{1,10}$/.test(v)) out.ageSec = Number(v);
    }
  }
  return out;
}

/** The Set-Cookie fields of a response head as name/value pairs (what familiarity's hook reads). */
export function setCookiePairs(buf: Buffer, base: number, head: UpstreamHead): string[] {
  const out: string[] = [];
  const fields = head.fields;
  const kinds = head.kinds;
  for (let i = 0; i < kinds.length; i++) {
    if (kinds[i] !== FieldKind.SetCookie) continue;
    const k = 4 * i;
    out.push(
      latin1(buf, base + fields[k]!, base + fields[k + 1]!),
      latin1(buf, base + fields[k + 2]!, base + fields[k + 3]!),
    );
  }
  return out;
}
