// A key a table keeps must be its own string. V8 makes `s.slice()`, `split()`, `trim()` and `a + b`
// (13 characters or more) views onto the string they came from: a 24-character session id cut out
// of a 16 KB Cookie header, stored as a Map key, keeps the whole header alive, and a table bounded
// at 100,000 keys then holds 1.6 GB instead of a few MB. Measured (20,000 keys cut from 8 KB
// strings into a Set): 8,212 bytes per entry for a slice, 85 for its own copy. The tables and their
// tests: docs/memory-budgets.md, bench/memory-bounds.ts.
//
// Only where a key is inserted into a table that outlives the request (not on look-ups: a hit needs
// no copy). A JSON round trip is the cheapest exact copy of any string (~130 ns for 30 characters;
// Buffer latin1 is slower and loses characters above U+00FF).

/** Strings this short are copied by V8 when sliced, and never made into views. */
const VIEW_MIN_CHARS = 13;

/** A flat copy of `s` that references no other string. */
export function ownCopy(s: string): string {
  return s.length < VIEW_MIN_CHARS ? s : (JSON.parse(JSON.stringify(s)) as string);
}
