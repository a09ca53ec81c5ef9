// The operator's cockpit on the admin listener: the dashboard page (static files, no data, no
// secrets), the live feed `GET /api/events` (Server-Sent Events, one aggregate snapshot per second to
// a bounded number of clients) and `GET /api/audit`. The page sends its token as a Bearer header on
// every call, the feed included (read with fetch, not EventSource, so the token never sits in a URL).
//
//   every 1 s: SnapshotBuilder.build() ─► history ring (compact, HISTORY_SECONDS) ─► each SSE client
//   client connects: `event: history` (the ring) then `data:` per second; a client more than
//   MAX_CLIENT_BACKLOG_BYTES behind is dropped (a stalled tab must not grow our memory).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../core/log.ts';
import { ApiError, type AdminApi, type ApiAction } from './api.ts';
import { MAX_AUDIT_LIMIT, redact, type AuditTrail } from './audit.ts';
import type { Snapshot, SnapshotBuilder } from './snapshot.ts';

export const MAX_SSE_CLIENTS = 16;
const HISTORY_SECONDS = 300;
const MAX_CLIENT_BACKLOG_BYTES = 1 << 20;
const TICK_MS = 1000;

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

/** The page's files: ours beside this module, uPlot's from node_modules. Read once, at start. */
async function loadAssets(): Promise<Map<string, Asset>> {
  const require = createRequire(import.meta.url);
  const uplotDir = require.resolve('uplot/dist/uPlot.iife.min.js').replace(/uPlot\.iife\.min\.js$/, '');
  // fileURLToPath, not URL.pathname: an install path with a space or non-ASCII letter is
  // percent-encoded in the URL and would name no file. The build copies dashboard/ beside this module.
  const here = (name: string) => fileURLToPath(new URL(`./dashboard/${name}`, import.meta.url));
  const files: [string, string, string][] = [
    ['/dashboard', here('index.html'), 'text/html; charset=utf-8'],
    ['/dashboard/app.js', here('app.js'), 'text/javascript; charset=utf-8'],
    ['/dashboard/app.css', here('app.css'), 'text/css; charset=utf-8'],
    ['/dashboard/uplot.js', `${uplotDir}uPlot.iife.min.js`, 'text/javascript; charset=utf-8'],
    ['/dashboard/uplot.css', `${uplotDir}uPlot.min.css`, 'text/css; charset=utf-8'],
  ];
  const out = new Map<string, Asset>();
  for (const [path, file, type] of files) out.set(path, { type, body: await readFile(file) });
  out.set('/dashboard/', out.get('/dashboard')!);
  return out;
}

const PAGE_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // Everything from this listener; no inline script, no framing, no form posts elsewhere.
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/** What an audit row calls an operator action, from its method and path. */
export function actionKind(method: string, path: string): string {
  if (path === '/api/bans') return method === 'POST' ? 'ban' : 'action';
  if (path.startsWith('/api/bans/')) return method === 'DELETE' ? 'unban' : 'action';
  if (path === '/api/level')
    return method === 'PUT' ? 'level_override' : method === 'DELETE' ? 'level_release' : 'action';
  if (/^\/api\/signatures\/[^/]+\/approve$/.test(path)) return 'rule_approve';
  if (/^\/api\/signatures\/[^/]+\/reject$/.test(path)) return 'rule_reject';
  if (path.startsWith('/api/guards/')) return 'guard_mode';
  if (path === '/api/status-page') return 'status_page';
  return 'action';
}

/** The operator's stated reason, when the body carries one. */
function reasonOf(body: unknown): string {
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
    const r = (body as Record<string, unknown>).reason;
    if (typeof r === 'string') return r;
  }
  return '';
}

/** The audit row of an operator's API call. */
export function auditAction(audit: AuditTrail, a: ApiAction): void {
  const kind = actionKind(a.method, a.path);
  const target = /^\/api\/(bans|guards|signatures)\/([^/]+)/.exec(a.path)?.[2];
  audit.record(kind, `operator:${a.who}`, reasonOf(a.body), {
    method: a.method,
    path: a.path,
    target: target === undefined ? undefined : decodeSafe(target),
    body: redact(a.body),
    status: a.status,
  });
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The chart series of a snapshot: what the history ring keeps (the tables are current-only). */
function compact(s: Snapshot): unknown {
  return {
    t: s.t,
    rps: s.rps,
    upstreams: s.upstreams.map((u) => ({
      name: u.name,
      limit: u.limit,
      inFlight: u.inFlight,
      p50Ms: u.p50Ms,
      p90Ms: u.p90Ms,
      p99Ms: u.p99Ms,
    })),
    admissionOn: s.admissionOn,
    admissionOff: s.admissionOff,
    queueDepth: s.queueDepth,
    cache: s.cache,
    waitingRoom: s.waitingRoom,
    level: { value: s.level.value, name: s.level.name },
  };
}

export interface Cockpit {
  /** Serve /dashboard and its files; false when the path is not the cockpit's. */
  handlePage(req: IncomingMessage, res: ServerResponse, path: string): boolean;
  start(): void;
  stop(): void;
  /** Connected live-feed clients. */
  readonly clients: number;
}

export interface CockpitDeps {
  readonly api: AdminApi;
  readonly audit: AuditTrail;
  readonly snapshots: SnapshotBuilder;
  readonly log: Logger;
}

export async function createCockpit(d: CockpitDeps): Promise<Cockpit> {
  const assets = await loadAssets();
  const clients = new Set<ServerResponse>();
  const history: unknown[] = [];
  let timer: NodeJS.Timeout | null = null;
  let building = false;

  function broadcast(s: Snapshot): void {
    const frame = `data: ${JSON.stringify(s)}\n\n`;
    for (const res of clients) {
      if (res.writableLength > MAX_CLIENT_BACKLOG_BYTES) {
        res.destroy();
        clients.delete(res);
        continue;
      }
      res.write(frame);
    }
  }

  function tick(): void {
    if (building) return;
    building = true;
    d.snapshots.build().then(
      (s) => {
        building = false;
        history.push(compact(s));
        if (history.length > HISTORY_SECONDS) history.shift();
        if (clients.size > 0) broadcast(s);
      },
      (err: unknown) => {
        building = false;
        d.log.error({ err }, 'dashboard snapshot failed');
      },
    );
  }

  d.api.stream('/api/events', 'read', (_req, res) => {
    if (clients.size >= MAX_SSE_CLIENTS) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(
        `${JSON.stringify({ error: { code: 'RMP_ERR_ADMIN_BAD_REQUEST', message: `at most ${MAX_SSE_CLIENTS} live-feed clients at once` } })}\n`,
      );
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\nevent: history\ndata: ${JSON.stringify(history)}\n\n`);
    clients.add(res);
    const drop = () => clients.delete(res);
    // The response's close, not the request's: a GET's request stream closes once its (empty) body is
    // read, with the feed still open, and the client then left the count (a 17th feed was let in).
    res.on('close', drop);
    res.on('error', drop);
  });

  d.api.route('GET', '/api/audit', 'read', (req) => {
    const q = req.query;
    let sinceMs: number | undefined;
    const since = q.get('since');
    if (since !== null && since !== '') {
      sinceMs = /^\d{1,15}$/.test(since) ? Number(since) : Date.parse(since);
      if (!Number.isFinite(sinceMs))
        throw new ApiError('since must be milliseconds since the epoch or an ISO 8601 time');
    }
    // An empty parameter (`?since=&kind=&limit=`, as a form sends it) is the same as an absent one.
    const kind = q.get('kind') || undefined;
    if (kind !== undefined && !/^[a-z][a-z0-9_]{0,63}$/.test(kind))
      throw new ApiError(
        'kind must be a lower-case event kind such as ban, unban, level_override, attack_level, failover, config_reload',
      );
    const limitText = q.get('limit');
    const limit = limitText === null || limitText === '' ? 100 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_LIMIT)
      throw new ApiError(`limit must be an integer from 1 to ${MAX_AUDIT_LIMIT}`);
    return { status: 200, body: { events: d.audit.query({ sinceMs, kind, limit }) } };
  });

  return {
    get clients() {
      return clients.size;
    },
    handlePage(req, res, path) {
      const asset = assets.get(path);
      if (asset === undefined) return false;
      res.writeHead(200, { 'content-type': asset.type, 'content-length': asset.body.length, ...PAGE_HEADERS });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return true;
    },
    start() {
      if (timer !== null) return;
      tick();
      timer = setInterval(tick, TICK_MS);
      timer.unref();
    },
    stop() {
      if (timer !== null) clearInterval(timer);
      timer = null;
      for (const res of clients) res.end();
      clients.clear();
    },
  };
}
