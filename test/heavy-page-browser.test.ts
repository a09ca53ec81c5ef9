// Zero config must not break an honest browser's heavy page. Headless Chromium (playwright-core) loads
// a page of 200 same-origin images, scripts and stylesheets through a gateway with the default rate
// limits (per-address: 50/s, burst 100, maxDelayMs 3000), over HTTP/1.1 and over HTTP/2 (TLS, ALPN h2):
// the first load, a reload (every resource revalidated: 304s from the origin), then two tabs opening two
// other such pages at once. Before maxDelayMs the first load lost 53 (h1) / 75 (h2) of its resources to
// 429, the reload 144, and the two tabs got their person banned (bench/RESULTS.md). A flood from one
// address is still held to the rule's rate and refused past it. Skipped (with the reason) when
// /usr/bin/chromium is absent, unless CI is set: then it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { track } from './helpers.ts';
import { CHROMIUM, runHeavyPage, startHeavyOrigin, startPageGateway, type PageLoad } from './heavy-page.ts';

const skip =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;

const N = 200;

function assertWhole(load: PageLoad, what: string): void {
  assert.equal(load.documentError, '', `${what}: the page itself`);
  assert.equal(load.failed, 0, `${what}: no request without an answer ${JSON.stringify(load)}`);
  assert.equal(load.statuses[429] ?? 0, 0, `${what}: no 429 ${JSON.stringify(load)}`);
}

for (const proto of ['h1', 'h2'] as const) {
  test(`Chromium over ${proto}: a page of ${N} resources, its reload and two such tabs at once get no 429`, {
    skip,
    timeout: 120_000,
  }, async (t) => {
    const { chromium } = await import('playwright-core');
    const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
    const run = await runHeavyPage(t, browser, proto, N);
    assertWhole(run.first, 'first load');
    // Every resource answered, by the origin (200) on the first load.
    assert.equal(run.first.statuses[200], N, JSON.stringify(run.first));
    assertWhole(run.reload, 'reload');
    assert.equal((run.reload.statuses[200] ?? 0) + (run.reload.statuses[304] ?? 0), N, JSON.stringify(run.reload));
    for (const tab of run.tabs) {
      assertWhole(tab, 'two tabs');
      assert.equal(tab.statuses[200], N, JSON.stringify(tab));
    }
    // The document, N resources and N revalidations, two tabs of N + 1 (and the browser's favicon
    // requests): everything reached the origin.
    assert.ok(run.originRequests >= 1 + N + 1 + N + 2 * (N + 1), String(run.originRequests));
  });
}

test('a flood from one address is still held to the rule: its burst, 150 waiting places and 50/s, the rest refused and banned', {
  timeout: 60_000,
}, async (t) => {
  const origin = await startHeavyOrigin(t);
  const { base } = await startPageGateway(t, 'h1', origin.url);
  // 1000 requests over 200 connections, each sending its next as soon as it has an answer.
  const statuses: number[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < 1000) {
      const i = next++;
      statuses.push(
        await fetch(`${base}/i/${i}.svg`).then(
          async (r) => (await r.arrayBuffer(), r.status),
          () => 0,
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: 200 }, worker));
  const elapsedSec = (performance.now() - t0) / 1000;
  const count = (s: number) => statuses.filter((x) => x === s).length;
  const served = count(200);
  // The burst, the 150 places of a 3 s wait, and what 50/s refilled meanwhile (one interval of slack).
  assert.ok(served <= 100 + 150 + Math.ceil(50 * elapsedSec) + 1, `${served} served in ${elapsedSec} s`);
  // At least the burst. The places' requests are served in their turn until the flood's refusals ban
  // the address (under a second here); those whose turn comes after the ban are refused (403), not
  // forwarded: 118 served measured (250 before a ban was checked at the turn).
  assert.ok(served >= 100, `${served} served`);
  // The rest refused: 429; once the address is banned, 403 on a connection already open or reset at accept.
  const by: Record<number, number> = {};
  for (const x of statuses) by[x] = (by[x] ?? 0) + 1;
  assert.equal(count(429) + count(403) + count(0), 1000 - served, JSON.stringify(by));
  assert.ok(count(429) >= 100, `${count(429)} refused`);
  assert.ok(count(403) + count(0) > 0, 'banned');
  assert.equal(origin.requests.length, served);
});
