// The waiting room end to end: a real gateway (force: true, manual clock) in front of a recording upstream.
import { test } from 'node:test';
import { CALM_MS } from '../src/phases/waiting-room/room.ts';
import assert from 'node:assert/strict';
import { createManualClock } from '../src/core/clock.ts';
import { cleanup, startGateway, startUpstream, type Teardown, waitFor } from './helpers.ts';

const TICKET = 'rempart_wr_ticket_default';
const PASS = 'rempart_wr_pass_default';

function cookieOf(res: Response, name: string): string | null {
  for (const c of res.headers.getSetCookie()) if (c.startsWith(`${name}=`)) return c.slice(0, c.indexOf(';'));
  return null;
}

async function setup(t: Teardown, admitPerSecond = 1) {
  const up = await startUpstream(t);
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    up.url,
    {
      routes: [
        {
          name: 'default',
          path: '/*',
          upstream: 'origin',
          class: 'public',
          waitingRoom: { enabled: true, force: true, admitPerSecond },
        },
      ],
    },
    { clock },
  );
  return {
    up,
    gw,
    clock,
    get: (headers: Record<string, string> = {}, method = 'GET') => fetch(`${gw.url}/`, { method, headers }),
  };
}

test('a new visitor gets the waiting page (503, Retry-After, no-store) with its place and a ticket; HTML with a meta refresh for browsers', async (t) => {
  const s = await setup(t);
  const html = await s.get({ accept: 'text/html,application/xhtml+xml' });
  assert.equal(html.status, 503);
  assert.ok(Number(html.headers.get('retry-after')) >= 2);
  assert.equal(html.headers.get('cache-control'), 'no-store');
  assert.match(html.headers.get('content-type')!, /^text\/html/);
  assert.ok(cookieOf(html, TICKET), 'a ticket cookie');
  const page = await html.text();
  assert.match(page, /<strong id="position">1<\/strong>/);
  assert.match(page, /<meta http-equiv="refresh" content="2">/);
  assert.ok(Buffer.byteLength(page) < 2048, 'a light page');
  assert.doesNotMatch(page, /<script|src=|href=/, 'no script, no external resource');

  const json = await s.get({ accept: 'application/json' });
  assert.equal(json.status, 503);
  assert.deepEqual(await json.json(), { waitingRoom: { position: 2, etaSeconds: 2 } });
  assert.equal(s.up.requests.length, 0, 'nothing reached the upstream');
});

test('after enough time the visitor sending back its ticket reaches the upstream with a pass, and the pass keeps it in while others queue', async (t) => {
  const s = await setup(t);
  const first = await s.get();
  const ticket = cookieOf(first, TICKET)!;
  await first.text();
  const still = await s.get({ cookie: ticket });
  assert.equal(still.status, 503, 'still in line before the clock moves');
  await still.text();
  s.clock.advance(1000);
  const inside = await s.get({ cookie: ticket });
  assert.equal(inside.status, 200);
  assert.equal(await inside.text(), 'ok');
  const pass = cookieOf(inside, PASS);
  assert.ok(pass, 'a pass cookie on the forwarded response');
  assert.equal(s.up.requests.length, 1);

  for (let i = 0; i < 5; i++) await (await s.get()).text(); // a crowd queues behind
  for (let i = 0; i < 3; i++) {
    const again = await s.get({ cookie: pass! });
    assert.equal(again.status, 200, 'a visitor inside is never interrupted');
    await again.text();
  }
  const post = await s.get({}, 'POST');
  assert.equal(post.status, 200, 'only GET and HEAD enter the room');
  await post.text();
});

test('a forged or tampered ticket gets a new place at the back of the line', async (t) => {
  const s = await setup(t);
  const first = await s.get();
  const ticket = cookieOf(first, TICKET)!;
  await first.text();
  const forged = ticket.replace(/=1\./, '=0.');
  const res = await s.get({ cookie: forged });
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { waitingRoom: { position: 2, etaSeconds: 2 } });
  assert.ok(cookieOf(res, TICKET)?.includes('=2.'), 'a new ticket, number 2');
  const fakePass = await s.get({ cookie: `${PASS}=9999999999999.AAAA` });
  assert.equal(fakePass.status, 503);
  await fakePass.text();
});

test('visitors are let in in arrival order', async (t) => {
  const s = await setup(t);
  const tickets: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await s.get();
    tickets.push(cookieOf(r, TICKET)!);
    await r.text();
  }
  // Each visitor sends what it holds: its ticket, then the pass it was let in with (a ticket lets in once).
  const statuses = async () =>
    Promise.all(
      tickets.map(async (held, i) => {
        const r = await s.get({ cookie: held });
        await r.text();
        const pass = cookieOf(r, PASS);
        if (pass !== null) tickets[i] = pass;
        return r.status;
      }),
    );
  assert.deepEqual(await statuses(), [503, 503, 503]);
  s.clock.advance(1000);
  assert.deepEqual(await statuses(), [200, 503, 503]);
  s.clock.advance(1000);
  assert.deepEqual(await statuses(), [200, 200, 503]);
  s.clock.advance(1000);
  assert.deepEqual(await statuses(), [200, 200, 200]);
});

test('the room keeps counters only: 10 000 new visitors grow nothing but `issued`', async (t) => {
  const s = await setup(t);
  await (await s.get()).text();
  const metrics = s.gw.gateway.metrics;
  const scraped = await metrics.registry.metrics();
  assert.match(scraped, /rempart_waiting_room_tickets_total\{route="default"\} 1/);
  assert.match(scraped, /rempart_waiting_room_length\{route="default"\} 1/);
  // Drive a second instance of the phase directly (it takes over the length gauge): 10 000 HTTP round trips would take too long on two shared cores.
  const { createWaitingRoomPhase } = await import('../src/phases/waiting-room/index.ts');
  const { CookieSigner } = await import('../src/phases/waiting-room/ticket.ts');
  const { RequestContext } = await import('../src/pipeline/context.ts');
  const rt = s.gw.gateway.runtime();
  const wr = createWaitingRoomPhase(() => rt, metrics, s.clock, new CookieSigner(Buffer.alloc(32, 1)));
  for (let i = 0; i < 10_000; i++) {
    const ctx = new RequestContext({ method: 'GET', headers: { cookie: `visitor=${i}` } } as never, {} as never, 0);
    ctx.clientAddress = `10.0.${i >> 8}.${i & 255}`; // 10 000 visitors, each within its address's ticket quota
    ctx.clientPrefix = `10.0.${i >> 8}`;
    ctx.route = rt.routes[0]!;
    ctx.upstream = rt.routes[0]!.upstream;
    assert.equal(wr.onRequest(ctx), 1);
  }
  assert.deepEqual([...wr.rooms.keys()], ['default']);
  const room = wr.rooms.get('default')!;
  assert.deepEqual(Object.keys(room), ['issued', 'admittedUpTo'], 'two public counters, nothing keyed by visitor');
  assert.equal(room.issued, 10_000);
  assert.equal(room.admittedUpTo, 0);
  const text = await metrics.registry.metrics();
  assert.match(text, /rempart_waiting_room_length\{route="default"\} 10000/);
});

test('without saturation (admission off, no force) the room stays closed: visitors go through with a pass', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(
    t,
    up.url,
    { routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public', waitingRoom: { enabled: true } }] },
    { clock: createManualClock() },
  );
  const res = await fetch(`${gw.url}/`);
  assert.equal(res.status, 200);
  assert.ok(cookieOf(res, PASS));
  await res.text();
  assert.ok(
    gw.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('waiting room: no REMPART_WAITING_ROOM_KEY')),
    'a warning about the random key',
  );
  assert.ok(!JSON.stringify(gw.logs).includes(cookieOf(res, PASS)!.split('=')[1]!), 'cookie values are not logged');
});

test('on a real saturation signal the room opens while the upstream slot is taken and drains once it has been free for CALM_MS', async (t) => {
  const clock = createManualClock();
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') void held.then(() => res.end('slow'));
    else res.end('ok');
  });
  const gw = await startGateway(
    t,
    up.url,
    {
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 1 } }],
      routes: [
        {
          name: 'default',
          path: '/*',
          upstream: 'origin',
          class: 'public',
          waitingRoom: { enabled: true, admitPerSecond: 1 },
        },
      ],
    },
    { clock },
  );
  cleanup(t, () => release());
  const slow = fetch(`${gw.url}/slow`);
  // Wait until the slow request holds the one slot.
  const limiter = gw.gateway.runtime().upstreams.get('origin')!.admission.limiter;
  await waitFor(() => limiter.inFlight >= 1, { timeoutMs: 2000, message: 'the slow request to hold the slot' });
  const queued = await fetch(`${gw.url}/`);
  assert.equal(queued.status, 503, 'the class is saturated: a new visitor waits in line');
  const ticket = cookieOf(queued, TICKET)!;
  assert.ok(ticket);
  await queued.text();
  release();
  assert.equal(await (await slow).text(), 'slow');
  const early = await fetch(`${gw.url}/`, { headers: { cookie: ticket } });
  assert.equal(early.status, 503, 'free for a moment only: still in line');
  await early.text();
  clock.advance(CALM_MS);
  await waitFor(
    async () => {
      const r = await fetch(`${gw.url}/`, { headers: { cookie: ticket } });
      await r.text();
      return r.status === 200;
    },
    { timeoutMs: 5000, message: 'capacity returned: the line drained and the ticket holder went in' },
  );
});

test('config: a waiting room on a route that matches neither GET nor HEAD is refused with its key path', async () => {
  const { validateConfig } = await import('../src/config/load.ts');
  assert.throws(
    () =>
      validateConfig({
        version: 1,
        listeners: [{ address: '127.0.0.1:0' }],
        upstreams: [{ name: 'origin', url: 'http://127.0.0.1:1' }],
        routes: [
          {
            name: 'api',
            path: '/*',
            methods: ['POST'],
            upstream: 'origin',
            waitingRoom: { enabled: true, admitPerSecond: 0 },
          },
        ],
      }),
    (err: { problems?: { path: string }[] }) => {
      const paths = err.problems!.map((p) => p.path);
      assert.ok(paths.includes('routes[0].waitingRoom.enabled'), paths.join(', '));
      assert.ok(paths.includes('routes[0].waitingRoom.admitPerSecond'), paths.join(', '));
      return true;
    },
  );
});

// Clients on other networks, as a trusted proxy in front of Rempart names them (X-Forwarded-For).
async function behindProxy(t: Teardown, admitPerSecond = 1) {
  const up = await startUpstream(t);
  const clock = createManualClock();
  const gw = await startGateway(
    t,
    up.url,
    {
      clientAddress: { trustedProxies: ['127.0.0.1/32'] },
      // No rate-limit rule: the default per-address one would hold a client's requests past its burst
      // for their turns in real time, longer each as the manual clock stands still (the /64 test's 300).
      defense: { rateLimit: { rules: [] } },
      routes: [
        {
          name: 'default',
          path: '/*',
          upstream: 'origin',
          class: 'public',
          waitingRoom: { enabled: true, force: true, admitPerSecond },
        },
      ],
    },
    { clock },
  );
  return {
    up,
    gw,
    clock,
    async get(from: string, headers: Record<string, string> = {}) {
      const r = await fetch(`${gw.url}/`, {
        headers: { 'x-forwarded-for': from, 'user-agent': 'Browser/1', ...headers },
      });
      const text = await r.text();
      return { status: r.status, res: r, text };
    },
  };
}

test('a pass works only for the client it was given to: 20 clients on other networks holding it wait in line', async (t) => {
  const s = await behindProxy(t);
  const first = await s.get('203.0.113.5');
  const ticket = cookieOf(first.res, TICKET)!;
  s.clock.advance(1000);
  const inside = await s.get('203.0.113.5', { cookie: ticket });
  assert.equal(inside.status, 200);
  const pass = cookieOf(inside.res, PASS)!;
  let admitted = 0;
  for (let i = 0; i < 20; i++) if ((await s.get(`198.51.${i}.7`, { cookie: pass })).status === 200) admitted++;
  assert.equal(admitted, 0, 'a pass copied to other networks lets nobody in');
  assert.equal(
    (await s.get('203.0.113.5', { cookie: pass, 'user-agent': 'Bot/2' })).status,
    503,
    'nor another browser on the same network',
  );
  assert.equal(
    (await s.get('203.0.113.77', { cookie: pass })).status,
    200,
    'the same /24 and browser: still inside (as clearances)',
  );
  assert.equal((await s.get('203.0.113.5', { cookie: pass })).status, 200, 'the client it was given to stays inside');
  // A ticket copied to another network is no ticket there either: a new place at the back.
  const other = await s.get('192.0.2.9', { cookie: cookieOf((await s.get('203.0.113.6')).res, TICKET)! });
  assert.equal(other.status, 503);
  assert.ok(cookieOf(other.res, TICKET), 'a ticket of its own');
});

test('a ticket lets in once: sent again after its pass was issued, it is a new place at the back', async (t) => {
  const s = await behindProxy(t);
  const first = await s.get('203.0.113.5');
  const ticket = cookieOf(first.res, TICKET)!;
  s.clock.advance(1000);
  const inside = await s.get('203.0.113.5', { cookie: ticket });
  assert.equal(inside.status, 200);
  assert.ok(
    inside.res.headers.getSetCookie().some((c) => c.startsWith(`${TICKET}=;`) && /Max-Age=0/.test(c)),
    'the used ticket is cleared',
  );
  s.clock.advance(5000); // admissions banked while nobody waits are not kept: the line is empty
  let admitted = 0;
  for (let i = 0; i < 5; i++) {
    const again = await s.get('203.0.113.5', { cookie: ticket });
    if (again.status === 200) admitted++;
  }
  assert.equal(admitted, 0, 'the admitted ticket is not admitted again');
  assert.equal(s.up.requests.length, 1, 'the origin saw one request');
});

test('300 requests without cookies from 6 addresses take 60 places at most: the next visitor is not pushed to place 301', async (t) => {
  const s = await behindProxy(t);
  const addresses = ['198.51.100.1', '198.51.101.1', '198.51.102.1', '203.0.113.1', '203.0.114.1', '192.0.2.1'];
  for (let batch = 0; batch < 10; batch++)
    await Promise.all(
      Array.from({ length: 30 }, (_, i) => s.get(addresses[(batch * 30 + i) % 6]!, { accept: 'application/json' })),
    );
  const visitor = await s.get('100.64.0.9', { accept: 'application/json' });
  assert.equal(visitor.status, 503);
  const place = (JSON.parse(visitor.text) as { waitingRoom: { position: number } }).waitingRoom.position;
  assert.ok(place <= 6 * 10 + 1, `the next visitor's place: ${place}`);
  assert.ok(cookieOf(visitor.res, TICKET), 'the visitor holds a ticket');
  // Past its quota an address gets the page without a ticket: it holds no place.
  const over = await s.get(addresses[0]!, { accept: 'application/json' });
  assert.equal(over.status, 503);
  assert.equal(cookieOf(over.res, TICKET), null);
  const metrics = await s.gw.gateway.metrics.registry.metrics();
  assert.match(metrics, /rempart_waiting_room_tickets_refused_total\{route="default"\} 2[0-9]{2}\n/);
  // The quota is per minute: a minute later the address may take a place again.
  s.clock.advance(60_000);
  assert.ok(cookieOf((await s.get(addresses[0]!)).res, TICKET));
});

test('IPv6: 300 addresses of one /64 count as one client for new places in line', async (t) => {
  const s = await behindProxy(t);
  for (let batch = 0; batch < 10; batch++)
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        s.get(`2001:db8:1:2::${(batch * 30 + i + 1).toString(16)}`, { accept: 'application/json' }),
      ),
    );
  const visitor = await s.get('2001:db8:9::1', { accept: 'application/json' });
  const place = (JSON.parse(visitor.text) as { waitingRoom: { position: number } }).waitingRoom.position;
  assert.ok(place <= 11, `the next visitor's place: ${place}`);
});
