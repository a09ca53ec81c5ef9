import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_VARY_VALUE_CHARS, normalizeAcceptEncoding, varyValue, varyValuesOf } from './vary.ts';

test('Accept-Encoding is reduced to the known codings it accepts, in one order', () => {
  const cases: [string, string][] = [
    ['gzip', 'gzip'],
    ['gzip, deflate, br', 'br,deflate,gzip'],
    ['BR , GZip', 'br,gzip'],
    ['br;q=0.5, gzip;q=1.0', 'br,gzip'],
    ['gzip;q=0, br', 'br'],
    ['gzip; q=0.000, br;q=0.001', 'br'],
    ['identity', ''],
    ['*', ''],
    ['', ''],
    [`gzip, x-${'a'.repeat(15000)}`, 'gzip'],
    [`${'a'.repeat(15000)}`, ''],
    ['gzipx, xgzip, zstd', 'zstd'],
    [',,,gzip,,', 'gzip'],
  ];
  for (const [input, want] of cases) assert.equal(normalizeAcceptEncoding(input), want, input.slice(0, 40));
});

test('a Vary value longer than the bound makes the request unstorable, others are kept as sent', () => {
  assert.deepEqual(
    varyValuesOf(['accept-language', 'accept-encoding'], { 'accept-language': ' fr ', 'accept-encoding': 'gzip, br' }),
    ['fr', 'br,gzip'],
  );
  assert.equal(varyValuesOf(['user-agent'], { 'user-agent': 'u'.repeat(MAX_VARY_VALUE_CHARS + 1) }), null);
  assert.deepEqual(
    varyValuesOf(['accept-encoding'], { 'accept-encoding': 'gzip,'.repeat(5000) }),
    ['gzip'],
    'a long Accept-Encoding is normalised, not refused',
  );
  assert.equal(varyValue('constructor', {}), '', 'never reads Object.prototype');
});
