import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CookieSigner, loadKey, parseKey, readCookie } from './ticket.ts';

const key = Buffer.alloc(32, 7);
const signer = new CookieSigner(key);
const NOW = 1_700_000_000_000;
const B = 'AAAAAAAAAAAA';

test('a signed ticket opens for its route while it is younger than its TTL', () => {
  const v = signer.signTicket({ route: 'site', n: 42, issuedAtMs: NOW, bind: B });
  assert.deepEqual(signer.openTicket('site', v, NOW + 1000, 60_000, B), {
    route: 'site',
    n: 42,
    issuedAtMs: NOW,
    bind: B,
  });
  assert.equal(signer.openTicket('site', v, NOW + 60_001, 60_000, B), null, 'expired');
});

test('a ticket or pass is good only for the client binding it was given to (network prefix and User-Agent)', () => {
  const t = signer.signTicket({ route: 'site', n: 3, issuedAtMs: NOW, bind: B });
  const p = signer.signPass({ route: 'site', expiresAtMs: NOW + 1000, bind: B });
  assert.equal(signer.openTicket('site', t, NOW, 60_000, 'BBBBBBBBBBBB'), null);
  assert.equal(signer.openPass('site', p, NOW, 'BBBBBBBBBBBB'), null);
  // A value whose binding field was swapped is no longer signed.
  const moved = p.replace(`.${B}.`, '.BBBBBBBBBBBB.');
  assert.equal(signer.openPass('site', moved, NOW, 'BBBBBBBBBBBB'), null);
});

test('a tampered ticket is refused', () => {
  const v = signer.signTicket({ route: 'site', n: 42, issuedAtMs: NOW, bind: B });
  const forged = v.replace(/^42\./, '1.');
  assert.notEqual(forged, v);
  assert.equal(signer.openTicket('site', forged, NOW, 60_000, B), null);
  const flipped = v.slice(0, -2) + (v.endsWith('AA') ? 'AB' : 'AA');
  assert.equal(signer.openTicket('site', flipped, NOW, 60_000, B), null);
  assert.equal(signer.openTicket('site', 'garbage', NOW, 60_000, B), null);
  assert.equal(signer.openTicket('site', undefined, NOW, 60_000, B), null);
});

test('a ticket or pass for another route, or signed by another key, is refused', () => {
  const t = signer.signTicket({ route: 'site', n: 1, issuedAtMs: NOW, bind: B });
  const p = signer.signPass({ route: 'site', expiresAtMs: NOW + 1000, bind: B });
  assert.equal(signer.openTicket('shop', t, NOW, 60_000, B), null);
  assert.equal(signer.openPass('shop', p, NOW, B), null);
  const other = new CookieSigner(Buffer.alloc(32, 8));
  assert.equal(other.openTicket('site', t, NOW, 60_000, B), null);
  assert.equal(other.openPass('site', p, NOW, B), null);
});

test('a pass opens until it expires, and a ticket is never accepted as a pass', () => {
  const p = signer.signPass({ route: 'site', expiresAtMs: NOW + 1000, bind: B });
  assert.deepEqual(signer.openPass('site', p, NOW + 999, B), { route: 'site', expiresAtMs: NOW + 1000, bind: B });
  assert.equal(signer.openPass('site', p, NOW + 1000, B), null);
  const t = signer.signTicket({ route: 'site', n: 1, issuedAtMs: NOW + 10_000_000, bind: B });
  assert.equal(signer.openPass('site', t, NOW, B), null);
});

test('keys: hex or base64 of at least 32 bytes; the env var wins over the file; otherwise random', async () => {
  assert.equal(parseKey('ab'.repeat(32))?.length, 32);
  assert.equal(parseKey(Buffer.alloc(48, 1).toString('base64'))?.length, 48);
  assert.equal(parseKey('ab'.repeat(16)), null);
  assert.throws(() => new CookieSigner(Buffer.alloc(16)));
  const dir = await mkdtemp(join(tmpdir(), 'rempart-wr-'));
  const file = join(dir, 'key');
  await writeFile(file, `${'cd'.repeat(32)}\n`);
  assert.equal((await loadKey({ REMPART_WAITING_ROOM_KEY: 'ab'.repeat(32) }, file)).source, 'env');
  const fromFile = await loadKey({}, file);
  assert.equal(fromFile.source, 'file');
  assert.deepEqual(fromFile.key, Buffer.alloc(32, 0xcd));
  const random = await loadKey({}, undefined);
  assert.equal(random.random, true);
  assert.equal(random.key.length, 32);
  await assert.rejects(loadKey({ REMPART_WAITING_ROOM_KEY: 'short' }, undefined));
});

test('readCookie finds one cookie among others', () => {
  assert.equal(readCookie('a=1; rempart_wr_pass_site=x.y; b=2', 'rempart_wr_pass_site'), 'x.y');
  assert.equal(readCookie('a=1', 'b'), undefined);
  assert.equal(readCookie(undefined, 'b'), undefined);
});
