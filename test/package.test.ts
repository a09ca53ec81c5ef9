// The npm package as a user gets it: `npm pack` (which runs the build through `prepack`), then the
// tarball installed into an empty directory, with nothing from this repository but the tarball.
// There: `npx rempart --version`; `rempart --upstream …` proxies a request and serves its dashboard
// (files the build copies); `rempart/client` and `rempart` import from a plain .mjs file and typecheck
// from a .mts file; the client's module runs in Chromium; and deploy/Dockerfile's way (the tarball
// unpacked in a directory, `npm ci --omit=dev` with the lockfile) runs too. The dependencies come
// from the npm cache or the registry (`--prefer-offline`; `npm ci` filled the cache in CI).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { leadingZeroBits } from '../src/client/index.ts';
import { listBuiltins } from '../src/drill/scenario.ts';
import { cleanup, ENGINE_FLAGS, type Teardown, track } from './helpers.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const noChromium =
  existsSync(CHROMIUM) || process.env.CI
    ? false
    : `no Chromium at ${CHROMIUM} (set CHROMIUM_PATH, or CI to make this a failure)`;
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

interface Packed {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number; mode: number }[];
}

let work = '';
let packed: Packed;
/** An empty project with only the tarball installed (`npm install rempart-X.tgz`). */
let app = '';
/** The installed package: app/node_modules/rempart. */
let installed = '';

/**
 * The environment for the npm and npx run here: this file usually runs under `npm test` (or, in
 * .ci/run, under `npx -c`), whose per-command settings reach us as npm_* variables; inherited, they
 * would turn the inner `npx rempart` into the outer command (npm_config_call) or install elsewhere.
 * Registry and cache settings pass through.
 */
const env = Object.fromEntries(
  Object.entries(process.env).filter(
    ([k]) =>
      !/^npm_(config_(call|package|yes|prefix|local_prefix|global|json|dry_run|workspaces?)|command|lifecycle_.*|package_.*|execpath|node_execpath)$/i.test(
        k,
      ),
  ),
);
const npm = (args: string[], cwd: string) =>
  run('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], {
    cwd,
    env,
    maxBuffer: 32 << 20,
    timeout: 150_000,
  });

before(
  async () => {
    work = mkdtempSync(path.join(tmpdir(), 'rempart-package-'));
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: ROOT,
      env,
      maxBuffer: 32 << 20,
      timeout: 150_000,
    });
    packed = (JSON.parse(stdout) as Packed[])[0]!;
    app = path.join(work, 'app');
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    await npm(['install', '--omit=dev', path.join(work, packed.filename)], app);
    installed = path.join(app, 'node_modules', 'rempart');
  },
  { timeout: 300_000 },
);

after(() => {
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

test('the tarball holds the built JavaScript, its types and maps, and the files it reads at run time; no sources, tests, benchmarks or screenshots', () => {
  const files = packed.files.map((f) => f.path);
  for (const f of files) {
    assert.match(f, /^(package\.json|README\.md|LICENSE|bin\/rempart\.js|dist\/.+)$/, f);
    assert.ok(!/\.test\.|(?<!\.d)\.ts$/.test(f), `${f} does not run`);
  }
  for (const f of [
    'dist/src/cli.js',
    'dist/src/index.js',
    'dist/src/index.d.ts',
    'dist/src/client/index.js',
    'dist/src/client/index.d.ts',
    'dist/src/client/index.js.map',
  ]) {
    assert.ok(files.includes(f), f);
  }
  // What the code reads beside itself: the dashboard, the demo's config, every built-in scenario.
  for (const f of ['index.html', 'app.js', 'app.css']) assert.ok(files.includes(`dist/src/control/dashboard/${f}`), f);
  assert.ok(
    files.includes('dist/examples/postal/demo.js') && files.includes('dist/examples/postal/rempart.yaml'),
    'the demo',
  );
  for (const name of listBuiltins()) assert.ok(files.includes(`dist/scenarios/${name}.yaml`), `scenario ${name}`);
  assert.ok(!existsSync(path.join(installed, 'src')), 'no TypeScript sources installed');
  // A loose ceiling that catches a stray directory (the whole repository packed to 1.18 MB); the
  // file-name rules above are the real check. 392 KB when this was written.
  assert.ok(packed.size < 1_000_000, `${packed.entryCount} files, ${packed.size} bytes`);
});

test('`npx rempart --version` in the installing project', async () => {
  const { stdout } = await run('npx', ['rempart', '--version'], { cwd: app, env, timeout: 60_000 });
  assert.equal(stdout.trim(), `rempart ${pkg.version}`);
});

/**
 * Start the installed `rempart` in front of a one-line origin; resolve with its URLs. When the test `t`
 * ends, whatever still runs is killed (stop() is the clean SIGTERM a test asserts on).
 */
async function startInstalled(
  t: Teardown,
  bin: string,
): Promise<{ url: string; admin: string; origin: http.Server; stop(): Promise<number | null> }> {
  const origin = http.createServer((req, res) => res.end(`origin saw ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  // Nothing left running: an open origin or child would keep this test file alive forever.
  cleanup(t, () => {
    if (origin.listening) origin.close();
  });
  const upstream = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
  // The admin listener on a port found free first (its log line gives the configured address).
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const adminPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const child = spawn(
    process.execPath,
    [
      bin,
      '--upstream',
      upstream,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      `127.0.0.1:${adminPort}`,
      '--quiet',
      ...ENGINE_FLAGS,
    ],
    {
      cwd: path.dirname(bin),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  cleanup(t, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c));
  const started = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start line in 30 s: ${out}${err}`)), 30_000);
    child.on('exit', (code) => reject(new Error(`rempart exited ${code}: ${out}${err}`)));
    child.stdout.on('data', (c: Buffer) => {
      out += c;
      const line = out.split('\n').find((l) => l.includes('"rempart started"'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { listeners: string[] }).listeners[0]!);
      }
    });
  });
  return {
    url: started,
    admin: `http://127.0.0.1:${adminPort}`,
    origin,
    stop: async () => {
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      const code = await exited;
      origin.close();
      return code;
    },
  };
}

test('the installed `rempart` proxies a request to an origin and serves its dashboard and /healthz', async (t) => {
  const r = await startInstalled(t, path.join(app, 'node_modules', '.bin', 'rempart'));
  const res = await fetch(`${r.url}/hello?x=1`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'origin saw /hello?x=1');
  assert.equal((await fetch(`${r.admin}/healthz`)).status, 200);
  // The dashboard's own files (copied by the build) and uPlot's (resolved from node_modules).
  for (const p of ['/dashboard', '/dashboard/app.js', '/dashboard/uplot.js']) {
    const page = await fetch(`${r.admin}${p}`);
    assert.equal(page.status, 200, p);
    assert.ok((await page.arrayBuffer()).byteLength > 100, p);
  }
  assert.equal(await r.stop(), 0, 'a clean exit on SIGTERM');
});

test('`rempart/client` and `rempart` import from a plain .mjs file: a challenge is solved, the API is all there', async () => {
  const token = `v1.k1.10.${Math.floor(Date.now() / 1000)}.${Math.floor(Date.now() / 1000) + 60}.rand.bind.mac`;
  writeFileSync(
    path.join(app, 'use.mjs'),
    `import { solve, parseChallengeToken, createClient } from 'rempart/client';
import * as api from 'rempart';
const solution = await solve(${JSON.stringify(token)});
console.log(JSON.stringify({ solution, bits: parseChallengeToken(${JSON.stringify(token)}).bits, client: typeof createClient().fetch, api: Object.keys(api).sort() }));
`,
  );
  const { stdout } = await run(process.execPath, ['use.mjs'], { cwd: app, timeout: 60_000 });
  const got = JSON.parse(stdout) as { solution: string; bits: number; client: string; api: string[] };
  assert.equal(got.bits, 10);
  assert.ok(got.solution.startsWith(`${token}.`));
  assert.ok(leadingZeroBits(createHash('sha256').update(got.solution).digest()) >= 10, 'a real solution');
  assert.equal(got.client, 'function');
  assert.deepEqual(
    got.api,
    Object.keys(await import('../src/index.ts')).sort(),
    'the installed entry point exports what the source does',
  );
});

test('the installed package is typed: a .mts file using `rempart` and `rempart/client` typechecks, and a wrong use fails', async () => {
  writeFileSync(
    path.join(app, 'typed.mts'),
    `import { createClient, solve, type ChallengeInfo } from 'rempart/client';
import { validateConfig, type Config } from 'rempart';
const solution: Promise<string> = solve('v1.a.1.1.1.a.a.a');
const info: ChallengeInfo | null = null;
const cfg: Config = validateConfig({ version: 1 }, 'inline');
export { createClient, solution, info, cfg };
`,
  );
  writeFileSync(
    path.join(app, 'wrong.mts'),
    `import { solve } from 'rempart/client';
import { validateConfig } from 'rempart';
export const n: number = solve('x');
export const m: number = validateConfig({}, 'inline');
`,
  );
  // Both files in one run (a second tsc start costs seconds on a busy machine); skipLibCheck keeps
  // it to the files' own uses, and the two wrong uses prove the types resolved (an unresolved
  // import would be any and accept them). @types/node from this repository.
  const tsc = run(
    process.execPath,
    [
      path.join(ROOT, 'node_modules/typescript/bin/tsc'),
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--module',
      'nodenext',
      '--target',
      'es2023',
      '--types',
      'node',
      '--typeRoots',
      path.join(ROOT, 'node_modules/@types'),
      'typed.mts',
      'wrong.mts',
    ],
    { cwd: app, timeout: 90_000 },
  );
  const out = await tsc.then(
    () => '',
    (e: { stdout: string }) => e.stdout,
  );
  const errors = out.split('\n').filter((l) => /error TS/.test(l));
  assert.equal(errors.length, 2, out);
  assert.ok(
    errors.every((l) => l.startsWith('wrong.mts(') && l.includes('TS2322')),
    out,
  );
});

test('`rempart/client` runs in Chromium from the installed files: no Node built-in, relative URLs, a challenge solved and retried', {
  skip: noChromium,
  timeout: 90_000,
}, async (t) => {
  const clientDir = path.join(installed, 'dist/src/client');
  for (const f of ['index.js', 'solver.js']) {
    const text = readFileSync(path.join(clientDir, f), 'utf8');
    // Statements only (the doc comments show `from 'rempart/client'`).
    const specifiers = [
      ...text.matchAll(/^(?:import|export)\s[^;]*?\bfrom\s+['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]/gm),
    ].map((m) => m[1] ?? m[2]!);
    for (const s of specifiers) assert.match(s, /^\.\.?\//, `${f} imports only its siblings`);
    if (f === 'index.js') assert.deepEqual(specifiers, ['./solver.js']);
  }
  // The exports map sends a browser bundler to the same file.
  const exportsMap = (
    JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8')) as {
      exports: Record<string, Record<string, string>>;
    }
  ).exports;
  assert.equal(exportsMap['./client']!.browser, './dist/src/client/index.js');
  // A static server for the page and the module, and an API that challenges the first call.
  const token = `v1.k1.10.${Math.floor(Date.now() / 1000)}.${Math.floor(Date.now() / 1000) + 60}.rand.bind.mac`;
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        '<!doctype html><script type="importmap">{"imports":{"rempart/client":"/pkg/client/index.js"}}</script><title>spa</title>',
      );
    } else if (req.url?.startsWith('/pkg/client/')) {
      const file = path.join(clientDir, path.basename(req.url));
      res.writeHead(existsSync(file) ? 200 : 404, { 'content-type': 'text/javascript' });
      res.end(existsSync(file) ? readFileSync(file) : '');
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else if (req.url === '/api/orders') {
      const sol = req.headers['rempart-solution'];
      seen.push(typeof sol === 'string' ? sol : '-');
      if (
        typeof sol === 'string' &&
        sol.startsWith(`${token}.`) &&
        leadingZeroBits(createHash('sha256').update(sol).digest()) >= 10
      ) {
        res.writeHead(200, { 'content-type': 'application/json', 'rempart-clearance': 'clr-1' });
        res.end('{"ok":true}');
      } else {
        res.writeHead(403, { 'content-type': 'application/json', 'rempart-challenge': token });
        res.end(JSON.stringify({ challenge: { token } }));
      }
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  cleanup(t, () => server.close());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { chromium } = await import('playwright-core');
  const browser = track(t, await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }));
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    // Chromium reports the challenge's 403 itself as a failed resource: that one is expected.
    if (m.type() === 'error' && !m.location().url.endsWith('/api/orders'))
      errors.push(`${m.text()} ${m.location().url}`);
  });
  await page.goto(`${base}/`);
  const result = await page.evaluate(async () => {
    // The page imports the package by name, through its import map, as a single-page app would.
    const { createClient } = await import('rempart/client' as string);
    const client = createClient();
    const res = await client.fetch('/api/orders', { method: 'POST', body: '{}' });
    return { status: res.status, body: await res.json(), clearances: [...client.clearances] };
  });
  assert.equal(result.status, 200);
  assert.deepEqual(result.body, { ok: true });
  assert.deepEqual(result.clearances, [[base, 'clr-1']], 'the clearance kept for the page origin');
  assert.equal(seen.length, 2, 'the call, then its retry with the solution');
  assert.deepEqual(errors, []);
});

test("deploy/Dockerfile's way: the tarball unpacked in a directory, `npm ci --omit=dev` with the lockfile, then the bin runs the build", async (t) => {
  const dir = path.join(work, 'opt-rempart');
  mkdirSync(dir);
  await run('tar', ['-xzf', path.join(work, packed.filename), '--strip-components=1', '-C', dir]);
  copyFileSync(path.join(ROOT, 'package-lock.json'), path.join(dir, 'package-lock.json'));
  await npm(['ci', '--omit=dev', '--ignore-scripts'], dir);
  assert.ok(!existsSync(path.join(dir, 'node_modules', 'typescript')), 'no dev dependencies');
  assert.ok(
    !existsSync(path.join(dir, 'src')) && existsSync(path.join(dir, 'dist/src/cli.js')),
    'the build, not the sources',
  );
  const { stdout } = await run(process.execPath, [path.join(dir, 'bin/rempart.js'), '--version'], { timeout: 30_000 });
  assert.equal(stdout.trim(), `rempart ${pkg.version}`);
  const r = await startInstalled(t, path.join(dir, 'bin/rempart.js'));
  cleanup(t, () => r.stop());
  const res = await fetch(`${r.url}/via-opt`);
  assert.equal(await res.text(), 'origin saw /via-opt');
});
