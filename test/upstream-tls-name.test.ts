// An https upstream is named by its configured host, never by the client's Host. undici, the client of
// https upstreams on both engines, took each request's TLS server name from its Host: the origin's
// certificate was checked against a name the client chose, and since undici closes an https connection
// when the name changes, a client alternating two Host values made every upstream request a new TLS
// handshake (6 requests, 6 connections: test/review-s28-stale.test.ts's finding). Now every connection
// says the configured host name in its SNI (none for an IP address, the certificate then checked against
// the address, as nginx's `proxy_ssl_name $proxy_host` does) and one connection carries them all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import tls from 'node:tls';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { runCli, selfSignedCert, startGateway, tempDir, track, type Teardown } from './helpers.ts';

interface TlsOrigin {
  port: number;
  /** Its self-signed certificate (localhost, the loopback addresses, origin.example): the gateway's caFile. */
  certFile: string;
  /** The SNI of each connection the origin accepted (false: none). */
  names: Array<string | false>;
}

/** An https origin on 127.0.0.1 and, when the machine has it, on ::1 at the same port (for `localhost`). */
async function tlsOrigin(t: Teardown): Promise<TlsOrigin> {
  const cert = selfSignedCert(t, 'rempart-tls-', ['origin.example']);
  const o: TlsOrigin = { port: 0, certFile: cert.certFile, names: [] };
  const make = () =>
    tls.createServer({ cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }, (s) => {
      o.names.push((s as tls.TLSSocket).servername ?? false);
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        if (d.includes('\r\n\r\n')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      });
    });
  const v4 = make();
  await new Promise<void>((r) => v4.listen(0, '127.0.0.1', r));
  o.port = (v4.address() as AddressInfo).port;
  track(t, { close: () => new Promise<void>((r) => v4.close(() => r())) });
  const v6 = make();
  await new Promise<void>((r) => {
    v6.once('error', () => r());
    v6.listen(o.port, '::1', () => {
      track(t, { close: () => new Promise<void>((c) => v6.close(() => c())) });
      r();
    });
  });
  return o;
}

function get(agent: http.Agent, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ agent, host: '127.0.0.1', port, path: '/x', headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

for (const [label, upstreamHost, tlsServerName, expected] of [
  ['a host name', 'localhost', undefined, 'localhost'],
  ['an IP address', '127.0.0.1', undefined, false],
  ['an IP address with tlsServerName', '127.0.0.1', 'origin.example', 'origin.example'],
] as const) {
  test(`an https upstream by ${label}: SNI ${expected === false ? 'none' : expected}, whatever the client's Host, on one connection`, async (t) => {
    const o = await tlsOrigin(t);
    const url = `https://${upstreamHost}:${o.port}`;
    const gw = await startGateway(t, url, {
      logging: { level: 'error', requests: false },
      defense: { rateLimit: { mode: 'off' } },
      upstreams: [{ name: 'origin', url, tls: { caFile: o.certFile }, ...(tlsServerName ? { tlsServerName } : {}) }],
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    track(t, { close: () => agent.destroy() });
    for (let i = 0; i < 12; i++) assert.equal(await get(agent, gw.port, i % 2 === 0 ? 'a.example' : 'b.example'), 200);
    assert.ok(o.names.length >= 1 && o.names.length <= 2, `${o.names.length} upstream connections for 12 requests`);
    assert.deepEqual(new Set(o.names), new Set([expected]));
  });
}

test('`rempart check`: an https upstream by IP address without tlsServerName is a warning; an address as tlsServerName is refused', async (t) => {
  const dir = tempDir(t);
  const write = (name: string, upstream: string) => {
    const file = join(dir, name);
    writeFileSync(
      file,
      `version: 1
listeners: [{ address: 127.0.0.1:0 }]
upstreams: [${upstream}]
routes: [{ name: all, path: /*, upstream: origin }]
admin: { address: off }
state: { file: off }
`,
    );
    return file;
  };
  const byIp = await runCli(['check', write('ip.yaml', '{ name: origin, url: https://10.0.0.7:8443 }')]);
  assert.equal(byIp.code, 0, byIp.stderr);
  assert.match(
    byIp.stderr,
    /warning: upstreams origin: https:\/\/10\.0\.0\.7:8443 is https by IP address: .*set tlsServerName/,
  );
  const named = await runCli([
    'check',
    write('named.yaml', '{ name: origin, url: https://10.0.0.7:8443, tlsServerName: shop.example }'),
  ]);
  assert.equal(named.code, 0, named.stderr);
  assert.doesNotMatch(named.stderr, /tlsServerName/);
  const address = await runCli([
    'check',
    write('address.yaml', '{ name: origin, url: https://10.0.0.7:8443, tlsServerName: 10.0.0.7 }'),
  ]);
  assert.equal(address.code, 1);
  assert.match(address.stderr, /tlsServerName/);
});
