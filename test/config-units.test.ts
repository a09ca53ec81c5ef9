// Configuration as people write it: durations and sizes in human units, `${VAR}` from the
// environment, and errors that hint at the fix (the closest key, a readable address form).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, validateConfig } from '../src/config/load.ts';
import { problemsOf } from './helpers.ts';
import { convertUnit, unitOfKey } from '../src/core/schema-util.ts';

const BASE = `version: 1
listeners:
  - address: 127.0.0.1:8080
upstreams:
  - name: app
    url: http://127.0.0.1:3000
routes:
  - name: all
    upstream: app
`;

test('durations and sizes are accepted in human units wherever a key names its unit', () => {
  const c = parseConfig(
    BASE +
      `limits:
  idleTimeoutMs: 30s
  headersTimeoutMs: 500ms
  requestTimeoutMs: 1m30s
  tunnelIdleTimeoutMs: 1h
  maxBodyBytes: 10MB
  maxHeaderBytes: 64KiB
cache:
  maxBytes: 1GiB
  maxObjectBytes: 2MiB
statusPage:
  retryAfterSec: 5m
audit:
  retentionDays: 30d
admission:
  queue:
    timeoutMs:
      critical: 2.5s
`,
    'u.yaml',
  );
  assert.equal(c.limits.idleTimeoutMs, 30_000);
  assert.equal(c.limits.headersTimeoutMs, 500);
  assert.equal(c.limits.requestTimeoutMs, 90_000);
  assert.equal(c.limits.tunnelIdleTimeoutMs, 3_600_000);
  // SI prefixes are powers of 1000, IEC prefixes powers of 1024.
  assert.equal(c.limits.maxBodyBytes, 10_000_000);
  assert.equal(c.limits.maxHeaderBytes, 65_536);
  assert.equal(c.cache.maxBytes, 1024 ** 3);
  assert.equal(c.cache.maxObjectBytes, 2 * 1024 ** 2);
  assert.equal(c.statusPage.retryAfterSec, 300);
  assert.equal(c.audit.retentionDays, 30);
  // An object under a unit key passes the unit to its members.
  assert.equal(c.admission.queue.timeoutMs.critical, 2500);
  // Plain numbers keep working, in files and in objects built in code.
  assert.equal(parseConfig(BASE + 'limits:\n  idleTimeoutMs: 1234\n').limits.idleTimeoutMs, 1234);
  assert.equal(validateConfig({ ...parseConfig(BASE), limits: { idleTimeoutMs: '2s' } }).limits.idleTimeoutMs, 2000);
});

test('a bad duration or size names the key and the value, with examples', () => {
  const p = problemsOf(() =>
    parseConfig(BASE + 'limits:\n  idleTimeoutMs: 30 parsecs\n  maxBodyBytes: 10 MBs\n', 'u.yaml'),
  );
  assert.equal(p.length, 2, JSON.stringify(p));
  assert.equal(p[0]!.path, 'limits.idleTimeoutMs');
  assert.equal(p[0]!.line, 11);
  assert.match(p[0]!.message, /^"30 parsecs" is not a duration \(e\.g\. 500ms, 30s, 5m/);
  assert.equal(p[1]!.path, 'limits.maxBodyBytes');
  assert.match(p[1]!.message, /^"10 MBs" is not a size \(e\.g\. 64KiB, 10MB/);
  // Not a whole number of the key's unit.
  const frac = problemsOf(() => parseConfig(BASE + 'statusPage:\n  retryAfterSec: 1500ms\n'));
  assert.match(frac[0]!.message, /"1500ms" is 1\.5 seconds: a whole number is needed/);
  // Bounds still apply after conversion.
  const big = problemsOf(() => parseConfig(BASE + 'limits:\n  idleTimeoutMs: 2h\n'));
  assert.match(big[0]!.message, /3600000/);
  // A rate is not a duration: `ratePerSec` takes numbers only.
  assert.equal(unitOfKey('ratePerSec'), undefined);
  assert.equal(unitOfKey('underAttackRatePerSec'), undefined);
  assert.equal(unitOfKey('challengeTtlSec'), 'sec');
  assert.equal(convertUnit('sec', '5m', true), 300);
  assert.equal(convertUnit('bytes', '0.1KB', true), 100);
  assert.equal(convertUnit('ms', '1d', true), 86_400_000);
});

test('${VAR} and ${VAR:-default} are taken from the environment in string values', () => {
  const text = `version: 1
listeners:
  - address: "\${LISTEN:-127.0.0.1:8080}"
upstreams:
  - name: app
    url: "http://\${ORIGIN_HOST}:3000"
routes:
  - name: all
    upstream: app
limits:
  idleTimeoutMs: \${IDLE}
  maxConnections: "\${MAXCONN}"
via: "edge-$\${literal}"
defense:
  decisionHeader: \${DECISIONS:-true}
`;
  const c = parseConfig(text, 'e.yaml', {
    env: { ORIGIN_HOST: '127.0.0.9', IDLE: '45s', MAXCONN: '1000', LISTEN: '' },
  });
  assert.equal(c.upstreams[0]!.url, 'http://127.0.0.9:3000');
  assert.equal(c.listeners[0]!.address, '127.0.0.1:8080', 'an empty variable takes the default');
  assert.equal(c.limits.idleTimeoutMs, 45_000, 'a variable may hold a duration');
  assert.equal(c.limits.maxConnections, 1000, 'a variable may hold a number');
  assert.equal(c.via, 'edge-${literal}', '$${ is a literal ${');
  assert.equal(c.defense.decisionHeader, true, 'a variable may hold a boolean');
  assert.equal(
    parseConfig(text, 'e.yaml', { env: { ORIGIN_HOST: 'o', IDLE: '1s', MAXCONN: '1', LISTEN: '127.0.0.1:9' } })
      .listeners[0]!.address,
    '127.0.0.1:9',
  );

  // Unset without a default: an error naming the key and the variable, every one at once.
  const p = problemsOf(() => parseConfig(text, 'e.yaml', { env: { IDLE: '1s' } }));
  assert.deepEqual(
    p.map((x) => [x.path, x.line]),
    [
      ['upstreams[0].url', 6],
      ['limits.maxConnections', 12],
    ],
  );
  assert.match(p[0]!.message, /environment variable ORIGIN_HOST is not set/);
  const malformed = problemsOf(() => parseConfig(BASE + 'via: "${not a name}"\n', 'e.yaml', { env: {} }));
  assert.match(malformed[0]!.message, /is not a variable/);
});

test('a variable cannot inject YAML structure: its value stays one string', () => {
  const text = BASE.replace('http://127.0.0.1:3000', '"${ORIGIN}"');
  const p = problemsOf(() =>
    parseConfig(text, 'e.yaml', { env: { ORIGIN: 'http://127.0.0.1:3000\nadmin:\n  allowRemote: true' } }),
  );
  assert.equal(p.length, 1);
  assert.equal(p[0]!.path, 'upstreams[0].url');
  assert.match(p[0]!.message, /not an http\(s\):\/\/host:port URL/);
  // Keys are never interpolated.
  const keyed = problemsOf(() => parseConfig(BASE + '"${K}": 1\n', 'e.yaml', { env: { K: 'via' } }));
  assert.match(keyed[0]!.message, /unknown key/);
});

test('an unknown key hints at the closest sibling key, and the listen-address error is readable', () => {
  const p = problemsOf(() =>
    parseConfig(BASE + 'limits:\n  idleTimeoutMS: 30s\n  maxConection: 5\n  wholly: 1\n', 'h.yaml'),
  );
  assert.match(p[0]!.message, /unknown key \(did you mean "idleTimeoutMs"\?\)/);
  assert.match(p[1]!.message, /unknown key \(did you mean "maxConnections"\?\)/);
  assert.doesNotMatch(p[2]!.message, /did you mean/, 'no hint when nothing is close');
  const top = problemsOf(() => parseConfig(BASE + 'listener:\n  - address: 127.0.0.1:1\n'));
  assert.match(top[0]!.message, /did you mean "listeners"\?/);

  const addr = problemsOf(() => parseConfig(BASE.replace('127.0.0.1:8080', 'localhost')));
  assert.equal(addr[0]!.path, 'listeners[0].address');
  assert.equal(addr[0]!.message, 'expected host:port, e.g. 0.0.0.0:8080 or [::]:8080; got "localhost"');
  const admin = problemsOf(() => parseConfig(BASE + 'admin:\n  address: 9180\n'));
  assert.match(admin[0]!.message, /^expected host:port, e\.g\. 127\.0\.0\.1:9180 or \[::1\]:9180, or off; got/);
  // No message quotes a regular expression lower-cased (`[a-za-z]`).
  const cookie = problemsOf(() => parseConfig(BASE + 'admission:\n  fairness:\n    sessionCookie: "a b"\n'));
  assert.doesNotMatch(cookie[0]!.message, /a-za-z/);
});
