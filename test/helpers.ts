// Shared test plumbing: a real gateway on port 0 in front of a real recording upstream, one way to
// wait for something observable (waitFor, never a fixed sleep) and one way to tear down: whatever a
// test starts is given the test context `t` and stops itself when the test ends, passed or failed.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { ConfigError, validateConfig, type ConfigProblem } from '../src/config/load.ts';
import type { Config } from '../src/config/schema.ts';
import type { Gateway, GatewayOptions } from '../src/app/gateway.ts';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  bodyBytes: number;
}

export interface RecordingUpstream {
  url: string;
  port: number;
  server: http.Server;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * What ends a test's resources: node:test's TestContext (`t`), or `{ after }` (the module-level hook)
 * for resources a whole file shares.
 */
export interface Teardown {
  after(fn: () => unknown): void;
}

const teardowns = new WeakMap<Teardown, (() => unknown)[]>();

/**
 * Run `fn` when the test ends, passed or failed, so a failing assertion never leaks a server into the
 * next test. Cleanups run last-registered first (the order nested finally blocks had: the gateway
 * stops before the upstream it forwards to); every one runs even when another throws, and the first
 * error fails the test.
 */
export function cleanup(t: Teardown, fn: () => unknown): void {
  let stack = teardowns.get(t);
  if (stack === undefined) {
    const fns: (() => unknown)[] = [];
    teardowns.set(t, fns);
    t.after(async () => {
      let failure: { err: unknown } | undefined;
      for (let f = fns.pop(); f !== undefined; f = fns.pop()) {
        try {
          await f();
        } catch (err) {
          failure ??= { err };
        }
      }
      if (failure) throw failure.err;
    });
    stack = fns;
  }
  stack.push(fn);
}

/** `resource` (if any), closed when the test ends (see cleanup): `const s = track(t, await startThing())`. */
export function track<R extends { close(): unknown } | null | undefined>(t: Teardown, resource: R): R {
  cleanup(t, () => resource?.close());
  return resource;
}

export interface WaitForOptions {
  /** How long the condition may take (default 5000 ms): a budget for a loaded machine, not a pace. */
  timeoutMs?: number;
  /** Pause between two checks (default 10 ms). */
  intervalMs?: number;
  /** What is awaited, for the failure message; a function is asked at the failure (e.g. for output so far). */
  message?: string | (() => string);
}

/**
 * Poll `check` until it returns a truthy value, and return that value; fail past `timeoutMs` with
 * what was awaited and the last value seen. A check that throws fails at once (it is not retried):
 * an error is a finding, not a state to wait out. `options` may be just the message.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  options: WaitForOptions | string = {},
): Promise<NonNullable<T>> {
  const { timeoutMs = 5000, intervalMs = 10, message } = typeof options === 'string' ? { message: options } : options;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (performance.now() >= deadline) {
      const what =
        typeof message === 'function' ? message() : (message ?? check.toString().replace(/\s+/g, ' ').slice(0, 200));
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what} (last value: ${inspect(value, { depth: 2 })})`);
    }
    await sleep(intervalMs);
  }
}

/** A fresh directory under the system's temporary one, removed with its contents when the test ends. */
export function tempDir(t: Teardown, prefix = 'rempart-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup(t, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A throw-away self-signed certificate for localhost (openssl), in a directory removed when the test ends. */
export function selfSignedCert(
  t: Teardown,
  prefix = 'rempart-tls-',
  names: readonly string[] = [],
): { dir: string; certFile: string; keyFile: string } {
  const dir = tempDir(t, prefix);
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  // Valid for localhost and the loopback addresses (and `names`): an https upstream's certificate is
  // always checked, so a test origin is trusted through `tls.caFile: certFile`.
  const san = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', ...names.map((n) => `DNS:${n}`)].join(',');
  const args = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1'];
  args.push('-addext', `subjectAltName=${san}`);
  execFileSync('openssl', [...args, '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
  return { dir, certFile, keyFile };
}

/** A port for a child process that must be told it (below the ephemeral range; src/drill/ports.ts). */
export { freePort } from '../src/drill/ports.ts';

/**
 * Stop `child`: SIGTERM, then SIGKILL if it is still running after `graceMs`. Resolves with its exit
 * code ('killed' when it had to be killed); at once if it has already exited.
 */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<number | null | 'killed'> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'killed'>((r) => (timer = setTimeout(() => r('killed'), graceMs)));
  const code = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (code === 'killed') child.kill('SIGKILL');
  return code;
}

type UpstreamHandler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

/**
 * An upstream that records what reached it; `handler` answers (default: 200 "ok"). Given the test
 * context first, it is closed when the test ends.
 */
export async function startUpstream(handler?: UpstreamHandler): Promise<RecordingUpstream>;
export async function startUpstream(t: Teardown, handler?: UpstreamHandler): Promise<RecordingUpstream>;
export async function startUpstream(
  first?: Teardown | UpstreamHandler,
  second?: UpstreamHandler,
): Promise<RecordingUpstream> {
  const t = typeof first === 'object' ? first : undefined;
  const handler = typeof first === 'object' ? second : first;
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      if (chunks.length < 64) chunks.push(c);
    });
    req.on('end', () => {
      requests.push({
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyBytes: bytes,
      });
      if (handler) handler(req, res, Buffer.concat(chunks));
      else res.end('ok');
    });
  });
  // Count requests that arrive even if malformed.
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  // Closing twice (by the test, then by its teardown) waits for the one close.
  let closed: Promise<void> | undefined;
  const up: RecordingUpstream = {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    requests,
    close: () =>
      (closed ??= new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      })),
  };
  return t ? track(t, up) : up;
}

/** Collects log lines in memory so tests can assert on them. */
export function memoryLog(): { lines: Record<string, unknown>[]; stream: Writable } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, stream };
}

/**
 * RMP_ENGINE=lean (or node) runs the suite on that HTTP/1.1 engine (issue 17: "the full test suite
 * passes with either engine"). Every gateway a test starts takes it: in process through startGateway,
 * a child `bin/rempart.js` through ENGINE_FLAGS (the `--engine` flag, over a file or zero-config), a
 * config object through withEngine. A test that names its own `server.engine` keeps it (the files that
 * compare the two engines case by case).
 */
export const TEST_ENGINE: 'node' | 'lean' | undefined = ((e) => {
  if (e === undefined || e === '') return undefined;
  if (e !== 'node' && e !== 'lean') throw new Error(`RMP_ENGINE takes node or lean (got ${JSON.stringify(e)})`);
  return e;
})(process.env.RMP_ENGINE);

/** `--engine E` for a child gateway's command line when RMP_ENGINE is set, else nothing. */
export const ENGINE_FLAGS: readonly string[] = TEST_ENGINE !== undefined ? ['--engine', TEST_ENGINE] : [];

/** `config` with RMP_ENGINE merged into its `server` block unless that block names an engine. */
export function withEngine<C extends Record<string, unknown>>(config: C): C {
  if (TEST_ENGINE === undefined) return config;
  const server = (config.server ?? {}) as Record<string, unknown>;
  if (server.engine !== undefined) return config;
  return { ...config, server: { ...server, engine: TEST_ENGINE } };
}

export interface TestGateway {
  gateway: Gateway;
  url: string;
  port: number;
  adminUrl: string | null;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Start a gateway on 127.0.0.1:0. `partial` is merged over a minimal config whose one route sends
 * everything to `upstreamUrl`. Given the test context first, it is stopped when the test ends.
 */
export async function startGateway(
  upstreamUrl: string,
  partial?: Record<string, unknown>,
  options?: GatewayOptions,
): Promise<TestGateway>;
export async function startGateway(
  t: Teardown,
  upstreamUrl: string,
  partial?: Record<string, unknown>,
  options?: GatewayOptions,
): Promise<TestGateway>;
export async function startGateway(...args: [Teardown | string, ...unknown[]]): Promise<TestGateway> {
  const t = typeof args[0] === 'string' ? undefined : (args.shift() as Teardown);
  const [upstreamUrl, partial = {}, options = {}] = args as [string, Record<string, unknown>?, GatewayOptions?];
  const base: Record<string, unknown> = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: upstreamUrl }],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
    admin: { address: '127.0.0.1:0' },
    logging: { level: 'info', requests: true },
  };
  const config: Config = validateConfig(withEngine({ ...base, ...partial }), '(test)');
  const { lines, stream } = memoryLog();
  // Loaded on first use: a unit test that only polls or cleans up does not load the whole gateway.
  const [{ createGateway }, { createLogger }] = await Promise.all([
    import('../src/app/gateway.ts'),
    import('../src/core/log.ts'),
  ]);
  const gateway = await createGateway(config, { ...options, logger: createLogger(config.logging.level, stream) });
  await gateway.start();
  const { listeners, admin } = gateway.addresses();
  const port = listeners[0]!.port;
  let stopped: Promise<void> | undefined;
  const gw: TestGateway = {
    gateway,
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl: admin ? `http://127.0.0.1:${admin.port}` : null,
    logs: lines,
    close: () => (stopped ??= gateway.stop(100)),
  };
  return t ? track(t, gw) : gw;
}

/** Send raw bytes on a fresh connection; resolve with everything received until close or timeout. */
export function rawRequest(
  port: number,
  payload: string | Buffer,
  opts: { timeoutMs?: number; localAddress?: string } = {},
): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(data);
    }, opts.timeoutMs ?? 2000);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (c) => (data += c.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

/** A client connection the test holds open: what it received so far, and when it closed. */
export interface HeldConnection {
  socket: net.Socket;
  /** Everything received, latin1 (stays '' with `read: false`). */
  data: string;
  isClosed: boolean;
  /** Settles on connect, or on close if the connection was refused: a test fails on its assertion, not a hang. */
  connected: Promise<void>;
  /** performance.now() at close. */
  closed: Promise<number>;
}

/**
 * Open a connection to 127.0.0.1:`port` from `localAddress`, destroyed when the test `t` ends.
 * `read: false` never reads a byte of what the gateway sends (a client that stops reading).
 */
export function holdConnection(t: Teardown, port: number, localAddress = '127.0.0.1', read = true): HeldConnection {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  cleanup(t, () => socket.destroy());
  let settle!: () => void;
  const c: HeldConnection = {
    socket,
    data: '',
    isClosed: false,
    connected: new Promise((resolve) => (settle = resolve)),
    closed: new Promise((resolve) =>
      socket.once('close', () => {
        c.isClosed = true;
        settle();
        resolve(performance.now());
      }),
    ),
  };
  socket.once('connect', () => settle());
  if (read) socket.on('data', (d: Buffer) => (c.data += d.toString('latin1')));
  socket.on('error', () => {});
  return c;
}

/** Status code of the first response in a raw reply ("HTTP/1.1 400 …" → 400), or 0. */
export function statusOf(raw: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
  return m ? Number(m[1]) : 0;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The `error.code` of a raw reply's JSON body ('' when there is none). */
export function errorCodeOf(raw: string): string {
  const headEnd = raw.indexOf('\r\n\r\n');
  if (headEnd === -1) return '';
  const m = /\r\ncontent-length: *(\d+)/i.exec(raw.slice(0, headEnd));
  const body = m ? raw.slice(headEnd + 4, headEnd + 4 + Number(m[1])) : raw.slice(headEnd + 4);
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code ?? '';
  } catch {
    return '';
  }
}

/** Count request heads that reach the upstream, even ones whose body never completes. */
export function countHeads(up: RecordingUpstream): { heads: number } {
  const seen = { heads: 0 };
  up.server.on('request', () => seen.heads++);
  return seen;
}

/**
 * A fresh recording upstream, a count of the request heads that reach it (complete or not), and a
 * gateway in front of it configured with `partial`; both stopped when the test `t` ends.
 */
export async function startGatewayAndUpstream(
  t: Teardown,
  partial: Record<string, unknown> = {},
): Promise<{ gw: TestGateway; up: RecordingUpstream; seen: { heads: number } }> {
  const up = await startUpstream(t);
  const seen = countHeads(up);
  const gw = await startGateway(t, up.url, partial);
  return { gw, up, seen };
}

/** The CLI's entry point, as `npx rempart` runs it. */
export const BIN = fileURLToPath(new URL('../bin/rempart.js', import.meta.url));

/** Run the CLI to completion (killed, and the promise rejected, past timeoutMs). */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 10_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `rempart ${args.join(' ')} did not exit; stdout: ${stdout.slice(0, 500)} stderr: ${stderr.slice(0, 500)}`,
        ),
      );
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The problems a configuration was refused with (fails the test if it was accepted). */
export function problemsOf(fn: () => unknown): ConfigProblem[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'RMP_ERR_CONFIG_INVALID');
    return err.problems;
  }
  assert.fail('the configuration was accepted');
}
