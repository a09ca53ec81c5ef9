// Forwarding behaviour: connection pooling toward the upstream, header rewriting in both
// directions, response framing for bodiless answers, request-target forms, and route matching.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { cleanup, rawRequest, startGateway, startUpstream, statusOf, waitFor } from './helpers.ts';

/** Split a raw HTTP/1.1 reply into lower-cased header map (values joined by '\n') and body. */
function parseRaw(raw: string): { status: number; headers: Map<string, string[]>; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const lines = head.split('\r\n');
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const list = headers.get(name) ?? [];
    list.push(line.slice(colon + 1).trim());
    headers.set(name, list);
  }
  return { status: statusOf(raw), headers, body: end === -1 ? '' : raw.slice(end + 4) };
}

/** A raw upstream that answers every request on a connection with `reply`, keeping it open. */
async function startRawUpstream(reply: string): Promise<{ url: string; heads: string[]; close(): Promise<void> }> {
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (c) => {
      buf += c.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) !== -1) {
        heads.push(buf.slice(0, end));
        buf = buf.slice(end + 4);
        socket.write(reply);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    heads,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** GET through a keep-alive agent; resolves with status, headers and body text. */
function get(
  agent: http.Agent,
  url: string,
  opts: http.RequestOptions = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent, ...opts }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (body += c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body, socket: req.socket as net.Socket }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('fifty sequential requests through the gateway reuse a handful of pooled upstream connections', async (t) => {
  const up = await startUpstream(t);
  let upstreamConnections = 0;
  up.server.on('connection', () => upstreamConnections++);
  const gw = await startGateway(t, up.url);
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${gw.url}/n/${i}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok');
  }
  assert.equal(up.requests.length, 50);
  assert.ok(
    upstreamConnections >= 1 && upstreamConnections <= 3,
    `expected pooled upstream connections, saw ${upstreamConnections}`,
  );
});

test('hop-by-hop request headers and any header the Connection header names are not forwarded', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(
    gw.port,
    'GET /hop HTTP/1.1\r\n' +
      'Host: example.test\r\n' +
      'Connection: x-secret, close\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'TE: trailers\r\n' +
      'Trailer: x-checksum\r\n' +
      'Upgrade: h2c\r\n' +
      'Proxy-Authorization: Basic c2VjcmV0\r\n' +
      'X-Secret: do-not-forward\r\n' +
      'X-Kept: yes\r\n' +
      '\r\n',
  );
  assert.equal(statusOf(raw), 200);
  assert.equal(up.requests.length, 1);
  const h = up.requests[0]!.headers;
  // Connection itself is set by the pool (keep-alive) and not the client's value.
  assert.ok(!String(h.connection ?? '').includes('x-secret'), `connection leaked: ${h.connection}`);
  for (const name of [
    'keep-alive',
    'proxy-connection',
    'te',
    'trailer',
    'upgrade',
    'proxy-authorization',
    'x-secret',
  ]) {
    assert.equal(h[name], undefined, `${name} should not reach the upstream`);
  }
  assert.equal(h['x-kept'], 'yes');
});

test('hop-by-hop response headers and any header the upstream Connection header names are not returned', async (t) => {
  const body = 'hello';
  const up = await startRawUpstream(
    'HTTP/1.1 200 OK\r\n' +
      'Connection: x-internal, keep-alive\r\n' +
      'Keep-Alive: timeout=5, max=100\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'Proxy-Authenticate: Basic realm="x"\r\n' +
      'Upgrade: h2c\r\n' +
      'X-Internal: upstream-only\r\n' +
      'X-Public: shown\r\n' +
      `Content-Length: ${body.length}\r\n` +
      '\r\n' +
      body,
  );
  cleanup(t, () => up.close());
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(gw.port, 'GET /resp HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n');
  const { status, headers, body: got } = parseRaw(raw);
  assert.equal(status, 200);
  assert.equal(got, body);
  for (const name of ['keep-alive', 'proxy-connection', 'proxy-authenticate', 'upgrade', 'x-internal']) {
    assert.equal(headers.get(name), undefined, `${name} should not reach the client`);
  }
  // The only Connection header is the gateway's own.
  assert.deepEqual(headers.get('connection'), ['close']);
  assert.deepEqual(headers.get('x-public'), ['shown']);
  assert.deepEqual(headers.get('via'), ['1.1 rempart']);
});

test('X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Via are set, and a client-supplied X-Forwarded-For is replaced', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(
    gw.port,
    'GET /xf HTTP/1.1\r\nHost: shop.example:8443\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(raw), 200);
  const h = up.requests[0]!.headers;
  assert.equal(h['x-forwarded-for'], '127.0.0.1');
  assert.equal(h['x-forwarded-proto'], 'http');
  assert.equal(h['x-forwarded-host'], 'shop.example:8443');
  assert.equal(h.via, '1.1 rempart');
  assert.equal(h.host, 'shop.example:8443', 'the Host header is passed as the client sent it');
  assert.equal(parseRaw(raw).headers.get('via')?.[0], '1.1 rempart');
});

test("a client's own Via header is extended, not replaced, and an upstream Via is extended on the way back", async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.setHeader('via', '1.1 origin-cache');
    res.end('ok');
  });
  const gw = await startGateway(t, up.url, { via: 'edge-1' });
  const res = await fetch(`${gw.url}/via`, { headers: { via: '1.0 fred, 1.1 corp-proxy' } });
  assert.equal(res.status, 200);
  assert.equal(up.requests[0]!.headers.via, '1.0 fred, 1.1 corp-proxy, 1.1 edge-1');
  assert.equal(res.headers.get('via'), '1.1 origin-cache, 1.1 edge-1');
});

test('several Set-Cookie values pass through intact and separately', async (t) => {
  const cookies = ['a=1; Path=/; HttpOnly', 'b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure', 'c=3'];
  const up = await startUpstream(t, (_req, res) => {
    res.setHeader('set-cookie', cookies);
    res.end('ok');
  });
  const gw = await startGateway(t, up.url);
  const agent = new http.Agent({ keepAlive: false });
  cleanup(t, () => agent.destroy());
  const res = await get(agent, `${gw.url}/cookies`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.headers['set-cookie'], cookies);
});

test('HEAD, 204 and 304 answers carry no body and leave the client connection usable', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/head') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' });
      res.end(req.method === 'HEAD' ? undefined : 'hello world');
    } else if (req.url === '/nocontent') {
      res.writeHead(204).end();
    } else if (req.url === '/cached') {
      if (req.headers['if-none-match'] === '"v1"') res.writeHead(304, { etag: '"v1"' }).end();
      else res.writeHead(200, { etag: '"v1"' }).end('fresh');
    } else {
      res.end('after');
    }
  });
  const gw = await startGateway(t, up.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  cleanup(t, () => agent.destroy());
  const head = await get(agent, `${gw.url}/head`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], '11');
  assert.equal(head.body, '');
  const noContent = await get(agent, `${gw.url}/nocontent`);
  assert.equal(noContent.status, 204);
  assert.equal(noContent.body, '');
  const notModified = await get(agent, `${gw.url}/cached`, { headers: { 'if-none-match': '"v1"' } });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.etag, '"v1"');
  assert.equal(notModified.body, '');
  const after = await get(agent, `${gw.url}/after`);
  assert.equal(after.status, 200);
  assert.equal(after.body, 'after');
  // Same client connection throughout: framing stayed right after each bodiless answer.
  assert.equal(after.socket, head.socket);
  assert.deepEqual(
    up.requests.map((r) => `${r.method} ${r.url}`),
    ['HEAD /head', 'GET /nocontent', 'GET /cached', 'GET /after'],
  );
});

test('an absolute-form request target is forwarded to the upstream in origin form', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(
    gw.port,
    'GET http://shop.example/abs/path?q=1&r=2 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(raw), 200);
  assert.equal(up.requests.length, 1);
  assert.equal(up.requests[0]!.url, '/abs/path?q=1&r=2');
});

test('a request that matches no route gets 404 RMP_ERR_ROUTE_NOT_FOUND and never reaches the upstream', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'api', path: '/api/*', upstream: 'origin', class: 'public' }],
  });
  const miss = await fetch(`${gw.url}/other/thing`);
  assert.equal(miss.status, 404);
  assert.equal(miss.headers.get('content-type'), 'application/json');
  const body = (await miss.json()) as { error: { code: string; status: number } };
  assert.equal(body.error.code, 'RMP_ERR_ROUTE_NOT_FOUND');
  assert.equal(body.error.status, 404);
  assert.equal(up.requests.length, 0);
  const hit = await fetch(`${gw.url}/api/users?x=1`);
  assert.equal(hit.status, 200);
  assert.equal(await hit.text(), 'ok');
  assert.equal(up.requests.length, 1);
  assert.equal(up.requests[0]!.url, '/api/users?x=1');
});

test('routes match on host (case-insensitive, port ignored) and on method, first match wins', async (t) => {
  const first = await startUpstream(t, (_req, res) => res.end('first'));
  const second = await startUpstream(t, (_req, res) => res.end('second'));
  const gw = await startGateway(t, first.url, {
    upstreams: [
      { name: 'first', url: first.url },
      { name: 'second', url: second.url },
    ],
    routes: [
      { name: 'b-host', host: 'b.example', path: '/*', upstream: 'second', class: 'public' },
      { name: 'wildcard', host: '*.wild.example', path: '/*', upstream: 'second', class: 'public' },
      { name: 'writes', path: '/*', methods: ['POST', 'PUT'], upstream: 'second', class: 'critical' },
      { name: 'default', path: '/*', upstream: 'first', class: 'public' },
    ],
  });
  const send = async (method: string, host: string): Promise<string> => {
    const raw = await rawRequest(
      gw.port,
      `${method} /x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(statusOf(raw), 200, raw);
    return parseRaw(raw).body;
  };
  assert.equal(await send('GET', 'a.example'), 'first');
  assert.equal(await send('GET', 'B.Example:8080'), 'second');
  assert.equal(await send('GET', 'api.wild.example'), 'second');
  assert.equal(await send('POST', 'a.example'), 'second');
  assert.equal(await send('PUT', 'a.example'), 'second');
  assert.equal(await send('DELETE', 'a.example'), 'first');
  assert.equal(first.requests.length, 2);
  assert.equal(second.requests.length, 4);
  // Route names and classes reach the request log.
  const routes = gw.logs.filter((l) => l.msg === 'request').map((l) => `${l.route}/${l.class}`);
  assert.deepEqual(routes, [
    'default/public',
    'b-host/public',
    'wildcard/public',
    'writes/critical',
    'writes/critical',
    'default/public',
  ]);
});

test('a request with Expect: 100-continue gets 100 Continue from the gateway and its body reaches the upstream', async (t) => {
  const up = await startUpstream(t, (_req, res, body) => res.end(`got ${body.toString()}`));
  const gw = await startGateway(t, up.url);
  let continued = false;
  const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(
      `${gw.url}/expect`,
      { method: 'PUT', agent: false, headers: { 'content-length': '5', expect: '100-continue' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('continue', () => {
      continued = true;
      req.end('hello');
    });
    req.on('error', reject);
  });
  assert.ok(continued, 'the client was told to continue');
  assert.deepEqual(result, { status: 200, body: 'got hello' });
  assert.equal(up.requests[0]!.bodyBytes, 5);
  assert.equal(up.requests[0]!.headers.expect, undefined, 'Expect was answered by the gateway, not forwarded');
});

test('POST, PUT, PATCH and DELETE bodies with Content-Length are forwarded with method and length intact', async (t) => {
  const up = await startUpstream(t, (req, res, body) => res.end(`${req.method} ${body.length}`));
  const gw = await startGateway(t, up.url);
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
    const payload = `{"method":"${method}","pad":"${'x'.repeat(1000)}"}`;
    const res = await fetch(`${gw.url}/m`, { method, body: payload, headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `${method} ${payload.length}`);
  }
  assert.deepEqual(
    up.requests.map((r) => [r.method, r.headers['content-length'], r.headers['content-type']]),
    ['POST', 'PUT', 'PATCH', 'DELETE'].map((m) => [
      m,
      String(`{"method":"${m}","pad":"${'x'.repeat(1000)}"}`.length),
      'application/json',
    ]),
  );
});

test('an HTTP/1.0 client gets a close-delimited answer even when the upstream streams it chunked', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.write('ab');
    setTimeout(() => res.end('cd'), 20);
  });
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(gw.port, 'GET /old HTTP/1.0\r\nHost: x\r\n\r\n');
  const { status, headers, body } = parseRaw(raw);
  assert.equal(status, 200);
  assert.equal(headers.get('transfer-encoding'), undefined, 'no chunked framing toward an HTTP/1.0 client');
  assert.equal(body, 'abcd');
});

test('pipelined requests on one client connection are answered in order even when the first is slower', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/first') setTimeout(() => res.end('FIRST'), 150);
    else res.end('SECOND');
  });
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(
    gw.port,
    'GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  const first = raw.indexOf('FIRST');
  const second = raw.indexOf('SECOND');
  assert.ok(first !== -1 && second !== -1 && first < second, raw);
  assert.equal(raw.match(/HTTP\/1\.1 200 /g)?.length, 2);
});

test('stopping the gateway lets an in-flight request finish, then refuses new connections', async (t) => {
  const up = await startUpstream(t, (_req, res) => setTimeout(() => res.end('done'), 300));
  const gw = await startGateway(t, up.url);
  const inFlight = fetch(`${gw.url}/slow`).then(async (r) => [r.status, await r.text()]);
  // Stop once the upstream is working on the request.
  await waitFor(() => up.requests.length > 0, 'the request at the upstream');
  await gw.gateway.stop(2000);
  assert.deepEqual(await inFlight, [200, 'done']);
  await assert.rejects(
    fetch(`${gw.url}/after`),
    (err: Error & { cause?: { code?: string } }) => err.cause?.code === 'ECONNREFUSED',
  );
});

test('Expect: 100-continue on a request the route refuses gets the refusal, never 100 Continue', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'small', path: '/*', upstream: 'origin', class: 'public', maxBodyBytes: 100 }],
  });
  const reply = await rawRequest(
    gw.port,
    'PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n',
    { timeoutMs: 1000 },
  );
  assert.doesNotMatch(reply, /100 Continue/);
  assert.equal(statusOf(reply), 413);
  assert.equal(up.requests.length, 0);
});

test('Rempart’s own credentials (clearance and waiting-room cookies, Rempart-Clearance/-Solution headers) do not reach the origin', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const raw = await rawRequest(
    gw.port,
    'GET /doc HTTP/1.1\r\nHost: example.test\r\n' +
      'Cookie: sid=abc; __rempart_clr=v1.k.1.b.m; rempart_wr_pass_site=p; lang=fr\r\n' +
      'Cookie: __rempart_sol=x.y\r\n' +
      'Rempart-Clearance: v1.k.1.b.m\r\nRempart-Solution: t.n\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(raw), 200);
  const h = up.requests[0]!.headers;
  assert.equal(h.cookie, 'sid=abc; lang=fr');
  assert.equal(h['rempart-clearance'], undefined);
  assert.equal(h['rempart-solution'], undefined);
});
