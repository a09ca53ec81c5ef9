// Plumbing of the zero-drop proofs (test/reload-under-load.test.ts, test/upgrade-handover.test.ts) and
// of the drill (bench/reload-drill.ts): a real `rempart --config FILE` process, and a load of keep-alive
// clients that counts every request's fate (an answer and its status, or a connection error), on
// 127.0.0.1 only.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/rempart.js', import.meta.url));

export { freePort } from '../../src/drill/ports.ts';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface RempartProcess {
  readonly child: ChildProcess;
  /** Everything it wrote so far (stdout and stderr). */
  out(): string;
  /** Resolves once its output matches `re` `count` times; rejects past `ms` or if it exits first. */
  waitFor(re: RegExp, ms?: number, count?: number): Promise<void>;
  /** Its exit code (null: killed by a signal). */
  readonly exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

/** `rempart ARGS`, JSON logs captured; `env`: its environment (default: this process's). */
export function spawnRempart(args: string[], env: NodeJS.ProcessEnv = process.env): RempartProcess {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c));
  child.stderr!.on('data', (c: Buffer) => (out += c));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    out: () => out,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (!done) child.kill(signal);
    },
    async waitFor(re, ms = 20_000, count = 1) {
      const global = new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`);
      const deadline = Date.now() + ms;
      while ((out.match(global)?.length ?? 0) < count) {
        if (done) throw new Error(`rempart exited before ${re}:\n${out}`);
        if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms:\n${out}`);
        await sleep(20);
      }
    },
  };
}

/** What happened to the requests of a load. */
export interface LoadCounts {
  sent: number;
  answered: number;
  /** Answers by status. */
  statuses: Record<string, number>;
  /** Requests that got no answer, by error code (ECONNRESET, ECONNREFUSED, socket hang up...). */
  errors: Record<string, number>;
  /** Answers 5xx or none at all. */
  failed: number;
  /** New connections the clients had to open (keep-alive closed by the server: Connection: close). */
  connections: number;
  /** When the first 1000 failures happened, in seconds since the load started. */
  failedAt: number[];
}

export interface Load {
  readonly counts: LoadCounts;
  /** Stop sending; resolves once every request sent is answered or failed. */
  stop(): Promise<LoadCounts>;
}

export interface LoadOptions {
  port: number;
  /** Concurrent keep-alive connections (at most). */
  connections: number;
  /** Requests per second, open loop; unset: closed loop, each connection sends its next at once. */
  rate?: number;
  /** Stop by itself after this many requests. */
  maxRequests?: number;
  /** The path of the n-th request. */
  path?: (n: number) => string;
  /**
   * false: a new connection per request (Connection: close; an open loop then does not bound how many
   * are open at once). Default true.
   */
  keepAlive?: boolean;
}

/** Clients on 127.0.0.1:port, keep-alive unless told otherwise. */
export function startLoad(opts: LoadOptions): Load {
  // An agent with a finite maxSockets keeps connections alive whatever its keepAlive says (Node reuses
  // a socket for a queued request): a connection per request needs no agent at all.
  const agent =
    opts.keepAlive === false
      ? false
      : new http.Agent({ keepAlive: true, maxSockets: opts.connections, maxFreeSockets: opts.connections });
  const counts: LoadCounts = {
    sent: 0,
    answered: 0,
    statuses: {},
    errors: {},
    failed: 0,
    connections: 0,
    failedAt: [],
  };
  const began = performance.now();
  const failure = () => {
    counts.failed++;
    if (counts.failedAt.length < 1000) counts.failedAt.push((performance.now() - began) / 1000);
  };
  const path = opts.path ?? ((n: number) => `/load/${n}`);
  const max = opts.maxRequests ?? Infinity;
  let running = true;
  let inFlight = 0;
  let settled: () => void = () => {};
  const idle = () => {
    if (!running && inFlight === 0) settled();
  };
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const n = counts.sent++;
      inFlight++;
      const req = http.get({ host: '127.0.0.1', port: opts.port, path: path(n), agent }, (res) => {
        res.resume();
        res.on('end', () => {
          counts.answered++;
          const s = String(res.statusCode);
          counts.statuses[s] = (counts.statuses[s] ?? 0) + 1;
          if (res.statusCode! >= 500) failure();
          done();
        });
        res.on('error', fail);
      });
      req.on('socket', (s: net.Socket) => {
        if (!(s as net.Socket & { counted?: true }).counted) {
          (s as net.Socket & { counted?: true }).counted = true;
          counts.connections++;
        }
      });
      req.on('error', fail);
      let over = false;
      function done() {
        if (over) return;
        over = true;
        inFlight--;
        resolve();
        idle();
      }
      function fail(err: NodeJS.ErrnoException) {
        if (over) return;
        const code = err.code ?? err.message;
        counts.errors[code] = (counts.errors[code] ?? 0) + 1;
        failure();
        done();
      }
    });
  let timer: NodeJS.Timeout | null = null;
  if (opts.rate === undefined) {
    for (let c = 0; c < opts.connections; c++)
      void (async () => {
        while (running && counts.sent < max) await one();
        if (counts.sent >= max) running = false;
        idle();
      })();
  } else {
    // Open loop: a tick every 10 ms sends what the rate owes since the start (no coordinated omission).
    const start = performance.now();
    const rate = opts.rate;
    timer = setInterval(() => {
      const owed = Math.floor(((performance.now() - start) / 1000) * rate);
      while (running && counts.sent < owed && counts.sent < max) void one();
      if (counts.sent >= max) running = false;
    }, 10);
  }
  return {
    counts,
    stop() {
      running = false;
      if (timer !== null) clearInterval(timer);
      return new Promise<LoadCounts>((resolve) => {
        settled = () => {
          if (agent !== false) agent.destroy();
          resolve(counts);
        };
        idle();
      });
    },
  };
}

/** One GET on a connection of its own: the status and body, or the error's code. */
export function getOnce(port: number, path: string): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
        res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      })
      .on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

export interface Origin {
  readonly url: string;
  served(): number;
  /** How many `/hold/` requests wait. */
  held(): number;
  /** Answer the `/hold/` requests waiting. */
  release(): void;
  close(): Promise<void>;
}

/**
 * A small origin on 127.0.0.1: `/slow/MS` answers after MS milliseconds, `/hold/` when release() is
 * called, anything else at once.
 */
export async function startOrigin(): Promise<Origin> {
  let served = 0;
  let holding: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    const slow = /^\/slow\/(\d+)/.exec(req.url ?? '');
    const answer = () => {
      served++;
      res.end(`ok ${req.url}`);
    };
    if (slow) setTimeout(answer, Number(slow[1]));
    else if (req.url?.startsWith('/hold/')) holding.push(answer);
    else answer();
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    served: () => served,
    held: () => holding.length,
    release() {
      for (const answer of holding) answer();
      holding = [];
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
