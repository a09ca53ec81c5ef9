// `upstreams[].tls`: an https origin signed by a private authority is trusted through `caFile` (and only
// through it: without it, or with another authority, or under another name, the answer is 502), an
// origin asking for a client certificate gets `certFile`/`keyFile` (mutual TLS), on requests and on
// WebSocket tunnels alike. Files are read at start and at each reload: a renewed authority applies at
// the next reload, a missing file fails the load (start, reload, `rempart check`) and keeps the running
// config. Unlike the older https tests, this file never turns certificate checks off.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../src/config/load.ts';
import { BIN, cleanup, freePort, runCli, startGateway, tempDir, track, waitFor, type Teardown } from './helpers.ts';
import { clientFor, startTlsGateway } from './h2-client.ts';
import { createManualClock } from '../src/core/clock.ts';
import { authority, issue } from './pki.ts';

interface Pki {
  dir: string;
  ca: string;
  otherCa: string;
  /** The origin's certificate for `origin.test`, signed by `ca`. */
  srvCert: string;
  srvKey: string;
  /** The same name signed by `otherCa`. */
  srvCert2: string;
  srvKey2: string;
  /** Rempart's client certificate (CN=rempart-gw), signed by `ca`. */
  cliCert: string;
  cliKey: string;
  /** A client certificate of a 1024-bit RSA key, signed by `ca`: below OpenSSL's default security level. */
  weakCert: string;
  weakKey: string;
}

// Made once for the file (four certificates), removed after its last test.
let pkiMemo: Pki | null = null;
after(() => {
  if (pkiMemo !== null) rmSync(pkiMemo.dir, { recursive: true, force: true });
});
function pki(_t: Teardown): Pki {
  if (pkiMemo !== null) return pkiMemo;
  const dir = mkdtempSync(join(tmpdir(), 'rempart-pki-'));
  authority(dir, 'ca');
  authority(dir, 'other');
  issue(dir, 'ca', 'srv', 'origin.test', 'subjectAltName=DNS:origin.test\n');
  issue(dir, 'other', 'srv2', 'origin.test', 'subjectAltName=DNS:origin.test\n');
  issue(dir, 'ca', 'cli', 'rempart-gw', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'ca', 'weak', 'rempart-gw', 'extendedKeyUsage=clientAuth\n', ['-newkey', 'rsa:1024', '-nodes']);
  const f = (n: string) => join(dir, n);
  pkiMemo = {
    dir,
    ca: f('ca.pem'),
    otherCa: f('other.pem'),
    srvCert: f('srv.pem'),
    srvKey: f('srv.key'),
    srvCert2: f('srv2.pem'),
    srvKey2: f('srv2.key'),
    cliCert: f('cli.pem'),
    cliKey: f('cli.key'),
    weakCert: f('weak.pem'),
    weakKey: f('weak.key'),
  };
  return pkiMemo;
}

interface Origin {
  port: number;
  url: string;
  /** The client certificate's CN of each request and tunnel (null: none presented). */
  peers: Array<string | null>;
  /** TLS connections it accepted. */
  conns: number;
  /** `METHOD url CN` of every request (health checks included). */
  seen: string[];
  server: https.Server;
}

/** An https origin on 127.0.0.1 answering `ok`, and 101 then echo on an Upgrade; `mtls` asks for a client certificate signed by the test CA. */
async function origin(
  t: Teardown,
  p: Pki,
  o: { mtls?: boolean; second?: boolean; checks?: Array<string | null>; close?: boolean; cacheable?: boolean } = {},
): Promise<Origin> {
  const peers: Array<string | null> = [];
  const seen: string[] = [];
  const cn = (s: TLSSocket) => {
    const c = s.getPeerCertificate();
    return c && typeof c.subject?.CN === 'string' ? c.subject.CN : null;
  };
  const server = https.createServer(
    {
      cert: readFileSync(o.second ? p.srvCert2 : p.srvCert),
      key: readFileSync(o.second ? p.srvKey2 : p.srvKey),
      ...(o.mtls ? { requestCert: true, rejectUnauthorized: true, ca: readFileSync(p.ca) } : {}),
    },
    (req, res) => {
      seen.push(`${req.method} ${req.url} ${cn(req.socket as TLSSocket)}`);
      if (req.url === '/healthz') o.checks?.push(cn(req.socket as TLSSocket));
      else peers.push(cn(req.socket as TLSSocket));
      res
        .writeHead(200, {
          'content-length': '2',
          ...(o.close ? { connection: 'close' } : {}),
          ...(o.cacheable ? { 'cache-control': 'public, max-age=30' } : {}),
        })
        .end('ok');
    },
  );
  server.on('upgrade', (_req, socket: net.Socket) => {
    peers.push(cn(socket as TLSSocket));
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.pipe(socket);
  });
  server.on('tlsClientError', () => {});
  const counted = { conns: 0 };
  server.on('secureConnection', () => counted.conns++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  track(t, {
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
  return {
    port,
    url: `https://127.0.0.1:${port}`,
    peers,
    seen,
    get conns() {
      return counted.conns;
    },
    server,
  };
}

/** `rempart check` on a file in `dir` with one route to upstream `o`, written as `upstreams` (a YAML flow list). */
function check(dir: string, upstreams: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cfg = join(dir, 'rempart.yaml');
  writeFileSync(
    cfg,
    [
      'version: 1',
      'listeners: [{ address: "127.0.0.1:0" }]',
      'admin: { address: "off" }',
      'state: { file: off }',
      upstreams,
      'routes: [{ name: d, path: "/*", upstream: o }]',
      '',
    ].join('\n'),
  );
  return runCli(['check', cfg]);
}

function upstreamCfg(o: Origin, extra: Record<string, unknown>): Record<string, unknown> {
  return {
    logging: { level: 'error', requests: false },
    defense: { rateLimit: { mode: 'off' } },
    upstreams: [{ name: 'origin', url: o.url, tlsServerName: 'origin.test', ...extra }],
    routes: [
      { name: 'default', path: '/*', upstream: 'origin', class: 'public', cache: { enabled: false }, websocket: true },
    ],
  };
}

async function status(url: string): Promise<number> {
  const res = await fetch(`${url}/x`);
  await res.arrayBuffer();
  return res.status;
}

test('a private authority in caFile: trusted; without it, with another, or under another name: 502', async (t) => {
  const p = pki(t);
  const o = await origin(t, p);
  const trusted = await startGateway(t, o.url, upstreamCfg(o, { tls: { caFile: p.ca } }));
  assert.equal(await status(trusted.url), 200);
  const system = await startGateway(t, o.url, upstreamCfg(o, {}));
  assert.equal(await status(system.url), 502, "the system's authorities do not know the test CA");
  const other = await startGateway(t, o.url, upstreamCfg(o, { tls: { caFile: p.otherCa } }));
  assert.equal(await status(other.url), 502, 'caFile replaces, and another authority signed nothing here');
  const wrongName = await startGateway(t, o.url, {
    ...upstreamCfg(o, { tls: { caFile: p.ca } }),
    upstreams: [{ name: 'origin', url: o.url, tlsServerName: 'elsewhere.test', tls: { caFile: p.ca } }],
  });
  assert.equal(await status(wrongName.url), 502, 'the certificate is still checked against the name');
});

/** A WebSocket handshake through the gateway: the status line it answers. */
function handshake(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no answer: ${JSON.stringify(buf)}`)), 5000);
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n')) return;
      clearTimeout(timer);
      s.destroy();
      resolve(buf.slice(0, buf.indexOf('\r\n')));
    });
    s.write(
      'GET /ws HTTP/1.1\r\nHost: origin.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
  });
}

test('NODE_TLS_REJECT_UNAUTHORIZED=0 turns no check off: requests and tunnels still 502 on an unknown authority', async (t) => {
  const p = pki(t);
  // Signed by the other authority: trusted neither by the system nor by caFile.
  const o = await origin(t, p, { second: true });
  const withCa = await startGateway(t, o.url, upstreamCfg(o, { tls: { caFile: p.ca } }));
  const system = await startGateway(t, o.url, upstreamCfg(o, {}));
  const before = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  const warnings = process.listeners('warning');
  process.removeAllListeners('warning');
  t.after(() => {
    if (before === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = before;
    for (const w of warnings) process.on('warning', w);
  });
  for (const gw of [withCa, system]) {
    assert.equal(await status(gw.url), 502, 'the request is refused');
    assert.match(await handshake(gw.port), /^HTTP\/1\.1 502 /, 'the tunnel is refused');
  }
  assert.deepEqual(o.peers, [], 'nothing reached the origin');
});

test('a client key OpenSSL refuses (RSA 1024) fails the load, not every connection', async (t) => {
  const p = pki(t);
  const { loadUpstreamTls } = await import('../src/upstream/tls.ts');
  await assert.rejects(
    loadUpstreamTls([{ name: 'o', tls: { caFile: p.ca, certFile: p.weakCert, keyFile: p.weakKey } }]),
    /^Error: upstreams o: tls\.certFile .*weak\.pem: refused by TLS \(ee key too small\)$/,
  );
  const o = await origin(t, p, { mtls: true });
  await assert.rejects(
    startGateway(t, o.url, upstreamCfg(o, { tls: { caFile: p.ca, certFile: p.weakCert, keyFile: p.weakKey } })),
    /tls\.certFile .*weak\.pem: refused by TLS/,
  );
});

/** Counts the TLS contexts built from now to the end of `t` (tls.createSecureContext, restored after). */
function countContexts(t: Teardown): () => number {
  const real = tls.createSecureContext;
  let built = 0;
  tls.createSecureContext = (options) => {
    built++;
    return real(options);
  };
  cleanup(t, () => {
    tls.createSecureContext = real;
  });
  return () => built;
}

test('the files are one TLS context per load: a new upstream connection builds none', async (t) => {
  const p = pki(t);
  // Every answer closes its connection: each request is a new TLS connection.
  const o = await origin(t, p, { mtls: true, close: true });
  const gw = await startGateway(
    t,
    o.url,
    upstreamCfg(o, { tls: { caFile: p.ca, certFile: p.cliCert, keyFile: p.cliKey } }),
  );
  const built = countContexts(t);
  for (let i = 0; i < 5; i++) assert.equal(await status(gw.url), 200);
  assert.equal(o.conns, 5, 'five connections');
  assert.equal(await handshake(gw.port).then((l) => l.slice(0, 12)), 'HTTP/1.1 101');
  // Before: tls.connect parsed the authorities and the key again for each one (10 ms for a 120-certificate bundle).
  assert.equal(built(), 0, `${built()} contexts built for 6 connections`);
});

test('an https upstream without tls shares one context of the system authorities: a new connection builds none', async (t) => {
  const p = pki(t);
  const o = await origin(t, p, { close: true });
  // The test authority is not the system's: every request is a new connection that fails its check (502).
  const gw = await startGateway(t, o.url, upstreamCfg(o, {}));
  assert.equal(await status(gw.url), 502);
  const built = countContexts(t);
  for (let i = 0; i < 5; i++) assert.equal(await status(gw.url), 502);
  assert.equal(built(), 0, `${built()} contexts built for 5 connections`);
});

test('a directory, a FIFO, a device or a huge file is a clear load error, not a hang', async (t) => {
  const p = pki(t);
  const dir = tempDir(t, 'rempart-tls-odd-');
  const fifo = join(dir, 'fifo.pem');
  execFileSync('mkfifo', [fifo]);
  // Valid certificates, past the cap: 1 MiB and a bit.
  const huge = join(dir, 'huge.pem');
  const one = readFileSync(p.ca);
  writeFileSync(huge, Buffer.concat(Array.from({ length: Math.ceil((1 << 20) / one.length) + 1 }, () => one)));
  const { loadUpstreamTls } = await import('../src/upstream/tls.ts');
  const load = (caFile: string) =>
    Promise.race([
      loadUpstreamTls([{ name: 'o', tls: { caFile } }]),
      new Promise((_, reject) => setTimeout(() => reject(new Error('hung')), 2000).unref()),
    ]);
  await assert.rejects(load(fifo), /tls\.caFile .*fifo\.pem: not a regular file/);
  await assert.rejects(load(dir), /tls\.caFile .*: not a regular file/);
  await assert.rejects(load('/dev/zero'), /tls\.caFile \/dev\/zero: not a regular file/);
  await assert.rejects(load(huge), /tls\.caFile .*huge\.pem: \d+ bytes, more than the 1048576/);
  // A symbolic link to a good file is the file (Kubernetes mounts secrets so).
  const link = join(dir, 'link.pem');
  symlinkSync(p.ca, link);
  assert.ok(await load(link));
});

test('warnings, not errors: a client certificate near or past its end, expired authorities, a key others can read', async (t) => {
  const p = pki(t);
  const dir = tempDir(t, 'rempart-tls-warn-');
  const keyFile = join(dir, 'client.key');
  copyFileSync(p.cliKey, keyFile);
  chmodSync(keyFile, 0o644);
  const { loadUpstreamTls, upstreamTlsWarnings } = await import('../src/upstream/tls.ts');
  const tlsOf = { caFile: p.ca, certFile: p.cliCert, keyFile };
  // The test's certificates are valid two days: today they near their end.
  const today = upstreamTlsWarnings(await loadUpstreamTls([{ name: 'o', tls: tlsOf }]));
  assert.equal(today.length, 2, today.join('\n'));
  assert.match(today[0]!, /^upstreams o: tls\.certFile .*cli\.pem: expires on \S+ \(in 1 day\): renew it/);
  assert.match(today[1]!, /^upstreams o: tls\.keyFile .*client\.key: others than its owner .*\(mode 0644\): chmod 600/);
  chmodSync(keyFile, 0o600);
  const later = Date.now() + 3 * 86_400_000;
  const expired = upstreamTlsWarnings(await loadUpstreamTls([{ name: 'o', tls: tlsOf }], later));
  assert.equal(expired.length, 2, expired.join('\n'));
  assert.match(
    expired[0]!,
    /tls\.caFile .*ca\.pem: 1 of its 1 authorities expired \(CN=ca on .*\): nothing they signed/,
  );
  assert.match(expired[1]!, /tls\.certFile .*cli\.pem: expired on .*: servers asking for it refuse the handshake/);
  assert.ok(!expired.join('').includes('PRIVATE'));

  // `rempart check` prints them and passes.
  chmodSync(keyFile, 0o640);
  const r = await check(
    dir,
    `upstreams: [{ name: o, url: "https://10.0.0.7:1", tlsServerName: origin.test, tls: { caFile: "${p.ca}", certFile: "${p.cliCert}", keyFile: "${keyFile}" } }]`,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /warning: upstreams o: tls\.certFile .*: expires on/);
  assert.match(r.stderr, /warning: upstreams o: tls\.keyFile .*\(mode 0640\)/);
  assert.doesNotMatch(r.stderr, /NODE_TLS_REJECT_UNAUTHORIZED/);
  // The variable reaches none of Rempart's TLS clients: said, since whoever set it may expect otherwise.
  const insecure = await runCli(['check', join(dir, 'rempart.yaml')], {
    ...process.env,
    NODE_TLS_REJECT_UNAUTHORIZED: '0',
  });
  assert.equal(insecure.code, 0, insecure.stderr);
  assert.match(
    insecure.stderr,
    /warning: NODE_TLS_REJECT_UNAUTHORIZED=0 is ignored: upstreams, the alert webhook and a rediss:\/\/ store check/,
  );
});

test('an HTTP/2 client, a cache refresh and a fallback route reach the origin with the client certificate', async (t) => {
  const p = pki(t);
  const o = await origin(t, p, { mtls: true, cacheable: true });
  const clock = createManualClock();
  const gw = await startTlsGateway(
    t,
    o.url,
    {
      logging: { level: 'error', requests: false },
      defense: { rateLimit: { mode: 'off' } },
      upstreams: [
        {
          name: 'origin',
          url: o.url,
          tlsServerName: 'origin.test',
          tls: { caFile: p.ca, certFile: p.cliCert, keyFile: p.cliKey },
        },
        // Nobody listens on port 1: its first refused connection opens its breaker.
        { name: 'down', url: 'http://127.0.0.1:1', circuitBreaker: { consecutiveFailures: 1, openMs: 60_000 } },
      ],
      routes: [
        { name: 'cached', path: '/c/*', upstream: 'origin', class: 'public', cache: { enabled: true } },
        {
          name: 'spare',
          path: '/f/*',
          upstream: 'down',
          fallback: 'origin',
          class: 'public',
          cache: { enabled: false },
        },
        { name: 'default', path: '/*', upstream: 'origin', class: 'public', cache: { enabled: false } },
      ],
    },
    { clock },
  );
  const h2 = clientFor(t, 'h2', gw.port);
  assert.equal((await h2.request('/h2')).status, 200);
  assert.deepEqual(o.seen, ['GET /h2 rempart-gw']);
  // A stale copy within stale-while-revalidate: answered, and refreshed in the background.
  assert.equal((await h2.request('/c/x')).headers['x-cache'], undefined, 'a miss, stored');
  clock.advance(31_000);
  assert.equal((await h2.request('/c/x')).headers['x-cache'], 'STALE');
  await waitFor(() => o.seen.length === 3, 'the refresh');
  assert.equal(o.seen[2], 'GET /c/x rempart-gw');
  // The primary refuses, its breaker opens, the route goes to its fallback.
  assert.equal((await h2.request('/f/1')).status, 502);
  assert.equal((await h2.request('/f/2')).status, 200);
  assert.deepEqual(o.seen.slice(3), ['GET /f/2 rempart-gw']);
});

test('caFile replaces the authorities NODE_EXTRA_CA_CERTS adds, as it replaces the bundled ones', async (t) => {
  const p = pki(t);
  // Signed by the other authority, which the environment adds to the process's authorities.
  const o = await origin(t, p, { second: true });
  const dir = tempDir(t, 'rempart-tls-extra-');
  const run = async (tls: Record<string, string> | null): Promise<number> => {
    const port = await freePort();
    const file = join(dir, `${tls === null ? 'system' : 'ca'}.json`);
    const upstream = { name: 'origin', url: o.url, tlsServerName: 'origin.test', ...(tls === null ? {} : { tls }) };
    writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        listeners: [{ address: `127.0.0.1:${port}` }],
        admin: { address: 'off' },
        state: { file: 'off' },
        logging: { level: 'error', requests: false },
        upstreams: [upstream],
        routes: [{ name: 'd', path: '/*', upstream: 'origin', class: 'public', cache: { enabled: false } }],
      }),
    );
    const child = spawn(process.execPath, [BIN, '--config', file], {
      stdio: 'ignore',
      env: { ...process.env, NODE_EXTRA_CA_CERTS: p.otherCa },
    });
    t.after(() => void child.kill('SIGKILL'));
    let answer = 0;
    await waitFor(
      async () => {
        answer = await status(`http://127.0.0.1:${port}`).catch(() => 0);
        return answer !== 0;
      },
      { timeoutMs: 10_000 },
    );
    child.kill('SIGTERM');
    return answer;
  };
  assert.equal(await run(null), 200, "the environment's authority is trusted without caFile");
  assert.equal(await run({ caFile: p.ca }), 502, 'with caFile, only caFile is');
});

test('mutual TLS: an origin asking for a client certificate gets certFile, on requests and on tunnels', async (t) => {
  const p = pki(t);
  const checks: Array<string | null> = [];
  const o = await origin(t, p, { mtls: true, checks });
  const without = await startGateway(t, o.url, upstreamCfg(o, { tls: { caFile: p.ca } }));
  assert.equal(await status(without.url), 502, 'the origin refuses a handshake without a client certificate');
  const gw = await startGateway(
    t,
    o.url,
    upstreamCfg(o, {
      tls: { caFile: p.ca, certFile: p.cliCert, keyFile: p.cliKey },
      healthCheck: { path: '/healthz', intervalMs: 50 },
    }),
  );
  assert.equal(await status(gw.url), 200);
  assert.deepEqual(o.peers, ['rempart-gw']);
  // A WebSocket tunnel opens its own connection (server/upgrade.ts): the same trust and certificate.
  const echoed = await new Promise<string>((resolve, reject) => {
    const s = net.connect(gw.port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no tunnel: ${JSON.stringify(buf)}`)), 5000);
    s.on('error', reject);
    s.write(
      'GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n\r\n') && !buf.includes('ping')) s.write('ping');
      if (buf.endsWith('ping')) {
        clearTimeout(timer);
        s.destroy();
        resolve(buf);
      }
    });
  });
  assert.match(echoed, /^HTTP\/1\.1 101 /);
  assert.deepEqual(o.peers, ['rempart-gw', 'rempart-gw']);
  // Health checks go through the server's own client: the same certificate.
  await waitFor(() => checks.length >= 2);
  assert.ok(
    checks.every((c) => c === 'rempart-gw'),
    JSON.stringify(checks),
  );
});

test('a reload reads the files again: a renewed authority applies; a missing file keeps the running config', async (t) => {
  const p = pki(t);
  const dir = tempDir(t, 'rempart-tls-reload-');
  const caFile = join(dir, 'trust.pem');
  copyFileSync(p.ca, caFile);
  const first = await origin(t, p);
  const gw = await startGateway(t, first.url, upstreamCfg(first, { tls: { caFile } }));
  assert.equal(await status(gw.url), 200);
  // The origin moves to a certificate of the other authority: refused until the gateway trusts it.
  const second = await origin(t, p, { second: true });
  const moved = validateConfig({
    version: 1,
    listeners: [{ address: `127.0.0.1:${gw.port}` }],
    admin: { address: 'off' },
    ...upstreamCfg(second, { tls: { caFile } }),
  });
  await gw.gateway.reload(moved);
  assert.equal(await status(gw.url), 502, 'the old authority does not sign the new certificate');
  copyFileSync(p.otherCa, caFile);
  await gw.gateway.reload(moved);
  assert.equal(await status(gw.url), 200, 'the renewed file was read at the reload');
  const missing = validateConfig({
    version: 1,
    listeners: [{ address: `127.0.0.1:${gw.port}` }],
    admin: { address: 'off' },
    ...upstreamCfg(first, { tls: { caFile: join(dir, 'gone.pem') } }),
  });
  await assert.rejects(gw.gateway.reload(missing), /upstreams origin: tls\.caFile .*gone\.pem: ENOENT/);
  assert.equal(await status(gw.url), 200, 'the running config stays');
});

test('bad tls settings are clear errors: http servers, a lone certFile, files that do not hold what they should', async (t) => {
  const p = pki(t);
  const base = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    routes: [{ name: 'd', path: '/*', upstream: 'o' }],
  };
  const problems = (u: Record<string, unknown>) => {
    try {
      validateConfig({ ...base, upstreams: [{ name: 'o', ...u }] });
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  assert.match(problems({ url: 'http://127.0.0.1:1', tls: { caFile: p.ca } }), /`tls` applies to https servers/);
  assert.match(problems({ url: 'http://127.0.0.1:1', tlsServerName: 'a.test' }), /`tlsServerName` applies to https/);
  assert.match(problems({ url: 'https://127.0.0.1:1', tls: { certFile: p.cliCert } }), /needs its private key/);
  assert.match(problems({ url: 'https://127.0.0.1:1', tls: { keyFile: p.cliKey } }), /give `certFile` too/);
  assert.equal(problems({ url: 'https://127.0.0.1:1', tls: { caFile: p.ca } }), '');

  const dir = tempDir(t, 'rempart-tls-bad-');
  const junk = join(dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  const { loadUpstreamTls } = await import('../src/upstream/tls.ts');
  const load = (tls: Record<string, string>) => loadUpstreamTls([{ name: 'o', tls }]);
  await assert.rejects(load({ caFile: junk }), /upstreams o: tls\.caFile .*junk\.pem: no PEM certificate/);
  await assert.rejects(load({ caFile: join(dir, 'nope.pem') }), /tls\.caFile .*nope\.pem: ENOENT/);
  await assert.rejects(
    load({ certFile: p.cliCert, keyFile: junk }),
    /tls\.keyFile .*junk\.pem: not an unencrypted PEM/,
  );
  await assert.rejects(load({ certFile: p.cliCert, keyFile: p.srvKey }), /tls\.keyFile .*srv\.key: not the key of/);
  // An encrypted key, a DER certificate: said as such, with the command that fixes them.
  const encrypted = join(dir, 'encrypted.key');
  execFileSync('openssl', ['pkey', '-in', p.cliKey, '-aes256', '-passout', 'pass:x', '-out', encrypted]);
  await assert.rejects(
    load({ certFile: p.cliCert, keyFile: encrypted }),
    /tls\.keyFile .*encrypted\.key: not an unencrypted PEM private key: it is encrypted, .*openssl pkey/,
  );
  const der = join(dir, 'ca.der');
  execFileSync('openssl', ['x509', '-in', p.ca, '-outform', 'der', '-out', der]);
  await assert.rejects(load({ caFile: der }), /tls\.caFile .*ca\.der: no PEM certificate in it \(it looks like DER: /);
  // The message names the file, never its content.
  await load({ certFile: p.cliCert, keyFile: p.srvKey }).catch((err: Error) =>
    assert.ok(!err.message.includes('PRIVATE KEY'), err.message),
  );
  // An authority's key beside its certificate: the wrong file, and a key the gateway must not hold.
  const withKey = join(dir, 'ca-and-key.pem');
  writeFileSync(withKey, Buffer.concat([readFileSync(p.ca), readFileSync(join(p.dir, 'ca.key'))]));
  await assert.rejects(load({ caFile: withKey }), /tls\.caFile .*ca-and-key\.pem: holds a private key/);
  await load({ caFile: withKey }).catch((err: Error) => assert.ok(!err.message.includes('PRIVATE KEY'), err.message));
  // A certificate and its key in one file, named by both: as nginx and HAProxy take them.
  const both = join(dir, 'client.pem');
  writeFileSync(both, Buffer.concat([readFileSync(p.cliCert), readFileSync(p.cliKey)]));
  assert.ok((await load({ certFile: both, keyFile: both })).get('o'));
  const good = await load({ caFile: p.ca, certFile: p.cliCert, keyFile: p.cliKey });
  assert.ok(good.get('o')?.secureContext);

  // `rempart check` reads them as the start would.
  const r = await check(
    dir,
    `upstreams: [{ name: o, url: "https://127.0.0.1:1", tls: { caFile: "${join(dir, 'nope.pem')}" } }]`,
  );
  assert.notEqual(r.code, 0);
  assert.match(r.stdout + r.stderr, /tls\.caFile .*nope\.pem: ENOENT/);
});
