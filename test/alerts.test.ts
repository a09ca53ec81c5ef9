// Alerts: a log line and a count for every alert, and delivery to a real loopback webhook that is
// asynchronous, signed, coalesced per kind, rate-limited, bounded, retried, and never on the request path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Alerts, loadWebhookTarget, signBody } from '../src/control/alerts.ts';
import { AlertsSchema, type AlertsConfig } from '../src/control/alerts-schema.ts';
import { Value } from '@sinclair/typebox/value';
import { createLogger } from '../src/core/log.ts';
import { createMetrics } from '../src/core/metrics.ts';
import { cleanup, memoryLog, selfSignedCert, sleep, startGateway, startUpstream, tempDir, waitFor } from './helpers.ts';
import { startReceiver } from './alert-receiver.ts';

function settings(webhook: Partial<AlertsConfig['webhook']> = {}, node?: string): AlertsConfig {
  return Value.Default(AlertsSchema, { webhook: { ...webhook }, ...(node ? { node } : {}) }) as AlertsConfig;
}

function makeAlerts(cfg: AlertsConfig) {
  const { lines, stream } = memoryLog();
  const metrics = createMetrics();
  const alerts = new Alerts({ log: createLogger('info', stream), metrics, config: () => cfg });
  const count = async (kind: string, result: string) =>
    (await metrics.alerts.get()).values.find((v) => v.labels.kind === kind && v.labels.result === result)?.value ?? 0;
  return { alerts, lines, count };
}

test('an alert is a log line, a count, and one signed POST carrying kind, message, fields, node and time', async (t) => {
  const rx = await startReceiver(t);
  const { alerts, lines, count } = makeAlerts(settings({}, 'edge-1'));
  cleanup(t, () => alerts.stop(100));
  alerts.setWebhook({ url: `${rx.url}/hook`, secret: 's3cret', host: new URL(rx.url).host });
  alerts.raise('exfiltration', 'identity past its quota', { route: 'vault', identity: 'session:abcd' });
  await waitFor(() => rx.received.length === 1);
  const got = rx.received[0]!;
  assert.equal(got.url, '/hook');
  assert.equal(got.headers['content-type'], 'application/json');
  const expected = `sha256=${createHmac('sha256', 's3cret').update(got.body).digest('hex')}`;
  assert.equal(got.headers['rempart-signature'], expected, 'HMAC-SHA256 of the raw body');
  assert.equal(signBody('s3cret', got.body), expected);
  assert.equal(got.payload.kind, 'exfiltration');
  assert.equal(got.payload.message, 'identity past its quota');
  assert.deepEqual(got.payload.fields, { route: 'vault', identity: 'session:abcd' });
  assert.equal(got.payload.node, 'edge-1');
  assert.equal(got.payload.count, 1);
  assert.ok(!Number.isNaN(Date.parse(got.payload.time)));
  const line = lines.find((l) => l.alert === 'exfiltration');
  assert.ok(line, 'the alert is logged');
  assert.equal(line.msg, 'identity past its quota');
  assert.equal(line.level, 'warn');
  await waitFor(() => alerts.queued === 0);
  await waitFor(async () => (await count('exfiltration', 'delivered')) === 1);
  assert.equal(await count('exfiltration', 'logged'), 1);
});

test('a POST answered 500 is retried with backoff until it is delivered', async (t) => {
  const rx = await startReceiver(t, (n) => (n < 2 ? 500 : 200));
  const { alerts, count } = makeAlerts(settings({ retries: 3, retryBaseMs: 20 }));
  cleanup(t, () => alerts.stop(100));
  alerts.setWebhook({ url: rx.url, secret: '', host: new URL(rx.url).host });
  alerts.raise('failover', 'upstream failing', { upstream: 'postal' });
  await waitFor(() => rx.received.length === 3);
  assert.equal(new Set(rx.received.map((r) => r.body)).size, 1, 'the same payload each time');
  assert.equal(rx.received[0]!.headers['rempart-signature'], undefined, 'no secret, no signature');
  await waitFor(() => alerts.queued === 0);
  await waitFor(async () => (await count('failover', 'delivered')) === 1);
  assert.equal(await count('failover', 'failed'), 0);
});

test('a webhook that keeps failing is given up after `retries`, counted failed, and its URL never logged', async (t) => {
  const rx = await startReceiver(t, () => 503);
  const { alerts, lines, count } = makeAlerts(settings({ retries: 2, retryBaseMs: 10 }));
  cleanup(t, () => alerts.stop(100));
  const target = await loadWebhookTarget(
    { REMPART_ALERT_WEBHOOK_URL: `${rx.url}/hooks/T0KEN-d0-not-log?key=ALSO-SECRET` },
    settings().webhook,
  );
  alerts.setWebhook(target);
  alerts.raise('attack_level', 'under attack', {});
  await waitFor(() => rx.received.length === 3);
  await waitFor(async () => (await count('attack_level', 'failed')) === 1);
  assert.equal(rx.received.length, 3, 'one attempt and two retries');
  const text = JSON.stringify(lines);
  assert.ok(!text.includes('T0KEN') && !text.includes('ALSO-SECRET'), 'the URL path and query never reach a log line');
  assert.ok(
    lines.some((l) => l.webhookHost === new URL(rx.url).host && /giving up/.test(String(l.msg))),
    'only the host is named',
  );
});

test('a burst of alerts of one kind is coalesced: one POST at once, then one per interval carrying the count', async (t) => {
  const rx = await startReceiver(t);
  const { alerts, count } = makeAlerts(settings({ minIntervalMs: 300 }));
  cleanup(t, () => alerts.stop(100));
  alerts.setWebhook({ url: rx.url, secret: '', host: new URL(rx.url).host });
  for (let i = 0; i < 50; i++) alerts.raise('exfiltration', `alert ${i}`, { i });
  alerts.raise('failover', 'other kind', {});
  await waitFor(() => rx.received.length === 3, { timeoutMs: 2000 });
  await sleep(400);
  assert.equal(rx.received.length, 3, 'exfiltration twice (first, then the rest), failover once');
  const ex = rx.received.filter((r) => r.payload.kind === 'exfiltration').map((r) => r.payload);
  assert.equal(ex[0]!.count, 1);
  assert.equal(ex[0]!.message, 'alert 0');
  assert.equal(ex[1]!.count, 49, 'the 49 others in one POST');
  assert.equal(ex[1]!.message, 'alert 1');
  assert.equal(ex[1]!.others.length, 9, 'a few samples, bounded');
  assert.equal(await count('exfiltration', 'logged'), 50, 'every alert is still logged and counted');
  assert.equal(await count('exfiltration', 'delivered'), 50);
});

test('the queue is bounded: past maxQueue the oldest waiting alert is dropped and counted', async (t) => {
  const rx = await startReceiver(t, () => 0); // never answers
  const { alerts, count } = makeAlerts(settings({ maxQueue: 2, timeoutMs: 5000 }));
  cleanup(t, () => alerts.stop(100));
  alerts.setWebhook({ url: rx.url, secret: '', host: new URL(rx.url).host });
  for (const kind of ['a', 'b', 'c', 'd', 'e']) alerts.raise(kind, kind, {});
  await waitFor(() => rx.received.length === 1);
  assert.equal(alerts.queued, 2, 'a in flight, d and e waiting');
  assert.equal(await count('b', 'dropped'), 1);
  assert.equal(await count('c', 'dropped'), 1);
  assert.equal(await count('d', 'dropped'), 0);
  const t0 = Date.now();
  await alerts.stop(100);
  assert.ok(Date.now() - t0 < 3000, 'stop waits a bounded time for a webhook that hangs past its 5 s timeout');
  assert.equal(await count('a', 'dropped'), 1, 'what stop abandons is counted');
});

test('raise() never waits on the webhook, and never throws', async (t) => {
  const rx = await startReceiver(t, () => 0);
  const { alerts } = makeAlerts(settings({ minIntervalMs: 0, timeoutMs: 30000 }));
  cleanup(t, () => alerts.stop(50));
  alerts.setWebhook({ url: rx.url, secret: 'x', host: new URL(rx.url).host });
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) alerts.raise(`k${i % 20}`, 'm', { i });
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  alerts.raise('weird kind!', 'cyclic fields', cyclic);
  alerts.raise('x', undefined as unknown as string, undefined as unknown as Record<string, unknown>);
  // The receiver never answers: waiting on it even once would take its whole 30 s timeout.
  assert.ok(performance.now() - t0 < 5000, `1000 alerts raised in ${Math.round(performance.now() - t0)} ms`);
});

test('stop() flushes what waits for its interval, within a bounded time', async (t) => {
  const rx = await startReceiver(t);
  const { alerts } = makeAlerts(settings({ minIntervalMs: 3_600_000 }));
  cleanup(t, () => alerts.stop(100));
  alerts.setWebhook({ url: rx.url, secret: '', host: new URL(rx.url).host });
  alerts.raise('failover', 'first', {});
  await waitFor(() => rx.received.length === 1);
  alerts.raise('failover', 'second', {});
  await sleep(50);
  assert.equal(rx.received.length, 1, 'held back by minIntervalMs');
  await alerts.stop(1000);
  assert.equal(rx.received.length, 2, 'sent on stop');
  alerts.raise('failover', 'after stop', {});
  await sleep(30);
  assert.equal(rx.received.length, 2, 'after stop alerts are logged only');
});

test('the webhook URL and secret come from the environment or files; a bad one is refused without quoting it', async (t) => {
  const dir = tempDir(t, 'rempart-alerts-');
  const urlFile = join(dir, 'url');
  const secretFile = join(dir, 'secret');
  await writeFile(urlFile, 'https://hooks.example.org/services/T0KEN\n');
  await writeFile(secretFile, 'file-secret\n');
  const cfg = settings({ urlFile, secretFile }).webhook;
  assert.deepEqual(await loadWebhookTarget({}, cfg), {
    url: 'https://hooks.example.org/services/T0KEN',
    secret: 'file-secret',
    host: 'hooks.example.org',
  });
  const fromEnv = await loadWebhookTarget(
    { REMPART_ALERT_WEBHOOK_URL: 'http://127.0.0.1:9/x', REMPART_ALERT_WEBHOOK_SECRET: 'env-secret' },
    cfg,
  );
  assert.equal(fromEnv?.url, 'http://127.0.0.1:9/x', 'the environment wins');
  assert.equal(fromEnv?.secret, 'env-secret');
  assert.equal(await loadWebhookTarget({}, settings().webhook), null, 'no URL: log and count only');
  await writeFile(urlFile, 'ftp://T0KEN@example.org/');
  await assert.rejects(
    loadWebhookTarget({}, cfg),
    (err: Error) => /must be http/.test(err.message) && err.message.includes(urlFile) && !err.message.includes('T0KEN'),
  );
  await writeFile(urlFile, 'not a url T0KEN');
  await assert.rejects(
    loadWebhookTarget({}, cfg),
    (err: Error) => /not a valid URL/.test(err.message) && !err.message.includes('T0KEN'),
  );
  await assert.rejects(
    loadWebhookTarget({}, settings({ secretFile }).webhook),
    /signing secret is set but no webhook URL/,
  );
  await assert.rejects(
    loadWebhookTarget({}, settings({ urlFile: join(dir, 'missing') }).webhook),
    /cannot read the URL file/,
  );
});

test('bad alerts settings stop start-up with a clear error', async () => {
  const { validateConfig } = await import('../src/config/load.ts');
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:9' }],
    routes: [{ name: 'r', upstream: 'o' }],
  };
  assert.throws(
    () => validateConfig({ ...base, alerts: { webhook: { url: 'https://hooks.example.org/T0KEN' } } }),
    /alerts\.webhook\.url: unknown key/,
  );
  assert.throws(
    () => validateConfig({ ...base, alerts: { webhook: { maxQueue: 0, retries: -1 } } }),
    (err: Error) => /alerts\.webhook\.maxQueue/.test(err.message) && /alerts\.webhook\.retries/.test(err.message),
  );
});

test('an upstream whose circuit breaker opens raises a failover alert that reaches the webhook', async (t) => {
  const rx = await startReceiver(t);
  const dead = await startUpstream();
  await dead.close(); // a port nobody listens on
  process.env.REMPART_ALERT_WEBHOOK_URL = rx.url;
  cleanup(t, () => {
    delete process.env.REMPART_ALERT_WEBHOOK_URL;
  });
  const gw = await startGateway(t, dead.url, {
    upstreams: [{ name: 'origin', url: dead.url, circuitBreaker: { consecutiveFailures: 1, openMs: 60000 } }],
  });
  const res = await fetch(`${gw.url}/x`);
  assert.equal(res.status, 502);
  await waitFor(() => rx.received.length === 1);
  assert.equal(rx.received[0]!.payload.kind, 'failover');
  assert.deepEqual(rx.received[0]!.payload.fields, { upstream: 'origin' });
  assert.ok(gw.logs.some((l) => l.alert === 'failover'));
});

test('NODE_TLS_REJECT_UNAUTHORIZED=0 does not make the webhook trust any certificate', async (t) => {
  // An https receiver whose certificate nobody vouches for (self-signed): the alert, signed and perhaps
  // carrying a token in its URL, must not reach it, whatever the environment says.
  const cert = selfSignedCert(t);
  let got = 0;
  const server = https.createServer(
    { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) },
    (_req, res) => {
      got++;
      res.end();
    },
  );
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup(t, () => new Promise<void>((r) => server.close(() => r())));
  const before = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  process.removeAllListeners('warning');
  cleanup(t, () => {
    if (before === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = before;
  });
  const { alerts, count } = makeAlerts(settings({ retries: 1, retryBaseMs: 10 }));
  cleanup(t, () => alerts.stop(100));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  alerts.setWebhook({ url, secret: 's', host: new URL(url).host });
  alerts.raise('attack_level', 'under attack', {});
  await waitFor(async () => (await count('attack_level', 'failed')) === 1);
  assert.equal(got, 0, 'the receiver got nothing');
});
