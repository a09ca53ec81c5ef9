import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldKind, fieldKind, HOP_BY_HOP } from './http1.ts';

const kindOf = (name: string) => fieldKind(Buffer.from(name, 'latin1'), 0, name.length);

test('fieldKind tells every hop-by-hop name of HOP_BY_HOP as such, in any case', () => {
  for (const name of HOP_BY_HOP) {
    const want = name === 'connection' ? FieldKind.Connection : FieldKind.Hop;
    assert.equal(kindOf(name), want, name);
    assert.equal(kindOf(name.toUpperCase()), want, name.toUpperCase());
  }
});

test('fieldKind: no other name of a hop-by-hop name length is Hop (one byte off, a prefix, another name)', () => {
  const others = [
    'tf',
    'trailes',
    'upgradf',
    'keep-alivf',
    'content-length',
    'proxy-connectioN',
    'x-upgrade',
    'set-cookie',
  ];
  for (const name of others) {
    const k = kindOf(name);
    if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    assert.notEqual(k, FieldKind.Hop, name);
    assert.notEqual(k, FieldKind.Connection, name);
  }
  assert.equal(kindOf('Content-Length'), FieldKind.ContentLength);
  assert.equal(kindOf('SET-COOKIE'), FieldKind.SetCookie);
});
