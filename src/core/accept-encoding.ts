// Accept-Encoding reduced to the content codings an origin really picks from, in a fixed order:
// the value the cache files variants under and the origin gets (pipeline/headers.ts), so a
// client's arbitrary bytes never become a key (issue 12, #4).

/** Content codings kept from Accept-Encoding, in the order the normalised value lists them. */
const CODINGS = ['br', 'deflate', 'gzip', 'zstd'] as const;
/** The normalised value for each subset of CODINGS (bit i: CODINGS[i] accepted): built once, no allocation per request. */
const BY_MASK: readonly string[] = Array.from({ length: 1 << CODINGS.length }, (_, mask) =>
  CODINGS.filter((_c, i) => (mask & (1 << i)) !== 0).join(','),
);

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Does value[start, end) equal `word` (lower-case ASCII), ignoring ASCII case? */
function sameToken(value: string, start: number, end: number, word: string): boolean {
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) if ((value.charCodeAt(start + i) | 0x20) !== word.charCodeAt(i)) return false;
  return true;
}

/** Is the weight in value[start, end) (the text after one `;`) `q=0`, `q=0.0`, … (RFC 9110 §12.4.2: not acceptable)? */
function isZeroWeight(value: string, start: number, end: number): boolean {
  while (start < end && isSpace(value.charCodeAt(start))) start++;
  while (end > start && isSpace(value.charCodeAt(end - 1))) end--;
  if (
    end - start < 3 ||
    (value.charCodeAt(start) | 0x20) !== 0x71 /* q */ ||
    value.charCodeAt(start + 1) !== 0x3d /* = */
  )
    return false;
  if (value.charCodeAt(start + 2) !== 0x30 /* 0 */) return false;
  for (let i = start + 3; i < end; i++) {
    const c = value.charCodeAt(i);
    if (i === start + 3 ? c !== 0x2e /* . */ : c !== 0x30) return false;
  }
  return true;
}

/**
 * Accept-Encoding reduced to the known codings it accepts, in a fixed order: `gzip, br;q=0.9`,
 * `BR,GZIP` and `br, gzip, x-<random 15 KB>` all give `br,gzip`; nothing known gives ''. Identity,
 * `*` and unknown codings are dropped: the origin gets this same value (upstream/headers.ts), so the
 * answer stored under it is the one every request with that value may have.
 * @example normalizeAcceptEncoding('gzip, deflate;q=0, br;q=0.5') === 'br,gzip'
 */
export function normalizeAcceptEncoding(value: string): string {
  let mask = 0;
  let start = 0;
  const n = value.length;
  while (start < n) {
    let end = value.indexOf(',', start);
    if (end === -1) end = n;
    let semi = value.indexOf(';', start);
    if (semi === -1 || semi > end) semi = end;
    let a = start;
    let b = semi;
    while (a < b && isSpace(value.charCodeAt(a))) a++;
    while (b > a && isSpace(value.charCodeAt(b - 1))) b--;
    for (let i = 0; i < CODINGS.length; i++) {
      if (!sameToken(value, a, b, CODINGS[i]!)) continue;
      // Only the first weight counts (a coding has one); `;q=0` means "not this one".
      let zero = false;
      if (semi < end) {
        const next = value.indexOf(';', semi + 1);
        zero = isZeroWeight(value, semi + 1, next === -1 || next > end ? end : next);
      }
      if (!zero) mask |= 1 << i;
      break;
    }
    start = end + 1;
  }
  return BY_MASK[mask]!;
}
