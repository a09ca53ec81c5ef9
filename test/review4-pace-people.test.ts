// Review of s24/solvers7 (PaceSketch: a clearance starts from its address and browser's pace before it
// solved). People behind one carrier-NAT address share its address, and Chrome's reduced User-Agent is
// one string for every Android phone of a version: there, one key is many people. These tests state what
// people should get: all three failed with the pace carry (reverted for it, 2026-12-06) and pass without.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { challengeFrom, solve } from '../src/client/index.ts';
import { createManualClock } from '../src/core/clock.ts';
import { startGateway, startUpstream, type Teardown, type TestGateway } from './helpers.ts';

const ANDROID =
  'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36';
const NAT = '100.64.0.1';

async function setup(t: Teardown) {
  const clock = createManualClock(Date.now() - 1_700_000_000_000);
  const up = await startUpstream(t);
  const gw = await startGateway(
    t,
    up.url,
    {
      clientAddress: { trustedProxies: ['127.0.0.1/32'] },
      defense: { level: { override: 'calm' }, challenge: { difficultyBits: { elevated: 6, underAttack: 8 } } },
    },
    { clock },
  );
  return { gw, up, clock };
}

function setLevel(gw: TestGateway, level: string): void {
  (gw.gateway.defense.level as unknown as { setOverride(l: string, r: string, w: string): void }).setOverride(
    level,
    'test',
    'test',
  );
}

const headers = { 'x-forwarded-for': NAT, 'user-agent': ANDROID, accept: 'application/json' };

async function status(gw: TestGateway, path: string, h: Record<string, string>): Promise<number> {
  const r = await fetch(`${gw.url}${path}`, { headers: h });
  await r.text();
  return r.status;
}

/** One person there solves, then loads a page of `n` requests to the origin (well within the burst of 20). */
async function pageAfterSolving(gw: TestGateway, n: number, clock?: { advance(ms: number): void }): Promise<number[]> {
  const first = await fetch(`${gw.url}/page`, { headers });
  assert.equal(first.status, 403);
  const body = await first.json();
  const c = challengeFrom(first.status, Object.fromEntries(first.headers), body);
  if (c === null) return [-1, first.status, (body as { error: { code: number } }).error.code];
  const solved = await fetch(`${gw.url}/page`, { headers: { ...headers, 'rempart-solution': await solve(c) } });
  const clearance = solved.headers.get('rempart-clearance');
  await solved.text();
  assert.ok(clearance);
  const seen = [solved.status];
  for (let i = 1; i < n; i++) {
    clock?.advance(200); // a page over two seconds
    seen.push(await status(gw, `/api/${i}`, { ...headers, 'rempart-clearance': clearance }));
  }
  return seen;
}

test('a carrier-NAT address where others with the same phone browse (3 requests a second in all) before the attack: a person who solves then gets their 10-request page', async (t) => {
  const { gw, clock } = await setup(t);
  // 20 s at calm: the neighbours' pages (or one bot there), 3 requests a second to the origin.
  for (let i = 0; i < 60; i++) {
    assert.equal(await status(gw, `/n/${i}`, headers), 200);
    clock.advance(333);
  }
  setLevel(gw, 'under_attack');
  const seen = await pageAfterSolving(gw, 10);
  t.diagnostic(`statuses: ${seen.join(',')}`);
  assert.deepEqual(seen, Array(10).fill(200));
});

test('one person who clicked through three pages of 15 origin requests 5 s apart, then is challenged: their next page is served', async (t) => {
  const { gw, clock } = await setup(t);
  const mine = { ...headers, 'x-forwarded-for': '203.0.113.77' };
  for (let p = 0; p < 3; p++) {
    for (let i = 0; i < 15; i++) assert.equal(await status(gw, `/p${p}/${i}`, mine), 200);
    clock.advance(5000);
  }
  setLevel(gw, 'under_attack');
  const first = await fetch(`${gw.url}/page`, { headers: mine });
  const c = challengeFrom(first.status, Object.fromEntries(first.headers), await first.json());
  assert.ok(c !== null);
  clock.advance(2000); // solving
  const solved = await fetch(`${gw.url}/page`, { headers: { ...mine, 'rempart-solution': await solve(c) } });
  const clearance = solved.headers.get('rempart-clearance')!;
  await solved.text();
  const seen = [solved.status];
  for (let i = 1; i < 15; i++) seen.push(await status(gw, `/q/${i}`, { ...mine, 'rempart-clearance': clearance }));
  t.diagnostic(`statuses: ${seen.join(',')}`);
  assert.deepEqual(seen, Array(15).fill(200));
});

test('under attack, 40 people behind one carrier-NAT address with the same phone each solve and load a 10-request page over 2 s, one every 3 s: the address is not banned and most pages are served', async (t) => {
  const { gw, clock } = await setup(t);
  setLevel(gw, 'under_attack');
  let served = 0;
  let refused = 0;
  for (let person = 0; person < 40; person++) {
    const seen = await pageAfterSolving(gw, 10, clock);
    if (seen[0] === -1) {
      t.diagnostic(`person ${person}: no challenge, ${seen[1]} ${seen[2]}`);
      break;
    }
    served += seen.filter((s) => s === 200).length;
    refused += seen.filter((s) => s === 429).length;
    clock.advance(1000);
  }
  const banned = gw.gateway.defense.bans.isBanned(NAT);
  t.diagnostic(`served ${served}, 429 ${refused} of 400; address banned: ${banned}`);
  assert.equal(banned, false);
  assert.ok(served >= 300, `${served} of 400 served`);
});
