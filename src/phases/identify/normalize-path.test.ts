import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, pathWithoutParams } from './normalize-path.ts';

test('paths that route around a prefix all normalise back to it', () => {
  for (const p of [
    '/x/../payments/approve',
    '/%70ayments/approve',
    '//payments/approve',
    '/./payments/./approve',
    '/payments//approve',
    '/a/b/../../payments/approve',
  ])
    assert.equal(normalizePath(p), '/payments/approve', p);
});

test('an ordinary path is returned as is', () => {
  const p = '/track/LP123456789FR';
  assert.equal(normalizePath(p), p);
  assert.equal(normalizePath('/'), '/');
  assert.equal(normalizePath('/a.b/c.d'), '/a.b/c.d');
});

test('encoded slashes and backslashes, raw backslashes and broken escapes are refused', () => {
  for (const p of ['/payments%2Fapprove', '/payments%2fapprove', '/a%5Cb', '/a\\b', '/a%', '/a%4', '/a%zz'])
    assert.equal(normalizePath(p), null, p);
});

test('reserved escapes stay escaped (upper-cased), dot segments cannot climb above the root', () => {
  assert.equal(normalizePath('/a%3fb'), '/a%3Fb');
  assert.equal(normalizePath('/../../etc/passwd'), '/etc/passwd');
  assert.equal(normalizePath('/a/..'), '/');
  assert.equal(normalizePath('/a/.'), '/a/');
});

test('encoded control characters and overlong UTF-8 are refused, legacy and valid UTF-8 escapes pass', () => {
  for (const p of ['/a%00', '/a%0d%0a', '/a%7F', '/%C0%AE', '/%c1%81', '/%E0%80%AE', '/%F0%80%80%AE', '/a%FF'])
    assert.equal(normalizePath(p), null, p);
  assert.equal(normalizePath('/caf%e9'), '/caf%E9');
  assert.equal(normalizePath('/caf%C3%A9'), '/caf%C3%A9');
  assert.equal(normalizePath('/%E2%82%AC'), '/%E2%82%AC');
});

test('routes judge the path without segment parameters; a dot segment with parameters is refused', () => {
  assert.equal(pathWithoutParams('/track/A'), '/track/A');
  assert.equal(pathWithoutParams('/a;v=1/b;jsessionid=X'), '/a/b');
  assert.equal(pathWithoutParams('/;jsessionid=1'), '/');
  assert.equal(pathWithoutParams('/a/;x/b'), '/a/b');
  assert.equal(pathWithoutParams('/a/b/;x'), '/a/b/');
  assert.equal(pathWithoutParams('/admin/..;/x'), null);
  assert.equal(pathWithoutParams('/a/.;x/b'), null);
});
