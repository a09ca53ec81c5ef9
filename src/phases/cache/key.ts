// The cache key: method (HEAD shares GET's entry), host (lower-cased, port stripped), path, and only
// the query parameters the route allows, sorted and re-encoded. A cache-busting attacker who appends
// `?x=<random>` therefore lands on the same entry as everyone else.

/**
 * Build the key for a request.
 * @example cacheKey('HEAD', 'Example.org:8080', '/track/A?x=1&lang=fr', ['lang']) === 'GET example.org /track/A?lang=fr'
 */
export function cacheKey(method: string, hostHeader: string | undefined, target: string, allowedParams: readonly string[]): string {
  const m = method === 'HEAD' ? 'GET' : method;
  let host = hostHeader ?? '';
  const colon = host.lastIndexOf(':');
  if (colon !== -1 && colon > host.lastIndexOf(']')) host = host.slice(0, colon);
  host = host.toLowerCase();
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (q === -1 || allowedParams.length === 0) return `${m} ${host} ${path}`;
  const kept: [string, string][] = [];
  for (const [name, value] of new URLSearchParams(target.slice(q + 1))) if (allowedParams.includes(name)) kept.push([name, value]);
  if (kept.length === 0) return `${m} ${host} ${path}`;
  kept.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return `${m} ${host} ${path}?${new URLSearchParams(kept).toString()}`;
}
