import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheKey } from './key.ts';

test('HEAD shares the GET key; the host (normalised by identify, as the origin gets it) is used whole', () => {
  assert.equal(cacheKey('HEAD', 'example.org:8080', '/track/A', []), 'GET example.org:8080 /track/A');
  assert.equal(cacheKey('GET', 'example.org', '/track/A', []), 'GET example.org /track/A');
  assert.equal(cacheKey('GET', '[::1]:8080', '/a', []), 'GET [::1]:8080 /a');
  assert.equal(cacheKey('GET', '[::1]', '/a', []), 'GET [::1] /a');
});

test('query parameters that are not allowed are dropped, so random query strings map to one key', () => {
  const keys = new Set<string>();
  for (let i = 0; i < 50; i++) keys.add(cacheKey('GET', 'h', `/track/A?x=${Math.random()}&_=${i}`, []));
  keys.add(cacheKey('GET', 'h', '/track/A', []));
  keys.add(cacheKey('GET', 'h', '/track/A?', []));
  assert.equal(keys.size, 1);
  assert.equal(cacheKey('GET', 'h', '/track/A?x=1', ['lang']), 'GET h /track/A');
});

test('allowed query parameters are kept, sorted and re-encoded', () => {
  const a = cacheKey('GET', 'h', '/s?lang=fr&page=2&junk=1', ['page', 'lang']);
  const b = cacheKey('GET', 'h', '/s?page=2&junk=9&lang=fr', ['page', 'lang']);
  assert.equal(a, 'GET h /s?lang=fr&page=2');
  assert.equal(a, b);
  assert.equal(cacheKey('GET', 'h', '/s?q=a%20b', ['q']), cacheKey('GET', 'h', '/s?q=a+b', ['q']));
  assert.notEqual(cacheKey('GET', 'h', '/s?page=2', ['page']), cacheKey('GET', 'h', '/s?page=3', ['page']));
});
