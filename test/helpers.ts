// Shared test plumbing: a real gateway on port 0 in front of a real recording upstream.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ConfigError, validateConfig, type ConfigProblem } from '../src/config/load.ts';
import type { Config } from '../src/config/schema.ts';
import { createGateway, type Gateway, type GatewayOptions } from '../src/app/gateway.ts';
import { createLogger } from '../src/core/log.ts';

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

/** An upstream that records what reached it; `handler` answers (default: 200 "ok"). */
export async function startUpstream(
  handler?: (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void,
): Promise<RecordingUpstream> {
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
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
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
 * everything to `upstreamUrl`.
 */
export async function startGateway(
  upstreamUrl: string,
  partial: Record<string, unknown> = {},
  options: GatewayOptions = {},
): Promise<TestGateway> {
  const base: Record<string, unknown> = {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: upstreamUrl }],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
    admin: { address: '127.0.0.1:0' },
    logging: { level: 'info', requests: true },
  };
  const config: Config = validateConfig({ ...base, ...partial }, '(test)');
  const { lines, stream } = memoryLog();
  const gateway = await createGateway(config, { ...options, logger: createLogger(config.logging.level, stream) });
  await gateway.start();
  const { listeners, admin } = gateway.addresses();
  const port = listeners[0]!.port;
  return {
    gateway,
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl: admin ? `http://127.0.0.1:${admin.port}` : null,
    logs: lines,
    close: () => gateway.stop(100),
  };
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

/** Run `fn` against a fresh recording upstream and a gateway in front of it, closing both after. */
export async function withGateway(
  partial: Record<string, unknown>,
  fn: (gw: TestGateway, up: RecordingUpstream, seen: { heads: number }) => Promise<void>,
): Promise<void> {
  const up = await startUpstream();
  const seen = countHeads(up);
  const gw = await startGateway(up.url, partial);
  try {
    await fn(gw, up, seen);
  } finally {
    await gw.close();
    await up.close();
  }
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
