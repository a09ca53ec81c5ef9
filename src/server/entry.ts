// The HTTP/1.1 request entry: the node:http server the accept layer feeds, and what happens between
// Node's parser and the request cycle (cycle.ts): the pipelining bound, the context, `done` on the
// response's close, parse errors answered on the raw socket, upgrades (upgrade-entry.ts), and the
// connection sweep. Its handlers are made once per gateway and shared by every request: no closure
// per request.
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.ts';
import { RequestContext } from '../pipeline/context.ts';
import { ERRORS, type ErrorCode } from '../core/errors.ts';
import { monoNow } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Phase } from '../pipeline/phase.ts';
import type { BanList } from '../pipeline/env.ts';
import type { Recorder } from '../pipeline/record.ts';
import type { ForwardHooks } from '../pipeline/forward.ts';
import { isTrusted, type Runtime } from '../pipeline/runtime.ts';
import { flushDeferredReply, writeRawReply } from '../pipeline/reply.ts';
import { kIdleSince, kPeerAddress, kPending, kReadPaused } from '../pipeline/symbols.ts';
import { wantsTunnel } from './upgrade.ts';
import { createConnectionTable, type ConnectionTable } from './accept.ts';
import { holdQueuedReply, isIdle, markStalled, pauseReading, resumeReading, sweep } from './connections.ts';
import type { SweepResult, TrackedSocket } from './connections.ts';
import { createRequestCycle } from './cycle.ts';
import { createUpgradeEntry } from './upgrade-entry.ts';
import { LeanEngine } from './lean/engine.ts';

const kCtx = Symbol('rempart.ctx');
type ResponseWithCtx = http.ServerResponse & { [kCtx]: RequestContext };

export interface HttpEntryOptions {
  /** The phases, in order (built from src/phases/index.ts). */
  readonly phases: readonly Phase[];
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Offences (a pipelining flood) go to the ban list. */
  readonly bans: BanList;
  readonly recorder: Recorder;
  /** Sees every upstream response head (the challenge guard learns origin-granted sessions). */
  readonly onUpstreamHead?: ForwardHooks['onResponseHead'];
  /** Give a request's admission slot back (the `admission` phase's). */
  readonly releaseSlot: (ctx: RequestContext) => void;
  /** The configuration the server is made with (maxHeaderBytes needs a restart; timeouts follow reloads). */
  readonly initial: Config;
}

export interface HttpEntry {
  /** The HTTP server: never listens itself, the accept layer hands it sockets (engine `node`). */
  readonly server: http.Server;
  /** With `server.engine: lean`, where the accept layer hands each connection instead (else null). */
  readonly handOff: ((socket: Socket) => void) | null;
  /** Open client connections (the accept layer counts them in, the sweep and stop read them). */
  readonly connections: ConnectionTable;
  /** Asked before Node builds a response for a request parsed on `socket`: false stops parsing it. */
  requestGate(socket: TrackedSocket): boolean;
  /** The periodic pass (twice a second): slow readers past their deadline, idle connections under pressure. */
  sweep(): void;
  /** Apply the timeouts of a (re)loaded configuration. */
  applyTimeouts(config: Config): void;
  /** Destroy every upgraded socket (stop): the HTTP server no longer tracks them. */
  closeUpgraded(): void;
  /**
   * The drain of a graceful stop begins: every reply from now on says `Connection: close`, so a keep-alive
   * client finishes its exchange and reconnects to whoever listens then (a successor, another node).
   */
  drain(): void;
  /** During the drain: close the connections idle for DRAIN_IDLE_MS (a busy one closes after its reply). */
  closeIdle(): void;
  /**
   * The end of the drain: close every connection; the requests still in flight are recorded as
   * RMP_ERR_SHUTDOWN_CUT. Returns how many connections had one.
   */
  cutAll(): number;
}

/**
 * During a drain, a keep-alive connection idle this long is closed. Not at once: a client in a request
 * loop is idle only between a reply and its next request, and closing it then would race that request
 * (a reset, a failed request); it gets `Connection: close` on that reply instead. A connection that has
 * not been answered yet is never closed as idle: on a busy process its first request may be in the
 * socket's buffer, unread, and closing would reset it (limits.headersTimeoutMs ends one that sends nothing).
 */
const DRAIN_IDLE_MS = 1000;

/** Node parse errors that are request-smuggling shapes, refused as such. */
const SMUGGLING_PARSE_ERRORS = new Set([
  'HPE_INVALID_CONTENT_LENGTH',
  'HPE_UNEXPECTED_CONTENT_LENGTH',
  'HPE_INVALID_TRANSFER_ENCODING',
  'HPE_CR_EXPECTED',
  'HPE_LF_EXPECTED',
  'HPE_INVALID_HEADER_TOKEN',
  'HPE_INVALID_CHUNK_SIZE',
  'HPE_STRICT',
]);

/** The reason code a parse error is answered with. */
function parseErrorCode(err: Error & { code?: string }): ErrorCode {
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'RMP_ERR_EDGE_HEADERS_TOO_LARGE';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT') return 'RMP_ERR_EDGE_TIMEOUT';
  if (err.code !== undefined && SMUGGLING_PARSE_ERRORS.has(err.code)) return 'RMP_ERR_EDGE_SMUGGLING';
  return 'RMP_ERR_EDGE_BAD_REQUEST';
}

export function createHttpEntry(opts: HttpEntryOptions): HttpEntry {
  const { metrics, getRuntime } = opts;
  const table = createConnectionTable();
  // Set by drain() and cutAll() (a graceful stop); read once per request and once per cut reply.
  let draining = false;
  let cutting = false;
  const cycle = createRequestCycle({
    ...opts,
    onClientStalled: (ctx) => markStalled(ctx.socket as TrackedSocket, table.stalled, monoNow()),
    onQueuedReply(ctx, bytes) {
      if (holdQueuedReply(ctx.res, ctx.socket as TrackedSocket, bytes, getRuntime().config.limits.maxQueuedReplyBytes))
        return true;
      metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' });
      return false;
    },
  });

  // `done`: runs once per request whatever happened (finished, refused, client gone).
  function onResponseClose(this: ResponseWithCtx): void {
    const ctx = this[kCtx];
    if (ctx.finished) return;
    ctx.finished = true;
    const socket = ctx.socket as TrackedSocket;
    const left = socket[kPending] - 1;
    socket[kPending] = left;
    if (left === 0) socket[kIdleSince] = monoNow();
    const maxPipelined = getRuntime().config.limits.maxPipelinedRequests;
    if (socket[kReadPaused] && left < maxPipelined && !socket.destroyed) resumeReading(socket);
    // Cut by the end of a drain, not left by its client: the log line says so.
    if (cutting && !this.writableFinished) ctx.abort('RMP_ERR_SHUTDOWN_CUT');
    cycle.finish(ctx, this.writableFinished);
    // A parse error or refused upgrade behind this response waited for it (writeRawReply).
    flushDeferredReply(socket);
  }

  function track(req: http.IncomingMessage, res: http.ServerResponse): RequestContext {
    const ctx = new RequestContext(req, res, monoNow());
    (res as ResponseWithCtx)[kCtx] = ctx;
    res.on('close', onResponseClose);
    return ctx;
  }

  /** Too many requests unanswered on one connection (pipelined in one write): close it, charge an offence. */
  function refusePipelined(socket: TrackedSocket): void {
    metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_PIPELINE_LIMIT' });
    const peer = (socket as TrackedSocket & { [kPeerAddress]?: string })[kPeerAddress] ?? '';
    // A trusted balancer's own address carries many clients (X-Forwarded-For): never charge it.
    if (!isTrusted(getRuntime().trustedProxies, peer)) opts.bans.offence(peer, 'pipeline_flood', '');
    if (opts.recorder.allowLine('RMP_ERR_EDGE_PIPELINE_LIMIT')) {
      const line = 'connection closed: too many pipelined requests unanswered';
      opts.log.warn({ client: peer, reason: 'RMP_ERR_EDGE_PIPELINE_LIMIT' }, line);
    }
    socket.destroy();
  }

  function requestGate(socket: TrackedSocket): boolean {
    if (socket[kPending] < 2 * getRuntime().config.limits.maxPipelinedRequests) return true;
    refusePipelined(socket);
    return false;
  }

  function onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket as TrackedSocket;
    // Node parses every request in a chunk it reads, answered or not; one write can hold thousands.
    // requestGate stops the parsing past the bound; this check stands if Node's internals change.
    if (socket.destroyed) return;
    const maxPipelined = getRuntime().config.limits.maxPipelinedRequests;
    const pending = (socket[kPending] | 0) + 1;
    if (pending > 2 * maxPipelined) return refusePipelined(socket);
    socket[kPending] = pending;
    socket[kIdleSince] = 0;
    if (pending >= maxPipelined) pauseReading(socket);
    // A request carrying Upgrade that is not a tunnel (shouldUpgradeCallback said no): Node's parser
    // stops at such a request and drops whatever followed it in the same read, so a pipelined request
    // behind it would never be answered. Closing after this answer tells the client so.
    if (req.headers.upgrade !== undefined || draining) res.shouldKeepAlive = false;
    cycle.run(track(req, res));
  }

  function onClientError(err: Error & { code?: string }, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
      socket.destroy();
      return;
    }
    const code = parseErrorCode(err);
    metrics.refusals.inc({ reason: code });
    writeRawReply(socket as Socket, ERRORS[code].status, code);
  }

  const upgrades = createUpgradeEntry({ ...opts, cycle, onRequest, track });
  const server = createServer(opts.initial, getRuntime, onRequest);
  const lean =
    opts.initial.server.engine === 'lean'
      ? new LeanEngine({
          getRuntime,
          maxHeaderBytes: opts.initial.limits.maxHeaderBytes,
          onRequest,
          requestGate,
          onUpgrade: upgrades.onUpgrade,
          onParseError: (code) => metrics.refusals.inc({ reason: code }),
        })
      : null;
  applyTimeouts(server, opts.initial);
  server.on('upgrade', upgrades.onUpgrade);
  server.on('clientError', onClientError);
  // The HTTP server is fed sockets by the accept layer and never listens itself, but Node only
  // starts tracking connections (headersTimeout/requestTimeout checks, closeAllConnections) on
  // 'listening'. Without this, slowloris connections would never be timed out.
  server.emit('listening');
  const sweepConnections = createSweep(table, getRuntime, metrics);

  return {
    server,
    handOff: lean === null ? null : (socket) => lean.handle(socket),
    connections: table,
    requestGate,
    sweep:
      lean === null
        ? sweepConnections
        : () => {
            sweepConnections();
            lean.sweep(monoNow());
          },
    applyTimeouts: (config) => applyTimeouts(server, config),
    closeUpgraded: upgrades.closeAll,
    drain() {
      draining = true;
    },
    closeIdle() {
      const now = monoNow();
      for (const s of table.sockets) if (isIdle(s) && now - s[kIdleSince] >= DRAIN_IDLE_MS) s.destroy();
    },
    cutAll() {
      let busy = 0;
      for (const s of table.sockets) if (s[kPending] > 0) busy++;
      cutting = true;
      server.closeAllConnections();
      // The lean engine's connections are not the HTTP server's: the table holds them all.
      if (lean !== null) for (const s of table.sockets) s.destroy();
      upgrades.closeAll();
      return busy;
    },
  };
}

function createServer(initial: Config, getRuntime: () => Runtime, onRequest: http.RequestListener): http.Server {
  const server = http.createServer(
    {
      maxHeaderSize: initial.limits.maxHeaderBytes,
      insecureHTTPParser: false,
      // A missing Host is refused by the `edge` phase, which closes the connection behind it.
      requireHostHeader: false,
      joinDuplicateHeaders: false,
      // Check header/request timeouts twice a second rather than Node's default 30 s, so a
      // slowloris connection is closed close to limits.headersTimeoutMs.
      connectionsCheckingInterval: 500,
      // Node 24.9+: only WebSocket GETs on routes that allow tunnels become upgrades; any other
      // request carrying Upgrade reaches onRequest and crosses the phases like any request.
      shouldUpgradeCallback: (req: http.IncomingMessage) => wantsTunnel(req, getRuntime()),
    } as http.ServerOptions,
    onRequest,
  );
  // Expect: 100-continue is answered by us once the phases accepted the request, not by Node at once.
  server.on('checkContinue', onRequest);
  // Any other Expect Node answers 417 itself, keep-alive, before any phase: framing the edge phase
  // refuses (`Transfer-Encoding: identity, chunked`) was then never refused, and a request hidden in
  // that body reached the upstream (fuzz finding). The edge phase answers it (RMP_ERR_EDGE_EXPECTATION).
  server.on('checkExpectation', onRequest);
  return server;
}

function applyTimeouts(server: http.Server, config: Config): void {
  server.headersTimeout = config.limits.headersTimeoutMs;
  server.requestTimeout = config.limits.requestTimeoutMs;
  server.keepAliveTimeout = config.limits.idleTimeoutMs;
  // Node 24 keeps an idle socket 1 s past keepAliveTimeout by default; the limit is the limit.
  (server as http.Server & { keepAliveTimeoutBuffer?: number }).keepAliveTimeoutBuffer = 0;
  server.timeout = config.limits.idleTimeoutMs;
  // Node truncates heads past maxHeadersCount; one more than the limit lets the edge phase see the excess.
  server.maxHeadersCount = config.limits.maxHeaderCount + 1;
}

/** Twice a second: slow readers past their deadline, and idle connections under pressure. */
function createSweep(table: ConnectionTable, getRuntime: () => Runtime, metrics: Metrics): () => void {
  const swept: SweepResult = { slowReaders: 0, idleClosed: 0, idleTimedOut: 0 };
  return () => {
    const now = monoNow();
    const idle = sweep(table.sockets, table.stalled, table.total, getRuntime().config.limits, now, swept);
    table.reclaim.list = idle;
    table.reclaim.next = 0;
    // Empty (no pressure, or none idle): an accept at the cap may look again at once.
    table.reclaim.builtAt = idle.length > 0 ? now : -Infinity;
    if (swept.slowReaders > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' }, swept.slowReaders);
    if (swept.idleClosed > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_IDLE_RECLAIMED' }, swept.idleClosed);
    if (swept.idleTimedOut > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_TIMEOUT' }, swept.idleTimedOut);
  };
}
