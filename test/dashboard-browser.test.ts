// The cockpit in a real browser (headless Chromium through playwright-core), on the postal demo:
// without a token the page shows a sign-in form and the API and live feed answer 401; with one, the
// numbers move while a small drill runs; an address banned from the page is then refused, and the
// audit trail (API and page) records who did it and why. Skipped (with the reason) when
// /usr/bin/chromium is absent, unless CI is set: then it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { runDrill } from '../src/drill/engine.ts';
import { validateScenario } from '../src/drill/scenario.ts';
import { COCKPIT_TOKEN, startCockpitDemo } from './cockpit-demo.ts';
import { track, waitFor } from './helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;
const BANNED = '127.0.0.77';

/** A new connection from `localAddress` sending one request: bytes back and how it ended. */
function probe(port: number, localAddress: string): Promise<{ bytes: number; text: string; error: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    let text = '';
    let error = '';
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => resolve({ bytes: text.length, text, error }));
    setTimeout(() => socket.destroy(), 3000).unref();
  });
}

test('Chromium: no token, no data; with one the numbers move during a drill, a ban from the page is enforced and audited', {
  skip,
  timeout: 90_000,
}, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
  const demo = track(
    t,
    await startCockpitDemo((c) => (c.logging = { level: 'error', requests: false, format: 'json' })),
  );
  const port = Number(new URL(demo.url).port);
  // Before the ban, that address is served like anyone.
  const before = await probe(port, BANNED);
  assert.match(before.text, /^HTTP\/1\.1 200/, `served before the ban: ${before.text.slice(0, 40)} ${before.error}`);

  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Console errors count too (a 404 favicon, a refused style, a failed fetch), except the 401s
  // this test provokes on purpose before signing in.
  let signedIn = false;
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (!signedIn && /status of 401/.test(m.text())) return;
    errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  await page.goto(`${demo.adminUrl}/dashboard`);
  // Without a token: the sign-in form, nothing else; the API and the live feed answer 401.
  assert.equal(await page.locator('#login').isVisible(), true);
  assert.equal(await page.locator('#app').isVisible(), false);
  const anonymous = await page.evaluate(async () =>
    Promise.all(['/api/events', '/api/audit', '/api/bans', '/api/guards'].map((p) => fetch(p).then((r) => r.status))),
  );
  assert.deepEqual(anonymous, [401, 401, 401, 401]);
  await page.fill('#token', 'rmp_not-a-valid-token-at-all');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#login-error:text("not valid")');
  assert.equal(await page.locator('#app').isVisible(), false);

  await page.fill('#token', COCKPIT_TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  signedIn = true;
  assert.equal(
    await page.evaluate(() => location.href.includes('cockpit-test-token')),
    false,
    'the token is not in the URL',
  );

  // A small drill: real users and a flood. The page's numbers must move while it runs.
  const scenario = validateScenario(
    {
      version: 1,
      name: 'test-cockpit',
      seconds: 6,
      legit: [
        { kind: 'browser', users: 30, pauseMs: [100, 300] },
        { kind: 'vault', users: 10, pauseMs: [200, 500] },
      ],
      attacks: [
        { kind: 'flood', startSec: 1, durationSec: 4, addresses: 4, connections: 8, ratePerSecond: 300, path: '/' },
      ],
    },
    'test',
  );
  const drill = runDrill({ scenario, target: demo.url, originUrl: demo.postal.url, quiet: true });
  const seen = new Set<string>();
  let maxTotal = 0;
  let maxRefused = 0;
  // Sample the two figures twice a second until both moved (the assertions below say by how much).
  await waitFor(
    async () => {
      const total = await page.locator('#k-total').textContent();
      const refused = await page.locator('#k-refused').textContent();
      seen.add(total ?? '');
      maxTotal = Math.max(maxTotal, Number((total ?? '').replace(/,/g, '')) || 0);
      maxRefused = Math.max(maxRefused, Number((refused ?? '').replace(/,/g, '')) || 0);
      return maxTotal > 0 && maxRefused > 0 && seen.size >= 3;
    },
    {
      timeoutMs: 8000,
      intervalMs: 500,
      message: () => `the dashboard figures to move (values seen ${[...seen].join(' ')})`,
    },
  );
  const report = await drill;
  assert.ok(report.legit.total.requests > 50, `the drill ran: ${report.legit.total.requests} legit requests`);
  assert.ok(
    maxTotal > 10,
    `requests per second shown during the drill (max ${maxTotal}; values seen ${[...seen].join(' ')})`,
  );
  assert.ok(seen.size >= 3, `the number moved: ${[...seen].join(' ')}`);
  assert.ok(maxRefused > 0, 'the flood shows as refused requests');
  assert.ok((await page.locator('#c-decision canvas').count()) > 0, 'the decision chart is drawn');

  // Ban an address from the page, with a reason.
  await page.fill('#ban-target', BANNED);
  await page.fill('#ban-ttl', '600');
  await page.fill('#ban-reason', 'seen in the drill');
  await page.click('#ban-submit');
  await page.waitForSelector(`#bans td:text-is("${BANNED}")`, { timeout: 5000 });
  const after = await probe(port, BANNED);
  assert.equal(after.bytes, 0, `refused on accept: ${after.text.slice(0, 60)}`);
  assert.equal(after.error, 'ECONNRESET');
  const other = await probe(port, '127.0.0.78');
  assert.match(other.text, /^HTTP\/1\.1 200/, 'another address is still served');

  // The audit trail records it: through the API, and on the page.
  const audit = await fetch(`${demo.adminUrl}/api/audit?kind=ban`, {
    headers: { authorization: `Bearer ${COCKPIT_TOKEN}` },
  }).then(
    (r) =>
      r.json() as Promise<{
        events: { who: string; why: string; node: string; detail: { body: { target: string } } }[];
      }>,
  );
  const mine = audit.events.find((e) => e.detail.body?.target === BANNED);
  assert.ok(mine, `audited: ${JSON.stringify(audit.events).slice(0, 300)}`);
  assert.equal(mine.who, 'operator:env');
  assert.equal(mine.why, 'seen in the drill');
  assert.ok(mine.node.length > 0);
  await page.waitForSelector('#audit td:text-is("seen in the drill")', { timeout: 5000 });
  // The demo's upstreams have admission on: the queue chart is not replaced by the "off" note.
  assert.equal(await page.locator('#c-queue .empty:text("admission control is off")').count(), 0);
  assert.deepEqual(errors, [], 'no script or console error on the page');

  // Signing out forgets the token: the page shows the form again and keeps no data.
  await page.click('#logout');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.equal(await page.locator('#app').isVisible(), false);
});

test('Chromium: with admission off everywhere the queue chart says so, and the page loads without a console error', {
  skip,
  timeout: 60_000,
}, async (t) => {
  const { chromium } = await import('playwright-core');
  const { startGateway, startUpstream } = await import('./helpers.ts');
  const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
  const up = await startUpstream(t);
  process.env.REMPART_ADMIN_TOKEN = COCKPIT_TOKEN;
  // Admission is on by default: this test is about the chart when it is off.
  const gw = await startGateway(t, up.url, {
    logging: { level: 'error', requests: false },
    upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'off' } }],
  });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  const requested: string[] = [];
  page.on('request', (r) => requested.push(new URL(r.url()).pathname));
  await page.goto(`${gw.adminUrl}/dashboard`);
  await page.fill('#token', COCKPIT_TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#c-queue .empty:text("admission control is off on every upstream")', { timeout: 15_000 });
  assert.deepEqual(errors, [], 'no script or console error on the page');
  assert.ok(!requested.includes('/favicon.ico') || (await fetch(`${gw.adminUrl}/favicon.ico`)).status === 204);
});
