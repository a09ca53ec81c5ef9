// docs/img/dashboard.png: the cockpit during a drill on the postal demo (calm start, then a flood
// and a botnet), taken in headless Chromium. `node scripts/screenshot-dashboard.ts [seconds]`.
import { existsSync } from 'node:fs';
import { runDrill } from '../src/drill/engine.ts';
import { validateScenario } from '../src/drill/scenario.ts';
import { COCKPIT_TOKEN, startCockpitDemo } from '../test/cockpit-demo.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const seconds = Number(process.argv[2] ?? 40);
const out = new URL('../docs/img/dashboard.png', import.meta.url).pathname;
if (!existsSync(CHROMIUM)) {
  process.stderr.write(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)\n`);
  process.exit(1);
}
const { chromium } = await import('playwright-core');
const demo = await startCockpitDemo((c) => (c.logging = { level: 'error', requests: false, format: 'json' }));
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 });
  await page.goto(`${demo.adminUrl}/dashboard`);
  await page.fill('#token', COCKPIT_TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  const attackFrom = Math.round(seconds * 0.35);
  const scenario = validateScenario(
    {
      version: 1,
      name: 'screenshot',
      seconds,
      legit: [
        { kind: 'browser', users: 60, pauseMs: [300, 900] },
        { kind: 'vault', users: 20, pauseMs: [500, 1500] },
        { kind: 'approvals', users: 5, pauseMs: [1000, 3000] },
      ],
      attacks: [
        {
          kind: 'flood',
          startSec: attackFrom,
          durationSec: seconds - attackFrom,
          addresses: 4,
          connections: 16,
          ratePerSecond: 800,
          path: '/',
        },
        {
          kind: 'botnet',
          startSec: attackFrom + 2,
          durationSec: seconds - attackFrom - 2,
          addresses: 500,
          ratePerSecond: 300,
        },
      ],
    },
    'screenshot',
  );
  const drill = runDrill({ scenario, target: demo.url, originUrl: demo.postal.url, quiet: true });
  // An operator's ban and status-page message, so those panels show something too.
  await page.waitForTimeout((attackFrom + 4) * 1000);
  await page.fill('#ban-target', '127.0.99.0/24');
  await page.fill('#ban-reason', 'flood source, seen on the dashboard');
  await page.click('#ban-submit');
  await page.waitForTimeout((seconds - attackFrom - 6) * 1000);
  await page.screenshot({ path: out, fullPage: true });
  process.stdout.write(`${out}\n`);
  await drill;
} finally {
  await browser.close();
  await demo.close();
}
