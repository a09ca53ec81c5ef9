// Path normalisation before routing, as Envoy's normalize_path + merge_slashes do: routes, limits and
// the origin must all see the same path. Otherwise `/x/../payments/approve`, `/%70ayments/approve` or
// `//payments/approve` skip the `/payments/*` route (its class, methods, body limit) and land on a
// catch-all, while the origin's framework normalises them back to the protected path.
// Every form and what becomes of it: docs/lifecycle.md#paths-and-hosts (the table test: test/path-forms.test.ts).

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f ||
    c === 0x7e
  );
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** RFC 3986 §5.2.4, on a path that starts with '/' and has no '//' left. */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '.') {
      if (i === segments.length - 1) out.push('');
    } else if (s === '..') {
      out.pop();
      if (i === segments.length - 1) out.push('');
    } else out.push(s);
  }
  return `/${out.join('/')}`;
}

/**
 * Is the escaped byte `byte` (its next escaped byte `next`, -1 if none) one an origin may read as
 * something else? Control characters (`%00` truncates a path in C and Java, `%0D%0A` splits a
 * redirect's head) and the starts of overlong UTF-8 (`%C0%AE` is `.` to a lax decoder, `%C0%AF` is
 * `/`, `%E0%80%AE`, `%F0%80%80%AE`), or bytes no UTF-8 has. Legacy single bytes such as `%E9` pass.
 */
function isDangerousByte(byte: number, next: number): boolean {
  if (byte < 0x20 || byte === 0x7f) return true;
  if (byte === 0xc0 || byte === 0xc1 || byte >= 0xf5) return true;
  if (byte === 0xe0) return next >= 0x80 && next <= 0x9f;
  if (byte === 0xf0) return next >= 0x80 && next <= 0x8f;
  return false;
}

/**
 * The normalised form of a request path (no query string), or null when it cannot be made safe:
 * a backslash, an encoded slash or backslash (`%2F`, `%5C`: the origin might read them as separators),
 * an encoded control character or overlong UTF-8 (isDangerousByte), or a broken percent-escape.
 * Unreserved characters are decoded, other escapes upper-cased, runs of slashes merged, dot segments
 * removed. A path that needs none of this is returned as is (no allocation).
 */
export function normalizePath(path: string): string | null {
  let needsWork = false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x25 /* % */ || c === 0x5c /* \ */) {
      needsWork = true;
      break;
    }
    if (c === 0x2f /* / */ && i + 1 < path.length) {
      const n = path.charCodeAt(i + 1);
      if (n === 0x2f || n === 0x2e /* . */) {
        needsWork = true;
        break;
      }
    }
  }
  if (!needsWork) return path;
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x5c) return null;
    if (c !== 0x25) {
      decoded += path[i];
      continue;
    }
    const hi = i + 2 < path.length ? hexValue(path.charCodeAt(i + 1)) : -1;
    const lo = i + 2 < path.length ? hexValue(path.charCodeAt(i + 2)) : -1;
    if (hi === -1 || lo === -1) return null;
    const byte = hi * 16 + lo;
    if (byte === 0x2f || byte === 0x5c) return null;
    let next = -1;
    if (byte >= 0x80 && i + 5 < path.length && path.charCodeAt(i + 3) === 0x25) {
      const h2 = hexValue(path.charCodeAt(i + 4));
      const l2 = hexValue(path.charCodeAt(i + 5));
      if (h2 !== -1 && l2 !== -1) next = h2 * 16 + l2;
    }
    if (isDangerousByte(byte, next)) return null;
    decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${path.slice(i + 1, i + 3).toUpperCase()}`;
    i += 2;
  }
  return removeDotSegments(decoded.replace(/\/{2,}/g, '/'));
}

/**
 * The path routes, rate limits and cache keys judge: each segment's `;parameters` (RFC 3986 §3.3,
 * matrix parameters, Tomcat's `;jsessionid=`) removed, as Java servlet containers and Spring do before
 * they route, so `/login;x` meets the `/login` route. Whatever the origin does with the parameters, it
 * cannot land outside the route this path meets (a route path never holds `;`). A dot segment with
 * parameters (`/admin/..;/x`: `/x` to Tomcat, under `/admin/` to a proxy that keeps `;`) has no single
 * meaning: null, refused. `path` is already normalised; one indexOf when it holds no `;`.
 * @example pathWithoutParams('/a;v=1/b;jsessionid=X') === '/a/b'
 */
export function pathWithoutParams(path: string): string | null {
  if (path.indexOf(';') === -1) return path;
  let out = '';
  let start = 1;
  while (start <= path.length) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    const semi = path.indexOf(';', start);
    const cut = semi !== -1 && semi < end ? semi : end;
    const segment = path.slice(start, cut);
    if (cut < end && (segment === '.' || segment === '..')) return null;
    // `/a/;x/b` leaves an empty segment: merged, as the normalised path has no `//`.
    if (segment !== '' || end === path.length) out += `/${segment}`;
    start = end + 1;
  }
  return out;
}
