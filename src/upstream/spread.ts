// The spread of failures over clients and paths, shared by the circuit breaker (breaker.ts) and the
// pools' outlier detection (pool.ts): one client, or one slow path, must not look like an outage.
// Each window keeps only the first few distinct values (up to the setting's minimum): enough to say
// "at least N", bounded whatever clients send, and strings the request already held.

/** Add `value` to `list` unless it is there or the list holds `cap` already. */
export function addDistinct(list: string[], value: string, cap: number): void {
  if (list.length >= cap || list.includes(value)) return;
  list.push(value);
}

/**
 * The network a response failure's client is counted by for the spread over clients: an IPv4 /24 as
 * the request's prefix key (`a.b.c`), and for IPv6 the /48 of its /64 key (`a:b:c:d::/64`). A /48 is
 * what one customer gets (a home line's /56 and a free tunnel broker's /48 are inside one): counting
 * /64s, three of one account's 65,536 opened the breaker for everyone. IPv4 stays at /24: a /24 is the
 * smallest block routed apart and its addresses cost money; a /16 would merge unrelated customers of
 * one ISP and let a real outage seen by many people of one region count as one client.
 */
export function spreadKey(clientPrefix: string): string {
  if (clientPrefix.indexOf(':') === -1) return clientPrefix;
  const h = clientPrefix.split(':', 3);
  return `${h[0] ?? ''}:${h[1] || '0'}:${h[2] || '0'}::/48`;
}

/** Distinct values of `a` and `b` together, counted up to `cap`. */
export function distinct(a: readonly string[], b: readonly string[], cap: number): number {
  let n = a.length;
  for (let i = 0; i < b.length && n < cap; i++) if (!a.includes(b[i]!)) n++;
  return n;
}
