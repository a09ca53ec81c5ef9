// Tokens, the replay guard, the session table, JWT checks and the shared solver, without a server.
import { test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import assert from 'node:assert/strict';
import { createHash, createHmac, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { TokenSigner, binding, leadingZeroBits, tokenRand } from './tokens.ts';
import { keyRing, parseKeys } from './keys.ts';
import { ReplayGuard } from './replay.ts';
import { MemorySessionStore, learnSessions, type Usage } from './sessions.ts';
import { JwtVerifier, VERIFIED_MAX } from './jwt.ts';
import { solveRange } from '../../client/solver.ts';
import { solve } from '../../client/index.ts';

const NOW = 1_700_000_000_000;
const bind = binding('203.0.113', 'Mozilla/5.0');

test('a challenge solved with rempart/client verifies; tampering, expiry, another client and too little work are refused', async () => {
  const signer = new TokenSigner(keyRing([randomBytes(32)], 'file'));
  const token = signer.issueChallenge(8, NOW, 300, bind);
  const solution = await solve(token);
  const ok = signer.checkSolution(solution, NOW + 1000, bind);
  assert.equal(typeof ok, 'object');
  assert.equal(signer.checkSolution(solution, NOW + 301_000, bind), 'expired');
  assert.equal(signer.checkSolution(solution, NOW, binding('198.51.100', 'Mozilla/5.0')), 'other_client');
  assert.equal(signer.checkSolution(solution, NOW, binding('203.0.113', 'curl/8')), 'other_client');
  // Any changed character of the token breaks the MAC (or the work, which is checked first).
  for (let i = 0; i < token.length; i++) {
    const c = token[i] === 'A' ? 'B' : 'A';
    if (token[i] === '.') continue;
    const forged = token.slice(0, i) + c + token.slice(i + 1);
    assert.notEqual(
      typeof signer.checkSolution(`${forged}.${solution.slice(token.length + 1)}`, NOW, bind),
      'object',
      `char ${i}`,
    );
  }
  let n = 0;
  while (leadingZeroBits(createHash('sha256').update(`${token}.${n}`).digest()) >= 8) n++;
  assert.equal(signer.checkSolution(`${token}.${n}`, NOW, bind), 'insufficient_work');
  for (const garbage of [
    '',
    '.',
    '...',
    'v1.x.8.1.2.3.4.5.6',
    `${token}.`,
    `${token}.12 3`,
    'x'.repeat(5000),
    '\u0000'.repeat(10),
    `${token}.${'9'.repeat(40)}`,
  ]) {
    assert.equal(typeof signer.checkSolution(garbage, NOW, bind), 'string');
    assert.equal(typeof signer.checkClearance(garbage, NOW, bind), 'string');
    assert.equal(typeof signer.openDelay(garbage, NOW, bind), 'string');
  }
});

test('a clearance verifies for its client until it expires; a challenge token is not a clearance', () => {
  const signer = new TokenSigner(keyRing([randomBytes(32)], 'file'));
  const c = signer.issueClearance(NOW, 3600, bind);
  assert.equal(signer.checkClearance(c.token, NOW + 1000, bind), true);
  assert.equal(signer.checkClearance(c.token, NOW + 3_600_000, bind), 'expired');
  assert.equal(signer.checkClearance(c.token, NOW, binding('203.0.113', 'Other')), 'other_client');
  const ch = signer.issueChallenge(8, NOW, 300, bind);
  assert.notEqual(signer.checkClearance(ch, NOW, bind), true);
  const d = signer.issueDelay(NOW, 5, 300, bind);
  assert.equal(signer.openDelay(d, NOW + 1000, bind), 'not_yet');
  assert.equal(typeof signer.openDelay(d, NOW + 6000, bind), 'object');
  assert.notEqual(signer.checkClearance(d, NOW + 6000, bind), true);
});

test('key rotation: the first key signs, every key in the ring verifies, a removed key does not', () => {
  const [oldKey, newKey] = [randomBytes(32), randomBytes(32)];
  const signer = new TokenSigner(keyRing([oldKey], 'file'));
  const old = signer.issueClearance(NOW, 3600, bind).token;
  signer.setRing(keyRing([newKey, oldKey], 'file'));
  assert.equal(signer.checkClearance(old, NOW, bind), true);
  const fresh = signer.issueClearance(NOW, 3600, bind).token;
  assert.notEqual(fresh.split('.')[1], old.split('.')[1]);
  signer.setRing(keyRing([newKey], 'file'));
  assert.equal(signer.checkClearance(old, NOW, bind), 'unknown_key');
  assert.equal(signer.checkClearance(fresh, NOW, bind), true);
  assert.equal(parseKeys(`# keys\n${newKey.toString('hex')}\n\n${oldKey.toString('base64')}\n`, 'f').length, 2);
  assert.throws(() => parseKeys('short\n', 'f'), /f:1: .*32 bytes/);
});

test('the replay guard accepts an id once, stays bounded, and after an early rotation refuses tokens issued before the oldest generation kept', () => {
  const g = new ReplayGuard(3, 10_000, NOW);
  assert.equal(g.use('a', NOW, NOW), true);
  assert.equal(g.use('a', NOW, NOW + 1), false);
  g.use('b', NOW, NOW + 2);
  g.use('c', NOW, NOW + 3);
  assert.equal(g.use('d', NOW, NOW + 4), true, 'full: rotates early');
  assert.equal(g.use('a', NOW, NOW + 5), false, 'still remembered in the previous generation');
  for (let i = 0; i < 10; i++) g.use(`x${i}`, NOW + 5, NOW + 5);
  assert.ok(g.size <= 6, 'bounded');
  assert.equal(
    g.use('never-seen', NOW, NOW + 6),
    false,
    'issued before the oldest generation kept: might have been used',
  );
  assert.equal(g.use('new', NOW + 6, NOW + 6), true);
  // Timed rotation never refuses a token still within its lifetime.
  const t = new ReplayGuard(100, 10_000, NOW);
  t.use('p', NOW, NOW);
  assert.equal(t.use('q', NOW + 9_000, NOW + 15_000), true);
  assert.equal(t.use('p', NOW, NOW + 16_000), false);
  assert.equal(t.use('r', NOW + 6_000, NOW + 15_900), true);
});

test('sessions: granted by a 2xx Set-Cookie only, revoked by a clearing one, bounded and expiring', () => {
  const s = new MemorySessionStore(2, 60);
  const raw = (v: string) => [
    Buffer.from('Content-Type'),
    Buffer.from('text/html'),
    Buffer.from('Set-Cookie'),
    Buffer.from(v),
  ];
  learnSessions(s, 'sid', 401, raw('sid=nope; Path=/'), NOW);
  learnSessions(s, 'sid', 200, raw('other=x; Path=/'), NOW);
  assert.equal(s.size, 0);
  learnSessions(s, 'sid', 200, raw('sid=one; Path=/; HttpOnly'), NOW);
  assert.equal(s.isKnown('one', NOW + 1), true);
  assert.equal(s.isKnown('one', NOW + 120_000), false, 'expired');
  learnSessions(s, 'sid', 200, raw('sid=a'), NOW);
  learnSessions(s, 'sid', 200, raw('sid=b'), NOW);
  learnSessions(s, 'sid', 200, raw('sid=c'), NOW);
  assert.equal(s.size, 2);
  assert.equal(s.isKnown('a', NOW), false, 'least recently used evicted');
  learnSessions(s, 'sid', 204, raw('sid=c; Max-Age=0'), NOW);
  assert.equal(s.isKnown('c', NOW), false, 'logged out');
});

/** How a credential is used: from a prefix with a User-Agent (pace budget off, as below `elevated`). */
function u(prefix: string, userAgent: string, underAttack = false): Usage {
  return { prefix, userAgent, address: prefix, underAttack, paced: false };
}

test('sessions: one seen from too many prefixes or User-Agents in a window is not known until the window ends; granting it again does not wash it', () => {
  const bounds = { maxPrefixes: 2, maxUserAgents: 2, windowSec: 60, underAttackRatePerSec: 1, underAttackBurst: 3 };
  const s = new MemorySessionStore(10, 3600, bounds);
  s.grant('x', NOW);
  assert.equal(s.isKnown('x', NOW, u('198.51.100', 'UA')), true);
  assert.equal(s.isKnown('x', NOW, u('203.0.113', 'UA')), true, 'a second network');
  assert.equal(s.isKnown('x', NOW, u('198.51.100', 'UA')), true, 'the first again');
  // Networks are bits of a mask (two may share one): the bound trips at the third, or a little later.
  let networks = 2;
  while (s.isKnown('x', NOW, u(`192.0.${networks}`, 'UA'))) networks++;
  assert.ok(networks <= 6, `tripped after ${networks} networks`);
  assert.equal(s.isKnown('x', NOW, u('198.51.100', 'UA')), false, 'shared for the rest of the window, from anywhere');
  s.grant('x', NOW + 1); // origins re-sending the cookie with every answer
  assert.equal(s.isKnown('x', NOW + 2, u('198.51.100', 'UA')), false, 'a new grant of the same id keeps what was seen');
  assert.equal(s.isKnown('x', NOW + 60_000, u('198.51.100', 'UA')), true, 'a new window');
  assert.equal(s.isKnown('x', NOW + 60_001, u('198.51.100', 'UA2')), true);
  let agents = 2;
  while (s.isKnown('x', NOW + 60_002, u('198.51.100', `UA-${agents}`))) agents++;
  assert.ok(agents <= 6, `tripped after ${agents} User-Agents`);
  assert.equal(s.isKnown('x', NOW + 60_003), true, 'asked without a client: the grant alone decides');
  // Under attack: a budget of 3 at once, then 1 a second.
  s.grant('y', NOW);
  const known = [0, 1, 2, 3].map(() => s.isKnown('y', NOW, u('198.51.100', 'UA', true)));
  assert.deepEqual(known, [true, true, true, false]);
  assert.equal(s.isKnown('y', NOW, u('198.51.100', 'UA', false)), true, 'not counted below under_attack');
  assert.equal(s.isKnown('y', NOW + 1000, u('198.51.100', 'UA', true)), true, 'refilled');
});

test('sessions: 100 000 observed sessions stay within the documented ~250 bytes each', () => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const s = new MemorySessionStore(100_000, 3600);
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 100_000; i++) {
    s.grant(`session-${i}`, NOW);
    s.isKnown(`session-${i}`, NOW, u(`10.${i >> 8}.${i & 255}`, 'Mozilla/5.0', true));
  }
  gc();
  const perSession = (process.memoryUsage().heapUsed - before) / 100_000;
  assert.equal(s.size, 100_000);
  assert.ok(perSession < 300, `${perSession.toFixed(0)} bytes a session`);
});

test('JWT: HS256, RS256 and ES256 verified strictly; alg mismatch and none refused', () => {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const claims = { exp: NOW / 1000 + 60, iss: 'idp' };
  for (const alg of ['RS256', 'ES256'] as const) {
    const { publicKey, privateKey } =
      alg === 'RS256'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const v = new JwtVerifier(
      { algorithm: alg, keyFile: '-', header: 'authorization', issuer: 'idp', leewaySec: 0 },
      publicKey,
    );
    const signed = `${enc({ alg })}.${enc(claims)}`;
    const sig = sign(
      'sha256',
      Buffer.from(signed),
      alg === 'ES256' ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey,
    ).toString('base64url');
    assert.equal(v.isValid(`${signed}.${sig}`, NOW), true, alg);
    assert.equal(v.isValid(`${signed}.${sig}`, NOW + 61_000), false, `${alg} expired`);
    assert.equal(v.isValid(`${enc({ alg: 'none' })}.${enc(claims)}.`, NOW), false);
    assert.equal(v.isValid(`${enc({ alg: 'HS256' })}.${enc(claims)}.${sig}`, NOW), false);
    assert.equal(v.isValid(`${enc({ alg })}.${enc({ ...claims, iss: 'evil' })}.${sig}`, NOW), false);
  }
  assert.throws(
    () =>
      new JwtVerifier(
        { algorithm: 'HS256', keyFile: '-', header: 'authorization', leewaySec: 0 },
        Buffer.from('short'),
      ),
    /32 bytes/,
  );
});

test('the shared JS solver finds nonces node:crypto agrees with, for every input length around block edges', () => {
  for (const len of [1, 40, 54, 55, 56, 63, 64, 65, 100, 118, 119, 120, 127, 128, 200]) {
    const prefix = `${'t'.repeat(len)}.`;
    const n = solveRange(prefix, 10, 0, 1e7);
    assert.ok(n >= 0);
    assert.ok(
      leadingZeroBits(
        createHash('sha256')
          .update(prefix + n)
          .digest(),
      ) >= 10,
      `length ${len}`,
    );
    // And it is the first such nonce.
    for (let k = 0; k < n; k++)
      assert.ok(
        leadingZeroBits(
          createHash('sha256')
            .update(prefix + k)
            .digest(),
        ) < 10,
      );
  }
});

test('JWT: a token that verified is not verified again until it expires; forged ones never enter the table, which stays bounded', () => {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const secret = Buffer.alloc(32, 7);
  const v = new JwtVerifier({ algorithm: 'HS256', keyFile: '-', header: 'authorization', leewaySec: 5 }, secret);
  const token = (claims: object) => {
    const signed = `${enc({ alg: 'HS256' })}.${enc(claims)}`;
    return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
  };
  const t = token({ exp: NOW / 1000 + 60, sub: 'app-user' });
  for (let i = 0; i < 100; i++) assert.equal(v.isValid(t, NOW + i), true);
  assert.equal(v.verifications, 1, 'one MAC for a hundred requests');
  assert.equal(v.isValid(t, NOW + 64_000), true, 'within the leeway');
  assert.equal(v.isValid(t, NOW + 65_000), false, 'expired, remembered or not');
  const forged = `${t.slice(0, t.lastIndexOf('.'))}.${Buffer.alloc(32).toString('base64url')}`;
  for (let i = 0; i < 10; i++) assert.equal(v.isValid(forged, NOW), false);
  assert.equal(v.verifications, 1 + 10, 'a forged token is checked every time, never remembered');
  for (let i = 0; i < VERIFIED_MAX + 100; i++)
    assert.equal(v.isValid(token({ exp: NOW / 1000 + 60, sub: `u${i}` }), NOW), true);
  assert.equal(v.verifiedSize, VERIFIED_MAX);
});

test('pace budget: a burst, then refused while the client keeps going (bounded debt); shed requests cost more', () => {
  const pace = { ratePerMinute: 60, burst: 5, maxAddresses: 2 };
  const s = new MemorySessionStore(10, 3600, undefined, pace);
  const paced: Usage = {
    prefix: '198.51.100',
    userAgent: 'UA',
    address: '198.51.100.1',
    underAttack: false,
    paced: true,
  };
  s.grant('p', NOW);
  // Checked on the look-up, charged once the request reached the origin (the gateway's onDone).
  const first = [0, 1, 2, 3, 4, 5].map(() => {
    const known = s.isKnown('p', NOW, paced);
    if (known) s.spend('p', NOW, 1);
    return known;
  });
  assert.deepEqual(first, [true, true, true, true, true, false]);
  assert.equal(s.retryAfterMs > 0 && s.retryAfterMs <= 2000, true, `retry after ${s.retryAfterMs} ms`);
  // Ten more refused at 10 a second: still refused a second later (no trickle), not past one more burst.
  for (let i = 1; i <= 10; i++) assert.equal(s.isKnown('p', NOW + i * 100, paced), false);
  assert.equal(s.isKnown('p', NOW + 2000, paced), false);
  assert.ok(s.retryAfterMs <= 5000, `the debt is bounded: ${s.retryAfterMs} ms`);
  assert.equal(s.isKnown('p', NOW + 2000 + s.retryAfterMs, paced), true, 'waiting its Retry-After is enough');
  // Shedding: a fresh session charged 5 for one shed request is over its burst at once.
  s.grant('q', NOW);
  s.spend('q', NOW, 5);
  assert.equal(s.isKnown('q', NOW, paced), false);
  // A client shed while within half its burst (a person shed during an overload others cause) pays nothing.
  s.grant('b', NOW);
  s.spend('b', NOW, 5, true);
  assert.equal(s.isKnown('b', NOW, paced), true);
  s.spend('b', NOW, 1);
  s.spend('b', NOW, 1);
  s.spend('b', NOW, 5, true);
  assert.equal(s.isKnown('b', NOW, paced), false, 'past half its burst, a shed costs the full price');
  // Not paced (calm): never counted.
  s.grant('r', NOW);
  for (let i = 0; i < 20; i++) assert.equal(s.isKnown('r', NOW, { ...paced, paced: false }), true);
});

test('token rands come from a pooled CSPRNG: 16 base64url characters, all distinct across pool refills', () => {
  const seen = new Set<string>();
  // More than one pool (256 rands) and a refill in between: no rand handed out twice.
  for (let i = 0; i < 2000; i++) {
    const r = tokenRand();
    assert.match(r, /^[A-Za-z0-9_-]{16}$/);
    seen.add(r);
  }
  assert.equal(seen.size, 2000);
  // And what a challenge carries is such a rand, a fresh one per token.
  const signer = new TokenSigner(keyRing([randomBytes(32)], 'file'));
  const a = signer.openChallenge(signer.issueChallenge(8, NOW, 300, bind), NOW, bind);
  const b = signer.openChallenge(signer.issueChallenge(8, NOW, 300, bind), NOW, bind);
  assert.ok(typeof a === 'object' && typeof b === 'object');
  assert.match(a.rand, /^[A-Za-z0-9_-]{16}$/);
  assert.notEqual(a.rand, b.rand);
});
