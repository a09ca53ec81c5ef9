// Review (attack): an exact route now also meets its path with a trailing slash (`/login` and
// `/login/`), but a prefix route does not meet its own bare directory: `/admin/*` misses `/admin`,
// which lands on the catch-all. Express (`app.use('/admin', router)` serves `/admin` with the
// router's `/` handler, strict routing off) and most frameworks answer `/admin` and `/admin/` alike,
// so the admin index walks past the `/admin/*` route's class, limits and guards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rawRequest, startGateway, startUpstream, waitFor } from './helpers.ts';

test('review: a prefix route `/admin/*` also meets `/admin` and `/ADMIN`', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [
      { name: 'admin', path: '/admin/*', upstream: 'origin', class: 'critical' },
      { name: 'default', path: '/*', upstream: 'origin', class: 'public' },
    ],
  });
  for (const p of ['/admin/', '/admin', '/ADMIN']) {
    await rawRequest(gw.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const line = await waitFor(() => gw.logs.find((l) => l.path === p), {
      timeoutMs: 3000,
      intervalMs: 20,
      message: `the log line of ${p}`,
    });
    assert.equal(line?.route, 'admin', `${p} met route ${String(line?.route)}`);
  }
});
