import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideStore, parseCacheControl, type ResponseFacts } from './policy.ts';

const windows = { staleWhileRevalidateMs: 10_000, staleIfErrorMs: 60_000 };
const facts = (over: Partial<ResponseFacts> = {}): ResponseFacts => ({
  method: 'GET',
  status: 200,
  cacheControl: 'public, max-age=30',
  hasSetCookie: false,
  vary: '',
  ageSec: 0,
  requestHasAuthorization: false,
  requestHasCookie: false,
  cachedByDefault: false,
  ...over,
});
const reasonOf = (over: Partial<ResponseFacts>) => {
  const d = decideStore(facts(over), windows);
  return d.store ? 'stored' : d.reason;
};

test('Cache-Control directives are parsed case-insensitively, quoted or not, and bad ages are ignored', () => {
  const cc = parseCacheControl(
    'Public, MAX-AGE="60", s-maxage=5, stale-while-revalidate=7, stale-if-error=9, no-cache',
  );
  assert.equal(cc.isPublic, true);
  assert.equal(cc.maxAgeSec, 60);
  assert.equal(cc.sMaxAgeSec, 5);
  assert.equal(cc.staleWhileRevalidateSec, 7);
  assert.equal(cc.staleIfErrorSec, 9);
  assert.equal(cc.noCache, true);
  assert.equal(parseCacheControl('max-age=-1').maxAgeSec, -1);
  assert.equal(parseCacheControl('max-age=abc').maxAgeSec, -1);
  assert.equal(parseCacheControl(undefined).noStore, false);
  const p = parseCacheControl('private, no-store');
  assert.ok(p.isPrivate && p.noStore);
});

test('a public 200 with max-age is stored for that long, with the route stale windows', () => {
  const d = decideStore(facts(), windows);
  assert.ok(d.store);
  assert.equal(d.freshForMs, 30_000);
  assert.equal(d.staleWhileRevalidateMs, 10_000);
  assert.equal(d.staleIfErrorMs, 60_000);
});

test('s-maxage wins over max-age, and a received Age shortens freshness', () => {
  const d = decideStore(facts({ cacheControl: 'max-age=30, s-maxage=100', ageSec: 40 }), windows);
  assert.ok(d.store);
  assert.equal(d.freshForMs, 60_000);
  assert.equal(reasonOf({ cacheControl: 'max-age=30', ageSec: 30 }), 'expired');
});

test('stale-* directives widen the route windows but never narrow them', () => {
  const d = decideStore(facts({ cacheControl: 'max-age=1, stale-while-revalidate=100, stale-if-error=1' }), windows);
  assert.ok(d.store);
  assert.equal(d.staleWhileRevalidateMs, 100_000);
  assert.equal(d.staleIfErrorMs, 60_000);
});

test('private, no-store, no-cache, Set-Cookie, Vary: * and responses without explicit freshness are never stored', () => {
  assert.equal(reasonOf({ cacheControl: 'private, max-age=60' }), 'private');
  assert.equal(reasonOf({ cacheControl: 'no-store, max-age=60' }), 'no_store');
  assert.equal(reasonOf({ cacheControl: 'no-cache, max-age=60' }), 'no_cache');
  assert.equal(reasonOf({ hasSetCookie: true }), 'set_cookie');
  assert.equal(reasonOf({ vary: 'Accept-Encoding, *' }), 'vary_star');
  // A field Rempart sets or drops: the origin answered another value than the client's.
  assert.equal(reasonOf({ vary: 'Accept-Encoding, X-Forwarded-For' }), 'vary_rewritten');
  assert.equal(reasonOf({ vary: 'x-real-ip' }), 'vary_rewritten');
  assert.equal(reasonOf({ vary: 'Accept-Encoding, x y' }), 'vary_invalid');
  assert.equal(reasonOf({ cacheControl: undefined }), 'no_freshness');
  assert.equal(reasonOf({ cacheControl: 'public' }), 'no_freshness');
});

test('only GET responses with status 200 or 301 are stored', () => {
  assert.equal(reasonOf({ method: 'POST' }), 'method');
  assert.equal(reasonOf({ status: 404 }), 'status');
  assert.equal(reasonOf({ status: 500 }), 'status');
  assert.equal(reasonOf({ status: 206 }), 'status');
  assert.equal(reasonOf({ status: 301 }), 'stored');
});

test('a response to an authorized request is stored only when it says public or s-maxage', () => {
  assert.equal(reasonOf({ requestHasAuthorization: true, cacheControl: 'max-age=30' }), 'authorization');
  assert.equal(reasonOf({ requestHasAuthorization: true, cacheControl: 'public, max-age=30' }), 'stored');
  assert.equal(reasonOf({ requestHasAuthorization: true, cacheControl: 's-maxage=30' }), 'stored');
});

test('on a route cached by default, a request with a cookie or credentials fills nothing, public or not', () => {
  const byDefault = { cachedByDefault: true };
  assert.equal(reasonOf({ ...byDefault, requestHasCookie: true, cacheControl: 'max-age=30' }), 'request_cookie');
  assert.equal(
    reasonOf({ ...byDefault, requestHasCookie: true, cacheControl: 'public, s-maxage=30' }),
    'request_cookie',
  );
  assert.equal(
    reasonOf({ ...byDefault, requestHasAuthorization: true, cacheControl: 'public, max-age=30' }),
    'authorization',
  );
  assert.equal(reasonOf({ ...byDefault, requestHasAuthorization: true, cacheControl: 's-maxage=30' }), 'authorization');
  // On a route the operator switched on, a cookie does not count (as before the default existed).
  assert.equal(reasonOf({ requestHasCookie: true, cacheControl: 'max-age=30' }), 'stored');
});

test('on a route cached by default, only an answer addressed to shared caches is stored', () => {
  assert.equal(reasonOf({ cachedByDefault: true, cacheControl: 'max-age=30' }), 'not_public');
  assert.equal(reasonOf({ cachedByDefault: true, cacheControl: 'public, max-age=30' }), 'stored');
  assert.equal(reasonOf({ cachedByDefault: true, cacheControl: 's-maxage=30' }), 'stored');
  assert.equal(reasonOf({ cachedByDefault: true, cacheControl: 'public, max-age=30, private' }), 'private');
  assert.equal(reasonOf({ cacheControl: 'max-age=30' }), 'stored');
});

test('Vary names are lower-cased, de-duplicated and sorted', () => {
  const d = decideStore(facts({ vary: 'Accept-Language, accept-encoding, Accept-Encoding' }), windows);
  assert.ok(d.store);
  assert.deepEqual(d.varyNames, ['accept-encoding', 'accept-language']);
});
