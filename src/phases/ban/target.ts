// What a ban can name, and the keys the ban table files it under. An address is its canonical text
// (IPv4 dotted quad; IPv6 per RFC 5952, as the kernel's inet_ntop prints a peer); an IPv4 /24 or an
// IPv6 prefix of any length is the client-key prefix (src/core/client-key.ts), so the
// accept path finds it with one Map look-up (per IPv6 length in use); other IPv4 lengths are rare
// (operators) and checked through a BlockList.
import { isIPv4, isIPv6 } from 'node:net';
import { prefixKey, v6PrefixKey } from '../../core/client-key.ts';

export type TargetKind = 'address' | 'prefix' | 'cidr';

export interface BanTarget {
  /** Canonical text: `203.0.113.7`, `203.0.113.0/24`, `2001:db8::/64`. */
  readonly display: string;
  /** The ban table's key: the address, its prefixKey() for a /24, v6PrefixKey() for an IPv6 prefix, `display` for other IPv4 lengths. */
  readonly key: string;
  readonly kind: TargetKind;
  readonly family: 4 | 6;
  /** The network address (the address itself for a single address). */
  readonly network: string;
  readonly bits: number;
}

/** Narrowest prefixes a ban may name: wider ones would ban a large part of the Internet by mistake. */
export const MIN_PREFIX_BITS = { 4: 8, 6: 16 } as const;

/** `::ffff:1.2.3.4` → `1.2.3.4`; anything else unchanged. Cheap: the accept path runs it. */
export function unmapAddress(address: string): string {
  if (address.charCodeAt(0) === 58 /* ':' */ && address.startsWith('::ffff:') && address.indexOf('.', 7) !== -1)
    return address.slice(7);
  return address;
}

function v4Words(a: string): number[] {
  return a.split('.').map(Number);
}

/** IPv6 text (no zone) to 8 numbers, or null. Handles `::` and an embedded dotted quad. */
function v6Words(a: string): number[] | null {
  let text = a.toLowerCase();
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    const q = text.slice(lastColon + 1);
    if (!isIPv4(q)) return null;
    const o = v4Words(q);
    tail = [(o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!];
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const gap = text.indexOf('::');
  let groups: string[];
  if (gap === -1) groups = text.split(':');
  else {
    const left = gap === 0 ? [] : text.slice(0, gap).split(':');
    const right = gap + 2 >= text.length ? [] : text.slice(gap + 2).split(':');
    groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  }
  if (groups.length !== 8) return null;
  const w = groups.map((g) => parseInt(g, 16));
  if (w.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffff)) return null;
  if (tail.length === 2) {
    w[6] = tail[0]!;
    w[7] = tail[1]!;
  }
  return w;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
function v6Text(w: readonly number[]): string {
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return w.map((x) => x.toString(16)).join(':');
  const left = w
    .slice(0, best)
    .map((x) => x.toString(16))
    .join(':');
  const right = w
    .slice(best + bestLen)
    .map((x) => x.toString(16))
    .join(':');
  return `${left}::${right}`;
}

/** Canonical text of an address (IPv4-mapped IPv6 becomes IPv4), or null when it is not one. */
export function canonicalAddress(address: string): string | null {
  const a = unmapAddress(address.trim());
  if (isIPv4(a)) return v4Words(a).join('.');
  if (!isIPv6(a) || a.includes('%')) return null;
  const w = v6Words(a);
  return w === null ? null : v6Text(w);
}

/**
 * Parse what an operator or a rule wants banned: an address or a prefix in CIDR notation. Host bits
 * are cleared (`203.0.113.9/24` is `203.0.113.0/24`). Null when it is neither, or wider than
 * MIN_PREFIX_BITS.
 */
export function parseTarget(text: string): BanTarget | null {
  if (typeof text !== 'string' || text.length > 64) return null;
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const addr = canonicalAddress(addrText);
  if (addr === null) return null;
  const family: 4 | 6 = addr.includes(':') ? 6 : 4;
  const maxBits = family === 4 ? 32 : 128;
  let bits = maxBits;
  if (slash !== -1) {
    const b = text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(b)) return null;
    bits = Number(b);
    if (bits > maxBits) return null;
    // a mapped address with a prefix length means the IPv6 length: not something to guess at
    if (family === 4 && addrText.includes(':')) return null;
  }
  if (bits < MIN_PREFIX_BITS[family]) return null;
  if (bits === maxBits) return { display: addr, key: addr, kind: 'address', family, network: addr, bits };
  let network: string;
  if (family === 4) {
    const o = v4Words(addr);
    const n = ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
    const masked = bits === 0 ? 0 : (n & (0xffffffff << (32 - bits))) >>> 0;
    network = [masked >>> 24, (masked >>> 16) & 255, (masked >>> 8) & 255, masked & 255].join('.');
  } else {
    const w = v6Words(addr)!;
    for (let i = 0; i < 8; i++) {
      const keep = Math.max(0, Math.min(16, bits - i * 16));
      w[i] = keep === 0 ? 0 : w[i]! & ((0xffff << (16 - keep)) & 0xffff);
    }
    network = v6Text(w);
  }
  const display = `${network}/${bits}`;
  if (family === 4 && bits === 24) return { display, key: prefixKey(network), kind: 'prefix', family, network, bits };
  // Every IPv6 length is a Map look-up per length in use (offences ban at defense.ipv6PrefixLength,
  // which may be any of them), not a BlockList rebuilt on every ban.
  if (family === 6) return { display, key: v6PrefixKey(network, bits), kind: 'prefix', family, network, bits };
  return { display, key: display, kind: 'cidr', family, network, bits };
}
