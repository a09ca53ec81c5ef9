import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FamiliarPrefixes, hashPair, hashPrefix } from './familiar.ts';

const h = new Uint32Array(2);
const has = (f: FamiliarPrefixes, s: string) => (hashPair(s, h), f.has(h[0]!, h[1]!));
const add = (f: FamiliarPrefixes, s: string, now: number) => (hashPair(s, h), f.add(h[0]!, h[1]!, now));

test('familiar prefixes: no false "never seen", few false "seen", bounded memory', () => {
  const f = new FamiliarPrefixes(10_000, 3_600_000, 0);
  for (let i = 0; i < 10_000; i++) add(f, `10.${i >> 8}.${i & 255}`, 0);
  for (let i = 0; i < 10_000; i++) assert.ok(has(f, `10.${i >> 8}.${i & 255}`));
  let false_ = 0;
  for (let i = 0; i < 10_000; i++) if (has(f, `172.${i >> 8}.${i & 255}`)) false_++;
  assert.ok(false_ < 300, `false positives ${false_}`);
  assert.ok(f.bytes <= 64 * 1024, `${f.bytes} bytes`);
});

test('a prefix is forgotten after two rotations', () => {
  const f = new FamiliarPrefixes(1000, 1000, 0);
  add(f, '10.0.0', 0);
  add(f, '10.0.1', 600); // rotates: 10.0.0 now in the previous generation
  assert.ok(has(f, '10.0.0'));
  add(f, '10.0.2', 1200); // rotates again
  assert.ok(!has(f, '10.0.0'));
  assert.ok(has(f, '10.0.1') && has(f, '10.0.2'));
});

test("hashPrefix: the prefix's hash as hashPair's (the familiar prefixes and the state file keep them), and its network's", () => {
  const out = new Uint32Array(2);
  const net = new Uint32Array(2);
  const want = new Uint32Array(2);
  for (const [prefix, network] of [
    ['203.0.113', '203.0.113'],
    ['2001:db8:1:2::/64', '2001:db8:1'],
    ['0:0:0:0::/64', '0:0:0'],
  ] as const) {
    hashPrefix(prefix, out, net);
    hashPair(prefix, want);
    assert.deepEqual([...out], [...want], prefix);
    hashPair(network, want);
    assert.deepEqual([...net], [...want], network);
  }
  hashPrefix('2001:db8:1:2::/64', out, net);
  const other = new Uint32Array(2);
  hashPrefix('2001:db8:1:ffff::/64', other, want);
  assert.deepEqual([...want], [...net], 'two /64s of one /48: one network');
  assert.notDeepEqual([...other], [...out], 'two prefixes');
});
