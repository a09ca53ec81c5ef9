// Configuration: strict validation with file, line and key path for every problem, defaults, the
// `rempart check` and flag handling of the CLI, and SIGHUP reload (applied, or rejected and kept).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { parseConfig, validateConfig } from '../src/config/load.ts';
import {
  BIN,
  cleanup,
  ENGINE_FLAGS,
  freePort,
  problemsOf,
  runCli,
  selfSignedCert,
  startGateway,
  startUpstream,
  stopChild,
  tempDir,
  waitFor,
  withEngine,
} from './helpers.ts';

const GOOD = `version: 1
listeners:
  - address: 127.0.0.1:8080
upstreams:
  - name: app
    url: http://127.0.0.1:3000
routes:
  - name: all
    upstream: app
`;

test('an unknown key is refused with the file, its line and its key path', () => {
  const text = `${GOOD}limits:\n  maxHeaderBytes: 32768\n  maxHeaderByte: 100\n`;
  const problems = problemsOf(() => parseConfig(text, 'rempart.yaml'));
  assert.equal(problems.length, 1);
  const [p] = problems;
  assert.equal(p!.file, 'rempart.yaml');
  assert.equal(p!.line, 12);
  assert.equal(p!.path, 'limits.maxHeaderByte');
  assert.match(p!.message, /unknown key/);
  const err = (() => {
    try {
      parseConfig(text, 'rempart.yaml');
    } catch (e) {
      return e as Error;
    }
  })()!;
  assert.match(err.message, /rempart\.yaml:12 {2}limits\.maxHeaderByte: unknown key/);
});

test('an unknown key in an object built in code is refused with its key path', () => {
  const problems = problemsOf(() =>
    validateConfig({
      version: 1,
      listeners: [{ address: '127.0.0.1:1', tsl: {} }],
      upstreams: [{ name: 'a', url: 'http://127.0.0.1:2' }],
      routes: [{ name: 'r', upstream: 'a' }],
    }),
  );
  assert.deepEqual(
    problems.map((p) => p.path),
    ['listeners[0].tsl'],
  );
});

test('several problems in one file are all reported at once, each on its own line', () => {
  const text = `version: 1
listeners:
  - address: 127.0.0.1:8080
upstreams:
  - name: app
    url: http://127.0.0.1:3000
    connections: 0
routes:
  - name: all
    upstream: app
    class: bogus
limits:
  headersTimeoutMs: fast
`;
  const problems = problemsOf(() => parseConfig(text, 'multi.yaml'));
  assert.equal(problems.length, 3, JSON.stringify(problems, null, 1));
  assert.deepEqual(
    problems.map((p) => [p.path, p.line]),
    [
      ['upstreams[0].connections', 7],
      ['routes[0].class', 11],
      ['limits.headersTimeoutMs', 13],
    ],
  );
  assert.ok(problems.every((p) => p.file === 'multi.yaml'));
});

test('schema problems and cross-reference problems are reported together, in file order', () => {
  const text = `version: 1
listeners:
  - address: 127.0.0.1:8080
upstreams:
  - name: app
    url: http://127.0.0.1:3000
routes:
  - name: all
    path: /a/*
    upstream: ap
  - name: all
    path: /x
    upstream: app
    class: bogus
`;
  const problems = problemsOf(() => parseConfig(text, 'mixed.yaml'));
  assert.deepEqual(
    problems.map((p) => [p.line, p.path]),
    [
      [10, 'routes[0].upstream'],
      [11, 'routes[1].name'],
      [14, 'routes[1].class'],
    ],
  );
});

test('a bad enum value lists the allowed values', () => {
  const problems = problemsOf(() =>
    parseConfig(GOOD.replace('upstream: app', 'upstream: app\n    class: bogus'), 'c.yaml'),
  );
  assert.equal(problems.length, 1);
  assert.equal(problems[0]!.path, 'routes[0].class');
  assert.equal(problems[0]!.line, 10);
  for (const c of ['critical', 'authenticated', 'cacheable', 'public', 'static'])
    assert.ok(problems[0]!.message.includes(`"${c}"`), problems[0]!.message);
  assert.ok(problems[0]!.message.includes('"bogus"'));
});

test('a route after a catch-all, a host with a port, a trust-everyone proxy list and PROXY protocol with nobody trusted are refused', () => {
  const text = `version: 1
listeners:
  - address: 127.0.0.1:8080
    proxyProtocol: true
upstreams:
  - name: app
    url: http://127.0.0.1:3000
routes:
  - name: all
    upstream: app
  - name: pay
    host: pay.example.org:8443
    path: /pay
    upstream: app
`;
  const problems = problemsOf(() => parseConfig(text, 's.yaml'));
  assert.deepEqual(problems.map((p) => p.path).sort(), ['listeners[0].proxyProtocol', 'routes[1]', 'routes[1].host']);
  const wide = problemsOf(() => parseConfig(`${GOOD}clientAddress:\n  trustedProxies: [0.0.0.0/0]\n`, 'w.yaml'));
  assert.deepEqual(
    wide.map((p) => p.path),
    ['clientAddress.trustedProxies[0]'],
  );
  assert.match(wide[0]!.message, /trusts a large part of the Internet/);
});

test('a bad CIDR in trustedProxies is refused, a good one is accepted', () => {
  for (const bad of ['10.0.0.0/33', 'not-an-ip', '300.1.1.1', '::1/129', '10.0.0.0/']) {
    const problems = problemsOf(() =>
      parseConfig(`${GOOD}clientAddress:\n  trustedProxies:\n    - "${bad}"\n`, 'c.yaml'),
    );
    assert.equal(problems.length, 1, bad);
    assert.equal(problems[0]!.path, 'clientAddress.trustedProxies[0]');
    assert.equal(problems[0]!.line, 12);
    assert.match(problems[0]!.message, /not an IP address or CIDR block/);
  }
  const ok = parseConfig(
    `${GOOD}clientAddress:\n  trustedProxies: [10.0.0.0/8, "::1", fd00::/8, 192.0.2.7]\n`,
    'c.yaml',
  );
  assert.deepEqual(ok.clientAddress.trustedProxies, ['10.0.0.0/8', '::1', 'fd00::/8', '192.0.2.7']);
});

test('an upstream URL with a path, credentials, a query or a non-HTTP scheme is refused', () => {
  for (const url of [
    'http://127.0.0.1:3000/base',
    'http://user:pw@127.0.0.1:3000',
    'http://127.0.0.1:3000/?x=1',
    'ftp://127.0.0.1:21',
    'nonsense',
    '127.0.0.1:3000',
  ]) {
    const problems = problemsOf(() => parseConfig(GOOD.replace('http://127.0.0.1:3000', url), 'u.yaml'));
    assert.equal(problems.length, 1, url);
    assert.equal(problems[0]!.path, 'upstreams[0].url', url);
    assert.equal(problems[0]!.line, 6);
    assert.match(problems[0]!.message, /not an http\(s\):\/\/host:port URL without path or credentials/);
  }
  for (const url of ['http://127.0.0.1:3000', 'https://api.internal:8443', 'http://[::1]:3000/', 'http://app']) {
    assert.equal(parseConfig(GOOD.replace('http://127.0.0.1:3000', url), 'u.yaml').upstreams[0]!.url, url);
  }
});

test('a route naming an unknown upstream is refused with the known names', () => {
  const problems = problemsOf(() => parseConfig(GOOD.replace('    upstream: app', '    upstream: ap'), 'r.yaml'));
  assert.equal(problems.length, 1);
  assert.equal(problems[0]!.path, 'routes[0].upstream');
  assert.equal(problems[0]!.line, 9);
  assert.match(problems[0]!.message, /no upstream named "ap" \(known: app\)/);
});

test('duplicate upstream and route names are refused', () => {
  const text = `version: 1
listeners:
  - address: 127.0.0.1:8080
upstreams:
  - name: app
    url: http://127.0.0.1:3000
  - name: app
    url: http://127.0.0.1:3001
routes:
  - name: all
    path: /a/*
    upstream: app
  - name: all
    path: /x
    upstream: app
`;
  const problems = problemsOf(() => parseConfig(text, 'd.yaml'));
  assert.deepEqual(
    problems.map((p) => [p.path, p.line]),
    [
      ['upstreams[1].name', 7],
      ['routes[1].name', 13],
    ],
  );
  assert.match(problems[0]!.message, /duplicate upstream name "app"/);
  assert.match(problems[1]!.message, /duplicate route name "all"/);
});

test('listener and admin ports above 65535 are refused by validation, not at bind time', () => {
  const problems = problemsOf(() =>
    parseConfig(GOOD.replace('127.0.0.1:8080', '127.0.0.1:80800') + 'admin:\n  address: 127.0.0.1:91800\n', 'p.yaml'),
  );
  assert.deepEqual(
    problems.map((p) => [p.line, p.path, p.message]),
    [
      [3, 'listeners[0].address', 'port out of range: 80800'],
      [11, 'admin.address', 'port out of range: 91800'],
    ],
  );
});

test('YAML syntax errors and duplicate keys are reported with their line', () => {
  const problems = problemsOf(() => parseConfig(`${GOOD}limits:\n  maxBodyBytes: 1\n  maxBodyBytes: 2\n`, 'y.yaml'));
  assert.equal(problems.length, 1);
  assert.equal(problems[0]!.line, 12);
  assert.match(problems[0]!.message, /^YAML: /);
});

test('defaults are applied to everything the file leaves out, and the result is frozen', () => {
  const c = parseConfig(GOOD, 'good.yaml');
  assert.equal(c.routes[0]!.path, '/*');
  assert.equal(c.routes[0]!.class, 'public');
  assert.equal(c.listeners[0]!.proxyProtocol, false);
  assert.equal(c.upstreams[0]!.connections, 256);
  assert.equal(c.upstreams[0]!.connectTimeoutMs, 2000);
  assert.equal(c.upstreams[0]!.headersTimeoutMs, 15000);
  assert.equal(c.limits.maxHeaderBytes, 16384);
  assert.equal(c.limits.maxBodyBytes, 10485760);
  assert.equal(c.limits.headersTimeoutMs, 10000);
  assert.deepEqual(c.clientAddress.trustedProxies, []);
  assert.equal(c.admin.address, '127.0.0.1:9180');
  assert.equal(c.admin.allowRemote, false);
  assert.equal(c.logging.level, 'info');
  assert.equal(c.logging.requests, true);
  assert.equal(c.via, 'rempart');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.limits) && Object.isFrozen(c.routes[0]));
  // A partial section keeps the defaults of the keys it does not set.
  const partial = parseConfig(`${GOOD}limits:\n  maxBodyBytes: 5\n`, 'p.yaml');
  assert.equal(partial.limits.maxBodyBytes, 5);
  assert.equal(partial.limits.maxHeaderCount, 100);
});

test('`rempart check FILE` exits 0 on a good file and 1 with every problem on stderr on a bad one', async (t) => {
  const dir = tempDir(t, 'rempart-cfg-');
  const good = join(dir, 'good.yaml');
  const bad = join(dir, 'bad.yaml');
  writeFileSync(good, GOOD);
  writeFileSync(
    bad,
    GOOD.replace('    upstream: app', '    upstream: app\n    class: bogus') + 'limits:\n  maxHeaderByte: 1\n',
  );
  const ok = await runCli(['check', good]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /good\.yaml: ok/);
  const ko = await runCli(['check', bad]);
  assert.equal(ko.code, 1);
  assert.match(ko.stderr, /2 problems/);
  assert.ok(ko.stderr.includes(`${bad}:10  routes[0].class: must be one of`), ko.stderr);
  assert.ok(ko.stderr.includes(`${bad}:12  limits.maxHeaderByte: unknown key`), ko.stderr);
  const missing = await runCli(['check', join(dir, 'absent.yaml')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read file/);
});

test('an unknown command-line flag exits 2 with a clear message and the usage', async () => {
  const r = await runCli(['--upstrem', 'http://127.0.0.1:3000']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Unknown option '--upstrem'/);
  assert.match(r.stderr, /Usage:/);
  const none = await runCli([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /give --upstream URL or --config FILE/);
  // Flags that only make sense without a file are refused rather than silently ignored.
  const mixed = await runCli(['--config', 'rempart.yaml', '--upstream', 'http://127.0.0.1:1', '--quiet']);
  assert.equal(mixed.code, 2);
  assert.match(mixed.stderr, /--config cannot be combined with --upstream, --quiet/);
});

test('--listen, --admin and --log-level override a config file, and a bad override is a config problem', {
  timeout: 30_000,
}, async (t) => {
  const origin = await startUpstream(t, (_req, res) => res.end('origin'));
  const dir = tempDir(t, 'rempart-override-');
  const file = join(dir, 'rempart.yaml');
  const [filePort, fileAdmin, port, adminPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  writeFileSync(file, gatewayConfig(filePort, fileAdmin, origin.url) + 'logging:\n  level: info\n');
  const child = spawn(
    process.execPath,
    [
      BIN,
      '--config',
      file,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin',
      `127.0.0.1:${adminPort}`,
      '--log-level',
      'warn',
      ...ENGINE_FLAGS,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const logs = logLines(child);
  cleanup(t, () => stopChild(child, 10_000));
  await waitFor(
    async () => {
      assert.equal(child.exitCode, null, stderr);
      return (
        (await fetch(`http://127.0.0.1:${port}/x`).then(
          (r) => r.text(),
          () => '',
        )) === 'origin'
      );
    },
    { timeoutMs: 15_000, intervalMs: 50, message: 'the overridden listener to answer' },
  );
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200);
  await assert.rejects(fetch(`http://127.0.0.1:${filePort}/x`), 'the file\u2019s listener address is replaced');
  await assert.rejects(fetch(`http://127.0.0.1:${fileAdmin}/healthz`), 'the file\u2019s admin address is replaced');
  // --log-level warn: the info line "rempart started" is not written.
  assert.equal(logs.filter((l) => l.msg === 'rempart started').length, 0);
  // A reload keeps the overrides: no "needs a restart" warning (the addresses did not change),
  // and still no info line (the level stays warn).
  child.kill('SIGHUP');
  const reloaded = async () =>
    /rempart_config_reloads_total\{result="applied"\} 1\n/.test(
      await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text(),
    );
  await waitFor(reloaded, { timeoutMs: 10_000, intervalMs: 50, message: () => `a reload: ${stderr}` });
  assert.deepEqual(
    logs.filter((l) => /take effect at the next restart|configuration reloaded/.test(String(l.msg))),
    [],
    'no restart warning, no info line',
  );
  const bad = await runCli(['--config', file, '--listen', 'localhost']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /listeners\[0\]\.address: expected host:port, e\.g\. 0\.0\.0\.0:8080/);
});

test('`--upstream nonsense` exits 1 with a configuration problem naming the flag value', async () => {
  const r = await runCli(['--upstream', 'nonsense', '--listen', '127.0.0.1:0', '--admin', 'off']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /invalid configuration/);
  assert.match(r.stderr, /upstreams\[0\]\.url: not an http\(s\):\/\/host:port URL/);
  assert.match(r.stderr, /"nonsense"/);
});

function gatewayConfig(port: number, adminPort: number, upstreamUrl: string): string {
  return `version: 1
listeners:
  - address: 127.0.0.1:${port}
upstreams:
  - name: origin
    url: ${upstreamUrl}
routes:
  - name: all
    upstream: origin
admin:
  address: 127.0.0.1:${adminPort}
`;
}

/** Collects a child's JSON log lines from stdout. */
function logLines(child: ChildProcess): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  child.stdout!.on('data', (c: Buffer) => {
    partial += c.toString();
    let nl: number;
    while ((nl = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (line.trim() === '') continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
    }
  });
  return lines;
}

test('SIGHUP reloads a changed file, and a broken file is rejected while the running configuration keeps serving', {
  timeout: 30_000,
}, async (t) => {
  const first = await startUpstream(t, (_req, res) => res.end('first'));
  const second = await startUpstream(t, (_req, res) => res.end('second'));
  const dir = tempDir(t, 'rempart-reload-');
  const file = join(dir, 'rempart.yaml');
  const port = await freePort();
  const adminPort = await freePort();
  writeFileSync(file, gatewayConfig(port, adminPort, first.url));
  const child = spawn(process.execPath, [BIN, '--config', file, ...ENGINE_FLAGS], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const logs = logLines(child);
  cleanup(t, () => stopChild(child));
  const body = async () => (await fetch(`http://127.0.0.1:${port}/who`)).text();
  await waitFor(() => logs.some((l) => l.msg === 'rempart started') || child.exitCode !== null, {
    timeoutMs: 8000,
    intervalMs: 20,
    message: 'start-up',
  });
  assert.equal(child.exitCode, null, stderr);
  assert.equal(await body(), 'first');

  // A valid change, then SIGHUP: traffic moves to the second upstream.
  writeFileSync(file, gatewayConfig(port, adminPort, second.url));
  child.kill('SIGHUP');
  await waitFor(() => logs.some((l) => l.msg === 'configuration reloaded'), {
    timeoutMs: 8000,
    intervalMs: 20,
    message: 'the reload',
  });
  assert.equal(await body(), 'second');
  assert.equal(await body(), 'second');

  // A broken file, then SIGHUP: rejected, logged with the problem, the old config keeps serving.
  writeFileSync(
    file,
    gatewayConfig(port, adminPort, first.url).replace('  - name: all', '  - name: all\n    class: bogus'),
  );
  child.kill('SIGHUP');
  await waitFor(() => logs.some((l) => String(l.msg).includes('reload rejected')), {
    timeoutMs: 8000,
    intervalMs: 20,
    message: 'the rejection',
  });
  const rejected = logs.find((l) => String(l.msg).includes('reload rejected'))!;
  assert.equal(rejected.level, 'error');
  assert.match(JSON.stringify(rejected.problems), /routes\[0\]\.class/);
  assert.equal(child.exitCode, null, 'the process is still running');
  assert.equal(await body(), 'second');

  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  assert.match(metrics, /rempart_config_reloads_total\{result="rejected"\} 1\n/);
  assert.match(metrics, /rempart_config_reloads_total\{result="applied"\} 1\n/);

  // A clean exit on SIGTERM (one that had to be killed is the teardown's business, as before).
  const code = await stopChild(child);
  if (code !== 'killed') assert.equal(code, 0, `exit code after SIGTERM; stderr: ${stderr}`);
});

test('a SIGHUP whose file names an unreadable TLS key is rejected without stopping the running gateway', {
  timeout: 30_000,
}, async (t) => {
  const up = await startUpstream(t, (_req, res) => res.end('up'));
  const { dir, certFile, keyFile } = selfSignedCert(t, 'rempart-reload-tls-');
  const file = join(dir, 'rempart.yaml');
  const port = await freePort();
  const adminPort = await freePort();
  const withTls = (key: string) =>
    gatewayConfig(port, adminPort, up.url).replace(
      `address: 127.0.0.1:${port}`,
      `address: 127.0.0.1:${port}\n    tls:\n      certFile: ${certFile}\n      keyFile: ${key}`,
    );
  writeFileSync(file, withTls(keyFile));
  const child = spawn(process.execPath, [BIN, '--config', file, ...ENGINE_FLAGS], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const logs = logLines(child);
  const get = () =>
    new Promise<string>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
  cleanup(t, () => stopChild(child));
  await waitFor(() => logs.some((l) => l.msg === 'rempart started') || child.exitCode !== null, {
    timeoutMs: 8000,
    intervalMs: 20,
    message: 'start-up',
  });
  assert.equal(child.exitCode, null, stderr);
  assert.equal(await get(), 'up');
  writeFileSync(file, withTls(join(dir, 'missing-key.pem')));
  child.kill('SIGHUP');
  await waitFor(() => logs.some((l) => String(l.msg).includes('reload rejected')) || child.exitCode !== null, {
    timeoutMs: 8000,
    intervalMs: 20,
    message: 'the rejection',
  });
  assert.equal(child.exitCode, null, `the gateway exited on a bad reload; stderr: ${stderr}`);
  assert.match(JSON.stringify(logs.find((l) => String(l.msg).includes('reload rejected'))), /missing-key\.pem/);
  assert.equal(await get(), 'up', 'the running configuration keeps serving');
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  assert.match(metrics, /rempart_config_reloads_total\{result="rejected"\} 1\n/);
});

test('an in-process reload moves new requests to the new upstream while a request in flight on the old one completes', async (t) => {
  const first = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow-done'), 400);
    else res.end('first');
  });
  const second = await startUpstream(t, (_req, res) => res.end('second'));
  const gw = await startGateway(t, first.url);
  assert.equal(await (await fetch(`${gw.url}/a`)).text(), 'first');
  const inFlight = fetch(`${gw.url}/slow`).then((r) => r.text());
  await waitFor(() => first.requests.some((r) => r.url === '/slow'), {
    intervalMs: 20,
    message: 'the slow request at the first upstream',
  });
  // withEngine: the running engine (RMP_ENGINE), else the reload would keep it in place of this config's.
  const next = validateConfig(
    withEngine({
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'second', url: second.url }],
      routes: [{ name: 'default', path: '/*', upstream: 'second', class: 'critical' }],
      admin: { address: '127.0.0.1:0' },
    }),
  );
  await gw.gateway.reload(next);
  assert.equal(gw.gateway.runtime().config, next);
  assert.equal(await (await fetch(`${gw.url}/b`)).text(), 'second');
  assert.equal(await inFlight, 'slow-done');
  assert.deepEqual(
    first.requests.map((r) => r.url),
    ['/a', '/slow'],
  );
});

test('guaranteed class shares that add up to more than 100 % are refused with their key path', () => {
  const problems = problemsOf(() =>
    parseConfig(`${GOOD}admission:\n  reservePercent:\n    cacheable: 60\n    public: 50\n`, 'shares.yaml'),
  );
  assert.deepEqual(
    problems.map((p) => p.path),
    ['admission.reservePercent'],
  );
  assert.match(problems[0]!.message, /add up to 110%/);
  // Within 100 it is accepted and reaches the compiled queue settings.
  parseConfig(`${GOOD}admission:\n  reservePercent:\n    cacheable: 60\n    public: 40\n`, 'shares.yaml');
});
