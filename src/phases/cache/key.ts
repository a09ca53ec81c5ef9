// The cache key: method (HEAD shares GET's entry), host, path, and only the query parameters the route
// allows, sorted and re-encoded. A cache-busting attacker who appends `?x=<random>` (or `;x=<random>`
// to a segment: the cache phase keys the path without `;parameters`) lands on the same entry as
// everyone else. The host is the request's normalised Host (src/phases/identify/host.ts), port
// included unless default: exactly the Host the origin is sent, so nothing in it can shape an entry
// filed under another host (`shop.example:80@evil.example` once landed in `shop.example`'s entry).

/**
 * Build the key for a request; `host` is ctx.host (already normalised).
 * @example cacheKey('HEAD', 'example.org:8080', '/track/A?x=1&lang=fr', ['lang']) === 'GET example.org:8080 /track/A?lang=fr'
 */
export function cacheKey(
  method: string,
  host: string,
  target: string,
  allowedParams: readonly string[] | null,
): string {
  return keyOfTarget(method, host, cacheTarget(target, allowedParams));
}

/** cacheKey of a target already made by cacheTarget (the phase forwards that target too: made once). */
export function keyOfTarget(method: string, host: string, keyTarget: string): string {
  return `${method === 'HEAD' ? 'GET' : method} ${host} ${keyTarget}`;
}

/**
 * The request target a cached request is forwarded with: the path and only the allowed query
 * parameters (or, for a route that keys the whole target, the target as it came), exactly what the key describes. Forwarding the client's full target instead would let
 * a parameter outside the key shape the stored answer (`/welcome?name=<script>` poisoning `/welcome`).
 * @example cacheTarget('/track/A?x=1&lang=fr', ['lang']) === '/track/A?lang=fr'
 */
export function cacheTarget(target: string, allowedParams: readonly string[] | null): string {
  // null: the route keys the whole target (src/pipeline/runtime.ts), and sends it on as it is.
  if (allowedParams === null) return target;
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (q === -1 || allowedParams.length === 0) return path;
  const kept: [string, string][] = [];
  for (const [name, value] of new URLSearchParams(target.slice(q + 1)))
    if (allowedParams.includes(name)) kept.push([name, value]);
  if (kept.length === 0) return path;
  kept.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return `${path}?${new URLSearchParams(kept).toString()}`;
}
