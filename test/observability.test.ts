// Metrics and logs: Prometheus counters with configuration-only labels (never an address or a raw
// path), one JSON log line per request with fixed fields, no secret in any log line, and the
// admin listener's health and 404 answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { validateConfig } from '../src/config/load.ts';
import {
  cleanup,
  rawRequest,
  sleep,
  startGateway,
  startUpstream,
  statusOf,
  type TestGateway,
  waitFor,
} from './helpers.ts';

function requestLogs(gw: TestGateway): Record<string, unknown>[] {
  return gw.logs.filter((l) => l.msg === 'request');
}

function waitForLogs(gw: TestGateway, n: number): Promise<boolean> {
  return waitFor(() => requestLogs(gw).length >= n, {
    timeoutMs: 3000,
    message: () => `${n} request log lines (${requestLogs(gw).length} so far)`,
  });
}

test('/metrics counts requests by route, class, decision and code, and never names a client address or a raw path', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [
      { name: 'api', path: '/api/*', upstream: 'origin', class: 'authenticated' },
      { name: 'site', path: '/*', upstream: 'origin', class: 'public', methods: ['GET'] },
    ],
  });
  for (let i = 0; i < 3; i++) {
    const raw = await rawRequest(
      gw.port,
      'GET /secret-path-xyz?q=hidden-query-abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      { localAddress: '127.0.0.7' },
    );
    assert.equal(statusOf(raw), 200);
  }
  assert.equal(
    statusOf(
      await rawRequest(gw.port, 'GET /api/secret-path-xyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', {
        localAddress: '127.0.0.7',
      }),
    ),
    200,
  );
  // No route for DELETE outside /api: refused with 404.
  assert.equal(
    statusOf(
      await rawRequest(gw.port, 'DELETE /secret-path-xyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', {
        localAddress: '127.0.0.7',
      }),
    ),
    404,
  );
  assert.equal(up.requests[0]!.headers['x-forwarded-for'], '127.0.0.7', 'the requests did come from 127.0.0.7');
  await waitForLogs(gw, 5);

  const res = await fetch(`${gw.adminUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  assert.match(text, /^rempart_requests_total\{route="site",class="public",decision="forwarded",code="200"\} 3$/m);
  assert.match(
    text,
    /^rempart_requests_total\{route="api",class="authenticated",decision="forwarded",code="200"\} 1$/m,
  );
  assert.match(text, /^rempart_requests_total\{route="-",class="-",decision="refused",code="404"\} 1$/m);
  assert.match(text, /^rempart_refusals_total\{reason="RMP_ERR_ROUTE_NOT_FOUND"\} 1$/m);
  assert.match(text, /^rempart_request_duration_seconds_count\{route="site",class="public"\} 3$/m);
  assert.match(text, /^rempart_connections_accepted_total \d+$/m);
  assert.match(text, /^# TYPE rempart_upstream_errors_total counter$/m);
  for (const leak of ['127.0.0.7', 'secret-path-xyz', 'hidden-query-abc'])
    assert.ok(!text.includes(leak), `metrics text contains ${leak}`);
});

test('every request writes exactly one JSON log line with route, class, decision, reason, upstream, status and durationMs', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.statusCode = req.url === '/created' ? 201 : 200;
    res.end('ok');
  });
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'app', path: '/*', upstream: 'origin', class: 'cacheable', methods: ['GET', 'POST'] }],
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  cleanup(t, () => agent.destroy());
  for (const [method, path] of [
    ['GET', '/a'],
    ['POST', '/created'],
    ['GET', '/b'],
  ] as const) {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${gw.url}${path}`, { method, agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
  }
  agent.destroy();
  const refused = await fetch(`${gw.url}/c`, { method: 'PUT', body: 'x' });
  assert.equal(refused.status, 404);
  await refused.body?.cancel();
  await waitForLogs(gw, 4);
  await sleep(50);
  const logs = requestLogs(gw);
  assert.equal(logs.length, 4, 'one line per request, no more');

  const [a, created, , miss] = logs;
  assert.equal(a!.level, 'info');
  assert.equal(a!.svc, 'rempart');
  assert.equal(typeof a!.time, 'string');
  assert.equal(a!.method, 'GET');
  assert.equal(a!.path, '/a');
  assert.equal(a!.route, 'app');
  assert.equal(a!.class, 'cacheable');
  assert.equal(a!.decision, 'forwarded');
  assert.equal(a!.reason, undefined, 'no reason when forwarded normally');
  assert.equal(a!.upstream, 'origin');
  assert.equal(a!.status, 200);
  assert.equal(typeof a!.durationMs, 'number');
  assert.ok((a!.durationMs as number) >= 0 && (a!.durationMs as number) < 5000);
  assert.equal(created!.status, 201);
  assert.equal(created!.method, 'POST');

  assert.equal(miss!.route, '-');
  assert.equal(miss!.class, '-');
  assert.equal(miss!.decision, 'refused');
  assert.equal(miss!.reason, 'RMP_ERR_ROUTE_NOT_FOUND');
  assert.equal(miss!.status, 404);
  assert.equal(miss!.upstream, undefined);
  assert.equal(typeof miss!.durationMs, 'number');
});

test('cookies, authorization headers and query-string tokens never reach any log line', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.setHeader('set-cookie', 'session=SECRET4; HttpOnly');
    res.end('ok');
  });
  // trace level so every line any component writes is captured.
  const gw = await startGateway(t, up.url, { logging: { level: 'trace', requests: true } });
  const raw = await rawRequest(
    gw.port,
    'GET /account?token=SECRET3&page=2 HTTP/1.1\r\nHost: x\r\nCookie: sid=SECRET1\r\nAuthorization: Bearer SECRET2\r\nProxy-Authorization: Basic SECRET5\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(raw), 200);
  // The same secrets on a request that fails upstream and on one that is refused.
  const failing = await startGateway(t, 'http://127.0.0.1:1', { logging: { level: 'trace', requests: true } });
  const bad = await rawRequest(
    failing.port,
    'POST /pay?token=SECRET3 HTTP/1.1\r\nHost: x\r\nCookie: sid=SECRET1\r\nAuthorization: Bearer SECRET2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(bad), 502);
  const refused = await rawRequest(
    failing.port,
    'GET /pay?token=SECRET3 HTTP/1.1\r\nHost: x\r\nHost: y\r\nCookie: sid=SECRET1\r\nAuthorization: Bearer SECRET2\r\n\r\n',
  );
  assert.equal(statusOf(refused), 400);
  await waitForLogs(failing, 2);
  const failingText = failing.logs.map((l) => JSON.stringify(l)).join('\n');
  for (const secret of ['SECRET1', 'SECRET2', 'SECRET3'])
    assert.ok(!failingText.includes(secret), `a log line contains ${secret}:\n${failingText}`);
  assert.ok(
    failing.logs.some((l) => l.msg === 'upstream error'),
    'the upstream failure was logged',
  );
  await waitForLogs(gw, 1);
  const text = gw.logs.map((l) => JSON.stringify(l)).join('\n');
  for (const secret of ['SECRET1', 'SECRET2', 'SECRET3', 'SECRET4', 'SECRET5'])
    assert.ok(!text.includes(secret), `a log line contains ${secret}:\n${text}`);
  const line = requestLogs(gw)[0]!;
  assert.equal(line.path, '/account', 'the path is logged without its query string');
});

test('the admin listener answers /healthz and /readyz, 404 for unknown paths and 405 for other methods', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const health = await fetch(`${gw.adminUrl}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(await health.text(), 'ok\n');
  const ready = await fetch(`${gw.adminUrl}/readyz?verbose=1`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
  const unknown = await fetch(`${gw.adminUrl}/nope`);
  assert.equal(unknown.status, 404);
  await unknown.body?.cancel();
  const post = await fetch(`${gw.adminUrl}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  await post.body?.cancel();
  // The admin paths are not served on the client listener: they go to the upstream like any path.
  const proxied = await fetch(`${gw.url}/metrics`);
  assert.equal(proxied.status, 200);
  assert.equal(await proxied.text(), 'ok');
  assert.equal(up.requests[0]!.url, '/metrics');
  // Admin requests are not counted as proxied requests.
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(
    metrics,
    /^rempart_requests_total\{route="default",class="public",decision="forwarded",code="200"\} 1$/m,
  );
});

test('with request logging off, no request lines are written but metrics still count', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'info', requests: false } });
  const res = await fetch(`${gw.url}/quiet`);
  assert.equal(res.status, 200);
  await res.body?.cancel();
  await sleep(50);
  assert.equal(requestLogs(gw).length, 0);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(
    metrics,
    /^rempart_requests_total\{route="default",class="public",decision="forwarded",code="200"\} 1$/m,
  );
});

test("after a reload changes a route's class, request counts and durations carry the new class", async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  await (await fetch(`${gw.url}/a`)).text();
  await gw.gateway.reload(
    validateConfig({
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'origin', url: up.url }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'critical' }],
      admin: { address: '127.0.0.1:0' },
    }),
  );
  await (await fetch(`${gw.url}/b`)).text();
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(text, /^rempart_requests_total\{route="default",class="public",decision="forwarded",code="200"\} 1$/m);
  assert.match(text, /^rempart_requests_total\{route="default",class="critical",decision="forwarded",code="200"\} 1$/m);
  assert.match(text, /^rempart_request_duration_seconds_count\{route="default",class="public"\} 1$/m);
  assert.match(text, /^rempart_request_duration_seconds_count\{route="default",class="critical"\} 1$/m);
});
