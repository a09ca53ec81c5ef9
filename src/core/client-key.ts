// The key fairness counts by: who a queued request belongs to. A /24 (IPv4) or /64 (IPv6) prefix by
// default, because one host or one customer network easily holds many addresses of one prefix and an
// attacker with a /64 has 2^64 of them; the exact address; or a session cookie (falling back to the
// prefix when the request has none: a cookie is chosen by the client, so it only helps honest clients
// behind one NAT and never widens what a cookie-less flood may take).

export type ClientKeyKind = 'prefix' | 'address' | 'session';

/** `a.b.c` for IPv4 (and IPv4-mapped IPv6), the first four hextets for IPv6. */
export function prefixKey(address: string): string {
  if (address.indexOf(':') === -1 || (address.startsWith('::ffff:') && address.indexOf('.') !== -1)) {
    const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
    return v4.slice(0, v4.lastIndexOf('.'));
  }
  return v6PrefixKey(address, 64);
}

/**
 * The /`bits` network of an IPv6 address as CIDR text: its first ceil(bits/16) hextets (masked, no
 * leading zeros) then `::/bits`, e.g. `2001:db8:1:2::/64`. The same for every spelling of the address
 * (`::` anywhere, upper case, leading zeros, a zone, an embedded dotted quad), and valid CIDR text, so
 * the ban table can take it as a target. 1 ≤ bits < 128.
 */
export function v6PrefixKey(address: string, bits: number): string {
  const pct = address.indexOf('%');
  let addr = (pct === -1 ? address : address.slice(0, pct)).toLowerCase();
  const lastColon = addr.lastIndexOf(':');
  if (addr.indexOf('.', lastColon) !== -1) {
    // An embedded dotted quad (`64:ff9b::1.2.3.4`) is two hextets.
    const o = addr
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    addr = `${addr.slice(0, lastColon + 1)}${(((o[0]! << 8) | o[1]!) & 0xffff).toString(16)}:${(((o[2]! << 8) | o[3]!) & 0xffff).toString(16)}`;
  }
  const gap = addr.indexOf('::');
  let head: string[];
  if (gap === -1) head = addr.split(':');
  else {
    const left = gap === 0 ? [] : addr.slice(0, gap).split(':');
    const right = gap + 2 >= addr.length ? [] : addr.slice(gap + 2).split(':');
    head = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  }
  const groups = Math.min(8, Math.ceil(bits / 16));
  let out = '';
  for (let i = 0; i < groups; i++) {
    let h = head[i] ?? '0';
    const keep = bits - i * 16;
    if (keep < 16) {
      // The hextet the prefix ends in keeps only its network bits.
      const n = parseInt(h, 16);
      h = ((Number.isInteger(n) ? n : 0) & ((0xffff << (16 - keep)) & 0xffff)).toString(16);
    } else h = h.replace(/^0+(?=.)/, '');
    out += (i === 0 ? '' : ':') + h;
  }
  return groups < 8 ? `${out}::/${bits}` : `${out}/${bits}`;
}

/**
 * The key one client is counted by for rate limits, offences and bans: an IPv4 address (IPv4-mapped
 * IPv6 is IPv4), an IPv6 address's /`v6Bits` network (`defense.ipv6PrefixLength`, 64 by default: one
 * host or one customer line commonly holds a whole /64, so counting single IPv6 addresses would give
 * an attacker 2^64 budgets), or the IPv6 address itself when v6Bits is 128. `prefix` is the request's
 * prefixKey() (ctx.clientPrefix, the /64 for IPv6): with the default length the key is that string,
 * so the common case allocates nothing.
 */
export function addressKey(address: string, prefix: string, v6Bits: number): string {
  if (address.indexOf(':') === -1) return address;
  if (address.startsWith('::ffff:') && address.indexOf('.') !== -1) return address.slice(7);
  if (v6Bits === 64 && prefix !== '') return prefix;
  return v6Bits >= 128 ? address : v6PrefixKey(address, v6Bits);
}

/**
 * The network a client key of clientKey() belongs to, as the rate limits' prefix levels count it: an IPv4
 * address's or /24's /24 (`a.b.c`), an IPv6 key's /48 (`a:b:c::/48`: what a tunnel broker hands out for
 * free, 65,536 /64s; one customer's allocation). A session key (`s:…`) is its own: a cookie has no network.
 * Allocates for IPv6 and IPv4 addresses: for a tick's count over a bounded set of keys, not per request.
 */
export function networkKey(key: string): string {
  if (key.startsWith('s:')) return key;
  if (key.indexOf(':') !== -1) return v6PrefixKey(key, 48);
  // `a.b.c.d` (an address) has three dots, `a.b.c` (a /24 already) two.
  let dots = 0;
  for (let i = key.indexOf('.'); i !== -1; i = key.indexOf('.', i + 1)) dots++;
  return dots === 3 ? key.slice(0, key.lastIndexOf('.')) : key;
}

/** The value of cookie `name` in a Cookie header, or ''. */
export function cookieValue(header: string | undefined, name: string): string {
  if (header === undefined) return '';
  let at = 0;
  while (at < header.length) {
    while (header.charCodeAt(at) === 32 || header.charCodeAt(at) === 59) at++;
    const end = header.indexOf(';', at);
    const stop = end === -1 ? header.length : end;
    // Compared in place and only up to this cookie's `;`: a header of bare names costs one pass.
    if (header.startsWith(name, at)) {
      let eq = at + name.length;
      while (header.charCodeAt(eq) === 32 || header.charCodeAt(eq) === 9) eq++;
      if (eq < stop && header.charCodeAt(eq) === 61 /* = */) return header.slice(eq + 1, stop).trim();
    }
    at = stop + 1;
  }
  return '';
}

/**
 * Most distinct values of one identity cookie or header a request may carry. A browser sends a cookie
 * name twice when it holds it for two paths or domains (`sid` for `.example.com` and for
 * `www.example.com`); more than a few is a client trying to be counted as someone else.
 */
export const MAX_IDENTITY_VALUES = 4;

/**
 * A cookie or header value as origins read it: surrounding double quotes dropped (RFC 6265 allows
 * them; most parsers strip them) and %XX decoded (Express, PHP, Rails decode cookie values), so
 * `sid="x"` and `sid=%78` are counted as the `sid=x` the origin sees.
 */
export function credentialValue(v: string): string {
  if (v.length >= 2 && v.charCodeAt(0) === 34 && v.charCodeAt(v.length - 1) === 34) v = v.slice(1, -1);
  if (v.indexOf('%') === -1) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * Every distinct non-empty value of cookie `name` in a Cookie header, as credentialValue() reads
 * them (as sent with `decode` false), into `out` (emptied first). Node joins several Cookie fields with `; `, so they are all seen.
 * Returns how many, or -1 when there are more than MAX_IDENTITY_VALUES. Who counts a request by a
 * cookie must count it against every value: an origin may read the last one (or any) where a reader
 * of the first would count `sid=fresh; sid=<real>` against a fresh identity.
 */
export function cookieValues(header: string | undefined, name: string, out: string[], decode = true): number {
  out.length = 0;
  if (header === undefined) return 0;
  let at = 0;
  while (at < header.length) {
    let c = header.charCodeAt(at);
    while (c === 32 || c === 59 || c === 9) c = header.charCodeAt(++at);
    const end = header.indexOf(';', at);
    const stop = end === -1 ? header.length : end;
    // Compared in place: no string is made for the other cookies.
    let eq = -1;
    if (header.startsWith(name, at)) {
      eq = at + name.length;
      while (header.charCodeAt(eq) === 32 || header.charCodeAt(eq) === 9) eq++;
    } else eq = otherSpelling(header, at, stop, name);
    if (eq !== -1 && eq < stop && header.charCodeAt(eq) === 61 /* = */) {
      const text = header.slice(eq + 1, stop).trim();
      const v = decode ? credentialValue(text) : text;
      if (v !== '' && !out.includes(v)) {
        if (out.length === MAX_IDENTITY_VALUES) return -1;
        out.push(v);
      }
    }
    at = stop + 1;
  }
  return out.length;
}

/**
 * Where the `=` of a cookie named `name` in another spelling is, or -1: Rack (Rails) and PHP
 * %-decode cookie names, ASP.NET compares them ignoring case, and each keeps the first of two equal
 * names, so `%73id=<real>; sid=<random>` is the real session to them. Counting those values too only
 * adds identities (a quota counts each; trust needs every one known). Strings are made only for names
 * close in length that hold a `%` or differ from `name` in case alone.
 */
function asciiLower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

function otherSpelling(header: string, at: number, stop: number, name: string): number {
  // Only as far as the longest spelling of `name` (each character %XX): a header of bare names
  // without `=` costs one pass, not one pass per name.
  const limit = Math.min(stop, at + 3 * name.length + 9);
  let eq = at;
  let percent = false;
  for (let c = header.charCodeAt(eq); eq < limit && c !== 61 /* = */; c = header.charCodeAt(++eq))
    if (c === 37 /* % */) percent = true;
  if (eq >= limit) return -1;
  let end = eq;
  while (end > at && (header.charCodeAt(end - 1) === 32 || header.charCodeAt(end - 1) === 9)) end--;
  if (!percent) {
    // Another case only: compared in place, no string made.
    if (end - at !== name.length) return -1;
    for (let i = 0; i < name.length; i++)
      if (asciiLower(header.charCodeAt(at + i)) !== asciiLower(name.charCodeAt(i))) return -1;
    return eq;
  }
  let written: string;
  try {
    written = decodeURIComponent(header.slice(at, end));
  } catch {
    return -1;
  }
  return written.length === name.length && written.toLowerCase() === name.toLowerCase() ? eq : -1;
}

/**
 * Every distinct non-empty value of header `name` (lower case) from the raw header list, one per
 * field, into `out` (emptied first); -1 past MAX_IDENTITY_VALUES. The raw list, because Node keeps
 * only the first of some repeated fields (Authorization) and joins others with `, `, while an origin
 * may read any of them.
 */
export function headerValues(raw: readonly string[], name: string, out: string[]): number {
  out.length = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!;
    if (n.length !== name.length || n.toLowerCase() !== name) continue;
    const v = raw[i + 1]!.trim();
    if (v !== '' && !out.includes(v)) {
      if (out.length === MAX_IDENTITY_VALUES) return -1;
      out.push(v);
    }
  }
  return out.length;
}

export function clientKey(
  kind: ClientKeyKind,
  address: string,
  cookieHeader: string | undefined,
  sessionCookie: string,
  v6Bits = 64,
): string {
  if (kind === 'address') return addressKey(address, '', v6Bits);
  if (kind === 'session') {
    const sid = cookieValue(cookieHeader, sessionCookie);
    // Bounded: a cookie longer than this is not a session id we need to tell apart.
    if (sid !== '') return `s:${sid.slice(0, 128)}`;
  }
  return prefixKey(address);
}
