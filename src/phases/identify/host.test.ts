import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostName, normalizeHost } from './host.ts';
import { adminHostAllowed } from '../../control/admin.ts';

test('a Host that needs no change is returned as is; others are lower-cased, trailing dot and default port dropped', () => {
  const plain = 'shop.example';
  assert.equal(normalizeHost(plain, 80), plain);
  assert.equal(normalizeHost('shop.example:8080', 80), 'shop.example:8080');
  assert.equal(normalizeHost('Shop.Example.:443', 443), 'shop.example');
  assert.equal(normalizeHost('shop.example:443', 80), 'shop.example:443');
  assert.equal(normalizeHost('[2001:DB8::1]:80', 80), '[2001:db8::1]');
  assert.equal(normalizeHost('', 80), '');
  assert.equal(hostName('[::1]:8080'), '[::1]');
  assert.equal(hostName('[::1]'), '[::1]');
  assert.equal(hostName('a:1'), 'a');
});

test('userinfo, bad ports, stray colons and characters outside a host name are refused', () => {
  for (const h of [
    'a@b',
    'a:80@b',
    'a b',
    'a\tb',
    'a:65536',
    'a:0',
    'a:-1',
    'a:1:2',
    '::1',
    '[::1',
    '[::1]:',
    '[zz]',
    'a..b',
    '.a',
    '.',
    'a;b',
    'a%2e',
    'é.example',
  ])
    assert.equal(normalizeHost(h, 80), h === '[::1]:' ? '[::1]' : null, h);
});

test('the admin listener knows localhost, IP addresses and the configured names only', () => {
  for (const h of [
    undefined,
    'localhost',
    'LOCALHOST:9180',
    'localhost.',
    '127.0.0.1:9180',
    '10.0.0.5',
    '[::1]:9180',
    'admin.internal:1',
  ])
    assert.ok(adminHostAllowed(h, ['admin.internal']), String(h));
  for (const h of [
    '',
    'evil.example',
    'localhost.evil.example',
    'admin.internal.evil',
    '127.0.0.1.nip.io',
    'a@localhost',
    '127.1',
  ])
    assert.equal(adminHostAllowed(h, ['admin.internal']), false, h);
});
