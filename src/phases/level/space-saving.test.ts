import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpaceSaving, divergence, unseenShare } from './space-saving.ts';
import { pathShape, headerOrderHash } from './features.ts';

test('Space-Saving finds the heavy hitters of a long-tailed stream with k counters', () => {
  const s = new SpaceSaving(16);
  for (let i = 0; i < 20000; i++) {
    if (i % 3 === 0) s.add('heavy');
    else if (i % 10 === 1) s.add('second');
    else s.add(`tail-${i}`);
  }
  assert.equal(s.size, 16);
  const top = s.top(2);
  assert.equal(top[0]!.value, 'heavy');
  assert.equal(top[1]!.value, 'second');
  // Guaranteed counts never exceed the truth; counters never under-count a tracked value.
  assert.ok(s.guaranteed('heavy') <= 6667 && s.upper('heavy') >= 6667);
  assert.equal(s.total, 20000);
});

test('a sketch holds k values whatever the number of distinct values sent', () => {
  const s = new SpaceSaving(64);
  for (let i = 0; i < 200_000; i++) s.add(`/random/${i}`);
  assert.equal(s.size, 64);
  assert.equal(s.top().length, 64);
});

test('decay and merge keep totals consistent', () => {
  const a = new SpaceSaving(4);
  const b = new SpaceSaving(4);
  for (let i = 0; i < 10; i++) a.add('x');
  b.add('y', 5);
  a.decay(0.5);
  assert.equal(a.total, 5);
  a.mergeFrom(b);
  assert.equal(a.total, 10);
  assert.equal(a.guaranteed('y'), 5);
});

test('divergence is 0 for the same mix, near 1 for a disjoint one, and ignores the long tail', () => {
  const base = new SpaceSaving(32);
  const same = new SpaceSaving(32);
  const other = new SpaceSaving(32);
  const tail = new SpaceSaving(32);
  for (let i = 0; i < 1000; i++) {
    base.add(['a', 'b', 'c'][i % 3]!);
    same.add(['a', 'b', 'c'][(i + 1) % 3]!);
    other.add('evil');
    tail.add(`t${i}`);
  }
  assert.ok(divergence(same, base) < 0.01);
  assert.ok(divergence(other, base) > 0.99);
  const tailBase = new SpaceSaving(32);
  for (let i = 0; i < 1000; i++) tailBase.add(`u${i}`);
  assert.ok(divergence(tail, tailBase) < 0.05, String(divergence(tail, tailBase)));
});

test('unseenShare counts values calm rarely held, not a re-weighting of calm values', () => {
  const calm = new SpaceSaving(32);
  for (let i = 0; i < 1000; i++) calm.add(['/', '/css', '/track', '/cart', '/login'][i % 5]!, 1);
  calm.add('/rare', 5);
  // A crowd landing: 85 % on the home page (20 % of calm), the rest as calm: nothing unseen.
  const landing = new SpaceSaving(32);
  for (let i = 0; i < 100; i++) landing.add(i < 85 ? '/' : ['/css', '/track', '/cart'][i % 3]!);
  assert.equal(unseenShare(landing, calm), 0);
  assert.ok(divergence(landing, calm) > 0.6, 'the distance moved all the same');
  // Half on a path calm never asked for, a quarter on one it asked for 0.5 % of the time.
  const search = new SpaceSaving(32);
  for (let i = 0; i < 100; i++) search.add(i < 50 ? '/search' : i < 75 ? '/rare' : '/');
  const got = unseenShare(search, calm);
  assert.ok(Math.abs(got - (0.5 + 0.25 - 5 / 1005)) < 0.01, String(got));
  assert.equal(unseenShare(new SpaceSaving(4), calm), 0);
});

test('path shapes replace ids, and header-order fingerprints ignore case but not order', () => {
  assert.equal(pathShape('/api/orders/12345/items'), '/api/orders/:n/items');
  assert.equal(pathShape('/track/6A00012345678'), '/track/:id');
  assert.equal(pathShape('/u/550e8400-e29b-41d4-a716-446655440000'), '/u/:id');
  assert.equal(pathShape('/static/deadbeefdeadbeefdeadbeef.js'), '/static/deadbeefdeadbeefdeadbeef.js');
  assert.equal(pathShape('/a/b/c/d/e/f/g/h/i/j'), '/a/b/c/d/e/f/g/h/…');
  assert.equal(pathShape('/'), '/');
  assert.ok(pathShape('/' + 'x'.repeat(5000)).length <= 200);
  assert.equal(headerOrderHash(['Host', '1', 'Accept', '2']), headerOrderHash(['host', '3', 'ACCEPT', '4']));
  assert.notEqual(headerOrderHash(['Host', '1', 'Accept', '2']), headerOrderHash(['Accept', '2', 'Host', '1']));
  assert.match(headerOrderHash([]), /^[0-9a-f]{8}$/);
});
