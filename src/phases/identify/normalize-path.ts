// Path normalisation before routing, as Envoy's normalize_path + merge_slashes do: routes, limits and
// the origin must all see the same path. Otherwise `/x/../payments/approve`, `/%70ayments/approve` or
// `//payments/approve` skip the `/payments/*` route (its class, methods, body limit) and land on a
// catch-all, while the origin's framework normalises them back to the protected path.

function isUnreserved(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
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
 * The normalised form of a request path (no query string), or null when it cannot be made safe:
 * a backslash, an encoded slash or backslash (`%2F`, `%5C`: the origin might read them as separators),
 * or a broken percent-escape. Unreserved characters are decoded, other escapes upper-cased, runs of
 * slashes merged, dot segments removed. A path that needs none of this is returned as is (no allocation).
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
    decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${path.slice(i + 1, i + 3).toUpperCase()}`;
    i += 2;
  }
  return removeDotSegments(decoded.replace(/\/{2,}/g, '/'));
}
