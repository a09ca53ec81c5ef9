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
  return `${m} ${host} ${cacheTarget(target, allowedParams)}`;
}

/**
 * The request target a cached request is forwarded with: the path and only the allowed query
 * parameters, exactly what the key describes. Forwarding the client's full target instead would let
 * a parameter outside the key shape the stored answer (`/welcome?name=<script>` poisoning `/welcome`).
 * @example cacheTarget('/track/A?x=1&lang=fr', ['lang']) === '/track/A?lang=fr'
 */
export function cacheTarget(target: string, allowedParams: readonly string[]): string {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (q === -1 || allowedParams.length === 0) return path;
  const kept: [string, string][] = [];
  for (const [name, value] of new URLSearchParams(target.slice(q + 1))) if (allowedParams.includes(name)) kept.push([name, value]);
  if (kept.length === 0) return path;
  kept.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return `${path}?${new URLSearchParams(kept).toString()}`;
}
