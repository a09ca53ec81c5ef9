// The request values a cached variant is filed under (the header names the response's Vary lists).
// They are the client's bytes, so they are bounded before they are kept: Accept-Encoding is reduced
// to the codings an origin really picks from (as CDNs do), and any other value longer than
// MAX_VARY_VALUE_CHARS makes the response unstorable for that request. Without this, 16,000 requests
// with a distinct 15 KB Accept-Encoding each kept 15 KB the byte budget never saw (issue 12, #4).
import type { IncomingHttpHeaders } from 'node:http';

/** Longest request value a variant is filed under; longer ones are answered but not stored. */
export const MAX_VARY_VALUE_CHARS = 512;

import { normalizeAcceptEncoding } from '../../core/accept-encoding.ts';
export { normalizeAcceptEncoding };

/** The value of one Vary'd header as variants compare it ('' when absent). Never reads Object.prototype. */
export function varyValue(name: string, headers: IncomingHttpHeaders): string {
  const v = Object.hasOwn(headers, name) ? headers[name] : undefined;
  if (v === undefined) return '';
  const text = Array.isArray(v) ? v.join(', ') : v.trim();
  return name === 'accept-encoding' ? normalizeAcceptEncoding(text) : text;
}

/**
 * The request's values for the given (lower-cased) header names, or null when one is longer than
 * MAX_VARY_VALUE_CHARS: such a request is answered but its response is not stored.
 */
export function varyValuesOf(names: readonly string[], headers: IncomingHttpHeaders): string[] | null {
  const out: string[] = [];
  for (const n of names) {
    const v = varyValue(n, headers);
    if (v.length > MAX_VARY_VALUE_CHARS) return null;
    out.push(v);
  }
  return out;
}
