// Who the client is: the socket peer, unless a trusted proxy says otherwise (X-Forwarded-For, PROXY
// protocol v1/v2). Loopback addresses other than 127.0.0.1 stand in for distinct hosts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  cleanup,
  rawRequest,
  type RecordingUpstream,
  sleep,
  startGatewayAndUpstream,
  statusOf,
  tempDir,
  type TestGateway,
  waitFor,
} from './helpers.ts';

const TRUSTED = '127.0.0.9';

const trustedConfig = { clientAddress: { trustedProxies: [TRUSTED] } };
const proxyProtocolConfig = { ...trustedConfig, listeners: [{ address: '127.0.0.1:0', proxyProtocol: true }] };

function get(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}Connection: close\r\n\r\n`;
}

/** The request log line for `path`, once written (it is written when the response closes). */
function requestLog(gw: TestGateway, path: string): Promise<Record<string, unknown>> {
  const line = () => gw.logs.find((l) => l.msg === 'request' && l.path === path);
  return waitFor(line, { timeoutMs: 1000, message: `a request log line for ${path}` });
}

/** Send a request from `localAddress` and return the headers the upstream received. */
async function forwardedHeaders(
  gw: TestGateway,
  up: RecordingUpstream,
  path: string,
  payload: string | Buffer,
  localAddress: string,
) {
  const raw = await rawRequest(gw.port, payload, { localAddress });
  assert.equal(statusOf(raw), 200, JSON.stringify(raw));
  const rec = up.requests.find((r) => r.url === path);
  assert.ok(rec, `the upstream did not receive ${path}`);
  return rec.headers;
}

function v2Header(opts: { command?: number; family?: number; src: Buffer; dst: Buffer; tlv?: Buffer }): Buffer {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const ports = Buffer.from([0x15, 0xb3, 0x00, 0x50]); // 5555 → 80
  const body = Buffer.concat([opts.src, opts.dst, ports, opts.tlv ?? Buffer.alloc(0)]);
  const head = Buffer.alloc(4);
  head[0] = 0x20 | (opts.command ?? 0x1);
  head[1] = opts.family ?? (opts.src.length === 4 ? 0x11 : 0x21);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([sig, head, body]);
}

function ipv6Bytes(groups: number[]): Buffer {
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(g, i * 2);
  });
  return b;
}

test("without trusted proxies a client's own X-Forwarded-For is ignored and the socket address is the client", async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, {});
  const headers = await forwardedHeaders(
    gw,
    up,
    '/spoof',
    get('/spoof', 'X-Forwarded-For: 203.0.113.7\r\n'),
    '127.0.0.5',
  );
  assert.equal(headers['x-forwarded-for'], '127.0.0.5');
  const log = await requestLog(gw, '/spoof');
  assert.equal(log.client, '127.0.0.5');
});

test('a client from an address outside trustedProxies cannot set its address with X-Forwarded-For', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  const headers = await forwardedHeaders(
    gw,
    up,
    '/untrusted',
    get('/untrusted', 'X-Forwarded-For: 127.0.0.9, 203.0.113.7\r\n'),
    '127.0.0.5',
  );
  assert.equal(headers['x-forwarded-for'], '127.0.0.5');
  assert.equal((await requestLog(gw, '/untrusted')).client, '127.0.0.5');
});

test("a trusted proxy's X-Forwarded-For names the client and the chain is extended with the proxy", async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  const headers = await forwardedHeaders(gw, up, '/xff', get('/xff', 'X-Forwarded-For: 203.0.113.7\r\n'), TRUSTED);
  assert.equal(headers['x-forwarded-for'], '203.0.113.7, 127.0.0.9');
  assert.equal((await requestLog(gw, '/xff')).client, '203.0.113.7');
});

test('a spoofed leftmost X-Forwarded-For entry is ignored: the rightmost untrusted hop is the client', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  const headers = await forwardedHeaders(
    gw,
    up,
    '/chain',
    get('/chain', 'X-Forwarded-For: 1.2.3.4, 203.0.113.7\r\n'),
    TRUSTED,
  );
  assert.equal(headers['x-forwarded-for'], '1.2.3.4, 203.0.113.7, 127.0.0.9');
  assert.equal((await requestLog(gw, '/chain')).client, '203.0.113.7');
});

test('trusted hops inside the X-Forwarded-For chain are skipped to reach the client', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, {
    clientAddress: { trustedProxies: ['127.0.0.0/24', '10.0.0.0/8'] },
  });
  await forwardedHeaders(gw, up, '/hops', get('/hops', 'X-Forwarded-For: 1.2.3.4, 203.0.113.7, 10.1.2.3\r\n'), TRUSTED);
  assert.equal((await requestLog(gw, '/hops')).client, '203.0.113.7');
});

test('X-Forwarded-For split over two header lines from a trusted proxy is read as one chain', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  await forwardedHeaders(
    gw,
    up,
    '/split',
    get('/split', 'X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 203.0.113.7\r\n'),
    TRUSTED,
  );
  assert.equal((await requestLog(gw, '/split')).client, '203.0.113.7');
});

for (const [what, xff] of [
  ['a single garbage value', 'not-an-address'],
  ['a garbage rightmost hop', '203.0.113.7, garbage'],
  ['an address with a port', '203.0.113.7:4711'],
  ['an empty value', ''],
  ['only commas', ', ,'],
] as const) {
  test(`a malformed X-Forwarded-For from a trusted proxy (${what}) falls back to the proxy's address`, async (t) => {
    const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
    await forwardedHeaders(gw, up, '/bad', get('/bad', `X-Forwarded-For: ${xff}\r\n`), TRUSTED);
    assert.equal((await requestLog(gw, '/bad')).client, TRUSTED);
  });
}

test('a malformed hop left of a valid untrusted one does not matter: the rightmost untrusted hop is the client', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  await forwardedHeaders(gw, up, '/leftbad', get('/leftbad', 'X-Forwarded-For: <script>, 203.0.113.7\r\n'), TRUSTED);
  assert.equal((await requestLog(gw, '/leftbad')).client, '203.0.113.7');
});

test('X-Forwarded-Proto from an untrusted client is replaced by http, and believed from a trusted proxy', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, trustedConfig);
  const untrusted = await forwardedHeaders(
    gw,
    up,
    '/proto-untrusted',
    get('/proto-untrusted', 'X-Forwarded-Proto: https\r\n'),
    '127.0.0.5',
  );
  assert.equal(untrusted['x-forwarded-proto'], 'http');
  const trusted = await forwardedHeaders(
    gw,
    up,
    '/proto-trusted',
    get('/proto-trusted', 'X-Forwarded-Proto: https\r\n'),
    TRUSTED,
  );
  assert.equal(trusted['x-forwarded-proto'], 'https');
  const odd = await forwardedHeaders(gw, up, '/proto-odd', get('/proto-odd', 'X-Forwarded-Proto: gopher\r\n'), TRUSTED);
  assert.equal(odd['x-forwarded-proto'], 'http');
});

test('a PROXY protocol v1 header from a trusted peer sets the client address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const headers = await forwardedHeaders(
    gw,
    up,
    '/v1',
    `PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n${get('/v1')}`,
    TRUSTED,
  );
  assert.equal(headers['x-forwarded-for'], '198.51.100.4');
  assert.equal((await requestLog(gw, '/v1')).client, '198.51.100.4');
});

test('a PROXY protocol v1 TCP6 header from a trusted peer sets an IPv6 client address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const headers = await forwardedHeaders(
    gw,
    up,
    '/v1-6',
    `PROXY TCP6 2001:db8::42 ::1 5555 80\r\n${get('/v1-6')}`,
    TRUSTED,
  );
  assert.equal(headers['x-forwarded-for'], '2001:db8::42');
});

test('a PROXY header and the request arriving in separate writes are both honoured', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const raw = await new Promise<string>((resolve) => {
    const s = net.connect({ port: gw.port, host: '127.0.0.1', localAddress: TRUSTED });
    let data = '';
    s.on('data', (d) => (data += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => resolve(data));
    s.on('connect', async () => {
      s.write('PROXY TCP4 198.51.1');
      await sleep(30);
      s.write('00.4 127.0.0.1 5555 80\r\n');
      await sleep(30);
      s.write(get('/split-writes'));
    });
    setTimeout(() => s.destroy(), 2000);
  });
  assert.equal(statusOf(raw), 200, JSON.stringify(raw));
  assert.equal(up.requests.find((r) => r.url === '/split-writes')?.headers['x-forwarded-for'], '198.51.100.4');
});

test('a PROXY protocol v2 IPv4 header from a trusted peer sets the client address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const pp = v2Header({ src: Buffer.from([198, 51, 100, 4]), dst: Buffer.from([127, 0, 0, 1]) });
  const headers = await forwardedHeaders(gw, up, '/v2', Buffer.concat([pp, Buffer.from(get('/v2'))]), TRUSTED);
  assert.equal(headers['x-forwarded-for'], '198.51.100.4');
  assert.equal((await requestLog(gw, '/v2')).client, '198.51.100.4');
});

test('a PROXY protocol v2 IPv4 header with TLVs is skipped whole', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP, 3 bytes
  const pp = v2Header({ src: Buffer.from([198, 51, 100, 5]), dst: Buffer.from([127, 0, 0, 1]), tlv });
  const headers = await forwardedHeaders(gw, up, '/v2-tlv', Buffer.concat([pp, Buffer.from(get('/v2-tlv'))]), TRUSTED);
  assert.equal(headers['x-forwarded-for'], '198.51.100.5');
});

test('a PROXY protocol v2 IPv6 header from a trusted peer sets a compressed IPv6 client address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const pp = v2Header({ src: ipv6Bytes([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7]), dst: ipv6Bytes([0, 0, 0, 0, 0, 0, 0, 1]) });
  const headers = await forwardedHeaders(gw, up, '/v2-6', Buffer.concat([pp, Buffer.from(get('/v2-6'))]), TRUSTED);
  assert.equal(headers['x-forwarded-for'], '2001:db8::7');
  assert.equal((await requestLog(gw, '/v2-6')).client, '2001:db8::7');
});

for (const [what, payload] of [
  ['a v1 header with a bad address', 'PROXY TCP4 999.51.100.4 127.0.0.1 5555 80\r\n'],
  ['a v1 header with a bad protocol', 'PROXY UDP4 198.51.100.4 127.0.0.1 5555 80\r\n'],
  ['a v1 header with a bad port', 'PROXY TCP4 198.51.100.4 127.0.0.1 99999 80\r\n'],
  ['a v1 header with missing fields', 'PROXY TCP4 198.51.100.4\r\n'],
  ['a v1 header that never ends', `PROXY TCP4 ${'1'.repeat(200)}`],
  ['a plain HTTP request instead of a PROXY header', ''],
] as const) {
  test(`from a trusted peer, ${what} closes the connection and the upstream sees nothing`, async (t) => {
    const { gw, up, seen } = await startGatewayAndUpstream(t, proxyProtocolConfig);
    const raw = await rawRequest(gw.port, `${payload}${get('/pp-bad')}`, { localAddress: TRUSTED, timeoutMs: 1500 });
    assert.equal(raw, '', 'no HTTP answer');
    await sleep(100);
    assert.equal(seen.heads, 0);
    assert.equal(up.requests.length, 0);
  });
}

test('from a trusted peer, a malformed PROXY v2 header closes the connection and the upstream sees nothing', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const bad = v2Header({ src: Buffer.from([198, 51, 100, 4]), dst: Buffer.from([127, 0, 0, 1]) });
  bad[12] = 0x11; // version 1 in a v2 header
  const raw = await rawRequest(gw.port, Buffer.concat([bad, Buffer.from(get('/pp-bad2'))]), {
    localAddress: TRUSTED,
    timeoutMs: 1500,
  });
  assert.equal(raw, '');
  const short = v2Header({ src: Buffer.from([198, 51, 100, 4]), dst: Buffer.from([127, 0, 0, 1]) }).subarray(0, 20);
  short.writeUInt16BE(4, 14); // claims a 4-byte IPv4 block
  const raw2 = await rawRequest(gw.port, Buffer.concat([short, Buffer.from(get('/pp-bad3'))]), {
    localAddress: TRUSTED,
    timeoutMs: 1500,
  });
  assert.equal(raw2, '');
  await sleep(100);
  assert.equal(seen.heads, 0);
});

test('from a trusted peer, a PROXY header that does not arrive within headersTimeoutMs closes the connection', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, { ...proxyProtocolConfig, limits: { headersTimeoutMs: 300 } });
  const start = performance.now();
  const raw = await rawRequest(gw.port, 'PROXY TCP4 198.51', { localAddress: TRUSTED, timeoutMs: 2000 });
  assert.equal(raw, '');
  assert.ok(performance.now() - start < 1500, 'closed by the PROXY header timeout');
  assert.equal(seen.heads, 0);
});

test('from an untrusted peer a PROXY line is not honoured: the request is refused 400 and the upstream sees nothing', async (t) => {
  const { gw, up, seen } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const raw = await rawRequest(gw.port, `PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n${get('/pp-untrusted')}`, {
    localAddress: '127.0.0.5',
  });
  assert.equal(statusOf(raw), 400, JSON.stringify(raw));
  await sleep(100);
  assert.equal(seen.heads, 0);
  assert.equal(up.requests.length, 0);
});

test('from an untrusted peer a PROXY v2 header is not honoured and the upstream sees nothing', async (t) => {
  const { gw, seen } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const pp = v2Header({ src: Buffer.from([198, 51, 100, 4]), dst: Buffer.from([127, 0, 0, 1]) });
  const raw = await rawRequest(gw.port, Buffer.concat([pp, Buffer.from(get('/pp-untrusted2'))]), {
    localAddress: '127.0.0.5',
  });
  assert.ok(raw === '' || statusOf(raw) === 400, JSON.stringify(raw));
  await sleep(100);
  assert.equal(seen.heads, 0);
});

test('a PROXY v1 UNKNOWN header keeps the peer address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const headers = await forwardedHeaders(gw, up, '/unknown', `PROXY UNKNOWN\r\n${get('/unknown')}`, TRUSTED);
  assert.equal(headers['x-forwarded-for'], TRUSTED);
  assert.equal((await requestLog(gw, '/unknown')).client, TRUSTED);
});

test('a PROXY v2 LOCAL header keeps the peer address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const pp = v2Header({ command: 0x0, family: 0x00, src: Buffer.alloc(0), dst: Buffer.alloc(0) }).subarray(0, 16);
  pp.writeUInt16BE(0, 14);
  const headers = await forwardedHeaders(gw, up, '/local', Buffer.concat([pp, Buffer.from(get('/local'))]), TRUSTED);
  assert.equal(headers['x-forwarded-for'], TRUSTED);
});

test('a client address from a PROXY header is not overridden by X-Forwarded-For sent by that client', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const headers = await forwardedHeaders(
    gw,
    up,
    '/pp-xff',
    `PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n${get('/pp-xff', 'X-Forwarded-For: 203.0.113.99\r\n')}`,
    TRUSTED,
  );
  assert.equal(headers['x-forwarded-for'], '198.51.100.4');
  assert.equal((await requestLog(gw, '/pp-xff')).client, '198.51.100.4');
});

test('a PROXY header and a keep-alive connection: every request on it has the PROXY client address', async (t) => {
  const { gw, up } = await startGatewayAndUpstream(t, proxyProtocolConfig);
  const s = net.connect({ port: gw.port, host: '127.0.0.1', localAddress: TRUSTED });
  cleanup(t, () => s.destroy());
  let data = '';
  s.on('data', (d) => (data += d.toString('latin1')));
  s.on('error', () => {});
  const closed = new Promise((r) => s.on('close', r));
  await new Promise((r) => s.once('connect', r));
  s.write('PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\nGET /ka1 HTTP/1.1\r\nHost: a.test\r\n\r\n');
  await waitFor(() => data.includes('\r\n\r\nok'), {
    timeoutMs: 1000,
    message: () => `the first answer: ${JSON.stringify(data)}`,
  });
  assert.equal(statusOf(data), 200, JSON.stringify(data));
  s.write(get('/ka2'));
  await Promise.race([closed, sleep(2000)]);
  assert.equal(data.match(/HTTP\/1\.1 200/g)?.length, 2, JSON.stringify(data));
  assert.equal(up.requests.find((r) => r.url === '/ka1')?.headers['x-forwarded-for'], '198.51.100.4');
  assert.equal(up.requests.find((r) => r.url === '/ka2')?.headers['x-forwarded-for'], '198.51.100.4');
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('a PROXY header followed in the same packet by a TLS handshake sets the client address on a TLS listener', {
  skip: !hasOpenssl() && 'openssl not available',
}, async (t) => {
  const dir = tempDir(t, 'rempart-pp-tls-');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
    ],
    { stdio: 'ignore' },
  );
  const { gw, up } = await startGatewayAndUpstream(t, {
    ...trustedConfig,
    listeners: [{ address: '127.0.0.1:0', proxyProtocol: true, tls: { certFile, keyFile } }],
  });
  for (const together of [true, false]) {
    // A relay in the role of the balancer: it prefixes the client's bytes with a PROXY line,
    // either in the same write as the ClientHello or in a write of its own.
    const relay = net.createServer((c) => {
      const g = net.connect({ port: gw.port, host: '127.0.0.1', localAddress: TRUSTED });
      const line = Buffer.from('PROXY TCP4 198.51.100.4 127.0.0.1 5555 443\r\n');
      let first = true;
      if (!together) g.write(line);
      c.on('data', (d: Buffer) => {
        g.write(first && together ? Buffer.concat([line, d]) : d);
        first = false;
      });
      g.on('data', (d) => c.write(d));
      g.on('close', () => c.destroy());
      c.on('close', () => g.destroy());
      g.on('error', () => {});
      c.on('error', () => {});
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    cleanup(t, () => relay.close());
    const path = `/tls-${together}`;
    const sock = tls.connect({
      port: (relay.address() as net.AddressInfo).port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      servername: 'localhost',
    });
    let data = '';
    sock.on('data', (d) => (data += d.toString('latin1')));
    sock.on('error', () => {});
    const closed = new Promise((r) => sock.on('close', r));
    sock.once('secureConnect', () => sock.write(get(path)));
    await Promise.race([closed, sleep(2000)]);
    sock.destroy();
    assert.equal(statusOf(data), 200, `${path}: ${JSON.stringify(data)}`);
    const rec = up.requests.find((r) => r.url === path);
    assert.equal(rec?.headers['x-forwarded-for'], '198.51.100.4');
    assert.equal(rec?.headers['x-forwarded-proto'], 'https');
  }
});
