// A rule's maxDelayMs holds requests past the burst until their turn (docs/rate-limits.md): the places
// to wait are a resource an attacker can take. These tests hold requests on real sockets and check
// that a place is given back exactly once, when the turn comes or as soon as the client leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { createManualClock } from '../src/core/clock.ts';
import { validateConfig } from '../src/config/load.ts';
import { cleanup, startGateway, startUpstream, waitFor, type Teardown, type TestGateway } from './helpers.ts';
import { startTlsGateway } from './h2-client.ts';

const TRUSTED = { clientAddress: { trustedProxies: ['127.0.0.1/32'] } };

/** 1/s, burst 1: the n-th request past the burst waits n seconds (up to 30). No /24 level. */
const SLOW = { id: 'slow', key: 'address', ratePerSec: 1, burst: 1, maxDelayMs: 30000, prefixFactor: 0 };

async function waitingNow(gw: TestGateway): Promise<number> {
  const text = await gw.gateway.metrics.registry.metrics();
  const m = /rempart_table_entries\{table="rate_limit_waiting"\} (\d+)/.exec(text);
  assert.ok(m !== null, 'the gauge of waiting requests is exported');
  return Number(m[1]);
}

function get(port: number, address: string, path = '/'): net.Socket {
  const s = net.connect({ port, host: '127.0.0.1' });
  s.on('error', () => {});
  s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${address}\r\n\r\n`);
  return s;
}

async function startSlow(t: Teardown, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  return startGateway(t, up.url, { ...TRUSTED, defense: { rateLimit: { rules: [SLOW] } }, ...extra }, { clock });
}

test('a client that leaves while its request waits gives its place back at once, not when its turn comes', async (t) => {
  const gw = await startSlow(t);
  const addr = '203.0.113.5';
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 200);
  const sockets = Array.from({ length: 5 }, () => get(gw.port, addr));
  cleanup(t, () => {
    for (const s of sockets) s.destroy();
  });
  // They wait 1 to 5 s (the clock is frozen: their turns were fixed when they came).
  await waitFor(async () => (await waitingNow(gw)) === 5, 'five requests waiting');
  for (const s of sockets) s.destroy();
  // Before the fix the places stayed taken until each timer fired (1 to 5 s): 10 000 of them could be
  // held by clients long gone, and honest pages past their burst got 429s again.
  await waitFor(async () => (await waitingNow(gw)) === 0, { timeoutMs: 900, message: 'the places given back' });
});

test('HTTP/2: a stream reset while it waits gives its place back; a waiting stream is answered in its turn', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const rule = { ...SLOW, key: 'address', ratePerSec: 5, burst: 1 };
  const gw = await startTlsGateway(t, up.url, { defense: { rateLimit: { rules: [rule] } } }, { clock });
  const session = http2.connect(`https://127.0.0.1:${gw.port}`, { rejectUnauthorized: false });
  cleanup(t, () => session.destroy());
  session.on('error', () => {});
  const status = (s: http2.ClientHttp2Stream) =>
    new Promise<number>((resolve) => {
      s.on('response', (h) => resolve(Number(h[':status'])));
      s.on('error', () => resolve(0));
      s.on('close', () => resolve(0));
      s.resume();
    });
  assert.equal(await status(session.request({ ':path': '/first' })), 200);
  // 200 ms apart: the first waits 200 ms, the other nine 400 ms to 2 s (so before the fix at least
  // five of them were still counted at 900 ms).
  const kept = session.request({ ':path': '/kept' });
  const keptStatus = status(kept);
  const reset = Array.from({ length: 9 }, (_, i) => session.request({ ':path': `/reset${i}` }));
  for (const s of reset) s.on('error', () => {});
  await waitFor(async () => (await waitingNow(gw)) === 10, 'ten streams waiting');
  for (const s of reset) s.close(http2.constants.NGHTTP2_CANCEL);
  await waitFor(async () => (await waitingNow(gw)) <= 1, { timeoutMs: 900, message: 'the reset streams gone' });
  assert.equal(await keptStatus, 200, 'the stream that stayed is served in its turn');
  assert.equal(await waitingNow(gw), 0);
});

test('pipelined requests of one client: the waiting one holds the replies behind it, all come in order', async (t) => {
  const up = await startUpstream(t, (req, res) => res.end(`<${req.url}>`));
  const clock = createManualClock(1000);
  const rule = { ...SLOW, ratePerSec: 10, burst: 1 };
  const gw = await startGateway(t, up.url, { ...TRUSTED, defense: { rateLimit: { rules: [rule] } } }, { clock });
  const s = net.connect({ port: gw.port, host: '127.0.0.1' });
  cleanup(t, () => s.destroy());
  let data = '';
  s.on('data', (d: Buffer) => (data += d.toString('latin1')));
  const req = (p: string) => `GET /${p} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n`;
  s.write(req('a') + req('b') + req('c') + req('d'));
  await waitFor(() => (data.match(/HTTP\/1\.1 200/g) ?? []).length === 4, 'four replies');
  const order = [...data.matchAll(/<\/(\w)>/g)].map((m) => m[1]);
  assert.deepEqual(order, ['a', 'b', 'c', 'd']);
  assert.equal(await waitingNow(gw), 0);
});

test('a WebSocket handshake past the burst waits its turn and is switched; one whose client leaves frees its place', async (t) => {
  const up = await startUpstream(t);
  up.server.on('upgrade', (_req, socket) => {
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.end();
  });
  const clock = createManualClock(1000);
  const rule = { ...SLOW, ratePerSec: 5, burst: 1 };
  const gw = await startGateway(
    t,
    up.url,
    {
      ...TRUSTED,
      routes: [{ name: 'ws', path: '/*', upstream: 'origin', class: 'public', websocket: true }],
      defense: { rateLimit: { rules: [rule] } },
    },
    { clock },
  );
  const handshake = (addr: string) => {
    const s = net.connect({ port: gw.port, host: '127.0.0.1' });
    cleanup(t, () => s.destroy());
    s.on('error', () => {});
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.write(
      `GET /ws HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    return { s, data: () => data };
  };
  const addr = '192.0.2.44';
  const first = handshake(addr);
  await waitFor(() => first.data().startsWith('HTTP/1.1 101'), 'the first switched at once');
  const kept = handshake(addr);
  const left = Array.from({ length: 4 }, () => handshake(addr));
  await waitFor(async () => (await waitingNow(gw)) === 5, 'five handshakes waiting');
  for (const h of left) h.s.destroy();
  await waitFor(async () => (await waitingNow(gw)) <= 1, { timeoutMs: 350, message: 'the four that left gone' });
  await waitFor(() => kept.data().startsWith('HTTP/1.1 101'), 'the one that stayed switched in its turn');
  assert.equal(await waitingNow(gw), 0);
});

test('a stop serves the requests waiting within its drain time, and cuts the others cleanly', async (t) => {
  const gw = await startSlow(t);
  const addr = '203.0.113.77';
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 200);
  // Turns in 1 s and 2 s; the drain lasts 1.5 s.
  const replies = [get(gw.port, addr, '/one'), get(gw.port, addr, '/two')].map((s) => {
    cleanup(t, () => s.destroy());
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    return new Promise<string>((resolve) => s.on('close', () => resolve(data)));
  });
  await waitFor(async () => (await waitingNow(gw)) === 2, 'two requests waiting');
  const started = performance.now();
  await gw.gateway.stop(1500);
  const took = performance.now() - started;
  const [one, two] = await Promise.all(replies);
  assert.match(one!, /^HTTP\/1\.1 200/, 'served in its turn, within the drain');
  assert.equal(two, '', 'cut at the end of the drain, nothing half-sent');
  assert.ok(took >= 1400 && took < 2500, `the stop waited for the drain, no longer (${Math.round(took)} ms)`);
  assert.equal(await waitingNow(gw), 0, 'the cut request gave its place back');
});

test('a client banned while its requests wait gets them refused in their turn, not forwarded', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const rule = { ...SLOW, maxDelayMs: 2000 };
  const gw = await startGateway(
    t,
    up.url,
    { ...TRUSTED, defense: { rateLimit: { rules: [rule] }, bans: { offences: { refusalSpacingMs: 0 } } } },
    { clock },
  );
  const addr = '198.51.100.60';
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 200);
  // Two places (2 s at 1/s): turns in 1 s and 2 s.
  const held = [get(gw.port, addr, '/held1'), get(gw.port, addr, '/held2')].map((s) => {
    cleanup(t, () => s.destroy());
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    return () => data;
  });
  await waitFor(async () => (await waitingNow(gw)) === 2, 'two requests waiting');
  // The same client keeps sending: refused, 20 offences, banned (defense.bans.offences' default).
  const statuses = await Promise.all(
    Array.from({ length: 25 }, async () => {
      const res = await fetch(`${gw.url}/more`, { headers: { 'x-forwarded-for': addr } });
      await res.arrayBuffer();
      return res.status;
    }),
  );
  assert.ok(statuses.includes(429));
  assert.equal(gw.gateway.defense.bans.isBanned(addr), true, 'the client is banned');
  await waitFor(() => held.every((d) => /^HTTP\/1\.1 \d{3}/.test(d())), { timeoutMs: 4000, message: 'both answered' });
  for (const d of held) assert.match(d(), /^HTTP\/1\.1 403/, 'refused as banned when its turn came');
  assert.equal(
    up.requests.filter((r) => r.url.startsWith('/held')).length,
    0,
    'the origin never saw a request of a client banned while it waited',
  );
});

test('places run short: the client holding the longest waits is refused first and room stays for another', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  // 1/s, burst 1, 20 s of waiting: 20 places a key, 20 in the process (defense.rateLimit.maxWaiting).
  const rule = { ...SLOW, maxDelayMs: 20000 };
  const gw = await startGateway(
    t,
    up.url,
    { ...TRUSTED, defense: { rateLimit: { maxWaiting: 20, rules: [rule] } } },
    { clock },
  );
  /** One request; its status once a reply head came (0 until then). */
  const send = (addr: string, path: string) => {
    const s = get(gw.port, addr, path);
    cleanup(t, () => s.destroy());
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    return () => Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
  };
  // The attacker: its burst, then one request at a time, each taking its key's next turn if it can.
  // Before, it took all 20 places of the process (waits of 1 to 20 s) and was never refused; now its
  // k-th waits k s and finds 2000 x (21 - k) ms: it gets 14.
  const attacker: (() => number)[] = [];
  for (let i = 0; i < 21; i++) {
    const before = await waitingNow(gw);
    const status = send('203.0.113.66', `/x${i}`);
    attacker.push(status);
    await waitFor(async () => status() !== 0 || (await waitingNow(gw)) > before, `attacker request ${i} decided`);
  }
  assert.equal(await waitingNow(gw), 14, 'the attacker holds 14 of the 20 places');
  assert.ok(
    attacker.some((s) => s() === 429),
    'its requests past the shrunk wait are refused (offences)',
  );
  // Another client past its own burst still waits for its turn (1 s) instead of a 429.
  const other = [send('198.51.100.3', '/a'), send('198.51.100.3', '/b')];
  await waitFor(() => other.every((s) => s() !== 0), { timeoutMs: 3000, message: 'the other client answered' });
  assert.deepEqual(
    other.map((s) => s()),
    [200, 200],
  );
});

test('a request one rule makes wait and a later rule refuses is counted refused, not delayed', async (t) => {
  const up = await startUpstream(t);
  const clock = createManualClock(1000);
  const rules = [
    { ...SLOW, maxDelayMs: 5000 },
    { id: 'posts', key: 'address', methods: ['POST'], ratePerSec: 1, burst: 1, prefixFactor: 0 },
  ];
  const gw = await startGateway(t, up.url, { ...TRUSTED, defense: { rateLimit: { rules } } }, { clock });
  const post = async () => {
    const res = await fetch(`${gw.url}/`, { method: 'POST', headers: { 'x-forwarded-for': '192.0.2.9' } });
    await res.arrayBuffer();
    return res.status;
  };
  assert.equal(await post(), 200, 'within both bursts');
  // Past `slow`'s burst (it would wait 1 s) and past `posts`' (refused): 429 at once, not held.
  assert.equal(await post(), 429);
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.doesNotMatch(metrics, /action="delayed"[^\n]*rule="slow"/, 'no wait counted for a refused request');
  assert.match(metrics, /action="enforced",reason="RMP_ERR_RATE_LIMITED",rule="posts"\} 1\n/);
  assert.equal(await waitingNow(gw), 0);
});

test('maxWaiting 0: no request waits, past the burst a 429 at once', async (t) => {
  const gw = await startSlow(t, { defense: { rateLimit: { maxWaiting: 0, rules: [SLOW] } } });
  const status = async () => {
    const res = await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': '203.0.113.200' } });
    await res.arrayBuffer();
    return res.status;
  };
  assert.equal(await status(), 200);
  const started = performance.now();
  assert.equal(await status(), 429);
  assert.ok(performance.now() - started < 500, 'answered at once, not after a wait');
});

test('a reload that changes the rules while requests wait: they are served in their turn, places counted once', async (t) => {
  const gw = await startSlow(t);
  const addr = '203.0.113.31';
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 200);
  const replies = [get(gw.port, addr, '/r1'), get(gw.port, addr, '/r2')].map((s) => {
    cleanup(t, () => s.destroy());
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    return () => data;
  });
  await waitFor(async () => (await waitingNow(gw)) === 2, 'two requests waiting');
  // The rule's wait is turned off (a new limiter), then the rule is gone.
  const cfg = gw.gateway.runtime().config;
  const withRules = (rules: unknown[]) =>
    validateConfig({ ...cfg, defense: { ...cfg.defense, rateLimit: { ...cfg.defense.rateLimit, rules } } }, '(test)');
  await gw.gateway.reload(withRules([{ ...SLOW, maxDelayMs: 0 }]));
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 200, 'a new budget');
  assert.equal((await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': addr } })).status, 429, 'and no wait');
  await gw.gateway.reload(withRules([]));
  await waitFor(() => replies.every((d) => d() !== ''), { timeoutMs: 3500, message: 'both answered' });
  for (const d of replies) assert.match(d(), /^HTTP\/1\.1 200/);
  assert.equal(await waitingNow(gw), 0);
});

test('observe mode never holds a request: past the burst it is answered at once and nothing waits', async (t) => {
  const gw = await startSlow(t, { defense: { rateLimit: { mode: 'observe', rules: [SLOW] } } });
  const started = performance.now();
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${gw.url}/`, { headers: { 'x-forwarded-for': '203.0.113.90' } });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
  }
  assert.ok(performance.now() - started < 800, 'no request waited its turn (1 to 3 s)');
  assert.equal(await waitingNow(gw), 0);
  const metrics = await gw.gateway.metrics.registry.metrics();
  assert.doesNotMatch(metrics, /action="delayed"/);
});
