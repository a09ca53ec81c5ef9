// HTTP/2 in a real browser (headless Chromium through playwright-core): a page and its resources
// come over h2 from a TLS listener (self-signed, errors ignored), and the challenge's interstitial
// solves and lands over h2 too. Skipped (with the reason) when /usr/bin/chromium is absent, unless CI
// is set: then it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { startUpstream, track, waitFor } from './helpers.ts';
import { startTlsGateway } from './h2-client.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;

const PAGE =
  '<!doctype html><title>origin</title><link rel="stylesheet" href="/s.css"><h1 id="origin">Origin page</h1>' +
  '<img src="/a.svg"><img src="/b.svg"><script src="/app.js"></script>';

function origin(t: Parameters<typeof startUpstream>[0]) {
  return startUpstream(t, (req, res) => {
    const type = req.url!.endsWith('.css')
      ? 'text/css'
      : req.url!.endsWith('.svg')
        ? 'image/svg+xml'
        : req.url!.endsWith('.js')
          ? 'text/javascript'
          : 'text/html; charset=utf-8';
    res.writeHead(200, { 'content-type': type, connection: 'keep-alive' });
    if (type.startsWith('image')) res.end('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>');
    else if (type === 'text/css') res.end('h1 { color: #123 }');
    else if (type === 'text/javascript') res.end('window.loaded = true;');
    else res.end(PAGE);
  });
}

test('Chromium: a page and its resources over HTTP/2 (ALPN h2), logged as h2; the challenge solves over h2', {
  skip,
  timeout: 60_000,
}, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
  const up = await origin(t);
  const gw = await startTlsGateway(t, up.url);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const res = await page.goto(`https://localhost:${gw.port}/home`);
  assert.equal(res?.status(), 200);
  await page.waitForFunction(() => (window as unknown as { loaded?: boolean }).loaded === true);
  const protocols = await page.evaluate(() =>
    performance
      .getEntries()
      .flatMap((e) => ('nextHopProtocol' in e ? [(e as PerformanceResourceTiming).nextHopProtocol] : [])),
  );
  assert.ok(protocols.length >= 5, `the page and its four resources: ${protocols}`);
  assert.deepEqual([...new Set(protocols)], ['h2']);
  const lines = await waitFor(() => {
    const l = gw.logs.filter((x) => x.msg === 'request');
    return l.length >= 5 ? l : null;
  });
  assert.deepEqual([...new Set(lines.map((l) => l.protocol))], ['h2']);
  await context.close();

  // Under attack: the interstitial solves in a worker and the verify redirect lands, all over h2.
  const up2 = await origin(t);
  const attacked = await startTlsGateway(t, up2.url, {
    defense: {
      level: { override: 'under_attack' },
      challenge: { difficultyBits: { elevated: 10, underAttack: 12 } },
    },
  });
  const view = attacked.gateway.defense.level as { level: number };
  if (view.level !== 2) view.level = 2;
  const c2 = await browser.newContext({ ignoreHTTPSErrors: true });
  const p2 = await c2.newPage();
  const first = await p2.goto(`https://localhost:${attacked.port}/track/1`);
  assert.equal(first?.status(), 403, 'the interstitial first');
  await p2.waitForSelector('#origin', { timeout: 20_000 });
  const nav = await p2.evaluate(
    () => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol,
  );
  assert.equal(nav, 'h2');
  assert.ok(
    (await c2.cookies()).some((c) => c.name === '__rempart_clr'),
    'the clearance cookie',
  );
  assert.ok(attacked.logs.some((l) => l.msg === 'request' && l.protocol === 'h2' && l.decision === 'forwarded'));
  await c2.close();
});
