// A simulated gateway for attack-level and signature tests: a real compiled runtime and monitor,
// requests as bare contexts fed straight to the `level` phase, and a manual clock ticked one
// second at a time. Fast enough to play minutes of traffic in milliseconds.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { validateConfig } from '../src/config/load.ts';
import { compileRuntime, type Runtime } from '../src/pipeline/runtime.ts';
import { createManualClock } from '../src/core/clock.ts';
import { createMetrics, type Metrics } from '../src/core/metrics.ts';
import { createLogger } from '../src/core/log.ts';
import { RequestContext } from '../src/pipeline/context.ts';
import { AttackLevelMonitor } from '../src/phases/level/monitor.ts';
import { createLevelPhase, levelAdminRoutes } from '../src/phases/level/index.ts';
import type { AdminRoute, ApiHandler } from '../src/pipeline/admin-route.ts';
import type { DefenseDeps } from '../src/pipeline/env.ts';
import type { Phase } from '../src/pipeline/phase.ts';
import { memoryLog } from './helpers.ts';

export const BROWSERS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0',
];
const BROWSER_HEADERS = [
  'Host',
  'x',
  'User-Agent',
  'x',
  'Accept',
  'x',
  'Accept-Language',
  'x',
  'Accept-Encoding',
  'x',
  'Cookie',
  'x',
];
const SCRIPT_HEADERS = ['Host', 'x', 'User-Agent', 'x', 'Accept', 'x'];

export interface SimRequest {
  prefix: string;
  path?: string;
  ua?: string;
  method?: string;
  script?: boolean;
  route?: number;
  known?: boolean;
  /** The connection's fingerprints (ctx.ja4, ctx.h2Fingerprint); '' when not given. */
  ja4?: string;
  h2?: string;
}

export interface Sim {
  clock: ReturnType<typeof createManualClock>;
  monitor: AttackLevelMonitor;
  metrics: Metrics;
  runtime: Runtime;
  deps: DefenseDeps;
  logs: Record<string, unknown>[];
  alerts: Array<{ kind: string; message: string }>;
  level: Phase;
  ctx(r: SimRequest): RequestContext;
  send(r: SimRequest): RequestContext;
  /** Advance one second and tick. */
  second(): void;
  /** Serve these admin routes too (as the composition root mounts a phase module's routes). */
  mount(routes: readonly AdminRoute[]): void;
  /** Call an admin API handler directly (as operator `tester`); throws ApiError like the real API would answer 4xx. */
  call(method: string, path: string, body?: unknown): { status: number; body: any };
}

export function createSim(partial: Record<string, unknown> = {}): Sim {
  const config = validateConfig(
    {
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'origin', url: 'http://127.0.0.1:9' }],
      routes: [
        { name: 'api', path: '/api/*', upstream: 'origin', class: 'authenticated' },
        { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
      ],
      ...partial,
    },
    '(sim)',
  );
  const runtime = compileRuntime(config).runtime;
  // compileRuntime's route order: first match wins; the sim picks routes by index directly.
  const clock = createManualClock(1000);
  const metrics = createMetrics();
  const { lines, stream } = memoryLog();
  const log = createLogger('info', stream);
  const alerts: Array<{ kind: string; message: string }> = [];
  const alertSink = { raise: (kind: string, message: string) => void alerts.push({ kind, message }) };
  const getRuntime = () => runtime;
  const monitor = new AttackLevelMonitor({ getRuntime, metrics, log, clock, alerts: alertSink });
  const deps: DefenseDeps = {
    getRuntime,
    metrics,
    log,
    clock,
    level: monitor,
    bans: { isBanned: () => false, ban() {}, unban: () => false, offence() {} },
    alerts: alertSink,
  };
  const routes: Array<{ method: string; segments: string[]; handler: ApiHandler }> = [];
  const level = createLevelPhase(deps);
  const sim: Sim = {
    clock,
    monitor,
    metrics,
    runtime,
    deps,
    logs: lines,
    alerts,
    level,
    mount(list) {
      for (const r of list) routes.push({ method: r.method, segments: r.path.split('/'), handler: r.handler });
    },
    ctx(r) {
      const names = r.script ? SCRIPT_HEADERS : BROWSER_HEADERS;
      const ua = r.ua ?? BROWSERS[0]!;
      const req = {
        method: r.method ?? 'GET',
        url: r.path ?? '/',
        headers: { 'user-agent': ua, host: 'x' },
        rawHeaders: names,
      } as unknown as IncomingMessage;
      const ctx = new RequestContext(req, {} as ServerResponse, 0);
      ctx.clientAddress = `${r.prefix}.7`;
      ctx.clientPrefix = r.prefix;
      ctx.path = r.path ?? '/';
      ctx.target = ctx.path;
      ctx.route = runtime.routes[r.route ?? 1]!;
      ctx.known = r.known ?? false;
      ctx.ja4 = r.ja4 ?? '';
      ctx.h2Fingerprint = r.h2 ?? '';
      return ctx;
    },
    send(r) {
      const ctx = sim.ctx(r);
      level.onRequest(ctx);
      level.onDone?.(ctx);
      return ctx;
    },
    second() {
      clock.advance(1000);
      monitor.tick();
    },
    call(method, path, body = null) {
      const got = path.split('/');
      for (const r of routes) {
        if (r.method !== method || r.segments.length !== got.length) continue;
        const params: Record<string, string> = {};
        if (r.segments.every((s, i) => (s.startsWith(':') ? ((params[s.slice(1)] = got[i]!), true) : s === got[i])))
          return r.handler({
            method,
            path,
            params,
            query: new URLSearchParams(),
            body,
            who: 'tester',
            scope: 'operator',
          }) as { status: number; body: any };
      }
      throw new Error(`no route ${method} ${path}`);
    },
  };
  sim.mount(levelAdminRoutes(deps));
  return sim;
}

/** Calm customer traffic: `perSecond` requests from `customers` prefixes (10.x.y), browsers, a few pages. */
let rotation = 0;
export function calmSecond(sim: Sim, perSecond: number, customers = 300, offset = (rotation += 13)): void {
  const pages = ['/', '/products', '/products/123', '/cart', '/api/stock/9', '/about'];
  for (let i = 0; i < perSecond; i++) {
    const n = (offset + i * 7919) % customers;
    const path = pages[i % pages.length]!;
    sim.send({
      prefix: `10.${n >> 8}.${n & 255}`,
      path,
      ua: BROWSERS[i % BROWSERS.length]!,
      route: path.startsWith('/api') ? 0 : 1,
    });
  }
}

/** Learn `seconds` of calm traffic. */
export function warmUp(sim: Sim, seconds: number, perSecond = 50): void {
  for (let s = 0; s < seconds; s++) {
    calmSecond(sim, perSecond, 300, s * 13);
    sim.second();
  }
}

/** A flood drawn for the one-client and one-network tests (seeded draws, src/drill/rng.ts). */
export interface Flood {
  calm: number;
  rate: number;
  script: boolean;
  randomPaths: boolean;
  api: boolean;
}

/** A site calm at 10–300 req/s, a flood at 3× to 50× that rate, browser or script, calm's or random paths, site or API. */
export function drawFlood(r: () => number): Flood {
  const calm = Math.round(10 + r() * 290);
  return {
    calm,
    rate: Math.round(calm * (3 + r() * 47)),
    script: r() < 0.5,
    randomPaths: r() < 0.5,
    api: r() < 0.3,
  };
}
