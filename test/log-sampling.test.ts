import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, startUpstream } from './helpers.ts';

test('a flood of refused requests writes a few log lines per reason, while metrics count every one', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'api', path: '/api/*', upstream: 'origin', class: 'public' }],
  });
  for (let i = 0; i < 60; i++) assert.equal((await fetch(`${gw.url}/nope/${i}`)).status, 404);
  assert.equal((await fetch(`${gw.url}/api/x`)).status, 200);
  const refusedLines = gw.logs.filter((l) => l.msg === 'request' && l.decision === 'refused');
  assert.ok(refusedLines.length >= 1 && refusedLines.length <= 5, `${refusedLines.length} refused lines written`);
  assert.ok(
    gw.logs.some((l) => l.msg === 'request' && l.decision === 'forwarded'),
    'forwarded requests are still logged',
  );
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /^rempart_refusals_total\{reason="RMP_ERR_ROUTE_NOT_FOUND"\} 60$/m);
});
