// Client fingerprints at the edge (issue 16): the accept layer reads each TLS ClientHello before the
// TLS socket takes the connection and the log line carries its JA4. A Node client sending Chromium's
// exact headers and user agent is told apart from Chromium by its TLS stack, and a signature rule
// naming that JA4 refuses it while Chromium goes through. Then the peek's edges: a hello in
// one-byte writes, behind a PROXY header, garbage on the TLS port, a client that sends nothing.
// The Chromium tests skip (with the reason) when /usr/bin/chromium is absent, unless CI is set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import https from 'node:https';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { captureH2Preface, h2FingerprintFromPreface, pseudoHeaderOrder } from '../src/server/h2/fingerprint.ts';
import {
  cleanup,
  selfSignedCert,
  sleep,
  startGateway,
  startUpstream,
  track,
  waitFor,
  type Teardown,
  type TestGateway,
} from './helpers.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;
/** A name, so Chromium sends SNI as it does to any site (to an address it sends none). */
const HOST = 'rempart.test';
const JA4_SHAPE = /^t1[23][di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$/;

function requestLogs(gw: TestGateway): Record<string, unknown>[] {
  return gw.logs.filter((l) => l.msg === 'request');
}
async function logOf(gw: TestGateway, path: string): Promise<Record<string, unknown>> {
  return waitFor(() => requestLogs(gw).find((l) => l.path === path), `the log line of ${path}`);
}

async function tlsGateway(t: Teardown, partial: Record<string, unknown> = {}) {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-fp-');
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>origin</title><h1 id="origin">origin</h1>');
  });
  const gw = await startGateway(t, up.url, {
    listeners: [{ address: '127.0.0.1:0', tls: { certFile, keyFile } }],
    ...partial,
  });
  return { gw, up, certFile, keyFile };
}

/** GET over HTTPS from Node's TLS stack with exactly these raw headers (name, value, … in order). */
function nodeGet(port: number, path: string, rawHeaders: string[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: HOST,
        rejectUnauthorized: false,
        setHost: false,
        agent: false,
        headers: rawHeaders,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Chromium's headers for a navigation, exactly as sent (order and case): read by a small HTTPS server of ours. */
async function chromiumHeaders(
  t: Teardown,
  browser: import('playwright-core').Browser,
  certFile: string,
  keyFile: string,
): Promise<string[]> {
  let seen: string[] | null = null;
  const mirror = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
    seen ??= req.rawHeaders.slice();
    res.end('ok');
  });
  await new Promise<void>((r) => mirror.listen(0, '127.0.0.1', r));
  cleanup(t, () => mirror.close());
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  await page.goto(`https://${HOST}:${(mirror.address() as net.AddressInfo).port}/mirror`);
  await ctx.close();
  assert.ok(seen !== null, 'Chromium reached the mirror');
  return seen;
}

async function launchChromium(t: Teardown) {
  const { chromium } = await import('playwright-core');
  return track(
    t,
    await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', `--host-resolver-rules=MAP ${HOST} 127.0.0.1`],
    }),
  );
}

test('Chromium and a Node client sending Chromium\u2019s exact headers get different JA4 in the log line', {
  skip,
  timeout: 90_000,
}, async (t) => {
  const { gw, certFile, keyFile } = await tlsGateway(t);
  const browser = await launchChromium(t);
  const raw = await chromiumHeaders(t, browser, certFile, keyFile);
  const ua = raw[raw.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'user-agent') + 1];
  assert.match(ua ?? '', /Chrome\//, 'the user agent is Chromium\u2019s');

  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const res = await page.goto(`https://${HOST}:${gw.port}/from-chromium`);
  assert.equal(res?.status(), 200);
  await ctx.close();
  // Same headers, same order, same user agent, same Host: only the TLS stack differs.
  const hostAt = raw.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'host');
  const copy = raw.slice();
  copy[hostAt + 1] = `${HOST}:${gw.port}`;
  const node = await nodeGet(gw.port, '/from-node', copy);
  assert.equal(node.status, 200);

  const fromChromium = await logOf(gw, '/from-chromium');
  const fromNode = await logOf(gw, '/from-node');
  const chromiumJa4 = fromChromium.ja4 as string;
  const nodeJa4 = fromNode.ja4 as string;
  t.diagnostic(`Chromium ja4=${chromiumJa4}  Node ja4=${nodeJa4}`);
  // Chromium: TLS 1.3, SNI, ALPN offered h2 first (the listener answers http/1.1, the offer is what counts),
  // and BoringSSL's 15 ciphers whose sorted hash JA4.md's own example shows.
  assert.match(chromiumJa4, /^t13d\d{4}h2_8daaf6152771_[0-9a-f]{12}$/);
  assert.match(nodeJa4, JA4_SHAPE);
  assert.notEqual(nodeJa4, chromiumJa4);
  // An h2 fingerprint exactly when the request came over HTTP/2 (when the listener offers it).
  assert.equal(fromChromium.h2fp === undefined, fromChromium.protocol !== 'h2');
  assert.equal(fromNode.h2fp, undefined, 'the Node client spoke HTTP/1.1');
});

test('a signature rule naming the Node client\u2019s JA4 refuses it, not Chromium with the same headers', {
  skip,
  timeout: 90_000,
}, async (t) => {
  // The Node client's JA4, as the gateway logs it (what an operator would copy into the rule).
  const first = await tlsGateway(t);
  const probe = await nodeGet(first.gw.port, '/probe', ['Host', `${HOST}:${first.gw.port}`]);
  assert.equal(probe.status, 200);
  const nodeJa4 = (await logOf(first.gw, '/probe')).ja4 as string;
  assert.match(nodeJa4, JA4_SHAPE);
  await first.gw.close();

  const { gw, certFile, keyFile } = await tlsGateway(t, {
    defense: {
      signatures: { mode: 'enforce', rules: [{ id: 'node-tls', match: { ja4: nodeJa4 }, action: 'block' }] },
    },
  });
  const browser = await launchChromium(t);
  const raw = await chromiumHeaders(t, browser, certFile, keyFile);
  const hostAt = raw.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'host');
  raw[hostAt + 1] = `${HOST}:${gw.port}`;

  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const ok = await page.goto(`https://${HOST}:${gw.port}/chromium`);
  assert.equal(ok?.status(), 200, 'Chromium goes through');
  assert.equal(await page.textContent('#origin'), 'origin');
  await ctx.close();

  const refused = await nodeGet(gw.port, '/node', raw);
  assert.equal(refused.status, 403);
  assert.match(refused.body, /RMP_ERR_SIGNATURE_BLOCKED/);
  const line = await logOf(gw, '/node');
  assert.equal(line.rule, 'node-tls');
  assert.equal(line.ja4, nodeJa4);
});

/**
 * A small TLS server speaking h2 as the gateway's h2 entry is to: the connection's first bytes are
 * captured (captureH2Preface), fingerprinted, put back, and node:http2 serves the connection.
 */
async function h2FingerprintServer(t: Teardown) {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-h2fp-');
  const secureContext = tls.createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
  const h2 = http2.createServer();
  const seen: Array<{ path: string; fp: string; order: string }> = [];
  h2.on('stream', (stream, headers, _flags, rawHeaders) => {
    const socket = stream.session!.socket as unknown as { fp: string };
    seen.push({
      path: String(headers[':path']),
      fp: socket.fp,
      order: pseudoHeaderOrder(rawHeaders as unknown as string[]),
    });
    stream.respond({ ':status': 200, 'content-type': 'text/html' });
    stream.end('<!doctype html><title>h2</title>');
  });
  const server = net.createServer((raw) => {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext, ALPNProtocols: ['h2'] });
    socket.on('error', () => socket.destroy());
    socket.once('secure', () => {
      (socket as tls.TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
      captureH2Preface(socket, 5000, (bytes) => {
        (socket as unknown as { fp: string }).fp = h2FingerprintFromPreface(bytes);
        h2.emit('connection', socket);
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup(t, () => server.close());
  return { port: (server.address() as net.AddressInfo).port, seen };
}

test('Chromium\u2019s HTTP/2 fingerprint from its real first bytes is the published one; Node\u2019s http2 client with Chromium\u2019s headers differs', {
  skip,
  timeout: 90_000,
}, async (t) => {
  const s = await h2FingerprintServer(t);
  const browser = await launchChromium(t);
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const res = await page.goto(`https://${HOST}:${s.port}/from-chromium`);
  assert.equal(res?.status(), 200);
  await ctx.close();
  const chromium = s.seen.find((x) => x.path === '/from-chromium')!;
  t.diagnostic(`Chromium h2fp=${chromium.fp}`);
  assert.equal(chromium.fp, '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p');
  assert.equal(chromium.order, 'm,a,s,p', 'the order read from HPACK is node:http2\u2019s');

  // Node's http2 client, told to send Chromium's pseudo-header order and headers.
  const client = http2.connect(`https://${HOST}:${s.port}`, {
    rejectUnauthorized: false,
    createConnection: () =>
      tls.connect({
        host: '127.0.0.1',
        port: s.port,
        servername: HOST,
        ALPNProtocols: ['h2'],
        rejectUnauthorized: false,
      }),
  });
  cleanup(t, () => client.close());
  const req = client.request({
    ':method': 'GET',
    ':authority': `${HOST}:${s.port}`,
    ':scheme': 'https',
    ':path': '/from-node',
    'user-agent':
      'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  });
  req.resume();
  await new Promise((r) => req.on('end', r));
  const node = s.seen.find((x) => x.path === '/from-node')!;
  t.diagnostic(`Node h2fp=${node.fp}`);
  assert.match(node.fp, /\|m,a,s,p$/, 'same pseudo-header order');
  assert.notEqual(node.fp, chromium.fp);
});

test('JA4 on every TLS connection: a hello in one-byte writes, behind PROXY, and none on plain HTTP', async (t) => {
  const { certFile, keyFile } = selfSignedCert(t, 'rempart-fp-');
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, {
    clientAddress: { trustedProxies: ['127.0.0.2'] },
    listeners: [
      { address: '127.0.0.1:0', tls: { certFile, keyFile } },
      { address: '127.0.0.1:0', tls: { certFile, keyFile }, proxyProtocol: true },
      { address: '127.0.0.1:0' },
    ],
  });
  const [tlsPort, proxyPort, plainPort] = gw.gateway.addresses().listeners.map((l) => l.port) as [
    number,
    number,
    number,
  ];

  // A reference JA4 from an ordinary request.
  assert.equal((await nodeGet(tlsPort, '/whole', ['Host', 'x'])).status, 200);
  const whole = (await logOf(gw, '/whole')).ja4 as string;
  assert.match(whole, JA4_SHAPE);
  assert.match(whole, /^t1[23]d/, 'Node sends the SNI it was given');

  // The same client with its hello dribbled one byte per write: the peek waits for the whole hello.
  const dribble = await relayed(t, tlsPort, null, true);
  assert.equal((await nodeGet(dribble, '/dribbled', ['Host', 'x'])).status, 200);
  assert.equal((await logOf(gw, '/dribbled')).ja4, whole);

  // Behind a trusted PROXY header, in the same write as the hello.
  const proxied = await relayed(t, proxyPort, Buffer.from('PROXY TCP4 198.51.100.4 127.0.0.1 5555 443\r\n'), false);
  assert.equal((await nodeGet(proxied, '/proxied', ['Host', 'x'])).status, 200);
  const line = await logOf(gw, '/proxied');
  assert.equal(line.client, '198.51.100.4');
  assert.equal(line.ja4, whole);

  const plain = await fetch(`http://127.0.0.1:${plainPort}/plain`);
  assert.equal(plain.status, 200);
  assert.equal((await logOf(gw, '/plain')).ja4, undefined, 'no TLS, no JA4');
});

test('the peek survives garbage on the TLS port, a silent client, and an oversize hello, and serves the next client', async (t) => {
  const { gw } = await tlsGateway(t, {
    limits: { headersTimeoutMs: 1000 },
    logging: { level: 'debug', requests: true },
  });
  const answers: string[] = [];
  // Plain HTTP to the TLS port; a hello claiming 1 MiB; a hello in one-byte records; a hello whose
  // last record runs 16 KB past it (32 KB of bytes, past the peek's bound before the record is whole).
  const tiny = Buffer.concat(Array.from({ length: 4000 }, () => Buffer.from([0x16, 3, 1, 0, 1, 0])));
  const long = Buffer.concat([
    Buffer.from([0x16, 3, 1, 0, 4, 1, 0, 0x40, 0]),
    Buffer.from([0x16, 3, 1, 0x3f, 0xff]),
    Buffer.alloc(0x3fff),
    Buffer.from([0x16, 3, 1, 0x40, 0]),
    Buffer.alloc(0x4000),
  ]);
  for (const bytes of [
    Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    Buffer.from([0x16, 3, 1, 0, 4, 1, 0x10, 0, 0]),
    Buffer.concat([Buffer.from([0x16, 3, 1, 0, 4, 1, 0, 0x3f, 0]), tiny]),
    long.subarray(0, 20_000),
  ])
    answers.push(await sendAndRead(gw.port, bytes, 3000));
  // None got an HTTP answer: TLS refused them (a TLS alert or a close) at once, nothing crashed (and
  // none waited for the headers timeout: the count below has only the two silent ones).
  for (const a of answers) assert.doesNotMatch(a, /HTTP\/1\.1 200/);
  // A client that connects and says nothing, and one that stops halfway through its hello: closed at the
  // headers timeout (1 s here; handed to TLS the silent one was held past 40 s).
  for (const bytes of [Buffer.alloc(0), Buffer.from([0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3])]) {
    const silent = net.connect(gw.port, '127.0.0.1', () => silent.write(bytes));
    silent.on('error', () => {});
    const closed = new Promise((r) => silent.once('close', r));
    assert.equal(await Promise.race([closed.then(() => 'closed'), sleep(8000).then(() => 'open')]), 'closed');
    silent.destroy();
  }
  // Only those two waited out the peek: the four above went to TLS at once.
  const late = gw.logs.filter((l) => l.msg === 'no TLS ClientHello in time');
  assert.deepEqual(
    late.map((l) => l.bytes),
    [0, 11],
  );
  const ok = await nodeGet(gw.port, '/after', ['Host', 'x']);
  assert.equal(ok.status, 200);
  assert.match((await logOf(gw, '/after')).ja4 as string, JA4_SHAPE);
});

/** A relay to `port` that writes `prefix` first (in the client's first write) and, with `dribble`, the client's bytes one per write. */
async function relayed(t: Teardown, port: number, prefix: Buffer | null, dribble: boolean): Promise<number> {
  const relay = net.createServer((c) => {
    const g = net.connect({ port, host: '127.0.0.1', localAddress: prefix === null ? undefined : '127.0.0.2' });
    g.setNoDelay(true);
    let first = true;
    c.on('data', (d: Buffer) => {
      const bytes = first && prefix !== null ? Buffer.concat([prefix, d]) : d;
      first = false;
      if (!dribble) g.write(bytes);
      else for (let i = 0; i < bytes.length; i++) g.write(bytes.subarray(i, i + 1));
    });
    g.on('data', (d) => c.write(d));
    g.on('close', () => c.destroy());
    c.on('close', () => g.destroy());
    g.on('error', () => {});
    c.on('error', () => {});
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  cleanup(t, () => relay.close());
  return (relay.address() as net.AddressInfo).port;
}

function sendAndRead(port: number, bytes: Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', () => {});
    const timer = setTimeout(() => s.destroy(), timeoutMs);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

test('over HTTP/2 at the gateway: Chromium and a Node http2 client with Chromium\u2019s headers get different h2fp and ja4', {
  skip,
  timeout: 90_000,
}, async (t) => {
  const { gw } = await tlsGateway(t);
  const browser = await launchChromium(t);
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  const res = await page.goto(`https://${HOST}:${gw.port}/h2-chromium`);
  assert.equal(res?.status(), 200);
  const sent = await res!.request().allHeaders();
  await ctx.close();
  const client = http2.connect(`https://${HOST}:${gw.port}`, {
    createConnection: () =>
      tls.connect({
        host: '127.0.0.1',
        port: gw.port,
        servername: HOST,
        ALPNProtocols: ['h2'],
        rejectUnauthorized: false,
      }),
  });
  cleanup(t, () => client.close());
  // Chromium's pseudo-header order and its headers (playwright's view, names lower-case as h2 sends them).
  const headers: Record<string, string> = {
    ':method': 'GET',
    ':authority': `${HOST}:${gw.port}`,
    ':scheme': 'https',
    ':path': '/h2-node',
  };
  for (const [k, v] of Object.entries(sent)) if (!k.startsWith(':')) headers[k] = v;
  const req = client.request(headers);
  req.resume();
  await new Promise((r) => req.on('end', r));
  const fromChromium = await logOf(gw, '/h2-chromium');
  const fromNode = await logOf(gw, '/h2-node');
  t.diagnostic(
    `Chromium h2fp=${fromChromium.h2fp} ja4=${fromChromium.ja4}; Node h2fp=${fromNode.h2fp} ja4=${fromNode.ja4}`,
  );
  assert.equal(fromChromium.protocol, 'h2');
  assert.equal(fromNode.protocol, 'h2');
  assert.equal(fromChromium.h2fp, '1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p');
  assert.match(fromNode.h2fp as string, /\|m,a,s,p$/, 'same pseudo-header order');
  assert.notEqual(fromNode.h2fp, fromChromium.h2fp);
  assert.match(fromChromium.ja4 as string, /^t13d\d{4}h2_8daaf6152771_/);
  assert.notEqual(fromNode.ja4, fromChromium.ja4);
});
