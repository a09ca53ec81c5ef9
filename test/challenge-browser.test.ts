// The challenge in a real browser (headless Chromium through playwright-core): the interstitial
// solves in a Web Worker and lands on the page asked for; two tabs at once both get through; with
// JavaScript off, the <noscript> refresh door gets through. Skipped (with the reason) when
// /usr/bin/chromium is absent, unless CI is set: then it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { startGateway, startUpstream, type Teardown, track } from './helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;

async function setup(t: Teardown) {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>origin</title><h1 id="origin">Origin page ${req.url}</h1>`);
  });
  const gw = await startGateway(t, up.url, {
    defense: {
      level: { override: 'under_attack' },
      challenge: {
        difficultyBits: { elevated: 10, underAttack: 12 },
        noScriptDelaySec: { elevated: 1, underAttack: 1 },
      },
    },
  });
  const view = gw.gateway.defense.level as { level: number };
  if (view.level !== 2) view.level = 2;
  return { gw, up };
}

test('Chromium: the interstitial solves in a worker, lands on the page asked for with a clearance cookie; two tabs at once; and the no-JS door', {
  skip,
  timeout: 60_000,
}, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
  const s = await setup(t);
  const context = await browser.newContext();
  const page = await context.newPage();
  const first = await page.goto(`${s.gw.url}/track/1?from=test`);
  assert.equal(first?.status(), 403, 'the interstitial first');
  await page.waitForSelector('#origin', { timeout: 15_000 });
  assert.equal(new URL(page.url()).pathname + new URL(page.url()).search, '/track/1?from=test');
  assert.match((await page.textContent('#origin')) ?? '', /Origin page \/track\/1\?from=test/);
  const cookies = await context.cookies();
  const clr = cookies.find((c) => c.name === '__rempart_clr');
  assert.ok(clr, 'the clearance cookie');
  assert.equal(clr.httpOnly, true);
  // With the clearance, the next page comes straight from the origin.
  const next = await page.goto(`${s.gw.url}/track/2`);
  assert.equal(next?.status(), 200);
  await context.close();

  // Two tabs of a fresh browser at once: each solves its own challenge, both land.
  const two = await browser.newContext();
  const [a, b] = await Promise.all([two.newPage(), two.newPage()]);
  await Promise.all([a.goto(`${s.gw.url}/tab/a`), b.goto(`${s.gw.url}/tab/b`)]);
  await Promise.all([
    a.waitForSelector('#origin', { timeout: 15_000 }),
    b.waitForSelector('#origin', { timeout: 15_000 }),
  ]);
  assert.match((await a.textContent('#origin')) ?? '', /\/tab\/a/);
  assert.match((await b.textContent('#origin')) ?? '', /\/tab\/b/);
  await two.close();

  // No JavaScript: the <noscript> meta refresh redeems the delay token after its delay.
  const noJs = await browser.newContext({ javaScriptEnabled: false });
  const p = await noJs.newPage();
  const t0 = Date.now();
  const r = await p.goto(`${s.gw.url}/plain`);
  assert.equal(r?.status(), 403);
  await p.waitForSelector('#origin', { timeout: 15_000 });
  assert.ok(Date.now() - t0 >= 1000, 'not before the delay');
  assert.match((await p.textContent('#origin')) ?? '', /\/plain/);
  assert.ok((await noJs.cookies()).some((c) => c.name === '__rempart_clr'));
  await noJs.close();

  const metrics = await s.gw.gateway.metrics.registry.metrics();
  assert.match(metrics, /rempart_challenges_total\{door="html",result="solved"\} 3\n/);
  assert.match(metrics, /rempart_challenges_total\{door="nojs",result="solved"\} 1\n/);
});
