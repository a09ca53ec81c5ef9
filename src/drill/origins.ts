// Origin models for the drill matrix (src/drill/matrix.ts): small HTTP services with a bounded
// capacity, written here rather than reusing examples/postal/origin.ts so the matrix measures
// Rempart against origins nobody tuned it on. Every model has the same site (a home page and its
// assets, cacheable parcel pages, a login, a vault behind the session cookie, payment approvals); they
// differ only in what happens when more work arrives than the slots can take:
//
//   slots  `workers` slots, no queue worth the name: a request finding them all busy gets a 503 at once
//   queue  the same slots behind a deep FIFO queue (thousands): requests wait, latency grows
//   slow   many slots, each request held hundreds of ms (a database-bound origin)
//   login  like `slots`, and its login grants a session cookie to any POST (no credential check)
//
// It runs in the drill's process (timers only, no CPU work per request): what the slots hold is time,
// so the model stays faithful while the generator is busy. Every answer carries `X-Origin`, and the
// origin counts what it received by the drill's `x-drill-kind` header (attack or legit).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

export const ORIGIN_KINDS = ['slots', 'queue', 'slow', 'login'] as const;
export type OriginKind = (typeof ORIGIN_KINDS)[number];

export interface OriginModel {
  kind: OriginKind;
  /** Requests worked on at once. */
  workers: number;
  /** Time each request holds its slot. */
  serviceMs: number;
  /** Requests waiting for a slot at most; past it, 503 at once. */
  queue: number;
}

export interface ModelStats {
  received: { attack: number; legit: number; other: number };
  served: number;
  /** Answered 503 because the slots and the queue were full. */
  rejected: number;
  /** Sessions granted by the login. */
  sessions: number;
  inFlight: number;
  queued: number;
  maxQueued: number;
  /** Slot time spent (for the utilisation: busyMs ÷ (workers × elapsed)). */
  busyMs: number;
  /** Seconds during which demand exceeded capacity (a request waited or was refused) and the busy share of those. */
  saturatedBusyMs: number;
  saturatedMs: number;
}

export interface RunningModel {
  url: string;
  port: number;
  model: OriginModel;
  stats(): ModelStats;
  close(): Promise<void>;
}

const MAX_SESSIONS = 100_000;
const MAX_BODY_BYTES = 8192;

const HOME = `<!doctype html><html><head><meta charset="utf-8"><title>Origin</title>
<link rel="stylesheet" href="/static/app.css"></head><body><h1>Parcel tracking</h1>
<form method="post" action="/login"><input name="user"><input name="password" type="password"></form></body></html>`;

interface Waiting {
  run: () => void;
}

/** Starts a model on 127.0.0.1 (port 0: a free one). */
export async function startOriginModel(model: OriginModel, port = 0): Promise<RunningModel> {
  const stats: ModelStats = {
    received: { attack: 0, legit: 0, other: 0 },
    served: 0,
    rejected: 0,
    sessions: 0,
    inFlight: 0,
    queued: 0,
    maxQueued: 0,
    busyMs: 0,
    saturatedBusyMs: 0,
    saturatedMs: 0,
  };
  const sessions = new Set<string>();
  const waiting: Waiting[] = [];
  let waitingHead = 0;
  // Saturation bookkeeping, per 100 ms slice: a slice is saturated when a request waited or was refused.
  let sliceStart = performance.now();
  let sliceBusy = 0;
  let sliceSaturated = false;
  const sliceTimer = setInterval(() => {
    const now = performance.now();
    if (sliceSaturated) {
      stats.saturatedMs += now - sliceStart;
      stats.saturatedBusyMs += sliceBusy;
    }
    sliceStart = now;
    sliceBusy = 0;
    sliceSaturated = stats.queued > 0;
  }, 100);
  sliceTimer.unref();

  const release = () => {
    stats.inFlight--;
    if (waitingHead < waiting.length) {
      const next = waiting[waitingHead]!;
      waiting[waitingHead++] = undefined as unknown as Waiting;
      if (waitingHead > 1024 && waitingHead * 2 > waiting.length) {
        waiting.splice(0, waitingHead);
        waitingHead = 0;
      }
      stats.queued--;
      next.run();
    }
  };

  /** Holds a slot for serviceMs, then calls reply; or refuses at once when slots and queue are full. */
  const admit = (reply: () => void, refuse: () => void) => {
    const run = () => {
      stats.inFlight++;
      const t0 = performance.now();
      setTimeout(() => {
        const spent = performance.now() - t0;
        stats.busyMs += spent;
        sliceBusy += spent;
        release();
        reply();
      }, model.serviceMs);
    };
    if (stats.inFlight < model.workers) return run();
    sliceSaturated = true;
    if (stats.queued >= model.queue) {
      stats.rejected++;
      return refuse();
    }
    stats.queued++;
    if (stats.queued > stats.maxQueued) stats.maxQueued = stats.queued;
    waiting.push({ run });
  };

  const server = http.createServer((req, res) => {
    const kind = req.headers['x-drill-kind'];
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/healthz' || path === '/__origin/stats') {
      req.resume();
      const body = path === '/healthz' ? 'ok' : JSON.stringify(stats);
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store', 'x-origin': model.kind });
      res.end(body);
      return;
    }
    if (kind === 'attack') stats.received.attack++;
    else if (kind === 'legit') stats.received.legit++;
    else stats.received.other++;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('error', () => {});
    req.on('end', () => {
      const send = (status: number, type: string, body: string, headers: Record<string, string> = {}) => {
        if (res.destroyed) return;
        res.writeHead(status, { 'content-type': type, 'x-origin': model.kind, ...headers });
        res.end(body);
      };
      const refuse = () => send(503, 'text/plain', 'busy', { 'cache-control': 'no-store', 'retry-after': '1' });
      admit(() => {
        stats.served++;
        route(req.method ?? 'GET', path, req.headers, Buffer.concat(chunks), send);
      }, refuse);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 20_000;
  server.maxHeadersCount = 200;

  const sessionOf = (cookie: string | undefined) => /(?:^|;\s*)sid=([0-9a-f]{32})(?:;|$)/.exec(cookie ?? '')?.[1];

  function route(
    method: string,
    path: string,
    headers: http.IncomingHttpHeaders,
    body: Buffer,
    send: (status: number, type: string, body: string, headers?: Record<string, string>) => void,
  ): void {
    if (path === '/' && (method === 'GET' || method === 'HEAD'))
      return send(200, 'text/html; charset=utf-8', HOME, { 'cache-control': 'private, no-cache' });
    if (path.startsWith('/static/'))
      return send(200, 'text/css', 'body{font-family:sans-serif}\n', { 'cache-control': 'public, max-age=3600' });
    if (path.startsWith('/track/'))
      return send(200, 'application/json', `{"id":${JSON.stringify(path.slice(7, 40))},"status":"in_transit"}`, {
        'cache-control': 'public, max-age=30',
      });
    if (path === '/login' && method === 'POST') {
      const form = new URLSearchParams(body.toString('utf8'));
      const user = form.get('user') ?? '';
      const n = /^user(\d{1,6})$/.exec(user)?.[1];
      // The `login` model grants a session to any POST, as many real sites do for a guest cart or a
      // "remember me" page: a session cookie proves nothing about who holds it.
      const ok = model.kind === 'login' || (n !== undefined && form.get('password') === `pass${n}`);
      if (!ok) return send(401, 'application/json', '{"error":"bad_credentials"}', { 'cache-control': 'no-store' });
      if (sessions.size >= MAX_SESSIONS) sessions.clear(); // bounded: old sessions just log in again
      const sid = randomBytes(16).toString('hex');
      sessions.add(sid);
      stats.sessions++;
      return send(200, 'application/json', '{"ok":true}', {
        'cache-control': 'no-store',
        'set-cookie': `sid=${sid}; Path=/; HttpOnly; SameSite=Lax`,
      });
    }
    if (path === '/vault/documents' || path.startsWith('/vault/documents/')) {
      const sid = sessionOf(headers.cookie);
      if (sid === undefined || !sessions.has(sid))
        return send(401, 'application/json', '{"error":"login_required"}', { 'cache-control': 'no-store' });
      const list = path === '/vault/documents';
      return send(
        200,
        'application/json',
        list ? JSON.stringify(Array.from({ length: 20 }, (_, i) => ({ id: i + 1 }))) : '{"text":"document"}',
        { 'cache-control': 'private, no-store' },
      );
    }
    if (path === '/payments/approve' && method === 'POST')
      return send(200, 'application/json', '{"approved":true}', { 'cache-control': 'no-store' });
    if (path === '/search')
      return send(200, 'text/html; charset=utf-8', '<p>results</p>', { 'cache-control': 'no-store' });
    return send(200, 'text/html; charset=utf-8', '<p>page</p>', { 'cache-control': 'no-store' });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    model,
    stats: () => stats,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(sliceTimer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * `node src/drill/origins.ts '<model JSON>'`: a model in a process of its own, so the drill's own
 * work (thousands of clients, proof-of-work solves) never delays its answers or its health check.
 * Prints `{"port":N}` once listening; /__origin/stats gives its counters; exits when stdin closes.
 */
if (import.meta.main) {
  const model = JSON.parse(process.argv[2] ?? '') as OriginModel;
  if (!ORIGIN_KINDS.includes(model.kind)) throw new Error(`unknown origin model ${String(model.kind)}`);
  const running = await startOriginModel(model);
  process.stdout.write(`${JSON.stringify({ port: running.port })}\n`);
  process.stdin.resume();
  process.stdin.on('close', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}
