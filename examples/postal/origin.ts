// Reference origin for demos, tests and load drills: a small, deliberately bounded HTTP service
// modelled on La Poste / La Banque Postale (parcel tracking, Digiposte vault, payment approvals),
// plus the SMS approvals fallback. Capacity = `workers` slots held `serviceTimeMs` each + a FIFO queue.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

export interface PostalOriginOptions {
  host?: string;
  port?: number;
  workers?: number;
  serviceTimeMs?: number;
  queueLength?: number;
  name?: string;
}
export interface OriginStats {
  served: number;
  rejected: number;
  inFlight: number;
  queued: number;
  maxInFlight: number;
  busyMs: number;
  startedAt: number;
  byRoute: Record<string, number>;
  /** Requests that arrived, by the `x-drill-kind` header the drill sets (attack or legit), so a drill can tell what got through. */
  received: { attack: number; legit: number };
}
export interface RunningOrigin {
  url: string;
  port: number;
  stats(): OriginStats;
  resetStats(): void;
  close(): Promise<void>;
  setDown(down: boolean): void;
}

interface Reply {
  status: number;
  type: string;
  body: string;
  headers?: Record<string, string>;
}
interface Ctx {
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  stats: () => OriginStats;
}
/** `bypass` routes skip the capacity model: health/stats must stay observable under overload, static files model a CDN. */
interface Route {
  label: string;
  bypass?: boolean;
  handle(ctx: Ctx): Reply;
}
type Router = (method: string, path: string) => Route;

const MAX_BODY_BYTES = 8 * 1024;
const MAX_SESSIONS = 200_000;
const NO_STORE = { 'Cache-Control': 'no-store' };
const STATS_LABEL = 'GET /__origin/stats';

const json = (status: number, value: unknown, headers?: Record<string, string>): Reply => ({
  status,
  type: 'application/json; charset=utf-8',
  body: JSON.stringify(value),
  headers,
});
const notFound: Route = { label: 'other', handle: () => json(404, { error: 'not_found' }) };
const methodNotAllowed = (allow: string): Route => ({
  label: 'other',
  handle: () => json(405, { error: 'method_not_allowed' }, { Allow: allow }),
});
const healthz: Route = {
  label: 'GET /healthz',
  bypass: true,
  handle: () => ({ status: 200, type: 'text/plain; charset=utf-8', body: 'ok', headers: NO_STORE }),
};
const statsRoute: Route = { label: STATS_LABEL, bypass: true, handle: (c) => json(200, c.stats(), NO_STORE) };

/** FNV-1a 32-bit: cheap and stable, so every response derived from an id is reproducible across runs. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Routes shared by both services: they differ only in what happens behind the slots. */
function common(method: string, path: string): Route | undefined {
  if (path === '/healthz') return method === 'GET' ? healthz : methodNotAllowed('GET, HEAD');
  if (path === '/__origin/stats') return method === 'GET' ? statsRoute : methodNotAllowed('GET, HEAD');
  return undefined;
}

function validPaymentId(body: Buffer): string | number | undefined {
  const v = parseJson(body) as { paymentId?: unknown } | undefined;
  const id = v && typeof v === 'object' ? v.paymentId : undefined;
  if (typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id)) return id;
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return id;
  return undefined;
}

// ---- postal routes --------------------------------------------------------------------------

const HOME_HTML = `<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>La Poste (reference origin)</title>
<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head><body>
<h1>La Poste</h1><ul><li><a href="/track/6A12345678901">Suivre un colis</a></li><li><a href="#login">Se connecter</a></li>
<li><a href="/vault/documents">Digiposte : mes documents</a></li></ul>
<form id="login" method="post" action="/login"><input name="user"><input name="password" type="password"><button>Connexion</button></form>
</body></html>`;
const STATIC_FILES: Record<string, { type: string; body: string }> = {
  '/static/app.css': {
    type: 'text/css; charset=utf-8',
    body: 'body{font-family:sans-serif;margin:2rem;color:#003}h1{color:#fc0;background:#003;padding:.5rem}\n',
  },
  '/static/app.js': {
    type: 'text/javascript; charset=utf-8',
    body: 'document.documentElement.dataset.app="postal";\n',
  },
};
const STAGES = ['label_created', 'accepted', 'in_transit', 'at_sorting_centre', 'out_for_delivery', 'delivered'];
const LOCATIONS = [
  'Paris',
  'Lyon',
  'Marseille',
  'Lille',
  'Bordeaux',
  'Toulouse',
  'Nantes',
  'Strasbourg',
  'Rennes',
  'Nice',
];
const TRACK_EPOCH_MS = Date.UTC(2025, 11, 20, 8, 0, 0); // the Christmas 2025 rush

function trackParcel(id: string): Reply {
  if (!/^[A-Za-z0-9]{1,32}$/.test(id)) return json(400, { error: 'bad_tracking_id' });
  const h = hash32(id);
  const events = [];
  let atMs = TRACK_EPOCH_MS + (h % 86_400) * 1000;
  for (let i = 0; i <= h % STAGES.length; i++) {
    events.push({
      at: new Date(atMs).toISOString(),
      stage: STAGES[i],
      location: LOCATIONS[(h >>> (i * 3)) % LOCATIONS.length],
    });
    atMs += (4 * 3600 + ((h >>> i) % 7200)) * 1000;
  }
  return json(200, { id, status: events[events.length - 1]!.stage, events }, { 'Cache-Control': 'public, max-age=30' });
}

const DOC_KINDS = [
  'Releve de compte',
  'Bulletin de salaire',
  "Avis d'imposition",
  'Facture electricite',
  'Attestation assurance',
];
const DOCUMENTS = Array.from({ length: 50 }, (_, i) => {
  const id = i + 1;
  const title = `${DOC_KINDS[i % DOC_KINDS.length]} ${2025 - Math.floor(i / 12)}-${String(12 - (i % 12)).padStart(2, '0')}`;
  const targetBytes = 2048 + (hash32(title) % 3072);
  let text = `Digiposte - ${title}\n`;
  for (let line = 1; text.length < targetBytes; line++)
    text += `Ligne ${String(line).padStart(3, '0')} : ${title} / ref ${hash32(`${id}:${line}`).toString(16)}\n`;
  text = text.slice(0, targetBytes); // ASCII only, so characters == bytes
  return { id, title, bytes: targetBytes, text };
});

function postalRouter(sessions: Map<string, string>): Router {
  const sessionUser = (headers: http.IncomingHttpHeaders): string | undefined => {
    const sid = /(?:^|;\s*)sid=([0-9a-f]{32})(?:;|$)/.exec(headers.cookie ?? '')?.[1];
    return sid ? sessions.get(sid) : undefined;
  };
  const login: Route = {
    label: 'POST /login',
    handle: ({ headers, body }) => {
      const type = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      let user: unknown, password: unknown;
      if (type === 'application/json') {
        const v = parseJson(body) as Record<string, unknown> | undefined;
        if (!v || typeof v !== 'object') return json(400, { error: 'bad_json' });
        ({ user, password } = v);
      } else if (type === 'application/x-www-form-urlencoded') {
        const form = new URLSearchParams(body.toString('utf8'));
        user = form.get('user');
        password = form.get('password');
      } else return json(415, { error: 'unsupported_media_type' });
      if (typeof user !== 'string' || typeof password !== 'string') return json(400, { error: 'missing_credentials' });
      const n = /^user(0|[1-9]\d{0,4})$/.exec(user)?.[1];
      const ok =
        (user === 'alice' && password === 'alice-pass') ||
        (user === 'bob' && password === 'bob-pass') ||
        (n !== undefined && password === `pass${n}`);
      if (!ok) return json(401, { error: 'invalid_credentials' }, NO_STORE);
      // Bounded so a login flood cannot exhaust memory: Map keeps insertion order, evict the oldest.
      if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value as string);
      const sid = randomBytes(16).toString('hex');
      sessions.set(sid, user);
      return json(200, { ok: true }, { ...NO_STORE, 'Set-Cookie': `sid=${sid}; Path=/; HttpOnly; SameSite=Lax` });
    },
  };
  const PRIVATE = { 'Cache-Control': 'private, no-store' };
  const vaultList: Route = {
    label: 'GET /vault/documents',
    handle: ({ headers }) =>
      sessionUser(headers)
        ? json(
            200,
            DOCUMENTS.map(({ id, title, bytes }) => ({ id, title, bytes })),
            PRIVATE,
          )
        : json(401, { error: 'login_required' }, PRIVATE),
  };
  const vaultDoc = (docId: string): Route => ({
    label: 'GET /vault/documents/:id',
    handle: ({ headers }) => {
      if (!sessionUser(headers)) return json(401, { error: 'login_required' }, PRIVATE);
      const doc = /^[1-9]\d{0,2}$/.test(docId) ? DOCUMENTS[Number(docId) - 1] : undefined;
      return doc
        ? { status: 200, type: 'text/plain; charset=utf-8', body: doc.text, headers: PRIVATE }
        : json(404, { error: 'no_such_document' }, PRIVATE);
    },
  });
  const approve: Route = {
    label: 'POST /payments/approve',
    handle: ({ body }) => {
      const paymentId = validPaymentId(body);
      return paymentId === undefined
        ? json(400, { error: 'bad_payment' }, NO_STORE)
        : json(200, { approved: true, paymentId, channel: 'app' }, NO_STORE);
    },
  };
  const home: Route = {
    label: 'GET /',
    handle: () => ({
      status: 200,
      type: 'text/html; charset=utf-8',
      body: HOME_HTML,
      headers: { 'Cache-Control': 'public, max-age=60' },
    }),
  };

  return (method, path) => {
    const shared = common(method, path);
    if (shared) return shared;
    const only = (m: string, route: Route): Route =>
      method === m ? route : methodNotAllowed(m === 'GET' ? 'GET, HEAD' : m);
    if (path === '/') return only('GET', home);
    if (path.startsWith('/static/')) {
      const file = STATIC_FILES[path];
      const reply: Reply = file
        ? { status: 200, ...file, headers: { 'Cache-Control': 'public, max-age=3600' } }
        : json(404, { error: 'not_found' });
      return {
        label: 'GET /static/*',
        bypass: true,
        handle: () => (method === 'GET' ? reply : json(405, { error: 'method_not_allowed' }, { Allow: 'GET, HEAD' })),
      };
    }
    if (path.startsWith('/track/'))
      return only('GET', { label: 'GET /track/:id', handle: () => trackParcel(path.slice(7)) });
    if (path === '/login') return only('POST', login);
    if (path === '/vault/documents') return only('GET', vaultList);
    if (path.startsWith('/vault/documents/')) return only('GET', vaultDoc(path.slice(17)));
    if (path === '/payments/approve') return only('POST', approve);
    return notFound;
  };
}

const smsRouter: Router = (method, path) => {
  const shared = common(method, path);
  if (shared) return shared;
  if (path !== '/payments/approve') return notFound;
  if (method !== 'POST') return methodNotAllowed('POST');
  return {
    label: 'POST /payments/approve',
    handle: ({ body }) => {
      const paymentId = validPaymentId(body);
      if (paymentId === undefined) return json(400, { error: 'bad_payment' }, NO_STORE);
      const code = String(hash32(`sms:${paymentId}`) % 1_000_000).padStart(6, '0');
      return json(200, { approved: true, paymentId, channel: 'sms', code }, NO_STORE);
    },
  };
};

// ---- capacity-bounded server ----------------------------------------------------------------

type Body = Buffer | 'too_large' | null;
function readBody(req: http.IncomingMessage): Promise<Body> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return Promise.resolve('too_large');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        resolve('too_large');
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => resolve(null)); // aborted client: nothing to answer
    req.on('close', () => {
      if (!req.complete) resolve(null);
    });
  });
}

interface ServiceConfig {
  host: string;
  port: number;
  workers: number;
  serviceTimeMs: number;
  queueLength: number;
  name: string;
}

function startService(cfg: ServiceConfig, router: Router): Promise<RunningOrigin> {
  const fresh = () => ({
    served: 0,
    rejected: 0,
    maxInFlight: 0,
    busyMs: 0,
    startedAt: Date.now(),
    byRoute: {} as Record<string, number>,
    received: { attack: 0, legit: 0 },
  });
  let counters = fresh();
  let inFlight = 0;
  let down = false;
  const queue: Array<() => void> = [];
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();
  const stats = (): OriginStats => ({
    ...counters,
    byRoute: { ...counters.byRoute },
    received: { ...counters.received },
    inFlight,
    queued: queue.length,
  });

  const send = (res: http.ServerResponse, r: Reply, countServed: boolean, extra?: Record<string, string>) => {
    if (res.destroyed || res.headersSent) return;
    res.writeHead(r.status, {
      ...r.headers,
      ...extra,
      'X-Origin': cfg.name,
      'Content-Type': r.type,
      'Content-Length': Buffer.byteLength(r.body),
    });
    res.end(r.body);
    if (countServed) counters.served++;
  };
  // A slot is held for serviceTimeMs by a timer (never busy-waiting), then the next queued job starts.
  const startJob = (job: () => void) => {
    inFlight++;
    counters.maxInFlight = Math.max(counters.maxInFlight, inFlight);
    const t0 = performance.now();
    const timer = setTimeout(() => {
      timers.delete(timer);
      inFlight--;
      counters.busyMs += performance.now() - t0;
      job();
      while (inFlight < cfg.workers && queue.length > 0) startJob(queue.shift()!);
    }, cfg.serviceTimeMs);
    timers.add(timer);
  };

  const server = http.createServer((req, res) => {
    if (down) {
      req.socket.destroy();
      return;
    }
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://origin').pathname;
    } catch {
      path = '\0';
    } // query string ignored
    const route = router(req.method === 'HEAD' ? 'GET' : (req.method ?? ''), path);
    const observed = route.label !== STATS_LABEL; // reading stats must not change them
    if (observed) {
      counters.byRoute[route.label] = (counters.byRoute[route.label] ?? 0) + 1;
      const kind = req.headers['x-drill-kind'];
      if (kind === 'attack') counters.received.attack++;
      else if (kind === 'legit') counters.received.legit++;
    }
    void readBody(req).then((body) => {
      if (body === null) return;
      if (body === 'too_large') {
        req.resume(); // drain what the client still sends, then hang up rather than read it all
        return send(res, json(413, { error: 'body_too_large', limitBytes: MAX_BODY_BYTES }), observed, {
          Connection: 'close',
        });
      }
      const answer = () => {
        try {
          send(res, route.handle({ headers: req.headers, body, stats }), observed);
        } catch {
          send(res, json(500, { error: 'internal' }), observed);
        }
      };
      if (route.bypass) return answer();
      if (inFlight < cfg.workers) return startJob(answer);
      if (queue.length < cfg.queueLength) {
        queue.push(answer);
        // A client that gave up while waiting should not keep its place (nor later burn a slot).
        res.on('close', () => {
          const i = queue.indexOf(answer);
          if (i >= 0) queue.splice(i, 1);
        });
        return;
      }
      counters.rejected++;
      send(res, json(503, { error: 'overloaded' }, { ...NO_STORE, 'Retry-After': '1' }), false);
    });
  });
  server.on('connection', (socket) => {
    if (down) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, () => {
      server.off('error', reject);
      const port = (server.address() as AddressInfo).port;
      const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
      resolve({
        url: `http://${host}:${port}`,
        port,
        stats,
        resetStats: () => {
          counters = fresh();
          counters.maxInFlight = inFlight;
        },
        setDown: (value) => {
          down = value;
          if (down) for (const s of sockets) s.destroy(); // a killed process takes its connections with it
        },
        close: () =>
          new Promise<void>((done) => {
            for (const t of timers) clearTimeout(t);
            timers.clear();
            queue.length = 0;
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

export function startPostalOrigin(opts: PostalOriginOptions = {}): Promise<RunningOrigin> {
  return startService(
    {
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 0,
      workers: opts.workers ?? 8,
      serviceTimeMs: opts.serviceTimeMs ?? 20,
      queueLength: opts.queueLength ?? 64,
      name: opts.name ?? 'postal',
    },
    postalRouter(new Map()),
  );
}

export function startSmsApprovals(
  opts: { host?: string; port?: number; serviceTimeMs?: number } & Pick<
    PostalOriginOptions,
    'workers' | 'queueLength' | 'name'
  > = {},
): Promise<RunningOrigin> {
  return startService(
    {
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 0,
      workers: opts.workers ?? 8,
      serviceTimeMs: opts.serviceTimeMs ?? 20,
      queueLength: opts.queueLength ?? 64,
      name: opts.name ?? 'sms',
    },
    smsRouter,
  );
}

// ---- CLI ------------------------------------------------------------------------------------

function intFlag(raw: string | undefined, flag: string, min: number, max: number, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max)
    throw new Error(`--${flag} must be an integer between ${min} and ${max} (got "${raw}")`);
  return Number(raw);
}

async function main(argv: string[]): Promise<void> {
  let o: PostalOriginOptions, smsPort: number | undefined;
  try {
    const { values: v } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        workers: { type: 'string' },
        'service-ms': { type: 'string' },
        queue: { type: 'string' },
        'sms-port': { type: 'string' },
        name: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (v.help) {
      console.log(
        'usage: node examples/postal/origin.ts [--host 127.0.0.1] [--port 3000] [--workers 8] [--service-ms 20] [--queue 64] [--sms-port 3001] [--name postal]',
      );
      return;
    }
    if (v.host !== undefined && v.host.trim() === '') throw new Error('--host must not be empty');
    o = {
      host: v.host,
      port: intFlag(v.port, 'port', 0, 65535, 3000),
      workers: intFlag(v.workers, 'workers', 1, 100_000, 8),
      serviceTimeMs: intFlag(v['service-ms'], 'service-ms', 0, 600_000, 20),
      queueLength: intFlag(v.queue, 'queue', 0, 1_000_000, 64),
      name: v.name,
    };
    smsPort = v['sms-port'] === undefined ? undefined : intFlag(v['sms-port'], 'sms-port', 0, 65535, 0);
  } catch (err) {
    console.error(`origin: ${(err as Error).message}`);
    process.exit(2);
  }
  const running = [await startPostalOrigin(o)];
  console.log(
    `postal origin: ${running[0]!.url} (workers=${o.workers}, service=${o.serviceTimeMs}ms, queue=${o.queueLength})`,
  );
  if (smsPort !== undefined) {
    running.push(await startSmsApprovals({ host: o.host, port: smsPort }));
    console.log(`sms approvals: ${running[1]!.url}`);
  }
  const stop = () => {
    void Promise.all(running.map((r) => r.close())).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err: Error) => {
    console.error(`origin: ${err.message}`);
    process.exit(1);
  });
}
