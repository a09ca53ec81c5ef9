// Routes, the cache and the origin must judge the same request: normalised paths, client-address
// claims from untrusted clients dropped, end-to-end fields a client cannot strip, warm HEADs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { cleanup, errorCodeOf, rawRequest, startGateway, startUpstream, statusOf } from './helpers.ts';

test('a path written to dodge a route is normalised, meets that route, and reaches the origin normalised', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [
      {
        name: 'approvals',
        path: '/payments/*',
        methods: ['POST'],
        upstream: 'origin',
        class: 'critical',
        maxBodyBytes: 100,
      },
      { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
    ],
  });
  const body = 'x'.repeat(5000);
  for (const path of ['/payments/approve', '/x/../payments/approve', '/%70ayments/approve', '//payments/approve']) {
    const reply = await rawRequest(
      gw.port,
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    assert.equal(statusOf(reply), 413, `${path} meets the approvals route's body limit`);
  }
  for (const path of ['/payments%2Fapprove', '/payments\\approve']) {
    const reply = await rawRequest(gw.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(statusOf(reply), 400, path);
    assert.equal(errorCodeOf(reply), 'RMP_ERR_EDGE_BAD_PATH');
  }
  const ok = await rawRequest(gw.port, 'GET /a/./b/../c?q=%2F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal(statusOf(ok), 200);
  assert.deepEqual(
    up.requests.map((r) => r.url),
    ['/a/c?q=%2F'],
    'only the normal request reached the origin, with its normalised path and untouched query',
  );
});

test('Forwarded, X-Real-IP and True-Client-IP from an untrusted client never reach the origin; a trusted proxy\u2019s do', async (t) => {
  const up = await startUpstream(t);
  const claims = { forwarded: 'for=1.2.3.4', 'x-real-ip': '1.2.3.4', 'true-client-ip': '1.2.3.4' };
  const untrusted = await startGateway(t, up.url);
  const trusted = await startGateway(t, up.url, { clientAddress: { trustedProxies: ['127.0.0.1'] } });
  await fetch(`${untrusted.url}/a`, { headers: claims });
  await fetch(`${trusted.url}/b`, { headers: claims });
  const [a, b] = up.requests;
  for (const name of Object.keys(claims)) {
    assert.equal(a!.headers[name], undefined, `${name} dropped from an untrusted client`);
    assert.equal(
      b!.headers[name],
      '1.2.3.4'.length && (claims as Record<string, string>)[name],
      `${name} kept from a trusted proxy`,
    );
  }
});

test('naming an end-to-end field in Connection does not strip it, while a custom field named there is dropped', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const reply = await rawRequest(
    gw.port,
    'GET / HTTP/1.1\r\nHost: x\r\nAccept-Language: fr\r\nX-Hop: 1\r\nConnection: close, accept-language, x-hop\r\n\r\n',
  );
  assert.equal(statusOf(reply), 200);
  assert.equal(up.requests[0]!.headers['accept-language'], 'fr');
  assert.equal(up.requests[0]!.headers['x-hop'], undefined);
});

test('HEAD requests keep their pooled upstream connections instead of opening one each', async (t) => {
  // A HEAD answer carries the Content-Length a GET would have (without it Node closes the client side).
  const up = await startUpstream(t, (_req, res) => res.writeHead(200, { 'content-length': '2' }).end());
  let connections = 0;
  up.server.on('connection', () => connections++);
  const gw = await startGateway(t, up.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  cleanup(t, () => agent.destroy());
  for (let i = 0; i < 30; i++) {
    await new Promise<void>((resolve, reject) => {
      http
        .request(`${gw.url}/h${i}`, { method: 'HEAD', agent }, (res) => {
          res.resume();
          res.on('end', () => resolve());
        })
        .on('error', reject)
        .end();
    });
  }
  assert.equal(up.requests.length, 30);
  assert.ok(connections <= 3, `30 sequential HEADs used ${connections} upstream connections`);
});
