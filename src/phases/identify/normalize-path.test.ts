import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath } from './normalize-path.ts';

test('paths that route around a prefix all normalise back to it', () => {
  for (const p of ['/x/../payments/approve', '/%70ayments/approve', '//payments/approve', '/./payments/./approve', '/payments//approve', '/a/b/../../payments/approve'])
    assert.equal(normalizePath(p), '/payments/approve', p);
});

test('an ordinary path is returned as is', () => {
  const p = '/track/LP123456789FR';
  assert.equal(normalizePath(p), p);
  assert.equal(normalizePath('/'), '/');
  assert.equal(normalizePath('/a.b/c.d'), '/a.b/c.d');
});

test('encoded slashes and backslashes, raw backslashes and broken escapes are refused', () => {
  for (const p of ['/payments%2Fapprove', '/payments%2fapprove', '/a%5Cb', '/a\\b', '/a%', '/a%4', '/a%zz']) assert.equal(normalizePath(p), null, p);
});

test('reserved escapes stay escaped (upper-cased), dot segments cannot climb above the root', () => {
  assert.equal(normalizePath('/a%3fb'), '/a%3Fb');
  assert.equal(normalizePath('/../../etc/passwd'), '/etc/passwd');
  assert.equal(normalizePath('/a/..'), '/');
  assert.equal(normalizePath('/a/.'), '/a/');
});
