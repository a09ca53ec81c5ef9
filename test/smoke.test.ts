import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, startUpstream } from './helpers.ts';

test('a request passes through to the upstream and the answer comes back with Via', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const res = await fetch(`${gw.url}/hello?x=1`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
  assert.equal(res.headers.get('via'), '1.1 rempart');
  assert.equal(up.requests.length, 1);
  assert.equal(up.requests[0]!.url, '/hello?x=1');
  assert.equal(up.requests[0]!.headers['x-forwarded-for'], '127.0.0.1');
});
