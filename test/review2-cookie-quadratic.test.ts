// Review 2 (attack on aa3d057): otherSpelling() looks for the cookie's `=` with
// header.indexOf('=', at), which scans past the cookie's own `;` to the end of the header. A Cookie
// header of bare names (`a;a;a;...`, no `=`) costs O(n^2): at 64 KiB (limits.maxHeaderBytes allows
// 1 MiB) one call took ~12 ms against ~0.3 ms for as many `a=b` pairs (0.47 ms before aa3d057), and
// it runs up to three times a request (rate limit, exfiltration, familiarity).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cookieValues } from '../src/core/client-key.ts';

function cost(h: string): number {
  const out: string[] = [];
  for (let i = 0; i < 3; i++) cookieValues(h, 'sid', out);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    for (let i = 0; i < 4; i++) cookieValues(h, 'sid', out);
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

test('review2: a Cookie header without `=` costs about as much as one of pairs (linear)', () => {
  const n = 64 * 1024;
  const bare = cost('a;'.repeat(n / 2));
  const pairs = cost('a=b;'.repeat(n / 4));
  // Linear code: ~1.5x (before aa3d057). Quadratic: ~35x.
  assert.ok(bare < 8 * pairs, `bare names ${bare.toFixed(2)} ms vs pairs ${pairs.toFixed(2)} ms`);
});
