// A request admission control sheds gets the cache's stale copy when there is one, not a 503.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../src/core/clock.ts';
import { cleanup, startGateway, startUpstream, waitFor } from './helpers.ts';

test('a cacheable request shed by admission is answered from the stale copy instead of a 503', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream(t, (req, res) => {
    const answer = () =>
      res
        .writeHead(200, { 'cache-control': 'public, max-age=1', 'content-type': 'text/plain' })
        .end(`copy of ${req.url}`);
    if (req.url === '/track/A') answer();
    else void held.then(answer);
  });
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    up.url,
    {
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
      routes: [{ name: 'tracking', path: '/track/*', upstream: 'origin', class: 'cacheable' }],
      admission: { queue: { maxEntries: 1 } },
    },
    { clock },
  );
  cleanup(t, () => release());
  assert.equal((await fetch(`${gw.url}/track/A`)).status, 200); // stored
  clock.advance(60_000); // past freshness and stale-while-revalidate, within stale-if-error
  const gate = gw.gateway.runtime().upstreams.get('origin')!.admission;
  const holding = fetch(`${gw.url}/track/B`); // takes the only slot
  await waitFor(() => gate.limiter.inFlight === 1, 'B to hold the only slot');
  const queued = fetch(`${gw.url}/track/C`); // takes the only queue place
  await waitFor(() => gate.queue.size === 1, 'C to take the only queue place');
  const shed = await fetch(`${gw.url}/track/A`);
  assert.equal(shed.status, 200);
  assert.equal(shed.headers.get('x-cache'), 'STALE');
  assert.equal(await shed.text(), 'copy of /track/A');
  assert.equal(up.requests.filter((r) => r.url === '/track/A').length, 1, 'the shed request never reached the origin');
  release();
  await Promise.all([holding, queued]);
});

test('requests collapsed on a fill that admission sheds are answered with the same 503 at once, not queued one after another', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream(t, (req, res) => {
    void held.then(() =>
      res
        .writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain' })
        .end(`copy of ${req.url}`),
    );
  });
  const gw = await startGateway(t, up.url, {
    upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
    routes: [{ name: 'tracking', path: '/track/*', upstream: 'origin', class: 'cacheable' }],
    admission: { queue: { timeoutMs: { cacheable: 300 } } },
    defense: { rateLimit: { mode: 'off' } },
  });
  cleanup(t, () => release());
  const gate = gw.gateway.runtime().upstreams.get('origin')!.admission;
  const holding = fetch(`${gw.url}/track/B`); // the only slot, held until release()
  await waitFor(() => gate.limiter.inFlight === 1, 'B to hold the only slot');
  // One fill for /track/C waits in the queue; eight more requests for C wait on that fill.
  const answers = await Promise.all(
    Array.from({ length: 9 }, () =>
      fetch(`${gw.url}/track/C`).then(async (r) => ({
        status: r.status,
        body: await r.text(),
        retryAfter: r.headers.get('retry-after'),
      })),
    ),
  );
  for (const a of answers) {
    assert.equal(a.status, 503);
    assert.match(a.body, /RMP_ERR_ADMISSION_QUEUE_TIMEOUT/);
    assert.ok(a.retryAfter !== null);
  }
  // Before: each waiter took the fill over in turn and queued for its own 300 ms (9 entries, 2.7 s).
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(
    metrics,
    /^rempart_admission_queued_total\{upstream="origin",class="cacheable"\} 1$/m,
    'only the fill queued',
  );
  assert.match(
    metrics,
    /^rempart_cache_lookups_total\{route="tracking",result="miss"\} 10$/m,
    'B, the fill, and eight waiters answered as misses',
  );
  assert.equal(up.requests.filter((r) => r.url === '/track/C').length, 0, 'nothing for C reached the origin');
  release();
  assert.equal((await holding).status, 200);
});
