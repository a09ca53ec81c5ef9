// Every way to write a path or a host that an origin may read differently from the routes (issue 12,
// findings 6 and 12): each form is either refused at the edge (400 RMP_ERR_EDGE_BAD_PATH / _BAD_HOST)
// or normalised so that routing, rate-limit keys, cache keys and the forwarded request agree.
// docs/lifecycle.md#paths-and-hosts has the same table in prose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorCodeOf, rawRequest, startGateway, startUpstream, statusOf } from './helpers.ts';

const routes = [
  // The login route's body limit (10 bytes) shows whether a request met it: 413 when it did.
  { name: 'login', path: '/login', methods: ['POST'], upstream: 'origin', class: 'critical', maxBodyBytes: 10 },
  {
    name: 'approvals',
    path: '/payments/*',
    methods: ['POST'],
    upstream: 'origin',
    class: 'critical',
    maxBodyBytes: 10,
  },
  { name: 'tracking', path: '/track/*', upstream: 'origin', class: 'cacheable' },
  { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
];

/** [request target, 'login' (met the login route) | 'refused' | 'other' (met the catch-all)] */
const POST_FORMS: [string, 'login' | 'refused' | 'other'][] = [
  ['/login', 'login'],
  // Fragments are never sent by a browser; an origin may cut them, routes would not.
  ['/login#x', 'refused'],
  ['/login?a=1#x', 'refused'],
  // Matrix parameters: routes judge the path without them (Tomcat and Spring strip them too).
  ['/login;x=1', 'login'],
  ['/login;jsessionid=ABC', 'login'],
  ['/;x/login', 'login'],
  // A dot segment with parameters has two meanings (Tomcat: a dot segment; others: a name).
  ['/admin/..;/login', 'refused'],
  ['/x/.;/login', 'refused'],
  // Dot segments, encoded or not, and merged slashes.
  ['/x/../login', 'login'],
  ['/%2e%2e/login', 'login'],
  ['/x/%2E%2E/login', 'login'],
  ['/./login', 'login'],
  ['//login', 'login'],
  ['/login/.', 'login'],
  ['/login/x/..', 'login'],
  // Case of the path and of percent-escapes, a trailing slash: Express, ASP.NET and IIS route them to /login.
  ['/LOGIN', 'login'],
  ['/Login/', 'login'],
  ['/%6Cogin', 'login'],
  ['/%6cogin', 'login'],
  // Encoded separators, controls and overlong UTF-8 (a lax decoder reads %C0%AE as `.`).
  ['/login%2F', 'refused'],
  ['/%2Flogin', 'refused'],
  ['/login%5C', 'refused'],
  ['/x\\..\\login', 'refused'],
  ['/login%00', 'refused'],
  ['/login%00.html', 'refused'],
  ['/login%0D%0ASet-Cookie:x', 'refused'],
  ['/login%09', 'refused'],
  ['/%C0%AE%C0%AE/login', 'refused'],
  ['/x/%C0%AF/login', 'refused'],
  ['/%E0%80%AE%E0%80%AE/login', 'refused'],
  ['/%F0%80%80%AE/login', 'refused'],
  ['/login%', 'refused'],
  ['/login%4', 'refused'],
  // Absolute-form: the authority is the host, the path is judged like any other.
  ['http://x/login', 'login'],
  ['HTTP://X/login', 'login'],
  ['http://x/x/../login', 'login'],
  ['http://x', 'other'],
  // Data, not structure: an encoded `;` and a trailing dot are another resource for every origin we know.
  ['/login%3Bx', 'other'],
  ['/login.', 'other'],
];

test('path forms: each one is refused or meets the route the origin would give it', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { routes, logging: { level: 'error', requests: false } });
  const body = 'x'.repeat(50);
  const wrong: string[] = [];
  for (const [target, want] of POST_FORMS) {
    const reply = await rawRequest(
      gw.port,
      `POST ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    const status = statusOf(reply);
    const got =
      status === 413
        ? 'login'
        : status === 400 && errorCodeOf(reply) === 'RMP_ERR_EDGE_BAD_PATH'
          ? 'refused'
          : status === 200
            ? 'other'
            : `status ${status} ${errorCodeOf(reply)}`;
    if (got !== want) wrong.push(`${target}: ${got}, want ${want}`);
  }
  assert.deepEqual(wrong, []);
});

test('a #fragment no longer walks past the login rate limit', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    routes,
    defense: { rateLimit: { rules: [{ id: 'login', key: 'address', routes: ['login'], ratePerSec: 0.01, burst: 2 }] } },
    logging: { level: 'error', requests: false },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const target = i < 2 ? '/login' : ['/login#x', `/login#${i}`, '/login;x', '/LOGIN', '/login/'][i % 5]!;
    const reply = await rawRequest(
      gw.port,
      `POST ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok`,
    );
    statuses.push(statusOf(reply));
  }
  assert.deepEqual(statuses.slice(0, 2), [200, 200], 'the budget');
  for (const s of statuses.slice(2)) assert.ok(s === 429 || s === 400, `past the budget: ${statuses.join(',')}`);
  assert.equal(up.requests.length, 2, 'only the two within the budget reached the origin');
});

test('the origin gets the normalised path: `;parameters` kept on ordinary routes, dropped with the cache key on caching ones', async (t) => {
  const up = await startUpstream(t, (_req, res) => res.writeHead(200, { 'cache-control': 'max-age=60' }).end('ok'));
  const gw = await startGateway(t, up.url, { routes, logging: { level: 'error', requests: false } });
  for (const target of [
    '/page;v=1?q=1',
    '/a/%2e%2e/b;x/c',
    '/track/A;x=1',
    '/track/A;x=2',
    '/TRACK/B;y?z=1',
    'http://x/track/A',
  ]) {
    const reply = await rawRequest(gw.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(reply), 200, target);
  }
  // /track/A;x=2 and the absolute-form /track/A were hits on the /track/A entry.
  assert.deepEqual(
    up.requests.map((r) => r.url),
    ['/page;v=1?q=1', '/b;x/c', '/track/A', '/TRACK/B'],
  );
});

/** [Host value, what the origin gets as Host (and X-Forwarded-Host), or null: refused] */
const HOSTS: [string, string | null][] = [
  ['shop.example', 'shop.example'],
  ['Shop.EXAMPLE', 'shop.example'],
  ['shop.example.', 'shop.example'],
  ['shop.example:80', 'shop.example'],
  ['shop.example:0080', 'shop.example'],
  ['shop.example:', 'shop.example'],
  ['shop.example:8080', 'shop.example:8080'],
  ['127.0.0.1:8080', '127.0.0.1:8080'],
  ['[::1]', '[::1]'],
  ['[::ABCD]:8443', '[::abcd]:8443'],
  ['xn--caf-dma.example', 'xn--caf-dma.example'],
  ['shop.example:80@evil.example', null],
  ['user@shop.example', null],
  ['shop.example evil', null],
  ['shop.example,evil.example', null],
  ['shop.example/evil', null],
  ['shop.example%2Fevil', null],
  ['shop.example:99999', null],
  ['shop.example:0', null],
  ['shop.example:80:80', null],
  ['shop.example:8o', null],
  ['shop.example:000000080', 'shop.example'],
  ['::1', null],
  ['[::1', null],
  ['[::1]x', null],
  ['[v1.future]', null],
  ['[fe80::1%25eth0]', null],
  ['.shop.example', null],
  ['shop..example', null],
  ['.', null],
];

test('Host forms: refused, or the origin gets the normalised value as Host and X-Forwarded-Host', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { routes, logging: { level: 'error', requests: false } });
  const wrong: string[] = [];
  for (const [host, want] of HOSTS) {
    const before = up.requests.length;
    const reply = await rawRequest(gw.port, `GET /h HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const got =
      statusOf(reply) === 400 && errorCodeOf(reply) === 'RMP_ERR_EDGE_BAD_HOST'
        ? null
        : up.requests.length > before
          ? String(up.requests.at(-1)!.headers.host)
          : `status ${statusOf(reply)}`;
    if (got !== want) wrong.push(`${host}: ${got}, want ${want}`);
    else if (want !== null && up.requests.at(-1)!.headers['x-forwarded-host'] !== want)
      wrong.push(`${host}: X-Forwarded-Host ${up.requests.at(-1)!.headers['x-forwarded-host']}`);
  }
  assert.deepEqual(wrong, []);
  // Absolute-form: its authority is the host (RFC 9112 §3.2.2), and the origin is told so.
  const reply = await rawRequest(
    gw.port,
    'GET http://Other.Example:80/p HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n',
  );
  assert.equal(statusOf(reply), 200);
  assert.equal(up.requests.at(-1)!.url, '/p');
  assert.equal(up.requests.at(-1)!.headers.host, 'other.example');
  for (const target of ['http://shop.example:80@evil.example/p', 'http:///p', 'http://a b/p']) {
    const bad = await rawRequest(gw.port, `GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(bad), 400, target);
  }
});

test('on one keep-alive connection each request is judged by its own Host, a bad one refused after good ones', async (t) => {
  // identify keeps a connection's last Host and its normal form: a change of Host on the connection,
  // or a default port that differs, must not be served the kept value.
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { routes, logging: { level: 'error', requests: false } });
  const hosts = ['Shop.Example', 'shop.example:8080', 'Shop.Example', 'shop.example:80', 'shop.example:80'];
  // A path each: the route caches by default, and a copy would answer without the origin seeing the Host.
  const head = (host: string, i: number) => `GET /h${i} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
  const reply = await rawRequest(
    gw.port,
    `${hosts.map(head).join('')}GET /h HTTP/1.1\r\nHost: shop..example\r\nConnection: close\r\n\r\n`,
  );
  assert.deepEqual(
    up.requests.map((r) => r.headers.host),
    ['shop.example', 'shop.example:8080', 'shop.example', 'shop.example', 'shop.example'],
  );
  assert.equal(reply.split('HTTP/1.1 200').length - 1, hosts.length);
  assert.match(reply, /RMP_ERR_EDGE_BAD_HOST/);
});

test('a Host with userinfo or another port cannot poison the entry of the plain host; routes match the normalised host', async (t) => {
  // An origin that builds links from Host, as many do.
  const up = await startUpstream(t, (req, res) =>
    res.writeHead(200, { 'cache-control': 'max-age=60' }).end(`<a href="//${req.headers.host}/next">`),
  );
  const gw = await startGateway(t, up.url, {
    routes: [
      { name: 'shop', host: 'shop.example', path: '/*', upstream: 'origin', class: 'cacheable' },
      { name: 'other', path: '/*', upstream: 'origin', class: 'public', cache: { enabled: false } },
    ],
    logging: { level: 'error', requests: false },
  });
  const get = async (host: string) => {
    const reply = await rawRequest(gw.port, `GET /home HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const link = /<a href="[^"]*">/.exec(reply);
    return { status: statusOf(reply), body: link === null ? '' : link[0], hit: /\r\nx-cache: HIT\r\n/i.test(reply) };
  };
  assert.equal((await get('shop.example:80@evil.example')).status, 400);
  assert.equal((await get('shop.example:1234')).body, '<a href="//shop.example:1234/next">');
  const plain = await get('shop.example');
  assert.equal(plain.body, '<a href="//shop.example/next">', 'the plain host has its own entry');
  assert.equal(plain.hit, false);
  const again = await get('SHOP.example.');
  assert.ok(again.hit, 'the same host written otherwise is the same entry');
  assert.equal(again.body, '<a href="//shop.example/next">');
});
