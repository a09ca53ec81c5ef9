// The command line as an operator meets it (issue 14): every subcommand's --help, errors without
// stack traces, `rempart check` failing on what start-up fails on, the demo on busy ports, what a
// zero-config start says, and the log formats. Every process here listens on 127.0.0.1 port 0 or on
// a port the test chose, and is killed at the end of its test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { combinedLine, prettyLine, resolveLogFormat } from '../src/core/log.ts';
import type { AttackLevelMonitor } from '../src/phases/level/monitor.ts';
import {
  BIN,
  cleanup,
  ENGINE_FLAGS,
  rawRequest,
  statusOf,
  runCli as runCliWith,
  startGateway,
  startUpstream,
  type Teardown,
  tempDir,
  track,
  waitFor,
} from './helpers.ts';

const SCENARIOS = fileURLToPath(new URL('../scenarios/', import.meta.url));

/** The environment without the variables that change what the CLI says. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const k of ['REMPART_DEBUG', 'REMPART_ADMIN_TOKEN', 'REMPART_CHALLENGE_KEY', 'REMPART_WAITING_ROOM_KEY'])
    if (!(k in extra)) delete env[k];
  return env;
}

interface Running {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  /** Poll until `pred` holds on (stdout, stderr); throws with both after `timeoutMs`. */
  waitFor(pred: (out: string, err: string) => boolean, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Run the CLI to completion, without the caller's REMPART_* secrets and debug switches by default. */
function runCli(args: string[], env: NodeJS.ProcessEnv = cleanEnv(), timeoutMs = 10_000) {
  return runCliWith(args, env, timeoutMs);
}

/** Start a long-running CLI (gateway, demo), stopped when the test `t` ends. */
function startCli(t: Teardown, args: string[], env: NodeJS.ProcessEnv = cleanEnv()): Running {
  // A gateway (not `rempart demo`, which runs the bundled example's config) on RMP_ENGINE's engine,
  // unless the test chooses one.
  const engine = args[0]?.startsWith('--') && !args.includes('--engine') ? ENGINE_FLAGS : [];
  const child = spawn(process.execPath, [BIN, ...args, ...engine], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c));
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  const running: Running = {
    child,
    out: () => stdout,
    err: () => stderr,
    async waitFor(pred, timeoutMs = 8000) {
      const said = () => `stdout: ${stdout.slice(-1500)}\nstderr: ${stderr.slice(-1500)}`;
      await waitFor(
        () => {
          // An exit ends the wait at once: the output will not change any more.
          if (child.exitCode !== null) throw new Error(`not seen (exit ${child.exitCode}); ${said()}`);
          return pred(stdout, stderr);
        },
        { timeoutMs, intervalMs: 50, message: () => `the output; ${said()}` },
      );
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const closed = new Promise((r) => child.once('close', r));
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      await closed;
      clearTimeout(kill);
    },
  };
  cleanup(t, () => running.stop());
  return running;
}

/** A loopback port nothing listens on (bound, then released). */
/**
 * A loopback port nobody listens on: port 1. (A port freed by closing a server of ours may be taken
 * meanwhile by another test file's server: tests run two files at once.)
 */
async function closedPort(): Promise<number> {
  return 1;
}

/** Hold a port (0: any) on 127.0.0.1; null when someone else already holds it (it is taken either way). */
async function holdPort(port: number): Promise<net.Server | null> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(null));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(s));
  });
}

const STACK = /\n\s+at .+:\d+:\d+/;

/** Each command with --help and -h: exit 0, its usage on stdout, nothing on stderr. */
async function assertHelps(commands: string[][]): Promise<void> {
  const runs = commands.flatMap((cmd) => ['--help', '-h'].map((flag) => ({ cmd, args: [...cmd, flag] })));
  const results = await Promise.all(runs.map((r) => runCli(r.args)));
  runs.forEach(({ cmd, args }, i) => {
    const r = results[i]!;
    const what = `rempart ${args.join(' ')}`;
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    assert.match(r.stdout, /usage:/i, what);
    assert.equal(r.stderr, '', what); // `check --help` read a file named --help: not any more
    if (cmd[0] !== undefined && cmd[0] !== 'help')
      assert.ok(r.stdout.includes(`rempart ${cmd[0]}`), `${what} prints its own usage: ${r.stdout}`);
  });
}

// Two tests (the demo and the drill load more code) so each stays quick on a loaded machine.
test('every subcommand answers --help and -h with its usage and exit 0: rempart, check, token, help', async () => {
  await assertHelps([[], ['check'], ['token'], ['token', 'create'], ['help']]);
  // `help COMMAND` is the same text as `COMMAND --help`.
  const [viaHelp, viaFlag] = await Promise.all([runCli(['help', 'token']), runCli(['token', '--help'])]);
  assert.equal(viaHelp.stdout, viaFlag.stdout);
});

test('every subcommand answers --help and -h: demo (which starts nothing) and drill (every bundled scenario)', async () => {
  await assertHelps([['demo'], ['drill']]);
  // drill --help lists every bundled scenario, read from scenarios/ (so the list cannot drift).
  const drill = await runCli(['drill', '--help']);
  const bundled = readdirSync(SCENARIOS)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -5));
  assert.ok(bundled.length >= 12, `${bundled.length} scenarios`);
  for (const name of bundled)
    assert.match(drill.stdout, new RegExp(`^  ${name.replace(/[-.]/g, '\\$&')} `, 'm'), `drill --help lists ${name}`);
});

test('errors are one line and a hint, never a stack trace (unless --debug or REMPART_DEBUG=1)', async (t) => {
  const dir = tempDir(t, 'rempart-cli-');
  mkdirSync(join(dir, 'a-directory.yaml'));
  const cases: Array<{ args: string[]; code: number; says: RegExp }> = [
    { args: ['--config', join(dir, 'missing.yaml')], code: 1, says: /cannot read file: ENOENT/ },
    { args: ['check', join(dir, 'a-directory.yaml')], code: 1, says: /cannot read file: EISDIR/ },
    {
      args: [
        'token',
        'create',
        '--name',
        'ops',
        '--scope',
        'operator',
        '--file',
        join(dir, 'no', 'such', 'dir', 'tokens'),
      ],
      code: 1,
      says: /^rempart: ENOENT.*\n {2}hint: check the path/,
    },
    {
      args: ['token', 'create', '--name', 'ops', '--scope', 'admin', '--file', join(dir, 't')],
      code: 2,
      says: /--scope is read or operator/,
    },
    { args: ['--upstream', 'http://127.0.0.1:1', '--workers', 'lots'], code: 2, says: /--workers takes an integer/ },
    {
      args: ['--upstream', 'http://127.0.0.1:1', '--log-format', 'fancy'],
      code: 2,
      says: /--log-format takes auto, json, pretty, combined/,
    },
    { args: ['help', 'nonsense'], code: 2, says: /no command "nonsense"/ },
  ];
  const results = await Promise.all(cases.map((c) => runCli(c.args)));
  for (const [i, c] of cases.entries()) {
    const r = results[i]!;
    const what = `rempart ${c.args.join(' ')}`;
    assert.equal(r.code, c.code, `${what}: ${r.stderr}`);
    assert.match(r.stderr, c.says, what);
    assert.doesNotMatch(r.stderr, STACK, `${what} printed a stack: ${r.stderr}`);
  }
});

test('errors: the demo and the drill too; --debug or REMPART_DEBUG=1 shows the stack', async (t) => {
  const dir = tempDir(t, 'rempart-cli-');
  const tokenArgs = [
    'token',
    'create',
    '--name',
    'ops',
    '--scope',
    'operator',
    '--file',
    join(dir, 'no', 'such', 'dir', 'tokens'),
  ];
  // Closed when the test ends, passed or not: left open after a failure, it kept the file's process
  // (and so the whole suite) alive for ever.
  const busy = track(t, await holdPort(0));
  const busyPort = (busy!.address() as AddressInfo).port;
  // Five starts at once: 30 s each, as a loaded 2-core machine took over 10 s for one of them.
  const [listen, demo, drill, debugFlag, debugEnv] = await Promise.all([
    runCli(
      ['--upstream', 'http://127.0.0.1:1', '--listen', `127.0.0.1:${busyPort}`, '--admin', 'off'],
      cleanEnv(),
      30_000,
    ),
    runCli(['demo', '--listen', 'nowhere'], cleanEnv(), 30_000),
    runCli(['drill', 'flood', '--target', 'http://127.0.0.1:1', '--seconds', 'x'], cleanEnv(), 30_000),
    runCli([...tokenArgs, '--debug'], cleanEnv(), 30_000),
    runCli(tokenArgs, cleanEnv({ REMPART_DEBUG: '1' }), 30_000),
  ]);
  // A listener port another process holds: the message, the hint, no stack (not in the logs either).
  assert.equal(listen.code, 1, listen.stderr);
  assert.match(
    listen.stderr,
    new RegExp(
      `rempart: cannot listen: listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${busyPort}\n  hint: another process holds that address`,
    ),
  );
  assert.doesNotMatch(listen.stderr + listen.stdout, /\s+at .+:\d+:\d+/);
  assert.equal(demo.code, 2, demo.stderr);
  assert.match(demo.stderr, /--listen takes HOST:PORT/);
  assert.equal(drill.code, 2, drill.stderr);
  assert.match(drill.stderr, /--seconds must be a number/);
  for (const r of [demo, drill]) assert.doesNotMatch(r.stderr, STACK);
  // Asked for, the stack is there.
  assert.equal(debugFlag.code, 1);
  assert.match(debugFlag.stderr, STACK);
  assert.match(debugEnv.stderr, STACK);
});

test('`rempart check` fails on the files start-up would fail on, refuses shadowed routes, warns on busy ports', async (t) => {
  const dir = tempDir(t, 'rempart-check-');
  const busy = track(t, await holdPort(0));
  const busyPort = (busy!.address() as AddressInfo).port;
  const missing = (name: string) => join(dir, 'absent', name);
  const base = (extra: string) =>
    [
      'version: 1',
      'listeners:',
      '  - address: 127.0.0.1:0',
      'upstreams:',
      '  - name: app',
      '    url: http://127.0.0.1:3000',
      'routes:',
      '  - name: all',
      '    path: /*',
      '    upstream: app',
      'admin:',
      '  address: 127.0.0.1:0',
      extra,
    ].join('\n');
  const files = base(
    [
      'waitingRoom:',
      `  keyFile: ${missing('room.key')}`,
      'defense:',
      '  challenge:',
      `    keyFile: ${missing('challenge.key')}`,
      '  familiarity:',
      '    jwt:',
      '      algorithm: HS256',
      `      keyFile: ${missing('jwt.key')}`,
      'audit:',
      `  file: ${missing('audit.db')}`,
    ].join('\n'),
  )
    .replace('admin:\n  address: 127.0.0.1:0', `admin:\n  address: 127.0.0.1:0\n  tokensFile: ${missing('tokens')}`)
    .replace(
      '  - address: 127.0.0.1:0',
      `  - address: 127.0.0.1:0\n    tls:\n      certFile: ${missing('cert.pem')}\n      keyFile: ${missing('key.pem')}`,
    );
  writeFileSync(join(dir, 'files.yaml'), files);
  const r = await runCli(['check', join(dir, 'files.yaml')]);
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.match(r.stderr, /start-up would fail \(6 problems\)/);
  for (const [where, file] of [
    // The certificate and its key are read together: whichever is found missing first is named.
    ['listeners[0].tls', '.pem'],
    ['waitingRoom.keyFile', 'room.key'],
    ['defense.challenge.keyFile', 'challenge.key'],
    ['defense.familiarity.jwt.keyFile', 'jwt.key'],
    ['admin.tokensFile', 'tokens'],
    ['audit.file', 'absent'],
  ])
    assert.ok(
      r.stderr.split('\n').some((l) => l.includes(`${where}:`) && l.includes(file!)),
      `${where} (${file}) in: ${r.stderr}`,
    );
  assert.doesNotMatch(r.stderr, STACK);

  // A tokens file that exists but is not one: the loader's own message.
  writeFileSync(join(dir, 'tokens'), 'not a token line\n');
  writeFileSync(
    join(dir, 'bad-tokens.yaml'),
    base('').replace(
      'admin:\n  address: 127.0.0.1:0',
      `admin:\n  address: 127.0.0.1:0\n  tokensFile: ${join(dir, 'tokens')}`,
    ),
  );
  const tk = await runCli(['check', join(dir, 'bad-tokens.yaml')]);
  assert.equal(tk.code, 1, tk.stderr);
  assert.match(tk.stderr, /admin\.tokensFile: .*tokens:1: expected "NAME read\|operator sha256:HEX"/);

  // A port another process holds: a warning, exit 0.
  writeFileSync(
    join(dir, 'busy.yaml'),
    base('').replace('  - address: 127.0.0.1:0', `  - address: 127.0.0.1:${busyPort}`),
  );
  const w = await runCli(['check', join(dir, 'busy.yaml')]);
  assert.equal(w.code, 0, w.stderr);
  assert.match(w.stderr, new RegExp(`warning: listeners\\[0\\]\\.address: 127\\.0\\.0\\.1:${busyPort} is in use`));
  assert.match(w.stdout, /busy\.yaml: ok \(1 warning\)/);

  // Routes: a duplicate (same host, path, methods) and a route behind its host's catch-all.
  const routes = (list: string) => base('').replace(/routes:\n[\s\S]*?\nadmin:/, `routes:\n${list}\nadmin:`);
  writeFileSync(
    join(dir, 'routes.yaml'),
    routes(
      [
        '  - { name: login, path: /login, methods: [POST], upstream: app }',
        '  - { name: login-again, path: /LOGIN, methods: [POST], upstream: app }',
        '  - { name: shop-all, host: shop.example, path: /*, upstream: app }',
        '  - { name: shop-cart, host: shop.example, path: /cart, upstream: app }',
        '  - { name: other-cart, host: other.example, path: /cart, upstream: app }',
        '  - { name: get-only, path: /api/*, methods: [GET], upstream: app }',
        '  - { name: api-post, path: /api/orders, methods: [POST], upstream: app }',
        '  - { name: all, path: /*, upstream: app }',
      ].join('\n'),
    ),
  );
  const rt = await runCli(['check', join(dir, 'routes.yaml')]);
  assert.equal(rt.code, 1, rt.stderr);
  assert.match(rt.stderr, /2 problems/);
  assert.match(rt.stderr, /routes\[1\]: duplicate route: routes\[0\] has the same host, path and methods/);
  assert.match(rt.stderr, /routes\[3\]: unreachable: routes\[2\] before it matches every request this route would/);
});

test('the demo on a busy port picks a free one, says so, and serves', async (t) => {
  // Every port but the origin's is 0 (ephemeral), so this cannot meet a developer's running demo;
  // the origin's is one this test holds.
  const busy = track(t, await holdPort(0));
  const taken = (busy!.address() as AddressInfo).port;
  const demo = startCli(t, [
    'demo',
    '--listen',
    '127.0.0.1:0',
    '--admin',
    '127.0.0.1:0',
    '--sms-port',
    '0',
    '--origin-port',
    String(taken),
  ]);
  await demo.waitFor((out) => out.includes('Ctrl-C to stop'), 15_000);
  const note = new RegExp(
    `note: port ${taken} \\(postal origin\\) is taken by another program: using (\\d+) instead \\(--origin-port chooses another\\)`,
  ).exec(demo.out());
  assert.ok(note, demo.out());
  assert.match(demo.out(), new RegExp(`origin \\(unprotected\\)\\s+http://127\\.0\\.0\\.1:${note[1]}/`));
  const site = /site \(through Rempart\)\s+(http:\/\/127\.0\.0\.1:\d+)\//.exec(demo.out());
  assert.ok(site, demo.out());
  const res = await fetch(`${site[1]}/`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
});

test('a zero-config start says what it did, moves a busy admin port, and warns about a dead upstream', async (t) => {
  // The admin listener's default port: held here, or already held by someone else. Taken either way.
  track(t, await holdPort(9180));
  const dead = await closedPort();
  const gw = startCli(t, ['--upstream', `http://127.0.0.1:${dead}`, '--listen', '127.0.0.1:0']);
  await gw.waitFor((out, err) => err.includes('admin token') && out.includes('cannot be reached'));
  const err = gw.err();
  assert.match(err, /rempart \S+ started/);
  assert.match(err, /listening\s+http:\/\/127\.0\.0\.1:\d+/);
  assert.match(err, new RegExp(`upstream\\s+origin = http://127\\.0\\.0\\.1:${dead}`));
  assert.match(err, /protections\s+request limits/);
  assert.match(err, /rate limits: per-address 50\/s/);
  assert.match(err, /admin\s+http:\/\/127\.0\.0\.1:(\d+)/);
  const adminPort = Number(/admin\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(err)![1]);
  assert.notEqual(adminPort, 9180);
  assert.match(err, /127\.0\.0\.1:9180 is in use by another process now: moved to a free port/);
  assert.match(err, /admin token\s+none yet: .*REMPART_ADMIN_TOKEN/);
  // The moved admin listener answers.
  const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
  assert.equal(health.status, 200);
  await health.arrayBuffer();
  // The dead upstream: a warning at start-up, the gateway still running.
  const warn = gw
    .out()
    .split('\n')
    .find((l) => l.includes('cannot be reached'))!;
  assert.equal(JSON.parse(warn).level, 'warn');
  assert.match(warn, /refused the connection/);
  assert.equal(gw.child.exitCode, null);
});

test('logs: JSON when not a terminal, one readable line per request with --log-format pretty, combined on request', async (t) => {
  const up = await startUpstream(t);
  for (const format of [undefined, 'pretty', 'combined'] as const) {
    const gw = startCli(t, [
      '--upstream',
      up.url,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      'off',
      ...(format ? ['--log-format', format] : []),
    ]);
    await gw.waitFor((_out, err) => err.includes('listening'));
    const port = Number(/listening\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(gw.err())![1]);
    const res = await fetch(`http://127.0.0.1:${port}/hello?x="1"`, {
      headers: { 'user-agent': 'test "agent"', referer: 'http://ref.example/' },
    });
    await res.arrayBuffer();
    if (format === undefined) {
      await gw.waitFor((out) => out.includes('"msg":"request"'));
      const line = gw
        .out()
        .split('\n')
        .find((l) => l.includes('"msg":"request"'))!;
      assert.equal(JSON.parse(line).path, '/hello');
    } else if (format === 'pretty') {
      await gw.waitFor((out) => / GET \/hello 200 /.test(out));
      assert.match(
        gw.out(),
        /^\S+Z GET \/hello 200 [\d.]+ms 127\.0\.0\.1 forwarded protocol=h1 route=default class=public cache=miss:not_stored:no_freshness upstream=origin$/m,
      );
      assert.match(gw.out(), /^\S+Z INFO rempart started /m);
      assert.doesNotMatch(gw.out(), /^\{/m);
    } else {
      await gw.waitFor((out) => out.includes('GET /hello'));
      assert.match(
        gw.out(),
        /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/hello\?x=%221%22 HTTP\/1\.1" 200 \d+ "http:\/\/ref\.example\/" "test \\"agent\\""$/m,
      );
      // Everything else (start-up lines) as JSON on stderr, so the access log holds requests only.
      assert.ok(
        gw
          .out()
          .split('\n')
          .filter(Boolean)
          .every((l) => l.startsWith('127.0.0.1 - - [')),
        gw.out(),
      );
      assert.match(gw.err(), /"msg":"rempart started"/);
    }
    await gw.stop();
  }
});

test('the readable formats cannot be forged by a client: quotes, newlines and control bytes are escaped', () => {
  const line = JSON.stringify({
    level: 'info',
    time: '2026-01-05T10:00:00.000Z',
    msg: 'request',
    method: 'GET',
    path: '/a\nb',
    url: '/a\nb"c',
    client: '10.0.0.1',
    status: 200,
    durationMs: 1,
    decision: 'forwarded',
    userAgent: 'x"\u0001',
    bytes: 0,
  });
  const pretty = prettyLine(line);
  assert.equal(pretty.split('\n').length, 2, pretty);
  assert.match(pretty, /GET "\/a\\nb" 200 1ms 10\.0\.0\.1 forwarded/);
  const combined = combinedLine(line)!;
  assert.equal(
    combined,
    '10.0.0.1 - - [05/Jan/2026:10:00:00 +0000] "GET /a\\x0ab\\"c HTTP/1.1" 200 - "-" "x\\"\\x01"\n',
  );
  assert.equal(combinedLine(JSON.stringify({ msg: 'rempart started' })), null);
  // auto: readable at a terminal, JSON into a pipe or a file; an explicit choice is kept.
  assert.equal(resolveLogFormat('auto', true), 'pretty');
  assert.equal(resolveLogFormat('auto', false), 'json');
  assert.equal(resolveLogFormat('json', true), 'json');
});

test('an attack-level change is logged once (not again by its alert)', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { logging: { level: 'info', requests: false } });
  const level = gw.gateway.defense.level as AttackLevelMonitor;
  level.setOverride('under_attack', 'drill', 'tester');
  level.releaseOverride('tester');
  await new Promise((r) => setTimeout(r, 100));
  const about = gw.logs.filter((l) => JSON.stringify(l).includes('under_attack') && l.level === 'warn');
  // Two changes (calm → under_attack → calm), one line each.
  assert.equal(about.length, 2, JSON.stringify(about));
  assert.ok(about.every((l) => l.msg === 'attack level changed'));
  assert.equal(gw.gateway.audit.query({ kind: 'attack_level' }).length, 2, 'the alert still reaches the audit trail');
});

test('--engine chooses the HTTP/1.1 engine, with --upstream or over a config file, and a bad one is refused', async (t) => {
  const up = await startUpstream(t, (_req, res) => res.end('origin'));
  const dir = tempDir(t, 'rempart-engine-');
  const file = join(dir, 'rempart.yaml');
  writeFileSync(
    file,
    `version: 1\nlisteners: [{ address: 127.0.0.1:0 }]\nupstreams: [{ name: origin, url: ${up.url} }]\n` +
      'routes: [{ name: all, path: /*, upstream: origin }]\nadmin: { address: off }\nserver: { engine: node }\n',
  );
  const started = async (args: string[]) => {
    const gw = startCli(t, [...args, '--log-format', 'json']);
    await gw.waitFor((out) => out.includes('"rempart started"'));
    const line = JSON.parse(
      gw
        .out()
        .split('\n')
        .find((l) => l.includes('"rempart started"'))!,
    );
    const port = Number(/:(\d+)$/.exec((line.listeners as string[])[0]!)![1]);
    const reply = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 1000 });
    await gw.stop();
    return { engine: line.engine as string, status: statusOf(reply) };
  };
  const zero = ['--upstream', up.url, '--listen', '127.0.0.1:0', '--admin', 'off'];
  const lean = await started([...zero, '--engine', 'lean']);
  const node = await started([...zero, '--engine', 'node']);
  const overFile = await started(['--config', file, '--engine', 'lean']);
  // The start line reports the engine of the config the gateway was made from.
  assert.deepEqual([lean.engine, node.engine, overFile.engine], ['lean', 'node', 'lean']);
  assert.deepEqual([lean.status, node.status, overFile.status], [200, 200, 200]);
  const bad = await runCli([...zero, '--engine', 'fast']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /server\.engine/);
});
