// Clearances across nodes: every node loads the same challenge keys (a file or REMPART_CHALLENGE_KEY,
// e.g. from one Kubernetes Secret), so a clearance one node issues passes on every other, and a
// rotation done in two rolls (new key added second, then moved first) logs nobody out (docs/cluster.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createClient } from '../src/client/index.ts';
import { validateConfig } from '../src/config/load.ts';
import { CookieSigner } from '../src/phases/waiting-room/ticket.ts';
import { startGateway, startUpstream, tempDir, type TestGateway } from './helpers.ts';

const BITS = { elevated: 6, underAttack: 6 };

async function passes(gw: TestGateway, clearance: string): Promise<boolean> {
  const r = await fetch(`${gw.url}/`, { headers: { 'rempart-clearance': clearance } });
  await r.text();
  return r.status === 200;
}

async function clearanceFrom(gw: TestGateway): Promise<string> {
  const client = createClient();
  const r = await client.fetch(`${gw.url}/`);
  await r.text();
  assert.equal(r.status, 200);
  return [...client.clearances.values()][0]!;
}

function reload(gw: TestGateway): Promise<void> {
  return gw.gateway.reload(validateConfig({ ...gw.gateway.runtime().config }, '(test)'));
}

test('a clearance issued by node A passes on node B, and a two-roll key rotation logs nobody out on any node', async (t) => {
  const dir = tempDir(t, 'rempart-cluster-keys-');
  // One file per node, as each node mounts its own copy of the Secret.
  const fileA = join(dir, 'a.keys');
  const fileB = join(dir, 'b.keys');
  const oldKey = randomBytes(32).toString('hex');
  const newKey = randomBytes(32).toString('hex');
  writeFileSync(fileA, `${oldKey}\n`);
  writeFileSync(fileB, `${oldKey}\n`);
  const up = await startUpstream(t);
  const cfg = (file: string) => ({
    logging: { level: 'warn', requests: false },
    defense: { level: { override: 'under_attack' }, challenge: { difficultyBits: BITS, keyFile: file } },
  });
  const a = await startGateway(t, up.url, cfg(fileA));
  const b = await startGateway(t, up.url, cfg(fileB));
  const unknown = await fetch(`${b.url}/`);
  await unknown.text();
  assert.equal(unknown.status, 403, 'B challenges a client it does not know');
  const fromA = await clearanceFrom(a);
  assert.equal(await passes(b, fromA), true, 'A\u2019s clearance passes on B');

  // Roll 1: the new key goes second everywhere (verifies, does not sign yet). B first, A later.
  writeFileSync(fileB, `${oldKey}\n${newKey}\n`);
  await reload(b);
  assert.equal(await passes(b, fromA), true);
  writeFileSync(fileA, `${oldKey}\n${newKey}\n`);
  await reload(a);
  // Roll 2: the new key moves first. A first: mid-roll, A signs with the new key and B already verifies it.
  writeFileSync(fileA, `${newKey}\n${oldKey}\n`);
  await reload(a);
  const fromNewA = await clearanceFrom(a);
  assert.notEqual(fromNewA.split('.')[1], fromA.split('.')[1], 'A signs with the new key');
  assert.equal(await passes(b, fromNewA), true, 'mid-roll, B accepts A\u2019s new clearances');
  assert.equal(await passes(b, fromA), true, 'and the old ones');
  assert.equal(await passes(a, fromA), true, 'A still accepts the old ones');
  writeFileSync(fileB, `${newKey}\n${oldKey}\n`);
  await reload(b);
  const fromNewB = await clearanceFrom(b);
  for (const c of [fromA, fromNewA, fromNewB]) for (const n of [a, b]) assert.equal(await passes(n, c), true);
});

test('a waiting-room ticket or pass signed on one node opens on another with the same key, and only with it', () => {
  const key = randomBytes(32);
  const a = new CookieSigner(key);
  const b = new CookieSigner(Buffer.from(key));
  const other = new CookieSigner(randomBytes(32));
  const now = 1_700_000_000_000;
  const bind = 'AAAAAAAAAAAA';
  const ticket = a.signTicket({ route: 'shop', n: 42, issuedAtMs: now, bind });
  assert.deepEqual(b.openTicket('shop', ticket, now + 1000, 60_000, bind), {
    route: 'shop',
    n: 42,
    issuedAtMs: now,
    bind,
  });
  assert.equal(other.openTicket('shop', ticket, now + 1000, 60_000, bind), null);
  const pass = a.signPass({ route: 'shop', expiresAtMs: now + 5000, bind });
  assert.deepEqual(b.openPass('shop', pass, now, bind), { route: 'shop', expiresAtMs: now + 5000, bind });
});
