import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { cleanup, startGateway, startUpstream, type Teardown, type TestGateway, waitFor } from './helpers.ts';

const TOKEN = 'test-operator-token-0123456789';

/** A gateway whose admin API takes TOKEN, in front of a fresh upstream; both stopped when `t` ends. */
async function startBanGateway(t: Teardown, partial: Record<string, unknown>): Promise<TestGateway> {
  const up = await startUpstream(t);
  const saved = process.env.REMPART_ADMIN_TOKEN;
  process.env.REMPART_ADMIN_TOKEN = TOKEN;
  try {
    return await startGateway(t, up.url, partial);
  } finally {
    // The token is read at start-up: the environment is restored at once, not at the end of the test.
    if (saved === undefined) delete process.env.REMPART_ADMIN_TOKEN;
    else process.env.REMPART_ADMIN_TOKEN = saved;
  }
}

/** One GET from `localAddress` on `agent`'s connections; resolves with the status and headers. */
function get(
  port: number,
  localAddress: string,
  agent: http.Agent | false = false,
): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', localAddress, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

/** A new connection from `localAddress` that sends a request: what came back, and how it ended. */
function probe(port: number, localAddress: string): Promise<{ bytes: number; error: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    let bytes = 0;
    let error = '';
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    socket.on('data', (c) => (bytes += c.length));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => resolve({ bytes, error }));
    setTimeout(() => socket.destroy(), 2000).unref();
  });
}

function admin(
  gw: TestGateway,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = TOKEN,
): Promise<{ status: number; body: any }> {
  return fetch(`${gw.adminUrl}${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

const tight = { rateLimit: { rules: [{ id: 'tight', key: 'address', ratePerSec: 5, burst: 10 }] } };

test('a handful of flooding addresses are banned within 2 s and reset on accept, while another address is still served', async (t) => {
  const gw = await startBanGateway(t, { defense: tight });
  const flooders = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
  const agents = flooders.map(() => new http.Agent({ keepAlive: true, maxSockets: 4 }));
  cleanup(t, () => {
    for (const a of agents) a.destroy();
  });
  const start = performance.now();
  const bannedAt = new Map<string, number>();
  await Promise.all(
    flooders.map(async (addr, i) => {
      while (performance.now() - start < 3000 && !bannedAt.has(addr)) {
        const burst = await Promise.allSettled(Array.from({ length: 8 }, () => get(gw.port, addr, agents[i])));
        if (gw.gateway.defense.bans.isBanned(addr)) bannedAt.set(addr, performance.now() - start);
        if (burst.some((r) => r.status === 'rejected')) break;
      }
    }),
  );
  for (const addr of flooders) {
    assert.ok(bannedAt.has(addr), `${addr} banned`);
    assert.ok(bannedAt.get(addr)! < 2000, `${addr} banned after ${bannedAt.get(addr)!.toFixed(0)} ms`);
  }
  // A keep-alive connection opened before the ban: 403 RMP_ERR_BANNED and the connection closed.
  const agent = new http.Agent({ keepAlive: true });
  const [banned] = await Promise.all([get(gw.port, '127.0.0.5', agent)]);
  assert.equal(banned.status, 200);
  gw.gateway.defense.bans.ban('127.0.0.5', 60000, 'test', '', 'operator:test');
  const onOpen = await get(gw.port, '127.0.0.5', agent);
  assert.equal(onOpen.status, 403);
  assert.equal(onOpen.headers.connection, 'close');
  agent.destroy();
  // New connections from a banned address: reset on accept (the first), or closed by Node before a
  // socket object exists once the ban is on the listeners' fast path; either way not one HTTP byte.
  for (const addr of [...flooders, '127.0.0.5']) {
    for (let i = 0; i < 3; i++) {
      const p = await probe(gw.port, addr);
      assert.equal(p.bytes, 0, `${addr}: no HTTP byte`);
      assert.ok(p.error === 'ECONNRESET' || p.error === '', `${addr}: reset or closed (${p.error})`);
    }
  }
  await waitFor(() => gw.gateway.defense.bans.fastPath?.check('127.0.0.5', 'ipv4'), {
    timeoutMs: 1000,
    message: 'a ban that keeps knocking is on the fast path',
  });
  const fast = await probe(gw.port, '127.0.0.5');
  assert.equal(fast.bytes, 0, 'closed by the fast path, not one HTTP byte');
  assert.equal((await get(gw.port, '127.0.0.9')).status, 200, 'another address is served');
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.match(metrics, /rempart_bans_total\{source="offences"\} 3/);
  assert.match(metrics, /rempart_bans_active 4/);
  assert.match(metrics, /rempart_refusals_total\{reason="RMP_ERR_BANNED"\} [1-9]/);
  // Logged once per ban, not per refused connection.
  assert.equal(gw.logs.filter((l) => l.msg === 'ban' && l.target === '127.0.0.2').length, 1);
});

test('operators ban and unban over the admin API with a token; without one the API answers 401', async (t) => {
  const gw = await startBanGateway(t, {});
  assert.equal((await admin(gw, 'GET', '/api/bans', undefined, null)).status, 401);
  assert.equal((await admin(gw, 'POST', '/api/bans', { target: '127.0.1.0/24', ttlSec: 60 }, null)).status, 401);
  assert.equal((await get(gw.port, '127.0.1.5')).status, 200);
  const made = await admin(gw, 'POST', '/api/bans', { target: '127.0.1.77/24', ttlSec: 60, reason: 'scraping' });
  assert.equal(made.status, 201);
  assert.equal(made.body.target, '127.0.1.0/24');
  assert.equal(made.body.by, 'operator:env');
  assert.equal(made.body.reason, 'scraping');
  assert.equal(made.body.ttlSec, 60);
  const listed = await admin(gw, 'GET', '/api/bans');
  assert.equal(listed.status, 200);
  assert.equal(listed.body.active, 1);
  assert.deepEqual(Object.keys(listed.body.bans[0]).sort(), [
    'by',
    'count',
    'expires',
    'reason',
    'rule',
    'since',
    'target',
    'ttlSec',
  ]);
  const p = await probe(gw.port, '127.0.1.5');
  assert.deepEqual(p, { bytes: 0, error: 'ECONNRESET' });
  // The prefix joins the fast path; the unban below must still take effect at once.
  await waitFor(() => gw.gateway.defense.bans.fastPath?.check('127.0.1.5', 'ipv4'), {
    timeoutMs: 1000,
    message: 'the prefix ban is on the fast path',
  });
  assert.equal((await probe(gw.port, '127.0.1.6')).bytes, 0);
  assert.equal((await get(gw.port, '127.0.2.5')).status, 200, 'outside the prefix');
  assert.equal((await admin(gw, 'DELETE', `/api/bans/${encodeURIComponent('127.0.1.0/24')}`)).status, 200);
  assert.equal((await get(gw.port, '127.0.1.5')).status, 200);
  assert.equal((await admin(gw, 'DELETE', '/api/bans/127.0.1.5')).status, 404);
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.match(metrics, /rempart_bans_total\{source="operator"\} 1/);
});

test('the ban API refuses malformed input with 400 and a message saying what is wrong', async (t) => {
  const gw = await startBanGateway(t, {});
  const cases: [unknown, RegExp][] = [
    [[], /JSON object/],
    [{ target: '0.0.0.0/0', ttlSec: 60 }, /neither an address nor a prefix/],
    [{ target: 'evil.example', ttlSec: 60 }, /neither an address nor a prefix/],
    [{ target: 42, ttlSec: 60 }, /target must be a string/],
    [{ target: '192.0.2.1', ttlSec: 0 }, /ttlSec must be an integer/],
    [{ target: '192.0.2.1', ttlSec: 1.5 }, /ttlSec must be an integer/],
    [{ target: '192.0.2.1', ttlSec: 60, reason: 'a\nb' }, /reason/],
    [{ target: '192.0.2.1', ttlSec: 60, until: 5 }, /unknown field "until"/],
  ];
  for (const [body, message] of cases) {
    const r = await admin(gw, 'POST', '/api/bans', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.body.error.message, message);
  }
  assert.equal((await admin(gw, 'DELETE', '/api/bans/not-an-ip')).status, 400);
  assert.equal((await admin(gw, 'GET', '/api/bans?limit=0')).status, 400);
  assert.equal(gw.gateway.defense.bans.isBanned('192.0.2.1'), false);
});

test('with bans in observe mode a banned address is recorded and listed but still served', async (t) => {
  const gw = await startBanGateway(t, { defense: { decisionHeader: true, bans: { mode: 'observe' } } });
  assert.equal((await admin(gw, 'POST', '/api/bans', { target: '127.0.0.6', ttlSec: 60 })).status, 201);
  assert.equal((await admin(gw, 'GET', '/api/bans')).body.bans.length, 1);
  const r = await get(gw.port, '127.0.0.6');
  assert.equal(r.status, 200);
  assert.equal(r.headers['rempart-decision'], 'observed=RMP_ERR_BANNED; rule=ban');
});

test('with bans off, offences make no ban and the API says bans are off', async (t) => {
  const gw = await startBanGateway(t, {
    defense: { bans: { mode: 'off' }, rateLimit: { rules: [{ id: 't', key: 'address', ratePerSec: 0.01, burst: 1 }] } },
  });
  for (let i = 0; i < 40; i++) await get(gw.port, '127.0.0.7');
  assert.equal(gw.gateway.defense.bans.isBanned('127.0.0.7'), false);
  assert.equal((await admin(gw, 'POST', '/api/bans', { target: '127.0.0.7', ttlSec: 60 })).status, 409);
  assert.equal((await get(gw.port, '127.0.0.7')).status, 429, 'still rate limited');
});
