// A browser loading a heavy page is neither refused nor banned. With zero config every path is one
// `public` route under the per-address rule (50/s, burst 100, maxDelayMs 3000): a page with 150
// first-party requests (a shop's images, scripts and API calls, or 15 tabs restored at once) meets it,
// and its overflow waits for its turn (it came back as dozens of 429s before maxDelayMs; before
// `bans.offences.refusalSpacingMs` every one of them was an offence, 20 made a ban, and that person
// could not open the next page for a minute). A client refused again and again is still banned, a few
// hundred refusals in. Chromium loading such pages: test/heavy-page-browser.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../src/core/clock.ts';
import { startGateway, startUpstream, type TestGateway, type Teardown } from './helpers.ts';

const TRUSTED = { clientAddress: { trustedProxies: ['127.0.0.1/32'] } };

async function start(t: Teardown) {
  const up = await startUpstream(t);
  // A manual clock: the page's 150 requests take the 300 ms the test says, whatever the machine's load.
  const clock = createManualClock(1000);
  const gw = await startGateway(t, up.url, { ...TRUSTED, logging: { level: 'warn', requests: false } }, { clock });
  return { gw, clock };
}

/** `n` GETs from `address`, `parallel` at a time (a browser's six connections), the clock moved `stepMs` each. */
async function send(
  gw: TestGateway,
  clock: ReturnType<typeof createManualClock>,
  address: string,
  n: number,
  stepMs: number,
  parallel = 6,
): Promise<Record<number, number>> {
  const got: Record<number, number> = {};
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      clock.advance(stepMs);
      // A banned client's new connection is reset at accept: counted as 0.
      const status = await fetch(`${gw.url}/asset/${i}.js`, { headers: { 'x-forwarded-for': address } }).then(
        async (res) => (await res.arrayBuffer(), res.status),
        () => 0,
      );
      got[status] = (got[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return got;
}

test('a page of 150 requests in 300 ms meets the rate limit, waits, and is served whole; nobody is banned', async (t) => {
  const { gw, clock } = await start(t);
  const page = await send(gw, clock, '198.51.100.7', 150, 2);
  // The burst of 100 plus 15 tokens refilled over 300 ms at 50/s pass at once; the other 35 wait for
  // their turn (at most 35 x 20 ms on this clock), none is refused.
  assert.deepEqual(page, { 200: 150 });
  assert.equal(gw.gateway.defense.bans.isBanned('198.51.100.7'), false, 'a page load is not a flood');
  // The person reads, then opens the next page.
  clock.advance(3000);
  assert.deepEqual(await send(gw, clock, '198.51.100.7', 20, 5), { 200: 20 });
});

test('a client refused again and again is banned after a few hundred refusals', async (t) => {
  const { gw, clock } = await start(t);
  // 500 req/s for 2 s over 200 connections: past its burst and the 150 places of its 3 s wait (which
  // the flood fills in 0.3 s), nine in ten refused; an offence counted every 50 ms and every 25
  // refusals (bans.offences.refusalsPerOffence), so 20 come within the 2 s window.
  const flood = await send(gw, clock, '203.0.113.9', 1000, 2, 200);
  assert.equal(gw.gateway.defense.bans.isBanned('203.0.113.9'), true, JSON.stringify(flood));
  // Banned past the 20th refusal (what a page overflows by), before the 500th (what a pulse can get).
  assert.ok((flood[429] ?? 0) > 100 && (flood[429] ?? 0) < 500, JSON.stringify(flood));
  assert.ok((flood[403] ?? 0) + (flood[0] ?? 0) > 0, JSON.stringify(flood));
});
