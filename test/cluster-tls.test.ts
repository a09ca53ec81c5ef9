// `cluster.redis.tls`: a `rediss://` store whose certificate a private authority signed is trusted through
// `caFile` (and only through it: without it the store stays unreachable and every node decides locally,
// whatever NODE_TLS_REJECT_UNAUTHORIZED says), a store asking for a client certificate
// (`tls-auth-clients yes`) gets `certFile`/`keyFile`. Against a real redis-server listening on TLS only.
// `rempart check` reads the same files and the URL file as start-up does.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { openStore, storeUrl } from '../src/app/cluster.ts';
import { validateConfig } from '../src/config/load.ts';
import { createManualClock } from '../src/core/clock.ts';
import { loadTlsFiles } from '../src/core/tls-files.ts';
import type { ClusterStore } from '../src/store/types.ts';
import { cleanup, problemsOf, runCli, startGateway, startUpstream, tempDir, type Teardown } from './helpers.ts';
import { authority, issue } from './pki.ts';
import { type RedisServer, skipRedis, startRedis } from './redis-server.ts';

// One PKI for the file: the store's authority, the store's certificate for 127.0.0.1, Rempart's client
// certificate, and an authority that signed neither.
const dir = mkdtempSync(join(tmpdir(), 'rempart-redis-pki-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const f = (n: string) => join(dir, n);
if (skipRedis === false) {
  authority(dir, 'ca');
  authority(dir, 'other');
  issue(dir, 'ca', 'srv', 'store.test', 'subjectAltName=IP:127.0.0.1\n');
  issue(dir, 'ca', 'cli', 'rempart-gw', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'ca', 'cli2', 'rempart-gw', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'ca', 'named', 'localhost', 'subjectAltName=DNS:localhost\n');
  issue(dir, 'other', 'impostor', 'store.test', 'subjectAltName=IP:127.0.0.1\n');
}

const servers = new Map<boolean, Promise<RedisServer>>();
after(async () => {
  for (const s of servers.values()) await (await s).stop();
});
/** One TLS-only redis-server per `authClients`, shared by the file's tests. */
function tlsRedis(authClients: boolean): Promise<RedisServer> {
  let s = servers.get(authClients);
  if (s === undefined) {
    s = startRedis({ cert: f('srv.pem'), key: f('srv.key'), ca: f('ca.pem'), authClients });
    servers.set(authClients, s);
  }
  return s;
}

function clusterConfig(redis: Record<string, unknown>) {
  return validateConfig(
    {
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'o', url: 'http://127.0.0.1:9' }],
      routes: [{ name: 'r', path: '/*', upstream: 'o' }],
      cluster: { store: 'redis', redis: { connectTimeoutMs: 1500, reconnectMaxMs: 500, ...redis } },
    },
    '(test)',
  ).cluster;
}

async function store(
  t: Teardown,
  url: string,
  tls?: Record<string, string>,
  warnings: string[] = [],
): Promise<ClusterStore> {
  const { store: s } = await openStore(
    clusterConfig(tls === undefined ? {} : { tls }),
    { REMPART_REDIS_URL: url },
    createManualClock(),
    (w) => warnings.push(w),
  );
  cleanup(t, () => s.close());
  return s;
}

/** True when a write and a read went through the store. */
async function works(s: ClusterStore): Promise<boolean> {
  try {
    await s.tablePut('t', 'k', 'v', 60_000, 10);
    return (await s.tableEntries('t')).entries.some((e) => e.field === 'k');
  } catch {
    return false;
  }
}

test('a store signed by a private authority: trusted through caFile; without it, or with another, unreachable', {
  skip: skipRedis,
}, async (t) => {
  const r = await tlsRedis(false);
  const trusted = await store(t, r.url, { caFile: f('ca.pem') });
  assert.equal(trusted.healthy, true);
  assert.equal(await works(trusted), true);
  const system = await store(t, r.url);
  assert.equal(system.healthy, false, "the system's authorities do not know the store's");
  assert.equal(await works(system), false);
  const other = await store(t, r.url, { caFile: f('other.pem') });
  assert.equal(other.healthy, false, 'another authority is no authority');
});

test('NODE_TLS_REJECT_UNAUTHORIZED=0 turns no check off: a store nobody vouches for stays unreachable', {
  skip: skipRedis,
}, async (t) => {
  const r = await tlsRedis(false);
  const saved = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  cleanup(t, () => {
    if (saved === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = saved;
  });
  const s = await store(t, r.url, { caFile: f('other.pem') });
  assert.equal(s.healthy, false);
  assert.equal(await works(s), false);
});

test('a store asking for a client certificate gets certFile and keyFile; without them it refuses', {
  skip: skipRedis,
}, async (t) => {
  const r = await tlsRedis(true);
  const warnings: string[] = [];
  const s = await store(t, r.url, { caFile: f('ca.pem'), certFile: f('cli.pem'), keyFile: f('cli.key') }, warnings);
  assert.equal(s.healthy, true);
  // The test's certificate lives two days; the store reads its files at start only.
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(
    warnings[0]!,
    /^cluster\.redis: tls\.certFile .*cli\.pem: expires on .*: renew it, then restart \(or upgrade/,
  );
  assert.equal(await works(s), true);
  const anonymous = await store(t, r.url, { caFile: f('ca.pem') });
  assert.equal(await works(anonymous), false);
});

test('a gateway on a TLS store shares its bans through it', { skip: skipRedis }, async (t) => {
  const r = await tlsRedis(false);
  const up = await startUpstream(t);
  const saved = process.env.REMPART_REDIS_URL;
  process.env.REMPART_REDIS_URL = r.url;
  const prefix = `tls${Math.random().toString(36).slice(2, 8)}:`;
  const nodes = [];
  try {
    for (const name of ['a', 'b'])
      nodes.push(
        await startGateway(t, up.url, {
          logging: { level: 'warn', requests: false },
          cluster: {
            store: 'redis',
            nodeName: name,
            resyncMs: 300,
            redis: { keyPrefix: prefix, tls: { caFile: f('ca.pem') } },
          },
        }),
      );
  } finally {
    if (saved === undefined) delete process.env.REMPART_REDIS_URL;
    else process.env.REMPART_REDIS_URL = saved;
  }
  const [a, b] = nodes as [NonNullable<(typeof nodes)[0]>, NonNullable<(typeof nodes)[0]>];
  assert.equal(a.gateway.cluster.store.healthy, true);
  a.gateway.defense.bans.ban('198.51.100.9', 60_000, 'test', 'manual', 'test');
  const deadline = Date.now() + 5000;
  while (!b.gateway.defense.bans.isBanned('198.51.100.9') && Date.now() < deadline)
    await new Promise((res) => setTimeout(res, 50));
  assert.equal(b.gateway.defense.bans.isBanned('198.51.100.9'), true, 'the ban reached the other node');
});

test('tls with a redis:// URL, a client certificate without its key, an unreadable file: clear errors at start and in check', {
  skip: skipRedis,
}, async (t) => {
  const clock = createManualClock();
  await assert.rejects(
    openStore(clusterConfig({ tls: { caFile: f('ca.pem') } }), { REMPART_REDIS_URL: 'redis://127.0.0.1:1' }, clock),
    /cluster\.redis\.tls is set but the store's URL is redis:\/\/127\.0\.0\.1:1: TLS needs rediss:\/\//,
  );
  // A client certificate without its key: a config error at its path, and refused by the loader too.
  assert.deepEqual(
    problemsOf(() => clusterConfig({ tls: { certFile: f('cli.pem') } })).map((p) => [p.path, p.message]),
    [['cluster.redis.tls.keyFile', 'a client certificate (`certFile`) needs its private key (`keyFile`)']],
  );
  assert.deepEqual(
    problemsOf(() => clusterConfig({ url: 'redis://127.0.0.1:1', tls: { caFile: f('ca.pem') } })).map((p) => p.path),
    ['cluster.redis.tls'],
  );
  await assert.rejects(
    loadTlsFiles('cluster.redis', { certFile: f('cli.pem') }),
    /cluster\.redis: tls\.certFile .*cli\.pem: a client certificate needs its private key/,
  );
  const work = tempDir(t);
  const cfg = (redis: string) => {
    const file = join(work, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(
      file,
      `version: 1\nlisteners: [{ address: "127.0.0.1:0" }]\nupstreams: [{ name: o, url: "http://127.0.0.1:9" }]\nroutes: [{ name: r, path: "/*", upstream: o }]\n` +
        `admin: { address: "off" }\ncluster: { store: redis, redis: ${redis} }\n`,
    );
    return file;
  };
  const missing = await runCli(['check', cfg(`{ url: "rediss://127.0.0.1:1", tls: { caFile: "${work}/gone.pem" } }`)]);
  assert.equal(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, /cluster\.redis: tls\.caFile .*gone\.pem: ENOENT/);
  const noFile = await runCli(['check', cfg(`{ urlFile: "${work}/no-url" }`)]);
  assert.equal(noFile.code, 1, noFile.stderr);
  assert.match(noFile.stderr, /cluster\.redis\.urlFile .*no-url: ENOENT/);
  const plain = await runCli(['check', cfg(`{ url: "redis://127.0.0.1:1", tls: { caFile: "${f('ca.pem')}" } }`)]);
  assert.equal(plain.code, 1, plain.stderr);
  assert.match(plain.stderr, /TLS needs rediss:\/\//);
  // No URL in the file: REMPART_REDIS_URL may be set where the gateway runs; a warning, not a failure.
  const env = { ...process.env };
  delete env.REMPART_REDIS_URL;
  const later = await runCli(['check', cfg(`{ tls: { caFile: "${f('ca.pem')}" } }`)], env);
  assert.equal(later.code, 0, later.stderr);
  assert.match(later.stderr, /warning: cluster\.store is redis but no URL is given/);
  const good = await runCli(['check', cfg(`{ url: "rediss://127.0.0.1:1", tls: { caFile: "${f('ca.pem')}" } }`)], env);
  assert.equal(good.code, 0, good.stderr);
});

/** A TLS listener on 127.0.0.1 (`port`, else a free one) that counts handshakes begun and application bytes received. */
async function tlsListener(
  t: Teardown,
  options: tls.TlsOptions,
  port = 0,
  onSecure?: (s: tls.TLSSocket) => void,
): Promise<{ port: number; attempts: number; bytes: Buffer[]; servernames: unknown[] }> {
  const seen = { port: 0, attempts: 0, bytes: [] as Buffer[], servernames: [] as unknown[] };
  const sockets = new Set<net.Socket>();
  const srv = tls.createServer(options, (s) => {
    seen.servernames.push(s.servername);
    s.on('data', (b: Buffer) => seen.bytes.push(b));
    s.on('error', () => {});
    onSecure?.(s);
  });
  srv.on('connection', (c: net.Socket) => {
    seen.attempts++;
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((res) => srv.listen(port, '127.0.0.1', res));
  seen.port = (srv.address() as net.AddressInfo).port;
  cleanup(t, async () => {
    for (const c of sockets) c.destroy();
    await new Promise((res) => srv.close(res));
  });
  return seen;
}

test('a URL query cannot override the connection: refused at start and by check, nothing sent', async (t) => {
  // ioredis takes `?name=value` as options over the ones given beside the URL: `?tls=` made this
  // rediss:// connection plain TCP with the password in clear, `?tls=x` dropped caFile and the check.
  const plain = net.createServer((c) => {
    c.on('data', (b: Buffer) => received.push(b));
    c.on('error', () => {});
  });
  const received: Buffer[] = [];
  await new Promise<void>((res) => plain.listen(0, '127.0.0.1', res));
  cleanup(t, () => new Promise((res) => plain.close(res)));
  const port = (plain.address() as net.AddressInfo).port;
  const clock = createManualClock();
  for (const query of ['?tls=', '?tls=x', '?keyPrefix=other:', '?db=1&tls=RedisCloudFixed', '?family=4&db=x']) {
    const url = `rediss://:sekret-pw@127.0.0.1:${port}/0${query}`;
    let opened: ClusterStore | null = null;
    const err = await openStore(clusterConfig({ tls: { caFile: f('ca.pem') } }), { REMPART_REDIS_URL: url }, clock)
      .then((o) => {
        opened = o.store;
        return null;
      })
      .catch((e: Error) => e);
    await (opened as ClusterStore | null)?.close();
    assert.ok(err instanceof Error, `${query}: refused`);
    assert.match(err.message, /has a query \(\?…\).*remove it/, query);
    assert.doesNotMatch(err.message, /sekret|RedisCloud|other:/, 'neither the password nor the query is said');
  }
  assert.equal(Buffer.concat(received).toString('latin1'), '', 'nothing reached the listener');
  // What a URL may have carried before, harmless: kept.
  for (const query of ['?db=2', '?family=4', '?family=0&db=0'])
    assert.equal(
      await storeUrl(clusterConfig({}), { REMPART_REDIS_URL: `rediss://h:1${query}` }),
      `rediss://h:1${query}`,
    );
  const work = tempDir(t);
  const file = join(work, 'c.yaml');
  writeFileSync(
    file,
    `version: 1\nlisteners: [{ address: "127.0.0.1:0" }]\nupstreams: [{ name: o, url: "http://127.0.0.1:9" }]\nroutes: [{ name: r, path: "/*", upstream: o }]\n` +
      `admin: { address: "off" }\ncluster: { store: redis, redis: { url: "rediss://:sekret-pw@127.0.0.1:${port}?tls=" } }\n`,
  );
  const env = { ...process.env };
  delete env.REMPART_REDIS_URL;
  const check = await runCli(['check', file], env);
  assert.equal(check.code, 1, check.stderr);
  assert.match(check.stderr, /the Redis URL rediss:\/\/127\.0\.0\.1:\d+ has a query/);
  assert.doesNotMatch(check.stdout + check.stderr, /sekret/);
});

test('a mistyped URL is refused without its password in the message', async () => {
  for (const url of [
    'rediss:default:sekret-pw@store.example:6379',
    'redis:/:sekret-pw@store.example',
    'redis://store.example:6379/:sekret-pw@x',
    // A '/' in the password ends the authority: "default" parses as the host, "12" as its port.
    'redis://default:12/sekret-pw@store.example',
  ]) {
    const err = await storeUrl(clusterConfig({}), { REMPART_REDIS_URL: url }).then(
      () => null,
      (e: Error) => e,
    );
    if (err === null) {
      // A URL ioredis accepts: what a later message shows of it is checked instead.
      const tlsErr = await openStore(
        clusterConfig({ tls: { caFile: f('ca.pem') } }),
        { REMPART_REDIS_URL: url },
        createManualClock(),
      ).then(
        () => null,
        (e: Error) => e,
      );
      assert.ok(tlsErr instanceof Error, url);
      assert.match(tlsErr.message, /TLS needs rediss/, url);
      assert.doesNotMatch(tlsErr.message, /sekret|default/, url);
      continue;
    }
    assert.match(err.message, /must start with redis:\/\/ or rediss:\/\//, url);
    assert.doesNotMatch(err.message, /sekret/, url);
  }
});

test('a store named by host: its name is sent (SNI) and checked; by IP address: not sent', {
  skip: skipRedis,
}, async (t) => {
  // A TLS proxy routing by name (a managed store's front): for `localhost` the certificate naming it,
  // for no name a certificate for 127.0.0.1 only. Behind it, a plain redis-server.
  const r = await startRedis();
  cleanup(t, () => r.stop());
  const key = (n: string) => readFileSync(f(`${n}.key`));
  const cert = (n: string) => readFileSync(f(`${n}.pem`));
  const named = tls.createSecureContext({ cert: cert('named'), key: key('named') });
  const front = await tlsListener(
    t,
    {
      cert: cert('srv'),
      key: key('srv'),
      SNICallback: (name, cb) => cb(null, name === 'localhost' ? named : undefined),
    },
    0,
    (s) => {
      const up = net.connect(r.port, '127.0.0.1');
      up.on('error', () => s.destroy());
      s.on('close', () => up.destroy());
      s.pipe(up).pipe(s);
    },
  );
  const byName = await store(t, `rediss://localhost:${front.port}`, { caFile: f('ca.pem') });
  assert.equal(byName.healthy, true, 'the certificate for localhost was presented and accepted');
  assert.equal(await works(byName), true);
  assert.ok(front.servernames.includes('localhost'), String(front.servernames));
  const count = front.servernames.length;
  const byIp = await store(t, `rediss://127.0.0.1:${front.port}`, { caFile: f('ca.pem') });
  assert.equal(byIp.healthy, true);
  assert.deepEqual(front.servernames.slice(count), [false, false], 'no name sent for an IP address');
});

test('after the store restarts, an impostor on its port is refused: no byte sent to it', {
  skip: skipRedis,
}, async (t) => {
  const r = await startRedis({ cert: f('srv.pem'), key: f('srv.key'), ca: f('ca.pem'), authClients: false });
  let stopped = false;
  cleanup(t, () => (stopped ? undefined : r.stop()));
  const s = await store(t, r.url, { caFile: f('ca.pem') });
  assert.equal(s.healthy, true);
  await r.kill();
  stopped = true;
  // The port taken by a server whose certificate names 127.0.0.1 too, signed by another authority.
  const impostor = await tlsListener(
    t,
    { cert: readFileSync(f('impostor.pem')), key: readFileSync(f('impostor.key')) },
    r.port,
  );
  const deadline = Date.now() + 4000;
  while (impostor.attempts < 4 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  assert.ok(impostor.attempts >= 2, `both connections tried again (${impostor.attempts})`);
  assert.equal(s.healthy, false);
  assert.equal(Buffer.concat(impostor.bytes).length, 0, 'no command (nor AUTH) reached the impostor');
});

test('a reload says what the store keeps: its TLS files near their end, changed, or gone', {
  skip: skipRedis,
}, async (t) => {
  // The store is opened once. A reload used to read none of its files: the expiry warning was said at
  // start only (months before), a renewed file looked applied, a deleted one went unnoticed until the
  // next start failed.
  const r = await tlsRedis(true);
  const up = await startUpstream(t);
  const work = tempDir(t);
  const certFile = join(work, 'client.pem');
  const keyFile = join(work, 'client.key');
  const install = (n: string) => {
    writeFileSync(certFile, readFileSync(f(`${n}.pem`)));
    writeFileSync(keyFile, readFileSync(f(`${n}.key`)), { mode: 0o600 });
  };
  install('cli');
  const cluster = {
    store: 'redis',
    nodeName: 'a',
    redis: {
      keyPrefix: `rl${Math.random().toString(36).slice(2, 8)}:`,
      tls: { caFile: f('ca.pem'), certFile, keyFile },
    },
  };
  const saved = process.env.REMPART_REDIS_URL;
  process.env.REMPART_REDIS_URL = r.url;
  cleanup(t, () => {
    if (saved === undefined) delete process.env.REMPART_REDIS_URL;
    else process.env.REMPART_REDIS_URL = saved;
  });
  const gw = await startGateway(t, up.url, { logging: { level: 'warn', requests: false }, cluster });
  const store = gw.gateway.cluster.store;
  assert.equal(store.healthy, true);
  const config = validateConfig(
    {
      version: 1,
      listeners: [{ address: `127.0.0.1:${gw.port}` }],
      upstreams: [{ name: 'origin', url: up.url }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
      admin: { address: gw.gateway.addresses().admin === null ? 'off' : '127.0.0.1:0' },
      logging: { level: 'warn', requests: false },
      cluster,
    },
    '(test)',
  );
  const said = () => gw.logs.map((l) => String(l.msg)).filter((m) => m.startsWith('cluster.redis'));
  assert.equal(said().length, 1, said().join('\n'));
  assert.match(said()[0]!, /tls\.certFile .*client\.pem: expires on/);

  await gw.gateway.reload(config);
  assert.equal(said().length, 2, 'the expiry is said again at the reload');
  assert.match(said()[1]!, /tls\.certFile .*client\.pem: expires on .*then restart \(or upgrade/);

  install('cli2');
  await gw.gateway.reload(config);
  assert.match(
    said().slice(2).join('\n'),
    /cluster\.redis\.tls: the files differ from those the store was opened with, which it keeps until the next restart/,
  );
  assert.equal(await works(store), true, 'the store runs on the files it was opened with');

  rmSync(keyFile);
  await gw.gateway.reload(config);
  assert.match(said().at(-1)!, /tls\.keyFile .*client\.key: ENOENT.*the next restart .* fails on this/);
  assert.equal(await works(store), true);
});
