// The fuzzing harness: a recording upstream in this process, a real gateway in a child process
// (`bin/rempart.js --config …`, so a crash is the child exiting), and many connections sending the
// grammar's traffic (test/fuzz/grammar.ts). It checks:
//   - the gateway process never exits, and its RSS stays under a bound;
//   - nothing the gateway answered itself (a refusal, a challenge, the waiting room…) reached the
//     upstream: every request carries a marker, responses are mapped to requests by position while
//     the framing is certain, and the upstream records the markers it saw;
//   - no smuggling canary (a request hidden in a body or behind refused framing) reached the upstream;
//   - the upstream never got a request a strict parser refuses or that breaks the gateway's own
//     invariants (one Host of valid syntax, no CL with TE, origin-form target without fragment, a
//     normalised path), nor a parse error;
//   - a forwarded response answers the request it is mapped to (no response desync);
//   - no 500 RMP_ERR_INTERNAL and no error-level line in the gateway's log.
// bench/fuzz.ts is the CLI (1 million requests, writes bench/RESULTS.md); test/fuzz.test.ts runs a short one.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { normalizePath } from '../../src/phases/identify/normalize-path.ts';
import { genConnection, showBytes, tokensIn, type ConnPlan, type GenRequest, type GrammarOptions } from './grammar.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const TRUSTED_ADDRESS = '127.0.0.2';
const ADMIN_TOKEN = 'fuzz-admin-token-0123456789abcdef';

export interface FuzzOptions {
  requests: number;
  seed: number;
  concurrency: number;
  /** RSS bound for the gateway process, in MiB. */
  maxRssMb: number;
  /** Switch attack levels and guard modes through the admin API while fuzzing (ms between changes; 0: never). */
  cycleMs?: number;
  /** Send SIGHUP (config reload) this often (0: never). */
  reloadMs?: number;
  /** Progress lines to this function. */
  say?: (line: string) => void;
  grammar?: Partial<GrammarOptions>;
  /** Checkout whose bin/rempart.js runs as the gateway (default: this one). */
  gatewayRoot?: string;
  /** The gateway's HTTP/1.1 engine, server.engine (default: RMP_ENGINE if set, as test/helpers.ts, else the default). */
  engine?: 'node' | 'lean';
}

export interface Finding {
  kind: string;
  detail: string;
}

export interface FuzzResult {
  seed: number;
  requests: number;
  canaries: number;
  connections: number;
  durationSec: number;
  rps: number;
  maxRssMb: number;
  rssStartMb: number;
  rssEndMb: number;
  childExited: string | null;
  /** Responses mapped to a request / parsed at all. */
  mapped: number;
  responses: number;
  forwardedSeen: number;
  localAnswers: number;
  byStatus: Record<string, number>;
  byCode: Record<string, number>;
  upstreamRequests: number;
  /** Admin API calls (level and guard-mode changes) answered 2xx / not. */
  adminOk: number;
  adminFailed: number;
  findings: Finding[];
  /** Count per finding kind (findings keeps a few samples of each). */
  findingCounts: Record<string, number>;
  ok: boolean;
}

// ---- the gateway's configuration: most phases on

export function fuzzConfig(ports: {
  plain: number;
  proxy: number;
  admin: number;
  upstream: number;
}): Record<string, unknown> {
  return {
    version: 1,
    listeners: [{ address: `127.0.0.1:${ports.plain}` }, { address: `127.0.0.1:${ports.proxy}`, proxyProtocol: true }],
    upstreams: [
      {
        name: 'origin',
        url: `http://127.0.0.1:${ports.upstream}`,
        connections: 64,
        headersTimeoutMs: 3000,
        admission: { mode: 'static', staticLimit: 24 },
        circuitBreaker: { consecutiveFailures: 50, openMs: 1000 },
      },
      { name: 'backup', url: `http://127.0.0.1:${ports.upstream}`, connections: 8, headersTimeoutMs: 3000 },
    ],
    routes: [
      {
        name: 'approvals',
        path: '/payments/approve',
        methods: ['POST'],
        upstream: 'origin',
        fallback: 'backup',
        class: 'critical',
        maxBodyBytes: 4096,
      },
      {
        name: 'login',
        path: '/login',
        methods: ['POST'],
        upstream: 'origin',
        class: 'authenticated',
        maxBodyBytes: 8192,
      },
      {
        name: 'vault-documents',
        path: '/vault/documents/*',
        upstream: 'origin',
        class: 'authenticated',
        maxBodyBytes: 0,
        sensitive: { documentsPerHour: 40, bytesPerDay: 200000, identity: 'session', sessionCookie: 'sid' },
      },
      { name: 'vault', path: '/vault/*', upstream: 'origin', class: 'authenticated', maxBodyBytes: 0 },
      {
        name: 'tracking',
        path: '/track/*',
        methods: ['GET', 'HEAD'],
        upstream: 'origin',
        class: 'cacheable',
        maxBodyBytes: 0,
        cache: { queryParams: [] },
      },
      {
        name: 'static',
        path: '/static/*',
        methods: ['GET', 'HEAD'],
        upstream: 'origin',
        class: 'static',
        maxBodyBytes: 0,
        cache: { enabled: true },
      },
      {
        name: 'room',
        path: '/room/*',
        upstream: 'origin',
        class: 'public',
        waitingRoom: { enabled: true, force: true, admitPerSecond: 200 },
      },
      { name: 'ws', path: '/ws/*', upstream: 'origin', class: 'public' },
      {
        name: 'site',
        path: '/*',
        upstream: 'origin',
        class: 'public',
        waitingRoom: { enabled: true, admitPerSecond: 100 },
      },
    ],
    clientAddress: { trustedProxies: [`${TRUSTED_ADDRESS}/32`] },
    limits: {
      maxHeaderBytes: 16384,
      maxHeaderCount: 100,
      maxUrlBytes: 4096,
      maxBodyBytes: 65536,
      bufferBodyBytes: 16384,
      headersTimeoutMs: 1500,
      requestTimeoutMs: 3000,
      idleTimeoutMs: 3000,
      tunnelIdleTimeoutMs: 1000,
      maxConnections: 4000,
      maxConnectionsPerAddress: 64,
    },
    cache: { maxBytes: 8 * 1024 * 1024, maxObjectBytes: 256 * 1024 },
    admission: {
      queue: {
        maxEntries: 400,
        timeoutMs: { critical: 1000, authenticated: 800, cacheable: 600, public: 400, static: 300 },
      },
    },
    admin: { address: `127.0.0.1:${ports.admin}` },
    logging: { level: 'warn', requests: false },
    defense: {
      decisionHeader: true,
      rateLimit: {
        rules: [
          { id: 'per-address', key: 'address', classes: ['public', 'cacheable', 'static'], ratePerSec: 50, burst: 100 },
          { id: 'login', key: 'address', routes: ['login'], ratePerSec: 1, burst: 5 },
          { id: 'session', key: 'session', ratePerSec: 100, burst: 200 },
        ],
      },
      bans: { ttlMs: 3000, offences: { threshold: 20, windowMs: 2000 } },
      level: { warmupSeconds: 2, riseSeconds: 1, fallSeconds: 3 },
      challenge: { mode: 'enforce', atLevel: 'elevated', noScriptDelaySec: { elevated: 0, underAttack: 1 } },
      signatures: { mode: 'enforce', sampleEvery: 2 },
      exfiltration: { mode: 'enforce' },
    },
  };
}

// ---- small helpers

class Bits {
  readonly a: Uint8Array;
  constructor(n: number) {
    this.a = new Uint8Array(n);
  }
  grow(n: number): void {
    if (n <= this.a.length) return;
    const b = new Uint8Array(Math.max(n, this.a.length * 2));
    b.set(this.a);
    (this as { a: Uint8Array }).a = b;
  }
  set(i: number, v = 1): void {
    if (i >= this.a.length) this.grow(i + 1);
    this.a[i] = v;
  }
  get(i: number): number {
    return i < this.a.length ? this.a[i]! : 0;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

// ---- the findings book: counts per kind and a few samples each

class Findings {
  readonly counts: Record<string, number> = {};
  readonly samples: Finding[] = [];
  add(kind: string, detail: () => string): void {
    const n = (this.counts[kind] ?? 0) + 1;
    this.counts[kind] = n;
    if (n <= 5) this.samples.push({ kind, detail: detail() });
  }
}

// ---- the recording upstream

const HOST_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]{1,5})?$/;

/** What a strict reading of RFC 9110/9112 and the gateway's own invariants refuse in a forwarded request. */
export function strictViolation(method: string, url: string, raw: string[]): string | null {
  let hosts = 0;
  let host = '';
  let cl = 0;
  let clValue = '';
  let te = 0;
  let teValue = '';
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!.toLowerCase();
    if (n === 'host') {
      hosts++;
      host = raw[i + 1]!;
    } else if (n === 'content-length') {
      cl++;
      clValue = raw[i + 1]!;
    } else if (n === 'transfer-encoding') {
      te++;
      teValue = raw[i + 1]!;
    }
  }
  if (hosts !== 1) return `host-count:${hosts}`;
  if (
    !HOST_RE.test(host) ||
    (host.includes(':') && Number(host.slice(host.lastIndexOf(':') + 1)) > 65535 && !host.endsWith(']'))
  )
    return 'host-syntax';
  if (cl > 0 && te > 0) return 'cl+te';
  if (cl > 1) return 'dup-cl';
  if (cl === 1 && !/^[0-9]+$/.test(clValue)) return 'cl-syntax';
  if (te > 1 || (te === 1 && teValue.toLowerCase() !== 'chunked')) return 'te';
  if (url === '*' && method === 'OPTIONS') return null;
  if (url.charCodeAt(0) !== 47) return 'target-form';
  if (url.includes('#')) return 'fragment';
  if (/[\u0000-\u0020\u007f-\uffff]/.test(url)) return 'target-chars';
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  if (normalizePath(p) !== p) return 'unnormalised-path';
  return null;
}

interface Upstream {
  server: http.Server;
  port: number;
  seen: Bits;
  requests: number;
  close(): Promise<void>;
}

function startUpstream(findings: Findings): Promise<Upstream> {
  const seen = new Bits(1 << 20);
  const state = { requests: 0 };
  const ids: number[] = [];
  const record = (req: http.IncomingMessage): string => {
    state.requests++;
    ids.length = 0;
    tokensIn(req.url ?? '', ids);
    const raw = req.rawHeaders;
    for (let i = 1; i < raw.length; i += 2) tokensIn(raw[i]!, ids);
    for (let i = 0; i < ids.length; i++)
      if (ids.indexOf(ids[i]!) === i) seen.set(ids[i]!, Math.min(255, seen.get(ids[i]!) + 1));
    const v = strictViolation(req.method ?? '', req.url ?? '', raw);
    if (v !== null)
      findings.add(
        `upstream-strict:${v.replace(/:.*/, '')}`,
        () =>
          `${v}: ${req.method} ${JSON.stringify(req.url?.slice(0, 300))} headers ${JSON.stringify(raw.slice(0, 40)).slice(0, 800)}`,
      );
    return ids.join(',');
  };
  const big = 'b'.repeat(40000);
  // Strict parser; but a request without Host must reach the handler to be counted (Node would answer
  // 400 itself), and the head limit is above the gateway's plus the forwarding headers it adds.
  const server = http.createServer(
    {
      insecureHTTPParser: false,
      requireHostHeader: false,
      maxHeaderSize: 65536,
      keepAliveTimeout: 5000,
      requestTimeout: 10000,
      headersTimeout: 5000,
    },
    (req, res) => {
      const seenIds = record(req);
      req.on('data', () => {});
      req.on('error', () => {});
      res.on('error', () => {});
      const url = req.url ?? '/';
      const headers: Record<string, string> = {
        'x-fuzz-up': '1',
        'x-fuzz-seen': seenIds,
        'content-type': 'text/plain',
      };
      let body = 'ok';
      if (url.startsWith('/track/')) headers['cache-control'] = 'public, max-age=2';
      else if (url.startsWith('/static/')) {
        headers['cache-control'] = 'public, max-age=30';
        headers.vary = 'accept-encoding';
      } else if (url.startsWith('/login')) headers['set-cookie'] = `sid=s${state.requests % 64}; Path=/; HttpOnly`;
      else if (url.startsWith('/vault/documents/')) body = big.slice(0, 1000 + (state.requests % 4000));
      else if (url.startsWith('/big/')) body = big;
      const send = () => {
        if (res.destroyed) return;
        if (state.requests % 7 === 0) {
          // chunked response
          res.writeHead(200, headers);
          res.write(body.slice(0, 1));
          res.end(body.slice(1));
        } else {
          headers['content-length'] = String(body.length);
          res.writeHead(200, headers);
          res.end(body);
        }
      };
      req.on('end', () => {
        if (url.startsWith('/slow/')) setTimeout(send, 20 + (state.requests % 200));
        else send();
      });
    },
  );
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    const seenIds = record(req);
    socket.on('error', () => {});
    if ((req.headers.upgrade ?? '').toLowerCase() === 'websocket') {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nx-fuzz-up: 1\r\nx-fuzz-seen: ${seenIds}\r\n\r\n`,
      );
      setTimeout(() => socket.end(), 20);
    } else {
      socket.end(
        `HTTP/1.1 200 OK\r\nx-fuzz-up: 1\r\nx-fuzz-seen: ${seenIds}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok`,
      );
    }
  });
  server.on('clientError', (err: Error & { code?: string; rawPacket?: Buffer }, socket) => {
    // A request cut short (its client went away mid-body, so the gateway closed the upstream
    // connection) ends in HPE_INVALID_EOF_STATE: truncated, not malformed.
    if (err.code?.startsWith('HPE_') && err.code !== 'HPE_INVALID_EOF_STATE')
      findings.add(
        `upstream-parse-error:${err.code}`,
        () => `${err.code} ${err.message}; bytes ${err.rawPacket ? showBytes(err.rawPacket, 600) : '?'}`,
      );
    socket.destroy();
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        server,
        port: (server.address() as net.AddressInfo).port,
        seen,
        get requests() {
          return state.requests;
        },
        // Upgraded sockets leave the server's tracking: destroy every socket, and do not wait on close().
        close: async () => {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

// ---- the gateway child

interface Child {
  proc: ChildProcess;
  exited: string | null;
  errorLines: number;
  stop(): Promise<void>;
}

function startGatewayChild(root: string, configFile: string, findings: Findings): Child {
  const proc = spawn(process.execPath, [path.join(root, 'bin', 'rempart.js'), '--config', configFile], {
    cwd: root,
    env: { ...process.env, REMPART_ADMIN_TOKEN: ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child: Child = {
    proc,
    exited: null,
    errorLines: 0,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
  let tail = '';
  const onLine = (line: string) => {
    if (line.trim() === '') return;
    let level = 0;
    try {
      level = (JSON.parse(line) as { level?: number }).level ?? 0;
    } catch {
      level = 50; // not JSON: a stack trace or a Node warning
    }
    if (level >= 50) {
      child.errorLines++;
      findings.add('gateway-error-log', () => line.slice(0, 1500));
    }
  };
  const feed = (b: Buffer) => {
    tail += b.toString();
    let nl: number;
    while ((nl = tail.indexOf('\n')) !== -1) {
      onLine(tail.slice(0, nl));
      tail = tail.slice(nl + 1);
    }
    if (tail.length > 100000) tail = tail.slice(-10000);
  };
  proc.stdout!.on('data', feed);
  proc.stderr!.on('data', feed);
  proc.once('exit', (code, signal) => {
    child.exited = `code ${code} signal ${signal}`;
  });
  return child;
}

/**
 * An HTTP answer from the admin listener's /readyz: the gateway opens it after every client listener, and a
 * TCP connect alone may land on the short-lived probe listener `listenOn` opens first (its close then resets
 * what the fuzzer sent meanwhile). The fuzz config logs at `warn`, so there is no `rempart started` line to wait for.
 */
async function waitReady(adminPort: number, child: Child): Promise<void> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    if (child.exited) throw new Error(`gateway exited before it was ready (${child.exited})`);
    const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      async (r) => (await r.arrayBuffer(), r.status === 200),
      () => false,
    );
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`gateway not ready on admin port ${adminPort}`);
}

async function waitListening(port: number, child: Child): Promise<void> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    if (child.exited) throw new Error(`gateway exited before listening (${child.exited})`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`gateway did not listen on ${port}`);
}

// ---- a client connection: write the plan, map the responses

interface Stats {
  mapped: number;
  responses: number;
  forwardedSeen: number;
  localAnswers: number;
  byStatus: Record<string, number>;
  byCode: Record<string, number>;
}

interface Books {
  /** Status (and code) of what the gateway answered itself, per request id. */
  local: Uint16Array;
  localCode: Uint8Array;
  codes: string[];
  canary: Bits;
  /** Connection index of every id, to replay the bytes of a finding. */
  connOf: Uint32Array;
  stats: Stats;
  findings: Findings;
}

const CRLF2 = Buffer.from('\r\n\r\n');

/** How many leading requests' responses can be mapped by position. */
function mappable(plan: ConnPlan, sentBytes: number): number {
  if (plan.proxy !== null && (plan.localAddress !== TRUSTED_ADDRESS || plan.listener !== 'proxy')) return 0;
  let offset = 0;
  for (let i = 0; i < plan.requests.length; i++) {
    const r = plan.requests[i]!;
    offset += r.bytes.length;
    if (offset > sentBytes) return i + 1; // truncated here
    if (!r.framed || r.last) return i + 1;
  }
  return plan.requests.length;
}

function runConnection(plan: ConnPlan, ports: { plain: number; proxy: number }, books: Books): Promise<void> {
  return new Promise((resolve) => {
    const payload = Buffer.concat([...(plan.proxy ? [plan.proxy] : []), ...plan.requests.map((r) => r.bytes)]);
    const pre = plan.proxy?.length ?? 0;
    let sent = payload.length;
    if (plan.write === 'truncate') sent = pre + plan.cuts[0]!;
    const limit = mappable(plan, sent - pre);
    const socket = net.connect({
      host: '127.0.0.1',
      port: plan.listener === 'proxy' ? ports.proxy : ports.plain,
      localAddress: plan.localAddress,
    });
    socket.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let idx = 0;
    let stopped = false; // no more parsing (tunnel, close-delimited body, unmappable)
    let closeDelimited: {
      req: GenRequest | undefined;
      status: number;
      headers: Map<string, string>;
      start: number;
    } | null = null;
    let timer: NodeJS.Timeout;
    // Past the mappable responses, what follows only matters to the gateway: a short grace, then go.
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), idx >= limit || stopped ? 400 : 2500);
    };
    const finish = () => {
      clearTimeout(timer);
      resolve();
    };
    const onResponse = (req: GenRequest | undefined, status: number, headers: Map<string, string>, body: Buffer) => {
      const s = books.stats;
      s.responses++;
      s.byStatus[status] = (s.byStatus[status] ?? 0) + 1;
      if (req === undefined) return;
      s.mapped++;
      // A byte-mutated request may have been read as several (a CRLF inserted in its head): its
      // response answers whatever started at its offset, which may not carry its marker.
      if (req.tags.includes('mutated')) return;
      if (headers.has('x-fuzz-up')) {
        s.forwardedSeen++;
        // Cacheable routes may answer with a stored or coalesced response (another request's fill).
        const cacheable =
          headers.has('x-cache') || req.bytes.indexOf(' /track/') !== -1 || req.bytes.indexOf(' /static/') !== -1;
        if (!cacheable) {
          // An empty echo says nothing (the marker may be cut by an odd path, and `Connection:
          // x-fuzz-id` rightly strips the header): only another request's marker is a desync.
          const echoed = (headers.get('x-fuzz-seen') ?? '')
            .split(',')
            .map(Number)
            .filter((n) => n > 0);
          if (echoed.length > 0 && !echoed.includes(req.id))
            books.findings.add(
              'response-desync',
              () =>
                `seed ${plan.seed} conn ${plan.index} (first id ${plan.requests[0]!.id}) request ${req.id} got the upstream's answer for [${echoed.join(',')}]; request ${showBytes(req.bytes, 600)}`,
            );
        }
        return;
      }
      s.localAnswers++;
      let code = '';
      const ct = headers.get('content-type') ?? '';
      if (ct.startsWith('application/json')) {
        const m = /"code":"(RMP_ERR_[A-Z_]+)"/.exec(body.toString('latin1', 0, 300));
        if (m) code = m[1]!;
      }
      if (code === '')
        code =
          /^(?:observed=)?(RMP_ERR_[A-Z_]+)/.exec(headers.get('rempart-decision') ?? '')?.[1] ??
          `(${ct.split(';')[0] || 'none'})`;
      s.byCode[code] = (s.byCode[code] ?? 0) + 1;
      if (status === 500 || code === 'RMP_ERR_INTERNAL')
        books.findings.add(
          'internal-error-500',
          () => `conn ${plan.index} request ${req.id}: ${showBytes(req.bytes, 1500)}`,
        );
      // Upstream failures (502/504) may have reached it; everything else the gateway answered alone.
      if (status !== 502 && status !== 504 && status !== 500 && req.id < books.local.length) {
        books.local[req.id] = status;
        let ci = books.codes.indexOf(code);
        if (ci === -1 && books.codes.length < 255) ci = books.codes.push(code) - 1;
        books.localCode[req.id] = Math.max(0, ci);
      }
    };
    const parse = () => {
      while (!stopped) {
        if (closeDelimited !== null) return; // waits for the end of the connection
        const headEnd = buf.indexOf(CRLF2);
        if (headEnd === -1) {
          if (buf.length > 65536) stopped = true;
          return;
        }
        const head = buf.toString('latin1', 0, headEnd);
        const lines = head.split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
        if (!m) {
          if (idx < limit)
            books.findings.add(
              'bad-response-from-gateway',
              () => `conn ${plan.index}: ${JSON.stringify(head.slice(0, 300))}`,
            );
          stopped = true;
          return;
        }
        const status = Number(m[1]);
        const headers = new Map<string, string>();
        for (let i = 1; i < lines.length; i++) {
          const c = lines[i]!.indexOf(':');
          if (c > 0) headers.set(lines[i]!.slice(0, c).trim().toLowerCase(), lines[i]!.slice(c + 1).trim());
        }
        const req = idx < limit ? plan.requests[idx] : undefined;
        let pos = headEnd + 4;
        if (status >= 100 && status < 200 && status !== 101) {
          buf = buf.subarray(pos);
          continue;
        }
        if (status === 101) {
          onResponse(req, status, headers, Buffer.alloc(0));
          stopped = true;
          return;
        }
        let body: Buffer;
        const noBody = req?.method === 'HEAD' || status === 204 || status === 304;
        const te = headers.get('transfer-encoding');
        const cl = headers.get('content-length');
        if (noBody) body = Buffer.alloc(0);
        else if (te !== undefined && te.toLowerCase().includes('chunked')) {
          const parts: Buffer[] = [];
          let p = pos;
          for (;;) {
            const eol = buf.indexOf('\r\n', p);
            if (eol === -1) return;
            const size = parseInt(buf.toString('latin1', p, eol), 16);
            if (!Number.isFinite(size)) {
              stopped = true;
              return;
            }
            if (size === 0) {
              const end = buf.indexOf(CRLF2, eol - 2);
              if (end === -1) return;
              p = end + 4;
              break;
            }
            if (buf.length < eol + 2 + size + 2) return;
            parts.push(buf.subarray(eol + 2, eol + 2 + size));
            p = eol + 2 + size + 2;
          }
          body = Buffer.concat(parts);
          pos = p;
        } else if (cl !== undefined) {
          const n = Number(cl);
          if (buf.length < pos + n) return;
          body = buf.subarray(pos, pos + n);
          pos += n;
        } else {
          closeDelimited = { req, status, headers, start: pos };
          return;
        }
        buf = buf.subarray(pos);
        onResponse(req, status, headers, body);
        if (idx < limit) idx++;
        if (idx >= limit) arm();
        if (idx >= limit && limit === plan.requests.length && !plan.requests.some((r) => r.last)) {
          // every response in: close our side
          socket.end();
          return;
        }
      }
    };
    socket.on('connect', () => {
      arm();
      if (plan.write === 'once') socket.write(payload);
      else if (plan.write === 'truncate') {
        socket.write(payload.subarray(0, sent));
      } else {
        const cuts = plan.cuts.map((c) => c + pre);
        let from = 0;
        let k = 0;
        const step = () => {
          if (socket.destroyed) return;
          const to = k < cuts.length ? cuts[k++]! : payload.length;
          if (to > from) socket.write(payload.subarray(from, to));
          from = Math.max(from, to);
          if (from < payload.length) setImmediate(step);
        };
        step();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      arm();
      if (stopped) return;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      parse();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (closeDelimited !== null && !stopped) {
        const c = closeDelimited;
        onResponse(c.req, c.status, c.headers, buf.subarray(c.start));
      }
      finish();
    });
  });
}

// ---- admin API: change levels and guard modes under load

const adminCalls = { ok: 0, failed: 0 };

async function adminCall(port: number, method: string, p: string, body?: unknown): Promise<void> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(3000),
    });
    await res.arrayBuffer();
    if (res.ok) adminCalls.ok++;
    else adminCalls.failed++;
  } catch {
    adminCalls.failed++; // the gateway may be busy; the next change will do
  }
}

// ---- the campaign

/** Regenerate the plans of connections holding these ids (replay of findings). */
export function planOf(
  seed: number,
  connIndex: number,
  firstId: number,
  grammar: Partial<GrammarOptions> = {},
): ConnPlan {
  return genConnection(seed, connIndex, firstId, { trustedAddress: TRUSTED_ADDRESS, ...grammar });
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzResult> {
  const say = o.say ?? (() => {});
  const findings = new Findings();
  const up = await startUpstream(findings);
  const ports = { plain: await freePort(), proxy: await freePort(), admin: await freePort(), upstream: up.port };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rempart-fuzz-'));
  const configFile = path.join(dir, 'rempart.json');
  const config = fuzzConfig(ports);
  // RMP_ENGINE=lean fuzzes the lean HTTP/1.1 engine (issue 17), as test/helpers.ts startGateway does.
  const engine = o.engine ?? process.env.RMP_ENGINE;
  if (engine !== undefined && engine !== '') (config as Record<string, unknown>).server = { engine };
  writeFileSync(configFile, JSON.stringify(config));
  const child = startGatewayChild(o.gatewayRoot ?? ROOT, configFile, findings);
  const books: Books = {
    local: new Uint16Array(Math.ceil(o.requests * 1.5) + 10000),
    localCode: new Uint8Array(Math.ceil(o.requests * 1.5) + 10000),
    codes: ['?'],
    canary: new Bits(1 << 20),
    connOf: new Uint32Array(Math.ceil(o.requests * 1.3) + 1000),
    stats: { mapped: 0, responses: 0, forwardedSeen: 0, localAnswers: 0, byStatus: {}, byCode: {} },
    findings,
  };
  const firstIdOf: number[] = [];
  const timers: NodeJS.Timeout[] = [];
  let maxRss = 0;
  let rssStart = NaN;
  let rssEnd = NaN;
  let generated = 0;
  let canaries = 0;
  let nextId = 1;
  let connections = 0;
  const t0 = performance.now();
  try {
    await waitListening(ports.plain, child);
    await waitListening(ports.proxy, child);
    await waitReady(ports.admin, child);
    const pid = child.proc.pid!;
    rssStart = rssMb(pid);
    maxRss = rssStart;
    timers.push(
      setInterval(() => {
        const r = rssMb(pid);
        if (r > maxRss) maxRss = r;
      }, 250),
    );
    if ((o.cycleMs ?? 0) > 0) {
      let k = 0;
      timers.push(
        setInterval(() => {
          k++;
          // Mostly calm (where most requests are forwarded), sometimes elevated or under attack
          // (challenges, mined signatures), now and then back to detection; and guard modes flipped.
          const levels = ['calm', 'calm', 'elevated', 'calm', 'under_attack', 'calm'];
          const guards = ['challenge', 'signatures', 'rateLimit', 'exfiltration', 'bans'];
          const modes = ['enforce', 'observe', 'off', 'file'];
          if (k % 2 === 0) {
            if (k % 24 === 0) void adminCall(ports.admin, 'DELETE', '/api/level', { reason: 'fuzz' });
            else
              void adminCall(ports.admin, 'PUT', '/api/level', {
                level: levels[(k >> 1) % levels.length],
                reason: 'fuzz',
              });
          } else
            void adminCall(ports.admin, 'PUT', `/api/guards/${guards[(k >> 1) % guards.length]}`, {
              mode: modes[(k >> 2) % modes.length],
              reason: 'fuzz',
            });
          if (k % 5 === 0) void adminCall(ports.admin, 'GET', '/metrics');
        }, o.cycleMs),
      );
    }
    if ((o.reloadMs ?? 0) > 0) timers.push(setInterval(() => child.proc.kill('SIGHUP'), o.reloadMs));

    let lastReport = performance.now();
    const worker = async () => {
      while (generated < o.requests && child.exited === null) {
        const index = connections++;
        const first = nextId;
        const plan = planOf(o.seed, index, first, o.grammar);
        nextId += plan.idCount;
        firstIdOf[index] = first;
        generated += plan.requests.length;
        if (books.connOf.length < nextId) {
          const c = new Uint32Array(nextId * 2);
          c.set(books.connOf);
          books.connOf = c;
        }
        books.connOf.fill(index, first, nextId);
        for (const r of plan.requests)
          for (const c of r.canaries) {
            books.canary.set(c);
            canaries++;
          }
        await runConnection(plan, ports, books);
        const now = performance.now();
        if (now - lastReport > 10_000) {
          lastReport = now;
          const sec = (now - t0) / 1000;
          say(
            `${generated} requests (${connections} connections) in ${sec.toFixed(0)} s, ${(generated / sec).toFixed(0)} req/s; gateway RSS ${rssMb(pid).toFixed(0)} MiB (max ${maxRss.toFixed(0)}); upstream got ${up.requests}; findings ${JSON.stringify(findings.counts)}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, worker));
    // Let anything still in flight reach the upstream before correlating.
    await sleep(1500);
    rssEnd = rssMb(pid);
  } catch (err) {
    // The gateway did not start (or the harness broke): leave no child, socket nor temp dir behind.
    await child.stop();
    await up.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  } finally {
    for (const t of timers) clearInterval(t);
  }
  const durationSec = (performance.now() - t0) / 1000;
  const childExited = child.exited;
  if (childExited !== null) findings.add('gateway-exited', () => `the gateway process exited: ${childExited}`);
  if (maxRss > o.maxRssMb)
    findings.add('rss-over-bound', () => `gateway RSS reached ${maxRss.toFixed(0)} MiB (bound ${o.maxRssMb} MiB)`);
  // Correlate: nothing answered locally, and no canary, may have reached the upstream.
  const describe = (id: number, what: string) => {
    const conn = books.connOf[id]!;
    const plan = planOf(o.seed, conn, firstIdOf[conn]!, o.grammar);
    const r = plan.requests.find((x) => x.id === id || x.canaries.includes(id));
    return `${what} id ${id} (seed ${o.seed}, connection ${conn} first id ${firstIdOf[conn]}, ${plan.listener} listener from ${plan.localAddress}${plan.proxy ? `, PROXY ${showBytes(plan.proxy, 120)}` : ''}); request ${r ? showBytes(r.bytes, 1500) : '?'} tags ${r?.tags.join(' ')}`;
  };
  const n = nextId;
  for (let id = 1; id < n; id++) {
    if (up.seen.get(id) === 0) continue;
    if (id < books.local.length && books.local[id] !== 0)
      findings.add(`refused-reached-upstream:${books.local[id]}`, () =>
        describe(
          id,
          `answered by the gateway (${books.local[id]} ${books.codes[books.localCode[id]!]}) yet seen by the upstream ${up.seen.get(id)} time(s):`,
        ),
      );
    if (books.canary.get(id))
      findings.add('canary-reached-upstream', () => describe(id, 'smuggling canary seen by the upstream:'));
  }
  await child.stop();
  await up.close();
  rmSync(dir, { recursive: true, force: true });
  const s = books.stats;
  const result: FuzzResult = {
    seed: o.seed,
    requests: generated,
    canaries,
    connections,
    durationSec,
    rps: generated / durationSec,
    maxRssMb: maxRss,
    rssStartMb: rssStart,
    rssEndMb: rssEnd,
    childExited,
    mapped: s.mapped,
    responses: s.responses,
    forwardedSeen: s.forwardedSeen,
    localAnswers: s.localAnswers,
    byStatus: s.byStatus,
    byCode: s.byCode,
    upstreamRequests: up.requests,
    adminOk: adminCalls.ok,
    adminFailed: adminCalls.failed,
    findings: findings.samples,
    findingCounts: findings.counts,
    ok: Object.keys(findings.counts).length === 0,
  };
  return result;
}

/** A short human summary of a result. */
export function summary(r: FuzzResult): string {
  const lines = [
    `seed ${r.seed}: ${r.requests} requests (+${r.canaries} smuggling canaries) on ${r.connections} connections in ${r.durationSec.toFixed(1)} s (${r.rps.toFixed(0)} req/s)`,
    `responses parsed ${r.responses}, mapped to their request ${r.mapped} (forwarded ${r.forwardedSeen}, answered by the gateway ${r.localAnswers}); upstream got ${r.upstreamRequests} requests`,
    `gateway RSS: start ${r.rssStartMb.toFixed(0)} MiB, max ${r.maxRssMb.toFixed(0)} MiB, end ${r.rssEndMb.toFixed(0)} MiB; process ${r.childExited ?? 'alive'}`,
    `admin API changes (levels, guard modes) applied ${r.adminOk}, failed ${r.adminFailed}`,
    `statuses ${JSON.stringify(r.byStatus)}`,
    `local answers by code ${JSON.stringify(r.byCode)}`,
    r.ok ? 'result: OK, no finding' : `result: FINDINGS ${JSON.stringify(r.findingCounts)}`,
    ...r.findings.map((f) => `  [${f.kind}] ${f.detail}`),
  ];
  return lines.join('\n');
}
