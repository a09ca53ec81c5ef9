// The tunnel entry: Node hands over the socket of a request it judged an upgrade (a WebSocket GET on a
// route that allows tunnels, see wantsTunnel in upgrade.ts) without its HTTP machinery. A
// ServerResponse is attached to it so that the phases' answers (refusals, challenge and waiting-room
// pages, a non-101 answer of the upstream) are written and counted like any other, then the
// connection closes. A 101 makes a byte tunnel (upgrade.ts) whose `done` runs when it closes.
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { RequestContext } from '../pipeline/context.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Recorder } from '../pipeline/record.ts';
import { runPhases, Verdict, type Phase } from '../pipeline/phase.ts';
import { closingReason, sendLocalReply } from '../pipeline/reply.ts';
import { kIdleSince, kPending } from '../pipeline/symbols.ts';
import { feedBreaker } from '../phases/failover/breaker-feed.ts';
import { tunnelUpgrade, wantsTunnel, type TunnelHooks } from './upgrade.ts';
import type { TrackedSocket } from './connections.ts';
import type { RequestCycle } from './cycle.ts';

export interface UpgradeEntryOptions {
  readonly phases: readonly Phase[];
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly recorder: Recorder;
  readonly cycle: RequestCycle;
  /** Give the request's admission slot back (a tunnel refused after the phases). */
  readonly releaseSlot: (ctx: RequestContext) => void;
  /** Serve the request as an ordinary one (not a tunnel after all): the HTTP/1.1 entry. */
  readonly onRequest: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  /** Make the request's context and run `done` when its response closes (the HTTP/1.1 entry's). */
  readonly track: (req: http.IncomingMessage, res: http.ServerResponse) => RequestContext;
}

export interface UpgradeEntry {
  /** The HTTP server's 'upgrade' listener. */
  onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Destroy every upgraded socket (stop): the HTTP server no longer tracks them. */
  closeAll(): void;
}

type SocketWithMessage = Socket & { _httpMessage?: http.ServerResponse | null };

const TUNNEL_RETRY_AFTER = { 'retry-after': '5' };

function onUpgradedSocketFinish(this: http.ServerResponse): void {
  this.socket?.destroySoon();
}
function destroyUpgradedSocket(this: Socket): void {
  this.destroy();
}

/**
 * Close `s` once every answer still owed on it is out: Node hands the socket to the next queued
 * response when one finishes, so look again after each (several requests may precede the handshake).
 */
function closeAfterAnswers(s: SocketWithMessage): void {
  const m = s._httpMessage;
  if (m == null || m.writableFinished || s.destroyed) s.destroySoon();
  else m.once('finish', () => setImmediate(closeAfterAnswers, s));
}

export function createUpgradeEntry(opts: UpgradeEntryOptions): UpgradeEntry {
  const { phases, getRuntime, cycle } = opts;
  // Upgraded connections leave the HTTP server's tracking (closeAllConnections no longer sees
  // them), so stop() closes them itself.
  const upgraded = new Set<Duplex>();
  // Sockets on the tunnel path (handshakes under way and open tunnels), against limits.maxTunnels.
  let tunnels = 0;
  const onTunnelSocketClose = () => tunnels--;
  const tunnelHooks = createTunnelHooks(opts);

  /** Take the socket from the HTTP server: watched here, answered through a response of its own. */
  function adopt(req: http.IncomingMessage, s: Socket): http.ServerResponse | null {
    s.on('error', destroyUpgradedSocket);
    upgraded.add(s);
    s.once('close', () => upgraded.delete(s));
    // No HTTP server timeout watches this socket any more: a client that does not read is cut.
    s.setTimeout(getRuntime().config.limits.idleTimeoutMs, destroyUpgradedSocket);
    // Pipelined behind a request whose answer is still going out: the connection owes that answer
    // first, and nothing can be answered in order after it. Closed once it is sent; never forwarded.
    if ((s as SocketWithMessage)._httpMessage != null) {
      closeAfterAnswers(s as SocketWithMessage);
      return null;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(s);
    res.on('finish', onUpgradedSocketFinish);
    return res;
  }

  function onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const s = socket as Socket;
    const res = adopt(req, s);
    if (res === null) return;
    // Node without shouldUpgradeCallback (before 24.9) hands over every request carrying Upgrade:
    // those that are not tunnels go the ordinary way (their pipelined followers are lost either way).
    if (!wantsTunnel(req, getRuntime())) {
      (req as unknown as { upgrade: boolean }).upgrade = false;
      opts.onRequest(req, res);
      return;
    }
    // A tunnel is never an idle keep-alive connection to reclaim (onResponseClose counts it down if
    // the handshake ends without switching).
    (s as TrackedSocket)[kPending] = ((s as TrackedSocket)[kPending] | 0) + 1;
    (s as TrackedSocket)[kIdleSince] = 0;
    const ctx = opts.track(req, res);
    // Each tunnel holds two sockets for minutes: bounded whatever admission says (it may be off).
    tunnels++;
    s.once('close', onTunnelSocketClose);
    if (tunnels > getRuntime().config.limits.maxTunnels) {
      ctx.refuse('RMP_ERR_TUNNEL_LIMIT', 503, '', TUNNEL_RETRY_AFTER);
      sendLocalReply(ctx);
      return;
    }
    try {
      const v = runPhases(phases, ctx);
      if (typeof v === 'number') actUpgrade(ctx, v, head);
      else
        v.then(
          (r) => actUpgrade(ctx, r, head),
          (err) => cycle.internalError(ctx, err),
        );
    } catch (err) {
      cycle.internalError(ctx, err);
    }
  }

  function actUpgrade(ctx: RequestContext, verdict: Verdict, head: Buffer): void {
    if (verdict !== Verdict.Forward) return sendLocalReply(ctx);
    if (ctx.finished) return; // the client left while a phase waited; `done` has run
    // A refusal on this connection said Connection: close (see dispatch in pipeline/forward.ts).
    const closing = closingReason(ctx.req.socket);
    // The route the phases chose must allow tunnels too (a reload between the parser's question and now).
    const refusal = closing ?? (ctx.route?.websocket === true ? undefined : 'RMP_ERR_ROUTE_NO_WEBSOCKET');
    if (refusal !== undefined) {
      ctx.refuse(refusal, 400);
      opts.releaseSlot(ctx);
      return sendLocalReply(ctx);
    }
    const config = getRuntime().config;
    tunnelUpgrade(ctx, head, config.via, cycle.hooks, tunnelHooks, config.limits.tunnelIdleTimeoutMs);
  }

  return {
    onUpgrade,
    closeAll() {
      for (const socket of upgraded) socket.destroy();
    },
  };
}

function createTunnelHooks(opts: UpgradeEntryOptions): TunnelHooks {
  return {
    onSwitched(ctx) {
      const socket = ctx.req.socket;
      ctx.res.detachSocket(socket);
      socket.removeListener('timeout', destroyUpgradedSocket);
      opts.metrics.websocketUpgrades.inc({ route: ctx.route!.name });
      // The handshake measured the origin (breaker, response time); the tunnel's life says nothing
      // about its speed, so no sample is taken when it closes (forwardStartMs cleared: failover's
      // onDone feeds nothing then) and its slot goes back.
      feedBreaker(ctx);
      opts.recorder.observeUpstream(ctx, performance.now());
      ctx.forwardStartMs = 0;
    },
    onClosed(ctx) {
      if (ctx.finished) return;
      ctx.finished = true;
      opts.cycle.finish(ctx, true);
    },
  };
}
