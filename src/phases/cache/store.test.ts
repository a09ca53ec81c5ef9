import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CacheStore, entrySize, varyValuesOf, type CacheEntry } from './store.ts';

function entry(key: string, bodyBytes: number, vary: Record<string, string> = {}): CacheEntry {
  const headers = ['content-type', 'text/plain'];
  const body = Buffer.alloc(bodyBytes, 'x');
  const varyNames = Object.keys(vary).sort();
  const varyValues = varyValuesOf(varyNames, vary)!;
  return {
    status: 200,
    headers,
    body,
    storedAt: 0,
    freshUntil: 1000,
    staleWhileRevalidateUntil: 2000,
    staleUntil: 3000,
    varyNames,
    varyValues,
    isPublic: true,
    sizeBytes: entrySize(key, headers, body, varyNames, varyValues),
    refreshing: false,
  };
}

test('LRU eviction keeps the total bytes within maxBytes after inserting many entries', () => {
  const store = new CacheStore({ maxBytes: 100_000, maxObjectBytes: 10_000, maxVariants: 8 });
  for (let i = 0; i < 2000; i++) {
    const key = `GET h /k${i}`;
    assert.ok(store.put(key, entry(key, 500 + (i % 7) * 1000)));
    assert.ok(store.bytes <= 100_000, `after ${i}: ${store.bytes}`);
  }
  assert.ok(store.evictions > 1900);
  assert.ok(store.entries > 0 && store.entries < 200);
  // The newest survive, the oldest are gone.
  assert.ok(store.get('GET h /k1999', {}) !== undefined);
  assert.equal(store.get('GET h /k0', {}), undefined);
});

test('a hit makes its key the most recently used, so it outlives older keys', () => {
  const size = entrySize('GET h /a', ['content-type', 'text/plain'], Buffer.alloc(1000));
  const store = new CacheStore({ maxBytes: size * 3, maxObjectBytes: 10_000, maxVariants: 8 });
  for (const k of ['a', 'b', 'c']) store.put(`GET h /${k}`, entry(`GET h /${k}`, 1000));
  assert.ok(store.get('GET h /a', {}));
  store.put('GET h /d', entry('GET h /d', 1000));
  assert.ok(store.get('GET h /a', {}), 'a was used recently and stays');
  assert.equal(store.get('GET h /b', {}), undefined, 'b was the least recently used');
  assert.equal(store.entries, 3);
});

test('objects over maxObjectBytes or over the whole budget are refused', () => {
  const store = new CacheStore({ maxBytes: 5_000, maxObjectBytes: 2_000, maxVariants: 8 });
  assert.equal(store.put('GET h /big', entry('GET h /big', 2_001)), false);
  assert.equal(store.put('GET h /ok', entry('GET h /ok', 2_000)), true);
  assert.equal(store.entries, 1);
  store.setLimits({ maxBytes: 100, maxObjectBytes: 2_000, maxVariants: 8 });
  assert.equal(store.entries, 0, 'shrinking evicts at once');
  assert.equal(store.bytes, 0);
});

test('Vary variants are chosen by the request headers, replaced in place, and bounded per key', () => {
  const store = new CacheStore({ maxBytes: 1_000_000, maxObjectBytes: 10_000, maxVariants: 4 });
  const key = 'GET h /v';
  store.put(key, entry(key, 10, { 'accept-encoding': 'gzip' }));
  store.put(key, entry(key, 20, { 'accept-encoding': 'br' }));
  assert.equal(store.get(key, { 'accept-encoding': 'gzip' })!.body.length, 10);
  assert.equal(store.get(key, { 'accept-encoding': 'br' })!.body.length, 20);
  assert.equal(store.get(key, { 'accept-encoding': 'identity' }), undefined);
  store.put(key, entry(key, 30, { 'accept-encoding': 'gzip' }));
  assert.equal(store.variantCount(key), 2, 'same Vary values replace the variant');
  assert.equal(store.get(key, { 'accept-encoding': 'gzip' })!.body.length, 30);
  for (let i = 0; i < 50; i++) store.put(key, entry(key, 10, { 'accept-language': `x${i}` }));
  assert.equal(store.variantCount(key), 4);
  assert.equal(store.entries, 4);
  assert.ok(store.get(key, { 'accept-language': 'x49' }));
  assert.equal(store.get(key, { 'accept-encoding': 'gzip' }), undefined, 'the oldest variants went first');
});

test('bytes and entries go back to zero when everything is deleted', () => {
  const store = new CacheStore({ maxBytes: 1_000_000, maxObjectBytes: 10_000, maxVariants: 8 });
  const e = entry('GET h /a', 100);
  store.put('GET h /a', e);
  assert.ok(store.bytes > 100);
  store.delete('GET h /a', e);
  assert.equal(store.bytes, 0);
  assert.equal(store.entries, 0);
  assert.equal(store.get('GET h /a', {}), undefined);
});

test('an entry is charged for the request values it keeps for Vary, so they count against maxBytes', () => {
  const plain = entry('GET h /a', 10);
  const varied = entry('GET h /a', 10, { 'user-agent': 'u'.repeat(500) });
  assert.ok(
    varied.sizeBytes - plain.sizeBytes >= 500 + 'user-agent'.length,
    `${varied.sizeBytes} vs ${plain.sizeBytes}`,
  );
  const store = new CacheStore({ maxBytes: 50 * varied.sizeBytes, maxObjectBytes: 10_000, maxVariants: 8 });
  for (let i = 0; i < 1000; i++)
    store.put(`GET h /k${i}`, entry(`GET h /k${i}`, 10, { 'user-agent': `${i}`.padEnd(500, 'u') }));
  assert.ok(store.entries <= 50, `${store.entries} entries of 500-byte Vary values within a budget of 50`);
});
