// Review of the severe-onset rule (defense.level.severeFactor, issue 13 point 3): people whose
// one-second burst is strange and heavy must not hold the site under attack for the fall time (20 s
// under_attack, 20 s elevated) when the ordinary riseSeconds (2 of 3) rule would not have raised it at
// all. A small site, real sockets: calm is two page loads a second (a page and its nine assets,
// 20 req/s, the floor) with the desktop browsers; default sampling (1 in 4) and thresholds. Two
// bursts of people: 25 people tapping a link shared in a mobile app within the same second (the
// app's in-app browser: another user agent), and one reader whose browser restores 15 tabs of the
// site at once (calm's browser, one address: per-client pace). Each is one tick at pressure and
// strangeness >= 1.5; then calm resumes. Without the rule the level stays calm and a first-time
// visitor a few seconds later is served. With it as first written (an unconfirmed severe tick holds
// under_attack for the whole fall) every reader without a clearance gets the challenge (403) for 20 s
// and more. The rise may stand for the riseSeconds ticks its confirmation takes, no longer.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { AttackLevel } from '../src/pipeline/env.ts';
import { createManualClock } from '../src/core/clock.ts';
import type { AttackLevelMonitor } from '../src/phases/level/monitor.ts';
import { startGateway, startUpstream } from './helpers.ts';

const DESKTOP = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0',
];
const IN_APP =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
  'Mobile/15E148 Instagram 334.0.4.32.98 (iPhone14,5; iOS 17_5; fr_FR; fr; scale=3.00; 1170x2532; 618023787)';
const ASSETS = ['/static/app.css', '/static/app.js', '/static/logo.svg', '/static/font.woff2'];

async function smallSite(t: TestContext) {
  const clock = createManualClock(0);
  const up = await startUpstream(t);
  const gw = await startGateway(
    t,
    up.url,
    { clientAddress: { trustedProxies: ['127.0.0.1/32'] }, defense: { level: { warmupSeconds: 5 } } },
    { clock },
  );
  const monitor = gw.gateway.defense.level as AttackLevelMonitor;
  const get = (ip: string, path: string, agent: string) =>
    fetch(`${gw.url}${path}`, {
      headers: { 'x-forwarded-for': ip, 'user-agent': agent, accept: 'text/html,*/*;q=0.8' },
    }).then(async (r) => {
      await r.arrayBuffer();
      return r.status;
    });
  /** A page load: the article and nine assets, from one address. */
  const pageLoad = (ip: string, n: number, agent: string) => [
    get(ip, `/news/${n}`, agent),
    ...Array.from({ length: 9 }, (_, i) => get(ip, ASSETS[i % ASSETS.length]!, agent)),
  ];
  /** Calm's second s: two readers (of a few dozen returning ones) load a page each. */
  const calm = (s: number) => [
    ...pageLoad(`10.0.${(2 * s) % 40}.1`, s, DESKTOP[s % 3]!),
    ...pageLoad(`10.0.${(2 * s + 1) % 40}.1`, s + 1, DESKTOP[(s + 1) % 3]!),
  ];
  const second = async (requests: Array<Promise<number>>) => {
    const statuses = await Promise.all(requests);
    clock.advance(1000);
    monitor.tick();
    return statuses;
  };
  // Enough calm for the baseline sketches (200 samples at 1 in 4).
  for (let s = 0; s < 60; s++) await second(calm(s));
  assert.equal(monitor.level, AttackLevel.calm, JSON.stringify(monitor.scores));
  return { monitor, get, pageLoad, calm, second };
}

async function afterBurst(g: Awaited<ReturnType<typeof smallSite>>, burst: Array<Promise<number>>, who: string[]) {
  await g.second([...g.calm(60), ...burst]);
  const at = { scores: g.monitor.scores, level: g.monitor.level };
  const served: number[] = [];
  // riseSeconds (2) ticks to confirm it like any rise; from the third, the level is back.
  for (let s = 61; s < 66; s++) {
    const statuses = await g.second(g.calm(s));
    if (s < 63) continue;
    assert.notEqual(
      g.monitor.level,
      AttackLevel.underAttack,
      `${s - 60} s after one second of people: ${JSON.stringify(at)} ${JSON.stringify(g.monitor.history.at(-1))}`,
    );
    served.push(...statuses);
  }
  assert.ok(
    served.every((s) => s === 200),
    `calm's readers refused: ${served.join(',')}`,
  );
  // A reader who never came before, and the people of the burst on their next page: served.
  assert.equal(await g.get('203.0.113.7', '/news/7', DESKTOP[0]!), 200);
  for (const [ip, agent] of who.map((w) => w.split('|') as [string, string]))
    assert.equal(await g.get(ip, '/news/8', agent), 200, `${ip} ${agent}`);
}

test('a one-second burst of people in an in-app browser does not hold a small site under attack', async (t) => {
  const g = await smallSite(t);
  // 25 people tap the shared link within the same second: 250 requests, then they read.
  const crowd = Array.from({ length: 25 }, (_, i) => g.pageLoad(`198.51.${i}.1`, 1000, IN_APP)).flat();
  await afterBurst(g, crowd, [`198.51.3.1|${IN_APP}`]);
});

test("one reader's browser restoring 15 tabs of the site does not hold a small site under attack", async (t) => {
  const g = await smallSite(t);
  // A returning reader (one of calm's addresses, calm's browser) restarts the browser: 15 tabs, 150 requests.
  const tabs = Array.from({ length: 15 }, (_, i) => g.pageLoad('10.0.5.1', 2000 + i, DESKTOP[0]!)).flat();
  // (Its own next page is not asked for: after 150 requests from its address it is challenged at calm
  // too, without the rule: not the level's doing.)
  await afterBurst(g, tabs, []);
});
