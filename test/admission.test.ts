// Admission control end to end: the reference postal origin (bounded capacity) behind a gateway
// whose routes make /payments/approve critical and /track/* cacheable. Assertions are on outcomes and
// counts, never on how fast a loaded machine answers; waits poll the gate's state instead of sleeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startPostalOrigin, type RunningOrigin } from '../examples/postal/origin.ts';
import { cleanup, sleep, startGateway, type Teardown, type TestGateway, track, waitFor } from './helpers.ts';
import { classIndex } from '../src/upstream/queue.ts';
import type { AdmissionGate } from '../src/upstream/gate.ts';
import type { RequestContext } from '../src/pipeline/context.ts';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const ROUTES = [
  { name: 'approvals', path: '/payments/approve', methods: ['POST'], upstream: 'origin', class: 'critical' },
  { name: 'tracking', path: '/track/*', upstream: 'origin', class: 'cacheable' },
  { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
];

function gatewayFor(
  t: Teardown,
  origin: RunningOrigin,
  upstreamAdmission: Record<string, unknown>,
  admission: Record<string, unknown> = {},
  logRequests = false,
  defense: Record<string, unknown> = {},
): Promise<TestGateway> {
  return startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url, admission: upstreamAdmission }],
    routes: ROUTES,
    admission,
    // One test process stands for many clients: lift the per-address connection cap and rate limit.
    limits: { maxConnectionsPerAddress: 10000, maxConnections: 20000 },
    defense: { rateLimit: { mode: 'off' }, ...defense },
    logging: { level: logRequests ? 'info' : 'warn', requests: logRequests },
  });
}

function gateOf(gw: TestGateway): AdmissionGate<RequestContext> {
  return gw.gateway.runtime().upstreams.get('origin')!.admission;
}

function send(
  base: string,
  path: string,
  opts: {
    method?: string;
    body?: string;
    headers?: Record<string, string>;
    localAddress?: string;
    agent?: http.Agent;
    onRequest?: (req: http.ClientRequest) => void;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(opts.body));
    }
    const req = http.request(
      `${base}${path}`,
      { method: opts.method ?? 'GET', headers, localAddress: opts.localAddress, agent: opts.agent ?? false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    opts.onRequest?.(req);
    req.end(opts.body);
  });
}

const approve = (base: string, i: number) =>
  send(base, '/payments/approve', { method: 'POST', body: JSON.stringify({ paymentId: `pay-${i}` }) });

function codeOf(r: Reply): string {
  try {
    return (JSON.parse(r.body) as { error?: { code?: string } }).error?.code ?? '';
  } catch {
    return '';
  }
}

/** ~400 concurrent tracking requests, then 40 approvals once the tracking queue has formed. */
async function burst(gw: TestGateway): Promise<{ tracking: Reply[]; approvals: Reply[] }> {
  const trackingP = Array.from({ length: 400 }, (_, i) => send(gw.url, `/track/6A${String(i).padStart(11, '0')}`));
  const gate = gateOf(gw);
  await waitFor(() => gate.queue.size >= 20, { timeoutMs: 10_000, message: 'tracking requests queue up' });
  const approvalsP = Array.from({ length: 40 }, (_, i) => approve(gw.url, i));
  const [tracking, approvals] = await Promise.all([Promise.all(trackingP), Promise.all(approvalsP)]);
  return { tracking, approvals };
}

function assertBurstOutcome(origin: RunningOrigin, tracking: Reply[], approvals: Reply[]): void {
  for (const a of approvals) {
    assert.equal(a.status, 200, `an approval failed: ${a.status} ${a.body}`);
    assert.equal((JSON.parse(a.body) as { approved?: boolean }).approved, true);
  }
  for (const t of tracking) {
    assert.ok(t.status === 200 || t.status === 503, `tracking got ${t.status}`);
    if (t.status === 503) assert.match(codeOf(t), /^RMP_ERR_ADMISSION_(SHED|QUEUE_TIMEOUT)$/);
  }
  assert.equal(origin.stats().rejected, 0, 'the origin never answered its own overload 503');
}

test('with a static limit equal to the origin workers, a burst of tracking plus approvals never overloads the origin and every approval succeeds', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 4, serviceTimeMs: 20, queueLength: 1000 }));
  // maxSharePercent 100: here the one test client stands for many clients.
  const gw = await gatewayFor(t, origin, { mode: 'static', staticLimit: 4 }, { fairness: { maxSharePercent: 100 } });
  const { tracking, approvals } = await burst(gw);
  assertBurstOutcome(origin, tracking, approvals);
  assert.ok(origin.stats().maxInFlight <= 4, `origin saw ${origin.stats().maxInFlight} requests at once`);
  assert.ok(
    tracking.some((r) => r.status === 200),
    'some tracking requests were served',
  );
  await waitFor(() => gateOf(gw).limiter.inFlight === 0 && gateOf(gw).queue.size === 0, {
    timeoutMs: 10_000,
    message: 'every slot is released',
  });
});

test('with the adaptive limiter, the same burst never overloads the origin, every approval succeeds and the limit stays within its bounds', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 4, serviceTimeMs: 20, queueLength: 1000 }));
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'adaptive', initialLimit: 20, minLimit: 4, maxLimit: 200 },
    { fairness: { maxSharePercent: 100 } },
  );
  const { tracking, approvals } = await burst(gw);
  assertBurstOutcome(origin, tracking, approvals);
  const limit = gateOf(gw).limiter.limit;
  assert.ok(limit >= 4 && limit <= 200, `limit ${limit}`);
  await waitFor(() => gateOf(gw).limiter.inFlight === 0 && gateOf(gw).queue.size === 0, {
    timeoutMs: 10_000,
    message: 'every slot is released',
  });
});

test('a guaranteed share lets a lower class through while a higher class is over capacity; strict order without it sheds that class', async (t) => {
  // Two origin slots of 100 ms; 100 approvals at once are 5 s of work, far past tracking's 3 s deadline
  // (which leaves room for a stalled machine to serve 5 tracking requests through a share).
  const origin = track(t, await startPostalOrigin({ workers: 2, serviceTimeMs: 100, queueLength: 1000 }));
  const run = async (reservePercent: Record<string, number>, underAttack = false) => {
    const defense = underAttack ? { level: { override: 'under_attack' }, challenge: { mode: 'off' } } : {};
    const gw = await gatewayFor(
      t,
      origin,
      { mode: 'static', staticLimit: 2 },
      {
        reservePercent,
        fairness: { maxSharePercent: 100 },
        queue: { timeoutMs: { critical: 20_000, cacheable: 3000 } },
      },
      false,
      defense,
    );
    // The level's once-a-second tick suspends the shares while under attack.
    if (underAttack)
      await waitFor(() => gateOf(gw).sharesSuspended, {
        timeoutMs: 10_000,
        message: 'shares suspended',
      });
    const approvalsP = Array.from({ length: 100 }, (_, i) => approve(gw.url, i));
    const gate = gateOf(gw);
    await waitFor(() => gate.queue.depth(classIndex('critical')) >= 50, {
      timeoutMs: 10_000,
      message: 'approvals queue up',
    });
    const tracking = await Promise.all(
      Array.from({ length: 5 }, (_, i) => send(gw.url, `/track/6A${String(i).padStart(11, '0')}`)),
    );
    const approvals = await Promise.all(approvalsP);
    assert.ok(
      approvals.every((a) => a.status === 200),
      'every approval is served either way',
    );
    // The next run shares the origin: this gateway goes now (the teardown only covers a failure).
    await gw.close();
    return tracking.map((r) => r.status);
  };
  assert.deepEqual(
    await run({}),
    [503, 503, 503, 503, 503],
    'strict order: tracking waits behind 5 s of approvals and is shed',
  );
  // 50 % of a limit of 2: one slot for cacheable while approvals wait; 5 × 100 ms fit in its 3 s.
  assert.deepEqual(
    await run({ cacheable: 50 }),
    [200, 200, 200, 200, 200],
    'with a share, tracking is served while approvals wait',
  );
  // Under attack the shares give way: a flood on the shared class cannot hold slots ahead of approvals.
  assert.deepEqual(await run({ cacheable: 50 }, true), [503, 503, 503, 503, 503], 'under attack, strict order again');
  assert.equal(origin.stats().rejected, 0);
  assert.ok(origin.stats().maxInFlight <= 2, 'the share comes out of the limit, never on top of it');
});

test('a request that waits past its class deadline is shed with 503, Retry-After and RMP_ERR_ADMISSION_QUEUE_TIMEOUT: JSON for API clients, HTML for browsers', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 800, queueLength: 1000 }));
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'static', staticLimit: 1 },
    { queue: { timeoutMs: { cacheable: 150 } } },
  );
  const first = send(gw.url, '/track/A1');
  await waitFor(() => gateOf(gw).limiter.inFlight === 1, {
    timeoutMs: 10_000,
    message: 'the first request holds the slot',
  });
  const started = performance.now();
  const [api, browser] = await Promise.all([
    send(gw.url, '/track/A2', { headers: { accept: 'application/json' } }),
    send(gw.url, '/track/A3', { headers: { accept: 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8' } }),
  ]);
  assert.ok(performance.now() - started >= 140, 'shed at the deadline, not before');
  assert.equal(api.status, 503);
  assert.match(api.headers['retry-after'] ?? '', /^[1-9][0-9]*$/);
  assert.match(api.headers['content-type'] ?? '', /^application\/json/);
  assert.equal(codeOf(api), 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT');
  assert.equal(browser.status, 503);
  assert.match(browser.headers['retry-after'] ?? '', /^[1-9][0-9]*$/);
  assert.match(browser.headers['content-type'] ?? '', /^text\/html/);
  assert.match(browser.body, /<html[\s\S]*RMP_ERR_ADMISSION_QUEUE_TIMEOUT/);
  assert.equal((await first).status, 200);
  assert.equal(origin.stats().byRoute['GET /track/:id'], 1, 'shed requests never reached the origin');
});

test('one /24 flooding a class holds no more than its share of that class queue while another client is still admitted', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 150, queueLength: 1000 }));
  // 20 places per class, 25 % each: a /24 may hold 5.
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'static', staticLimit: 1 },
    { queue: { maxEntries: 20, timeoutMs: { cacheable: 20_000 } }, fairness: { key: 'prefix', maxSharePercent: 25 } },
  );
  const gate = gateOf(gw);
  const cacheable = classIndex('cacheable');
  let mostHeldByFlooder = 0;
  const watch = setInterval(
    () => (mostHeldByFlooder = Math.max(mostHeldByFlooder, gate.queue.heldBy(cacheable, '127.0.0'))),
    2,
  );
  cleanup(t, () => clearInterval(watch));
  const flood = Array.from({ length: 30 }, (_, i) => send(gw.url, `/track/F${i}`, { localAddress: '127.0.0.1' }));
  await waitFor(() => gate.queue.heldBy(cacheable, '127.0.0') === 5, {
    timeoutMs: 10_000,
    message: 'the flooder fills its share',
  });
  const other = await Promise.all([
    send(gw.url, '/track/B1', { localAddress: '127.0.1.1' }),
    send(gw.url, '/track/B2', { localAddress: '127.0.1.1' }),
  ]);
  const flooded = await Promise.all(flood);
  assert.deepEqual(
    other.map((r) => r.status),
    [200, 200],
    'the other client was admitted',
  );
  const shed = flooded.filter((r) => r.status === 503);
  assert.ok(shed.every((r) => codeOf(r) === 'RMP_ERR_ADMISSION_SHED'));
  // 1 in flight + 5 queued at a time; a slow machine may free a place or two while the flood arrives.
  assert.ok(shed.length >= 18, `flooder shed ${shed.length} of 30`);
  assert.ok(mostHeldByFlooder <= 5, `the flooder held ${mostHeldByFlooder} queue places`);
  assert.equal(gate.queue.trackedKeys(), 0, 'per-client counts are forgotten once nothing is queued');
});

test('a client that disconnects while queued frees its place, and its request never reaches the origin', async (t) => {
  // D1 holds the one slot for 2 s: long enough that a stalled machine cannot free it before D3 arrives.
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 2000, queueLength: 1000 }));
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'static', staticLimit: 1 },
    { queue: { maxEntries: 1, timeoutMs: { cacheable: 10_000 } } },
  );
  const gate = gateOf(gw);
  const first = send(gw.url, '/track/D1');
  await waitFor(() => gate.limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the first request holds the slot' });
  let leaving: http.ClientRequest | null = null;
  const gone = send(gw.url, '/track/D2', { onRequest: (req) => (leaving = req) }).catch((err: Error) => err);
  await waitFor(() => gate.queue.size === 1, { timeoutMs: 10_000, message: 'the second request is queued' });
  const full = await send(gw.url, '/track/D3');
  assert.equal(full.status, 503, 'the only queue place is taken');
  assert.equal(codeOf(full), 'RMP_ERR_ADMISSION_SHED');
  leaving!.destroy();
  await gone;
  await waitFor(() => gate.queue.size === 0, { timeoutMs: 10_000, message: 'the abandoned place is freed' });
  const next = await send(gw.url, '/track/D4');
  assert.equal(next.status, 200, 'the freed place was taken and served');
  assert.equal((await first).status, 200);
  assert.equal(origin.stats().byRoute['GET /track/:id'], 2, 'only D1 and D4 reached the origin');
  await waitFor(() => gate.limiter.inFlight === 0, { timeoutMs: 10_000, message: 'every slot is released' });
});

test('metrics expose admitted, queued and shed counts per class, the wait histogram, queue depth and the limit per upstream; the log names the reason', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 300, queueLength: 1000 }));
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'static', staticLimit: 1 },
    { queue: { maxEntries: 2, timeoutMs: { cacheable: 10_000 } }, fairness: { maxSharePercent: 100 } },
    true,
  );
  const gate = gateOf(gw);
  const approval = approve(gw.url, 1);
  await waitFor(() => gate.limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the approval holds the slot' });
  const tracking = await Promise.all(Array.from({ length: 5 }, (_, i) => send(gw.url, `/track/M${i}`)));
  assert.equal((await approval).status, 200);
  const served = tracking.filter((r) => r.status === 200).length;
  const shed = tracking.filter((r) => r.status === 503).length;
  assert.equal(served + shed, 5);
  assert.ok(shed >= 1 && served >= 1, `served ${served}, shed ${shed}`);
  await waitFor(() => gate.limiter.inFlight === 0, { timeoutMs: 10_000, message: 'every slot is released' });
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const value = (line: string): number => {
    const m = new RegExp(`^${line.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
    assert.ok(m, `metrics have ${line}`);
    return Number(m[1]);
  };
  assert.equal(value('rempart_admission_admitted_total{upstream="origin",class="critical"}'), 1);
  assert.equal(value('rempart_admission_admitted_total{upstream="origin",class="cacheable"}'), served);
  assert.ok(value('rempart_admission_queued_total{upstream="origin",class="cacheable"}') >= 1);
  assert.equal(value('rempart_admission_shed_total{upstream="origin",class="cacheable",reason="queue-full"}'), shed);
  assert.equal(value('rempart_admission_wait_seconds_count{class="cacheable"}'), served);
  assert.equal(value('rempart_admission_limit{upstream="origin"}'), 1);
  assert.equal(value('rempart_admission_in_flight{upstream="origin"}'), 0);
  assert.equal(value('rempart_admission_queue_depth{class="cacheable"}'), 0);
  await waitFor(() => gw.logs.filter((l) => l.reason === 'RMP_ERR_ADMISSION_SHED').length === shed, {
    timeoutMs: 10_000,
    message: 'the shed requests are logged',
  });
});

test('a slow POST trickling its body holds no admission slot: with a limit of one, other requests pass meanwhile', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 20, queueLength: 1000 }));
  const gw = await gatewayFor(t, origin, { mode: 'static', staticLimit: 1 });
  const gate = gateOf(gw);
  const body = JSON.stringify({ paymentId: 'slow-1' });
  const socket = net.connect({ port: gw.port, host: '127.0.0.1' });
  cleanup(t, () => socket.destroy());
  let reply = '';
  socket.on('data', (c: Buffer) => (reply += c.toString('latin1')));
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.write(
    `POST /payments/approve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`,
  );
  await sleep(50);
  for (let i = 0; i < 3; i++) {
    assert.equal(gate.limiter.inFlight, 0, 'the trickling POST holds no slot');
    assert.equal((await send(gw.url, `/track/S${i}`)).status, 200);
  }
  socket.write(body.slice(5));
  await waitFor(() => /\r\n\r\n\{.*\}$/s.test(reply), { timeoutMs: 10_000, message: 'the approval is answered' });
  assert.match(reply, /^HTTP\/1\.1 200 /);
  assert.match(reply, /"approved":true/);
});

test('a request that waited in the queue while the level rose to under_attack is judged at the level now: an unknown client is challenged, the origin never sees it', async (t) => {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 600, queueLength: 1000 }));
  const gw = await gatewayFor(
    t,
    origin,
    { mode: 'static', staticLimit: 1 },
    { queue: { timeoutMs: { cacheable: 5000 } } },
    false,
    { level: { override: 'calm' } },
  );
  const first = send(gw.url, '/track/B1');
  await waitFor(() => gateOf(gw).limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the first holds the slot' });
  // Calm: nothing is asked of an unknown client, so it waits for the slot.
  const second = send(gw.url, '/track/B2', { headers: { accept: 'application/json' } });
  await waitFor(() => gateOf(gw).queue.size === 1, { timeoutMs: 10_000, message: 'the second waits' });
  const monitor = gw.gateway.defense.level as unknown as { setOverride(l: string, r: string, w: string): void };
  monitor.setOverride('under_attack', 'test', 'test');
  assert.equal((await first).status, 200, 'the one already at the origin finishes');
  const r = await second;
  assert.equal(r.status, 403);
  assert.equal(codeOf(r), 'RMP_ERR_CHALLENGE');
  assert.ok(r.headers['rempart-challenge'], 'a challenge to solve');
  assert.equal(origin.stats().byRoute['GET /track/:id'], 1, 'the queued request never reached the origin');
  await waitFor(() => gateOf(gw).limiter.inFlight === 0, { timeoutMs: 10_000, message: 'its slot was given back' });
});
