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
  const pct = address.indexOf('%');
  const addr = (pct === -1 ? address : address.slice(0, pct)).toLowerCase();
  const gap = addr.indexOf('::');
  let head: string[];
  if (gap === -1) head = addr.split(':');
  else {
    const left = gap === 0 ? [] : addr.slice(0, gap).split(':');
    const right = gap + 2 >= addr.length ? [] : addr.slice(gap + 2).split(':');
    head = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  }
  let out = '';
  for (let i = 0; i < 4; i++) out += (i === 0 ? '' : ':') + (head[i] ?? '0').replace(/^0+(?=.)/, '');
  return `${out}::/64`;
}

/** The value of cookie `name` in a Cookie header, or ''. */
export function cookieValue(header: string | undefined, name: string): string {
  if (header === undefined) return '';
  let at = 0;
  while (at < header.length) {
    while (header.charCodeAt(at) === 32 || header.charCodeAt(at) === 59) at++;
    const end = header.indexOf(';', at);
    const stop = end === -1 ? header.length : end;
    const eq = header.indexOf('=', at);
    if (eq !== -1 && eq < stop && header.slice(at, eq).trim() === name) return header.slice(eq + 1, stop).trim();
    at = stop + 1;
  }
  return '';
}

export function clientKey(kind: ClientKeyKind, address: string, cookieHeader: string | undefined, sessionCookie: string): string {
  if (kind === 'address') return address;
  if (kind === 'session') {
    const sid = cookieValue(cookieHeader, sessionCookie);
    // Bounded: a cookie longer than this is not a session id we need to tell apart.
    if (sid !== '') return `s:${sid.slice(0, 128)}`;
  }
  return prefixKey(address);
}
