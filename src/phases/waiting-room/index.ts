// Phase `waitingRoom`: on a route with `waitingRoom.enabled`, when the route's class is saturated,
// a new visitor gets a signed ticket and a light page with its place in line instead of the origin,
// and is let in in ticket order (admitPerSecond) with a signed pass. Visitors holding a pass are
// never interrupted. Per route the server keeps two counters and a bit per recent ticket (used once),
// and one fixed sketch counts new places per client address. Tickets and passes are bound to the
// client's prefix and User-Agent like clearances. See docs/waiting-room.md.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { CompiledUpstream, Runtime } from '../../pipeline/runtime.ts';
import type { Metrics } from '../../core/metrics.ts';
import { systemClock, type Clock } from '../../core/clock.ts';
import type { RouteWaitingRoomConfig, TrafficClass } from '../../config/schema.ts';
import { classIndex } from '../../upstream/queue.ts';
import { PLAIN_PAGE, escapeHtml } from '../../core/html.ts';
import { wantsHtml } from '../../core/html.ts';
import { WindowQuota } from '../../core/window-quota.ts';
import { v6PrefixKey } from '../../core/client-key.ts';
import { binding } from '../../core/signing-keys.ts';
import { WaitingRoom } from './room.ts';
import { type CookieSigner, passCookieName, readCookie, ticketCookieName } from './ticket.ts';

/**
 * Who a ticket quota counts: the address for IPv4 (a /24 holds many people behind carrier NATs, each
 * with an address or a port range of their own), the /64 for IPv6 (one subscriber holds all of it).
 */
export function ticketQuotaKey(address: string, prefix: string): string {
  const v4 = address.indexOf(':') === -1 || (address.startsWith('::ffff:') && address.indexOf('.') !== -1);
  return v4 ? address : prefix;
}

/**
 * One new place from the quota of this client (ticketQuotaKey), and for IPv6 also from its /48's, 16
 * times larger: a free tunnel broker hands out a /48, 65,536 /64s that would each take 10 places a
 * minute otherwise, while a carrier's /48 holds many devices that must not share one small quota.
 */
export function takeTicketQuota(
  quota: WindowQuota,
  address: string,
  prefix: string,
  perMinute: number,
  nowMs: number,
): boolean {
  const key = ticketQuotaKey(address, prefix);
  if (key === prefix && prefix.indexOf(':') !== -1 && !quota.take(v6PrefixKey(address, 48), perMinute * 16, nowMs))
    return false;
  return quota.take(key, perMinute, nowMs);
}

/**
 * Whether the route's class is saturated on this upstream: every admission slot taken, or requests
 * of the class already queued. An upstream with admission `off` is never saturated (no signal).
 */
export function isSaturated(upstream: CompiledUpstream, cls: TrafficClass): boolean {
  const gate = upstream.admission;
  if (gate.limiter.mode === 'off') return false;
  return gate.limiter.inFlight >= gate.limiter.limit || gate.queue.depth(classIndex(cls)) > 0;
}

const JSON_CONTENT = { 'content-type': 'application/json' };

/** Seconds a browser waits before reloading the page: the estimate, kept within 2–30 s. */
export function refreshSeconds(etaSeconds: number): number {
  return Math.min(30, Math.max(2, Math.ceil(etaSeconds)));
}

/**
 * The waiting page for browsers: no script, no external resource, well under 2 KB. Only numbers land
 * in it; they are formatted as numbers and escaped all the same (the shell's CSP allows no script).
 */
export function waitingPageHtml(position: number, etaSeconds: number, refreshSec: number): string {
  const wait = etaSeconds < 60 ? `${etaSeconds} s` : `${Math.ceil(etaSeconds / 60)} min`;
  const refresh = escapeHtml(String(refreshSec));
  return PLAIN_PAGE.render(
    'You are in line',
    `<h1>You are in line</h1><p>Many people are visiting right now. You will be let in in the order you arrived.</p>` +
      `<p>Your place in line: <strong id="position">${escapeHtml(String(position))}</strong><br>` +
      `Estimated wait: <strong id="eta">${escapeHtml(wait)}</strong></p>` +
      `<p>This page refreshes itself every ${refresh} seconds; keep it open and do not clear your cookies.</p>` +
      `<p><small>503 &middot; RMP_ERR_WAITING_ROOM</small></p>`,
    `<meta http-equiv="refresh" content="${refresh}">`,
  );
}

export interface WaitingRoomPhase extends Phase {
  /** The rooms by route name (one per route with a waiting room that has seen a request): counters only. */
  readonly rooms: ReadonlyMap<string, WaitingRoom>;
}

/**
 * @example
 *   const phases = [..., createWaitingRoomPhase(getRuntime, metrics, clock, new CookieSigner(key)), body, admission];
 */
export function createWaitingRoomPhase(
  getRuntime: () => Runtime,
  metrics: Metrics,
  clock: Clock = systemClock,
  signer: CookieSigner,
): WaitingRoomPhase {
  // Keyed by route name: bounded by the configuration, never by visitors.
  const rooms = new Map<string, WaitingRoom>();
  // New places taken per client address and minute, every room together (512 KiB, fixed).
  const ticketQuota = new WindowQuota(60_000);

  metrics.waitingRoomReaders.length = (g) => {
    g.reset();
    for (const [route, room] of rooms) g.set({ route }, room.length);
  };

  function cookie(ctx: RequestContext, name: string, value: string, maxAgeSec: number): string {
    return `${name}=${value}; Path=/; Max-Age=${maxAgeSec}; HttpOnly; SameSite=Lax${ctx.protocol === 'https' ? '; Secure' : ''}`;
  }

  function grantPass(
    ctx: RequestContext,
    route: string,
    cfg: RouteWaitingRoomConfig,
    wallMs: number,
    bind: string,
    dropTicket: boolean,
  ): Verdict {
    const value = signer.signPass({ route, expiresAtMs: wallMs + cfg.passTtlSec * 1000, bind });
    ctx.addResponseHeader('set-cookie', cookie(ctx, passCookieName(route), value, cfg.passTtlSec));
    // A used ticket is worth nothing: the browser need not send it again.
    if (dropTicket) ctx.addResponseHeader('set-cookie', cookie(ctx, ticketCookieName(route), '', 0));
    metrics.waitingRoomAdmitted.inc({ route });
    return Verdict.Continue;
  }

  function waitingPage(
    ctx: RequestContext,
    position: number,
    cfg: RouteWaitingRoomConfig,
    setCookie: string | null,
  ): Verdict {
    const etaSeconds = Math.ceil(position / cfg.admitPerSecond);
    const refresh = refreshSeconds(etaSeconds);
    const html = wantsHtml(ctx.req.headers.accept);
    const body = html
      ? waitingPageHtml(position, etaSeconds, refresh)
      : `${JSON.stringify({ waitingRoom: { position, etaSeconds } })}\n`;
    const headers: Record<string, string> = {
      ...(html ? PLAIN_PAGE.headers : JSON_CONTENT),
      'retry-after': String(refresh),
      'cache-control': 'no-store',
      // Machine-readable for apps and the drill: the page says the same to people.
      'rempart-waiting-room': `position=${position}, eta=${etaSeconds}`,
    };
    if (setCookie !== null) headers['set-cookie'] = setCookie;
    ctx.refuse('RMP_ERR_WAITING_ROOM', 503, body, headers);
    return Verdict.Reply;
  }

  return {
    name: 'waitingRoom',
    rooms,
    onRequest(ctx: RequestContext) {
      const route = ctx.route;
      if (route === null) return Verdict.Continue;
      const cfg = getRuntime().config.routes[route.index]?.waitingRoom;
      if (cfg === undefined || !cfg.enabled) return Verdict.Continue;
      // Only page views wait in line; other methods go on to admission (and are shed there if saturated).
      // A WebSocket handshake is a GET: without a pass it waits like a page (the page that opens it had one).
      const method = ctx.req.method;
      if (method !== 'GET' && method !== 'HEAD') return Verdict.Continue;
      const name = route.name;
      const wallMs = clock.wallMs();
      const cookies = ctx.req.headers.cookie;
      // Passes and tickets are good only for the network and browser they were given to.
      const bind = binding(ctx.clientPrefix, ctx.req.headers['user-agent']);
      // Inside already: never interrupted, whatever the line looks like.
      if (signer.openPass(name, readCookie(cookies, passCookieName(name)), wallMs, bind) !== null)
        return Verdict.Continue;
      let room = rooms.get(name);
      if (room === undefined) rooms.set(name, (room = new WaitingRoom()));
      const saturated = cfg.force || isSaturated(ctx.upstream ?? route.upstream, route.class);
      const nowMs = clock.now();
      room.advance(nowMs, saturated, cfg.admitPerSecond);
      const ticketValue = readCookie(cookies, ticketCookieName(name));
      if (room.isEmpty && !saturated) return grantPass(ctx, name, cfg, wallMs, bind, ticketValue !== undefined);
      const ticket = signer.openTicket(name, ticketValue, wallMs, cfg.ticketTtlSec * 1000, bind);
      // A ticket numbered past `issued` comes from before a restart (same key, counters reset): a new place.
      if (ticket !== null && ticket.n <= room.issued) {
        if (!room.isAdmitted(ticket.n)) return waitingPage(ctx, room.positionOf(ticket.n), cfg, null);
        // Let in once: a ticket already turned into a pass is no ticket (a new place below).
        if (room.use(ticket.n)) return grantPass(ctx, name, cfg, wallMs, bind, true);
      }
      // A new place, within the address's quota: past it the page says where the back of the line
      // is, but no place is taken (requests without cookies cannot fill the line).
      if (!takeTicketQuota(ticketQuota, ctx.clientAddress, ctx.clientPrefix, cfg.ticketsPerAddressPerMinute, nowMs)) {
        metrics.waitingRoomTicketsRefused.inc({ route: name });
        return waitingPage(ctx, room.length + 1, cfg, null);
      }
      const n = room.take();
      metrics.waitingRoomTickets.inc({ route: name });
      const value = signer.signTicket({ route: name, n, issuedAtMs: wallMs, bind });
      return waitingPage(ctx, room.positionOf(n), cfg, cookie(ctx, ticketCookieName(name), value, cfg.ticketTtlSec));
    },
  };
}

export const waitingRoomPhase: PhaseModule<WaitingRoomPhase> = {
  name: 'waitingRoom',
  folder: 'waiting-room',
  summary:
    'on routes with `waitingRoom.enabled` while their class is saturated: the waiting page, 503 with ' +
    "Retry-After and the visitor's place in line (JSON, or a self-refreshing HTML page for browsers)",
  codes: ['RMP_ERR_WAITING_ROOM'],
  create: (env) => createWaitingRoomPhase(env.getRuntime, env.metrics, env.clock, env.roomSigner),
};
