// A request admission control sheds gets the cache's stale copy when there is one, not a 503.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../src/core/clock.ts';
import { sleep, startGateway, startUpstream } from './helpers.ts';

test('a cacheable request shed by admission is answered from the stale copy instead of a 503', async () => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream((req, res) => {
    const answer = () => res.writeHead(200, { 'cache-control': 'public, max-age=1', 'content-type': 'text/plain' }).end(`copy of ${req.url}`);
    if (req.url === '/track/A') answer();
    else void held.then(answer);
  });
  const clock = createManualClock();
  const gw = await startGateway(
    up.url,
    {
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
      routes: [{ name: 'tracking', path: '/track/*', upstream: 'origin', class: 'cacheable' }],
      admission: { queue: { maxEntries: 1 } },
    },
    { clock },
  );
  try {
    assert.equal((await fetch(`${gw.url}/track/A`)).status, 200); // stored
    clock.advance(60_000); // past freshness and stale-while-revalidate, within stale-if-error
    const holding = fetch(`${gw.url}/track/B`); // takes the only slot
    await sleep(50);
    const queued = fetch(`${gw.url}/track/C`); // takes the only queue place
    await sleep(50);
    const shed = await fetch(`${gw.url}/track/A`);
    assert.equal(shed.status, 200);
    assert.equal(shed.headers.get('x-cache'), 'STALE');
    assert.equal(await shed.text(), 'copy of /track/A');
    assert.equal(up.requests.filter((r) => r.url === '/track/A').length, 1, 'the shed request never reached the origin');
    release();
    await Promise.all([holding, queued]);
  } finally {
    release();
    await gw.close();
    await up.close();
  }
});
