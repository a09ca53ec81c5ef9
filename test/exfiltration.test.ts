// The exfiltration guard: a session pulling dozens of documents from a sensitive route is stopped at its
// quota and reported once (log line, metric, signed webhook), others are not touched, and the guard's
// memory stays bounded however many identities come.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type http from 'node:http';
import { createManualClock } from '../src/core/clock.ts';
import { validateConfig } from '../src/config/load.ts';
import { SlidingCount, UsageTable, HOUR_MS } from '../src/phases/exfiltration/usage.ts';
import { identityHash } from '../src/phases/exfiltration/identity.ts';
import {
  cleanup,
  sleep,
  startGateway,
  startUpstream,
  tempDir,
  type Teardown,
  type TestGateway,
  waitFor,
} from './helpers.ts';
import { startReceiver } from './alert-receiver.ts';

const DOC_BYTES = 1000;

/** The vault: a distinct document per id for a request with a `sid` cookie, 401 without one. */
function vault(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (!/(?:^|;\s*)sid=/.test(req.headers.cookie ?? '')) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"login_required"}');
    return;
  }
  const id = req.url!.split('/').pop()!;
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private, no-store' });
  res.end(req.method === 'HEAD' ? undefined : `document ${id} `.padEnd(DOC_BYTES, '.'));
}

async function setup(
  t: Teardown,
  sensitive: Record<string, unknown>,
  exfiltration: Record<string, unknown> = {},
  extra: { clock?: ReturnType<typeof createManualClock>; webhook?: Record<string, unknown> } = {},
) {
  const up = await startUpstream(t, vault);
  const rx = await startReceiver(t);
  const dir = tempDir(t, 'rempart-exfil-');
  await writeFile(join(dir, 'url'), `${rx.url}/hooks/T0KEN\n`);
  await writeFile(join(dir, 'secret'), 'signing-secret\n');
  const gw = await startGateway(
    t,
    up.url,
    {
      routes: [
        { name: 'vault', path: '/vault/documents/*', upstream: 'origin', class: 'authenticated', sensitive },
        { name: 'default', path: '/*', upstream: 'origin' },
      ],
      defense: { decisionHeader: true, exfiltration },
      alerts: {
        webhook: { urlFile: join(dir, 'url'), secretFile: join(dir, 'secret'), minIntervalMs: 0, ...extra.webhook },
      },
    },
    extra.clock ? { clock: extra.clock } : {},
  );
  return { gw, up, rx };
}

function get(gw: TestGateway, path: string, sid?: string, method = 'GET'): Promise<Response> {
  return fetch(`${gw.url}${path}`, { method, headers: sid === undefined ? {} : { cookie: `lang=fr; sid=${sid}` } });
}

async function pull(gw: TestGateway, sid: string | undefined, from: number, n: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = from; i < from + n; i++) {
    const res = await get(gw, `/vault/documents/${i}`, sid);
    await res.arrayBuffer();
    statuses.push(res.status);
  }
  return statuses;
}

async function alertsMetric(gw: TestGateway, route: string): Promise<number> {
  return (await gw.gateway.metrics.exfiltrationAlerts.get()).values.find((v) => v.labels.route === route)?.value ?? 0;
}

test('a session pulling dozens of documents is stopped at its quota (429, Retry-After), reported once with a signed webhook; other sessions are untouched', async (t) => {
  const site = await setup(t, { documentsPerHour: 10 });
  const scraper = randomBytes(16).toString('hex');
  const alice = randomBytes(16).toString('hex');
  const statuses = await pull(site.gw, scraper, 1, 40);
  assert.deepEqual(statuses.slice(0, 10), Array(10).fill(200), 'the quota is served');
  assert.deepEqual(statuses.slice(10), Array(30).fill(429), 'everything past it is refused');
  const refused = await get(site.gw, '/vault/documents/41', scraper);
  assert.equal(refused.status, 429);
  const body = (await refused.json()) as { error: { code: string } };
  assert.equal(body.error.code, 'RMP_ERR_EXFILTRATION');
  const retryAfter = Number(refused.headers.get('retry-after'));
  assert.ok(
    retryAfter > 3000 && retryAfter <= 2 * 3600,
    `Retry-After ${retryAfter}s: until the sliding hour lets one more through`,
  );
  assert.match(
    refused.headers.get('rempart-decision') ?? '',
    /^RMP_ERR_EXFILTRATION; rule=exfiltration:vault:documents$/,
  );
  assert.equal(
    site.up.requests.filter((r) => r.headers.cookie?.includes(scraper)).length,
    10,
    'refused requests never reach the origin',
  );

  assert.deepEqual(await pull(site.gw, alice, 1, 5), Array(5).fill(200), 'another session is not affected');
  assert.equal((await get(site.gw, '/other', scraper)).status, 200, 'nor the same session on another route');

  await waitFor(() => site.rx.received.length >= 1);
  await sleep(200);
  assert.equal(site.rx.received.length, 1, 'one alert for the window, not one per refused request');
  const got = site.rx.received[0]!;
  assert.equal(got.url, '/hooks/T0KEN');
  assert.equal(
    got.headers['rempart-signature'],
    `sha256=${createHmac('sha256', 'signing-secret').update(got.body).digest('hex')}`,
  );
  assert.equal(got.payload.kind, 'exfiltration');
  assert.equal(got.payload.fields.route, 'vault');
  assert.equal(got.payload.fields.identity, `session:${identityHash(scraper)}`);
  assert.equal(got.payload.fields.quota, 'documentsPerHour');
  assert.equal(got.payload.fields.limit, 10);
  assert.equal(got.payload.fields.documentsLastHour, 10);
  assert.equal(got.payload.fields.action, 'blocked');
  assert.equal(await alertsMetric(site.gw, 'vault'), 1);

  const text = JSON.stringify(site.gw.logs);
  assert.ok(!text.includes(scraper) && !text.includes(alice), 'no session id in any log line');
  assert.ok(!text.includes('T0KEN') && !text.includes('signing-secret'), 'nor the webhook URL or secret');
  const line = site.gw.logs.find((l) => l.alert === 'exfiltration');
  assert.equal(line?.identity, `session:${identityHash(scraper)}`, 'the log names the hashed session');
  assert.ok(
    site.gw.logs.some((l) => l.msg === 'request' && l.reason === 'RMP_ERR_EXFILTRATION'),
    'refusals are in the request log',
  );
});

test('parallel requests reserve their documents: a burst cannot overshoot the quota', async (t) => {
  const site = await setup(t, { documentsPerHour: 10 });
  const sid = randomBytes(16).toString('hex');
  const statuses = await Promise.all(
    Array.from({ length: 30 }, async (_, i) => {
      const res = await get(site.gw, `/vault/documents/${i}`, sid);
      await res.arrayBuffer();
      return res.status;
    }),
  );
  assert.equal(statuses.filter((s) => s === 200).length, 10);
  assert.equal(statuses.filter((s) => s === 429).length, 20);
});

test('the quota slides: past Retry-After one more document is let through, and a new alert comes only after the cooldown', async (t) => {
  const clock = createManualClock();
  const site = await setup(t, { documentsPerHour: 10 }, { alertCooldownMs: HOUR_MS }, { clock });
  const sid = randomBytes(16).toString('hex');
  assert.deepEqual(await pull(site.gw, sid, 1, 11), [...Array(10).fill(200), 429]);
  const res = await get(site.gw, '/vault/documents/12', sid);
  assert.equal(res.status, 429);
  // 10 documents in the window starting at 0: the estimate falls to 9 after 3600 s + 10% of an hour.
  assert.equal(res.headers.get('retry-after'), '3960');
  clock.advance(3959_000);
  assert.equal((await get(site.gw, '/vault/documents/13', sid)).status, 429, 'not yet');
  clock.advance(1_000);
  assert.deepEqual(await pull(site.gw, sid, 14, 2), [200, 429], 'one more, then refused again');
  await waitFor(() => site.rx.received.length >= 2);
  assert.equal(site.rx.received.length, 2, 'the second hour raised its own alert');
  assert.equal(await alertsMetric(site.gw, 'vault'), 2);
});

test('bytes per day: the response that crosses the quota is served, the next request refused', async (t) => {
  const site = await setup(t, { bytesPerDay: 2500 });
  const sid = randomBytes(16).toString('hex');
  assert.deepEqual(
    await pull(site.gw, sid, 1, 5),
    [200, 200, 200, 429, 429],
    '0, 1000 and 2000 bytes taken are under 2500; 3000 is past it',
  );
  const res = await get(site.gw, '/vault/documents/9', sid);
  assert.equal(res.status, 429);
  assert.ok(Number(res.headers.get('retry-after')) > 3600, 'a day-long window');
  assert.match(res.headers.get('rempart-decision') ?? '', /rule=exfiltration:vault:bytes/);
  await waitFor(() => site.rx.received.length >= 1);
  assert.equal(site.rx.received[0]!.payload.fields.quota, 'bytesPerDay');
  assert.equal(site.rx.received[0]!.payload.fields.bytesLastDay, 3000);
  assert.deepEqual(
    await pull(site.gw, randomBytes(16).toString('hex'), 1, 2),
    [200, 200],
    'another session is not affected',
  );
});

test('HEAD requests and refusals by the origin are not documents', async (t) => {
  const site = await setup(t, { documentsPerHour: 3 });
  const sid = randomBytes(16).toString('hex');
  for (let i = 0; i < 10; i++) assert.equal((await get(site.gw, `/vault/documents/${i}`, sid, 'HEAD')).status, 200);
  assert.deepEqual(
    await pull(site.gw, undefined, 1, 10),
    Array(10).fill(401),
    'without a session the origin answers 401: not counted',
  );
  assert.deepEqual(await pull(site.gw, sid, 1, 4), [200, 200, 200, 429]);
});

test('observe mode raises the alert and lets the session through', async (t) => {
  const site = await setup(t, { documentsPerHour: 5 }, { mode: 'observe' });
  const sid = randomBytes(16).toString('hex');
  assert.deepEqual(await pull(site.gw, sid, 1, 12), Array(12).fill(200));
  const res = await get(site.gw, '/vault/documents/20', sid);
  assert.equal(res.status, 200);
  assert.match(
    res.headers.get('rempart-decision') ?? '',
    /^observed=RMP_ERR_EXFILTRATION; rule=exfiltration:vault:documents$/,
  );
  await waitFor(() => site.rx.received.length >= 1);
  await sleep(100);
  assert.equal(site.rx.received.length, 1);
  assert.equal(site.rx.received[0]!.payload.fields.action, 'observed');
  assert.ok(site.gw.logs.some((l) => l.msg === 'request' && l.observed === 'RMP_ERR_EXFILTRATION'));
});

test('identity: address counts every session of one address together; apiKey counts by the hashed key', async (t) => {
  const site = await setup(t, { documentsPerHour: 4, identity: 'address' });
  const a = await pull(site.gw, randomBytes(16).toString('hex'), 1, 2);
  const b = await pull(site.gw, randomBytes(16).toString('hex'), 1, 3);
  assert.deepEqual([...a, ...b], [200, 200, 200, 200, 429]);
  const k = await setup(t, { documentsPerHour: 2, identity: 'apiKey', apiKeyHeader: 'X-Vault-Key' });
  const key = (v: string) => ({ headers: { 'x-vault-key': v, cookie: 'sid=1' } });
  const s: number[] = [];
  for (let i = 0; i < 3; i++) s.push((await fetch(`${k.gw.url}/vault/documents/${i}`, key('key-one'))).status);
  s.push((await fetch(`${k.gw.url}/vault/documents/9`, key('key-two'))).status);
  assert.deepEqual(s, [200, 200, 429, 200]);
  await waitFor(() => k.rx.received.length >= 1);
  assert.equal(k.rx.received[0]!.payload.fields.identity, `apiKey:${identityHash('key-one')}`);
  assert.ok(!JSON.stringify(k.gw.logs).includes('key-one'));
});

test('a flood of fresh identities cannot reset an exfiltrating session, and the table stays within maxIdentities', async (t) => {
  const site = await setup(t, { documentsPerHour: 5 }, { maxIdentities: 16 });
  const scraper = randomBytes(16).toString('hex');
  assert.deepEqual(await pull(site.gw, scraper, 1, 6), [200, 200, 200, 200, 200, 429]);
  // 300 one-document sessions: each creates an entry in a 16-entry table.
  for (let i = 0; i < 300; i += 30)
    await Promise.all(Array.from({ length: 30 }, () => pull(site.gw, randomBytes(16).toString('hex'), 1, 1)));
  assert.deepEqual(await pull(site.gw, scraper, 7, 2), [429, 429], 'still refused: its count survived the flood');
});

test('the identity table: bounded, idle and light identities evicted first, one at its quota kept', () => {
  const limits = { documentsPerHour: 30, bytesPerDay: 0 };
  const table = new UsageTable(100);
  const heavy = table.getOrCreate('vault\0session:heavy', 0, limits);
  heavy.documents.add(0, 30);
  for (let i = 0; i < 100_000; i++) {
    const u = table.getOrCreate(`vault\0session:${i}`, i, limits);
    u.documents.add(i, 1 + (i % 3));
    assert.ok(table.size <= 100);
  }
  assert.equal(table.size, 100);
  assert.equal(table.get('vault\0session:heavy'), heavy, 'the identity at its quota is still tracked');
  assert.equal(heavy.documents.estimate(100_000), 30);
  assert.ok(table.evictions >= 99_900);
});

test('the sliding count weighs the previous window and says when it falls back under a threshold', () => {
  const c = new SlidingCount(1000, 0);
  c.add(0, 10);
  assert.equal(c.estimate(999), 10);
  assert.equal(c.estimate(1000), 10, 'all of the previous window still overlaps');
  assert.equal(c.estimate(1500), 5);
  assert.equal(c.msUntilAtMost(1500, 4), 100);
  assert.equal(c.msUntilAtMost(1500, 5), 0);
  c.add(1500, 2);
  assert.equal(c.estimate(1500), 7);
  assert.equal(c.msUntilAtMost(1500, 4), 300, 'at 1800: 10·0.2 + 2 = 4');
  assert.equal(c.msUntilAtMost(1500, 1), 500 + 500, 'next window: 2·(1 − 0.5) = 1');
  assert.equal(c.estimate(5000), 0, 'old windows forgotten');
});

test('bad exfiltration settings stop start-up with a clear error', () => {
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:9' }],
  };
  const routes = (sensitive: unknown) => [{ name: 'vault', path: '/vault/*', upstream: 'o', sensitive }];
  assert.throws(
    () => validateConfig({ ...base, routes: routes({}) }),
    /routes\[0\]\.sensitive: a sensitive route needs a quota/,
  );
  assert.throws(
    () => validateConfig({ ...base, routes: routes({ documentsPerHour: 0 }) }),
    /routes\[0\]\.sensitive\.documentsPerHour/,
  );
  assert.throws(
    () => validateConfig({ ...base, routes: routes({ documentsPerHour: 5, identity: 'cookie' }) }),
    /routes\[0\]\.sensitive\.identity: must be one of "session", "address", "prefix", "apiKey"/,
  );
  assert.throws(
    () => validateConfig({ ...base, routes: routes({ documentsPerHour: 5, sessionCookie: 'a b' }) }),
    /routes\[0\]\.sensitive\.sessionCookie/,
  );
  assert.throws(
    () => validateConfig({ ...base, routes: routes({ documentPerHour: 5 }) }),
    /documentPerHour: unknown key/,
  );
  assert.throws(
    () =>
      validateConfig({
        ...base,
        routes: routes({ bytesPerDay: 1 }),
        defense: { exfiltration: { maxIdentities: 1, mode: 'block' } },
      }),
    (err: Error) => /maxIdentities/.test(err.message) && /defense\.exfiltration\.mode/.test(err.message),
  );
});

test('a dead webhook never slows the request path', async (t) => {
  const rx = await startReceiver(t, () => 0); // accepts, never answers
  const up = await startUpstream(t, vault);
  process.env.REMPART_ALERT_WEBHOOK_URL = rx.url;
  cleanup(t, () => {
    delete process.env.REMPART_ALERT_WEBHOOK_URL;
  });
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'vault', path: '/vault/*', upstream: 'origin', sensitive: { documentsPerHour: 1 } }],
    alerts: { webhook: { minIntervalMs: 0, timeoutMs: 30000 } },
  });
  // Every session is past its quota at its second request, so every round raises an alert.
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) await pull(gw, randomBytes(16).toString('hex'), 1, 2);
  const ms = performance.now() - t0;
  // The webhook hangs for 30 s: waiting on it even once would show.
  assert.ok(ms < 10_000, `40 requests and 20 alerts in ${Math.round(ms)} ms with a hanging webhook`);
  assert.equal(rx.received.length, 1, 'one POST in flight, the rest coalesced');
  const t1 = Date.now();
  await gw.close();
  assert.ok(Date.now() - t1 < 3000, 'stop does not wait for the hanging webhook beyond its bound');
});

test('the postal demo marks the vault documents route sensitive, and the config is valid', async () => {
  const { loadConfigFile } = await import('../src/config/load.ts');
  const config = await loadConfigFile(new URL('../examples/postal/rempart.yaml', import.meta.url).pathname);
  const vaultDocs = config.routes.find((r) => r.sensitive !== undefined);
  assert.ok(vaultDocs, 'a sensitive route');
  assert.equal(vaultDocs.path, '/vault/documents/*');
  assert.ok((vaultDocs.sensitive?.documentsPerHour ?? 0) > 0);
});
