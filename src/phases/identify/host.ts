// The Host a request is judged by: routes match it, the cache keys it, and the origin gets it, all
// the same value. Before, routes and the cache cut everything after the last `:` while the origin got
// the client's bytes: `Host: shop.example:80@evil.example` was filed under `shop.example`, and an
// origin that builds links from Host poisoned that entry (issue 12, finding 12).
import { isIPv6 } from 'node:net';

function isNameChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f;
}

/**
 * The normalised Host (RFC 9110 §7.2, RFC 3986 §3.2.2: reg-name, IPv4 or [IPv6], optional :port), or
 * null when it is not one. Letters are lower-cased, one trailing dot of a name is dropped (DNS reads
 * `shop.example.` as `shop.example`), leading zeros of the port too, and the port is left out when it
 * is the scheme's default or empty. Refused: userinfo (`@`), spaces, commas, `%`, IPvFuture, zone ids,
 * empty labels (`a..b`, `.a`), a second `:` outside brackets, a port over 65535 or 0. Names are kept
 * to letters, digits, `-`, `.` and `_`: what DNS and browsers send (a browser sends IDNs as punycode).
 * A value that needs no change is returned as is (no allocation); '' stays '' (HTTP/1.0, no Host).
 * @example normalizeHost('Shop.Example:443', 443) === 'shop.example'
 */
export function normalizeHost(value: string, defaultPort: number): string | null {
  const n = value.length;
  if (n === 0) return '';
  let nameEnd: number;
  let changed = false;
  if (value.charCodeAt(0) === 0x5b /* [ */) {
    nameEnd = value.indexOf(']') + 1;
    if (nameEnd === 0) return null;
    const inner = value.slice(1, nameEnd - 1);
    if (inner.indexOf('%') !== -1 || !isIPv6(inner)) return null;
    if (inner !== inner.toLowerCase()) changed = true;
  } else {
    let i = 0;
    let prev = 0x2e; // a name may not start with a dot
    for (; i < n; i++) {
      let c = value.charCodeAt(i);
      if (c === 0x3a /* : */) break;
      if (c >= 0x41 && c <= 0x5a) {
        changed = true;
        c |= 0x20;
      }
      if (!isNameChar(c)) return null;
      if (c === 0x2e && prev === 0x2e) return null;
      prev = c;
    }
    nameEnd = i;
    if (nameEnd === 0) return null;
    if (prev === 0x2e) {
      if (nameEnd === 1) return null; // "."
      changed = true;
    }
  }
  let port = -1;
  if (nameEnd < n) {
    if (value.charCodeAt(nameEnd) !== 0x3a) return null;
    if (n - nameEnd - 1 > 5) {
      // Leading zeros aside, five digits is the most a port has.
      let z = nameEnd + 1;
      while (z < n - 5 && value.charCodeAt(z) === 0x30) z++;
      if (n - z > 5) return null;
    }
    port = 0;
    for (let i = nameEnd + 1; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return null;
      port = port * 10 + (c - 0x30);
    }
    if (nameEnd + 1 === n || port === defaultPort) {
      changed = true;
      port = -1;
    } else if (port === 0 || port > 65535) return null;
    else if (String(port).length !== n - nameEnd - 1) changed = true;
  }
  if (!changed) return value;
  let name = value.slice(0, nameEnd).toLowerCase();
  if (name.charCodeAt(name.length - 1) === 0x2e) name = name.slice(0, -1);
  return port === -1 ? name : `${name}:${port}`;
}

/** The name part of a normalised Host (no port), for route matching. */
export function hostName(host: string): string {
  const colon = host.lastIndexOf(':');
  return colon !== -1 && colon > host.lastIndexOf(']') ? host.slice(0, colon) : host;
}
