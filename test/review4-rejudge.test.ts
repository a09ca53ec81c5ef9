// Review of s24/solvers7's re-judging of queued requests (admission settle / LevelRecheck): a request that
// waited for its slot while the level rose is looked at by the challenge guard again. What must hold: a
// client the guard knows is never challenged by it, a client that leaves while queued leaves no slot
// behind, and a WebSocket handshake re-judged gets a plain answer with its slot given back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { challengeFrom, solve } from '../src/client/index.ts';
import { startPostalOrigin } from '../examples/postal/origin.ts';
import { startGateway, track, waitFor, type TestGateway } from './helpers.ts';
import type { AdmissionGate } from '../src/upstream/gate.ts';
import type { RequestContext } from '../src/pipeline/context.ts';

const gateOf = (gw: TestGateway): AdmissionGate<RequestContext> =>
  gw.gateway.runtime().upstreams.get('origin')!.admission;

function setLevel(gw: TestGateway, level: string): void {
  (gw.gateway.defense.level as unknown as { setOverride(l: string, r: string, w: string): void }).setOverride(
    level,
    'test',
    'test',
  );
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
  });
}

async function setup(t: Parameters<typeof track>[0]) {
  const origin = track(t, await startPostalOrigin({ workers: 1, serviceTimeMs: 600, queueLength: 1000 }));
  const gw = await startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url, admission: { mode: 'static', staticLimit: 1 } }],
    routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'public', websocket: true }],
    admission: { queue: { timeoutMs: { public: 8000 } } },
    limits: { maxConnectionsPerAddress: 10000, maxConnections: 20000 },
    defense: {
      rateLimit: { mode: 'off' },
      level: { override: 'calm' },
      challenge: { difficultyBits: { elevated: 4, underAttack: 4 } },
    },
  });
  return { origin, gw };
}

test('a client holding a clearance, queued at calm while the level rises, is forwarded, not challenged', async (t) => {
  const { gw } = await setup(t);
  // A clearance solved during an earlier attack.
  setLevel(gw, 'under_attack');
  const h = { accept: 'application/json', 'user-agent': 'Mozilla/5.0 Known' };
  const first = await fetch(`${gw.url}/track/K0`, { headers: h });
  const c = challengeFrom(first.status, Object.fromEntries(first.headers), await first.json());
  assert.ok(c !== null);
  const solved = await fetch(`${gw.url}/track/K0`, { headers: { ...h, 'rempart-solution': await solve(c) } });
  assert.equal(solved.status, 200);
  await solved.text();
  const clearance = solved.headers.get('rempart-clearance')!;
  setLevel(gw, 'calm');
  await waitFor(() => gateOf(gw).limiter.inFlight === 0, { timeoutMs: 10_000 });
  const holder = get(`${gw.url}/track/H1`);
  await waitFor(() => gateOf(gw).limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the first holds the slot' });
  const known = get(`${gw.url}/track/K1`, { ...h, 'rempart-clearance': clearance });
  const unknown = get(`${gw.url}/track/U1`, { accept: 'application/json' });
  await waitFor(() => gateOf(gw).queue.size === 2, { timeoutMs: 10_000, message: 'both wait' });
  setLevel(gw, 'under_attack');
  assert.equal((await holder).status, 200);
  assert.equal((await known).status, 200, 'known: forwarded');
  assert.equal((await unknown).status, 403, 'unknown: challenged');
  await waitFor(() => gateOf(gw).limiter.inFlight === 0 && gateOf(gw).queue.size === 0, { timeoutMs: 10_000 });
});

test('a WebSocket handshake queued at calm while the level rises gets a challenge (403), and its slot back', async (t) => {
  const { origin, gw } = await setup(t);
  const holder = get(`${gw.url}/track/H2`);
  await waitFor(() => gateOf(gw).limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the first holds the slot' });
  const { port } = new URL(gw.url);
  const socket = net.connect(Number(port), '127.0.0.1');
  t.after(() => socket.destroy());
  let reply = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (reply += d));
  socket.write(
    'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAccept: application/json\r\n\r\n',
  );
  await waitFor(() => gateOf(gw).queue.size === 1, { timeoutMs: 10_000, message: 'the handshake waits' });
  setLevel(gw, 'under_attack');
  assert.equal((await holder).status, 200);
  await waitFor(() => reply.includes('\r\n\r\n'), { timeoutMs: 10_000, message: 'an answer on the socket' });
  assert.match(reply, /^HTTP\/1\.1 403 /);
  await waitFor(() => gateOf(gw).limiter.inFlight === 0 && gateOf(gw).queue.size === 0, { timeoutMs: 10_000 });
  assert.equal(origin.stats().byRoute['GET /ws'] ?? 0, 0);
});

test('a client that leaves while queued, then the level rises: no slot left behind, the next request is served', async (t) => {
  const { gw } = await setup(t);
  const holder = get(`${gw.url}/track/H3`);
  await waitFor(() => gateOf(gw).limiter.inFlight === 1, { timeoutMs: 10_000, message: 'the first holds the slot' });
  const req = http.get(`${gw.url}/track/L1`, { agent: false, headers: { accept: 'application/json' } });
  req.on('error', () => {});
  await waitFor(() => gateOf(gw).queue.size === 1, { timeoutMs: 10_000, message: 'it waits' });
  req.destroy();
  await waitFor(() => gateOf(gw).queue.size === 0, { timeoutMs: 10_000, message: 'its place freed' });
  setLevel(gw, 'under_attack');
  assert.equal((await holder).status, 200);
  await waitFor(() => gateOf(gw).limiter.inFlight === 0, { timeoutMs: 10_000, message: 'no slot held' });
});
