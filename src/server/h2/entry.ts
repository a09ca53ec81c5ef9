// The HTTP/2 request entry: one node:http2 server per listener (its settings), fed by the accept layer
// with the connections that chose `h2` by ALPN (or sent the cleartext preface where allowed). Each
// stream becomes a RequestContext that crosses the same request cycle (../cycle.ts) as an HTTP/1.1
// request: one pipeline, two entries. What is HTTP/2's own is here: the connection's books (open
// streams, idle time: the same socket fields the HTTP/1.1 entry keeps, so reclaiming idle connections
// under pressure works for both), the per-stream slow-read clock (a client that never opens its
// flow-control window holds a stream, not an upstream slot, and only until limits.slowReadTimeoutMs),
// the Rapid Reset and control-frame flood counters, and GOAWAY on a graceful stop.
import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../../config/schema.ts';
import type { Logger } from '../../core/log.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { ErrorCode } from '../../core/errors.ts';
import { RequestContext } from '../../pipeline/context.ts';
import type { Phase } from '../../pipeline/phase.ts';
import type { BanList } from '../../pipeline/env.ts';
import type { Recorder } from '../../pipeline/record.ts';
import type { ForwardHooks } from '../../pipeline/forward.ts';
import { isTrusted, type Runtime } from '../../pipeline/runtime.ts';
import { kIdleSince, kPeerAddress, kPending } from '../../pipeline/symbols.ts';
import { errorBody } from '../../pipeline/reply.ts';
import type { TrackedSocket } from '../connections.ts';
import { createRequestCycle } from '../cycle.ts';
import { H2Request, H2Response } from './messages.ts';

export type ListenerHttp2 = Config['listeners'][number]['http2'];

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } = http2.constants;

export interface H2EntryOptions {
  readonly phases: readonly Phase[];
  readonly getRuntime: () => Runtime;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Offences (Rapid Reset, frame floods) go to the ban list. */
  readonly bans: BanList;
  readonly recorder: Recorder;
  readonly onUpstreamHead?: ForwardHooks['onResponseHead'];
  readonly releaseSlot: (ctx: RequestContext) => void;
  /** The configuration the servers are made with (header limits need a restart, as for HTTP/1.1). */
  readonly initial: Config;
}

export interface H2Entry {
  /** A node:http2 server for one listener's settings: never listens, the accept layer hands it sockets. */
  serverFor(settings: ListenerHttp2): http2.Http2Server;
  /** Twice a second: streams stalled past limits.slowReadTimeoutMs, idle connections past their timeout. */
  sweep(): void;
  /** A graceful stop begins: GOAWAY on every connection (streams in flight finish, no new ones). */
  drain(): void;
  /** The end of the drain: destroy every connection; returns how many had a stream in flight. */
  cutAll(): number;
  /** Open HTTP/2 connections. */
  readonly sessions: number;
}

/** One HTTP/2 connection's books. */
interface SessionState {
  readonly session: http2.ServerHttp2Session;
  readonly socket: TrackedSocket;
  readonly settings: ListenerHttp2;
  /** The responses of the streams open now (bounded by maxConcurrentStreams). */
  readonly streams: Set<H2Response>;
  /** Streams the client reset in the current one-second window, and when that window began. */
  resets: number;
  resetsFrom: number;
  /** Frames without a request (SETTINGS, PING) in the current one-second window. */
  frames: number;
  framesFrom: number;
  /**
   * Bytes of request heads (decoded) and bodies the client sent: what it asked of the application. The
   * sweep compares the connection's bytes read with it (FLOOD_RATIO).
   */
  payload: number;
  /** Whether a stream ever opened on it (before the first, the idle limit is limits.headersTimeoutMs). */
  used: boolean;
  /** Closed by a defence: what is left of it is not counted again. */
  closing: boolean;
}

// nginx's rule for frames that ask nothing of the application (ngx_http_v2_read_handler, after
// CVE-2019-9511…9518): more than FLOOD_RATIO bytes read per byte of request heads and bodies, past
// FLOOD_FREE_BYTES, is a flood. node:http2 gives JavaScript no event for WINDOW_UPDATE or PRIORITY
// frames (nor for unknown frame types), so bytes are counted instead of frames; SETTINGS and PING have
// their own rate too (maxControlFramesPerSecond). A browser's control frames are a few per request.
const FLOOD_RATIO = 8;
const FLOOD_FREE_BYTES = 1024 * 1024;

const kState = Symbol('rempart.h2state');
type StatefulSession = http2.ServerHttp2Session & { [kState]?: SessionState };

export function createH2Entry(opts: H2EntryOptions): H2Entry {
  const { metrics, getRuntime } = opts;
  const sessions = new Set<SessionState>();
  let draining = false;
  let cutting = false;
  // The socket node:http2 is making a session for (its 'connection' listener emits 'session' at once).
  let arriving: TrackedSocket | null = null;
  const cycle = createRequestCycle({
    ...opts,
    onClientStalled(ctx) {
      const res = ctx.res as unknown as H2Response;
      if (res.stallSince === 0) res.stallSince = performance.now();
    },
    // Replies never queue behind another on HTTP/2: each stream has its own.
    onQueuedReply: () => true,
  });

  /** Close a connection for abuse: GOAWAY with `code`, an offence for its client, a log line. */
  function punish(state: SessionState, reason: ErrorCode, offence: string, code: number): void {
    if (state.closing) return;
    state.closing = true;
    metrics.refusals.inc({ reason });
    const peer = (state.socket as TrackedSocket & { [kPeerAddress]?: string })[kPeerAddress] ?? '';
    if (!isTrusted(getRuntime().trustedProxies, peer)) opts.bans.offence(peer, offence, '');
    if (opts.recorder.allowLine(reason)) opts.log.warn({ client: peer, reason }, 'HTTP/2 connection closed for abuse');
    closeWith(state.session, code);
  }

  /** `done` of one stream's request: runs once whatever happened. */
  function onResponseClose(this: H2Response): void {
    const ctx = this.ctx!;
    if (ctx.finished) return;
    ctx.finished = true;
    const s = this.owner as SessionState;
    s.streams.delete(this);
    const left = s.socket[kPending] - 1;
    s.socket[kPending] = left;
    if (left === 0) s.socket[kIdleSince] = performance.now();
    const stream = this.stream as http2.ServerHttp2Stream;
    const reset = stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR;
    if (cutting && !this.writableFinished) ctx.abort('RMP_ERR_SHUTDOWN_CUT');
    cycle.finish(ctx, this.writableFinished && !reset);
    // A banned client's connection goes after its refusal, as its HTTP/1.1 connection does: each
    // stream it opens on it would otherwise still cross the phases up to the ban.
    if (ctx.reason === 'RMP_ERR_BANNED' && !s.closing) {
      s.closing = true;
      closeWith(s.session, NGHTTP2_ENHANCE_YOUR_CALM);
    }
  }

  /** The client reset a stream: one more toward maxResetsPerSecond on its connection. */
  function onStreamAborted(this: H2Request): void {
    const s = (this.stream.session as StatefulSession | undefined)?.[kState];
    if (s === undefined || s.closing) return;
    if (overResetLimit(s)) punishResets(s);
  }

  /**
   * A stream already reset when node:http2 announces it: bytes that reached the session from JavaScript
   * (a first flight put back after the h2c sniff or the fingerprint capture) are processed in one go,
   * and the request's 'aborted' comes before anyone listens to it. Counted here instead; the punishment
   * waits for node:http2 to be done with those bytes (a GOAWAY written meanwhile never leaves).
   */
  function onSessionStream(this: StatefulSession, stream: http2.ServerHttp2Stream): void {
    if (stream.rstCode === undefined || stream.rstCode === NGHTTP2_NO_ERROR) return;
    const s = this[kState];
    if (s !== undefined && !s.closing && overResetLimit(s)) setImmediate(punishResets, s);
  }

  function overResetLimit(s: SessionState): boolean {
    const now = performance.now();
    if (now - s.resetsFrom >= 1000) {
      s.resetsFrom = now;
      s.resets = 0;
    }
    return ++s.resets > s.settings.maxResetsPerSecond;
  }

  function punishResets(s: SessionState): void {
    punish(s, 'RMP_ERR_EDGE_H2_RAPID_RESET', 'h2_rapid_reset', NGHTTP2_ENHANCE_YOUR_CALM);
  }

  function onRequest(req: H2Request, res: H2Response): void {
    const stream = req.stream;
    const s = (stream.session as StatefulSession | undefined)?.[kState];
    if (s === undefined || s.closing) {
      stream.close(NGHTTP2_CANCEL);
      return;
    }
    // The decoded head past limits.maxHeaderBytes is refused before it is a request, as Node's HTTP/1.1
    // parser refuses a head past it. node:http2 applies our SETTINGS_MAX_HEADER_LIST_SIZE only once
    // the client has acknowledged it: a client that never does decodes up to maxSessionMemory.
    if (req.headBytes > opts.initial.limits.maxHeaderBytes) return refuseHead(res);
    const ctx = new RequestContext(
      req as unknown as IncomingMessage,
      res as unknown as ServerResponse,
      performance.now(),
    );
    ctx.h2 = true;
    req.counter = s;
    s.payload += req.headBytes;
    res.ctx = ctx;
    res.owner = s;
    s.used = true;
    s.streams.add(res);
    s.socket[kPending]++;
    s.socket[kIdleSince] = 0;
    res.on('close', onResponseClose);
    req.on('aborted', onStreamAborted);
    // A connection opened during a drain gets this request answered, then GOAWAY (as an HTTP/1.1 one
    // gets `Connection: close` on its first reply).
    if (draining) s.session.close();
    cycle.run(ctx);
  }

  function refuseHead(res: H2Response): void {
    metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_HEADERS_TOO_LARGE' });
    const body = errorBody('RMP_ERR_EDGE_HEADERS_TOO_LARGE');
    const length = Buffer.byteLength(body);
    res.writeHead(431, { 'content-type': 'application/json', 'content-length': length, 'cache-control': 'no-store' });
    res.end(body);
  }

  /** A control frame arrived (SETTINGS, PING): one more toward maxControlFramesPerSecond. */
  function onControlFrame(this: StatefulSession): void {
    const s = this[kState];
    if (s === undefined || s.closing) return;
    const now = performance.now();
    if (now - s.framesFrom >= 1000) {
      s.framesFrom = now;
      s.frames = 0;
    }
    if (++s.frames > s.settings.maxControlFramesPerSecond)
      punish(s, 'RMP_ERR_EDGE_H2_FLOOD', 'h2_frame_flood', NGHTTP2_ENHANCE_YOUR_CALM);
  }

  function onSessionClose(this: StatefulSession): void {
    const s = this[kState];
    if (s !== undefined) sessions.delete(s);
  }

  function serverFor(settings: ListenerHttp2): http2.Http2Server {
    const limits = opts.initial.limits;
    const server = http2.createServer({
      settings: {
        maxConcurrentStreams: settings.maxConcurrentStreams,
        // The decoded head (HPACK) is bounded as an HTTP/1.1 head is: node:http2 resets a stream whose
        // decoded fields pass it, whatever the wire size (an HPACK bomb is a few bytes on the wire).
        maxHeaderListSize: limits.maxHeaderBytes,
        enablePush: false,
      },
      // Pseudo-headers count as fields for node:http2; a few more than the edge phase's limit lets it
      // answer 431 itself for an excess of ordinary fields.
      maxHeaderListPairs: limits.maxHeaderCount + 8,
      // Frames node:http2 finds invalid (zero-length DATA without END_STREAM: CVE-2019-9518's empty-frame
      // flood, and protocol slips) close the connection past this many; a browser sends none.
      maxSessionInvalidFrames: 100,
      Http2ServerRequest: H2Request as unknown as typeof http2.Http2ServerRequest,
      Http2ServerResponse: H2Response as unknown as typeof http2.Http2ServerResponse,
    });
    server.prependListener('connection', (socket: Socket) => {
      arriving = socket as TrackedSocket;
    });
    server.on('session', (session: StatefulSession) => {
      const socket = arriving!;
      arriving = null;
      const now = performance.now();
      const state: SessionState = {
        session,
        socket,
        settings,
        streams: new Set(),
        resets: 0,
        resetsFrom: now,
        frames: 0,
        framesFrom: now,
        payload: 0,
        used: false,
        closing: false,
      };
      session[kState] = state;
      socket[kIdleSince] = now;
      sessions.add(state);
      session.on('close', onSessionClose);
      session.on('ping', onControlFrame);
      session.on('remoteSettings', onControlFrame);
      session.on('stream', onSessionStream);
      // A protocol error of the client's is answered by node:http2 (GOAWAY); the session's error is
      // nothing to log.
      session.on('error', noop);
    });
    server.on(
      'request',
      onRequest as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
    // Stream errors (a reset of ours, a client gone) reach the response's close; nothing more to do.
    server.on('streamError', noop);
    return server;
  }

  function sweep(): void {
    const now = performance.now();
    const limits = getRuntime().config.limits;
    let slow = 0;
    let timedOut = 0;
    for (const s of sessions) {
      if (s.closing) continue;
      // Read by node:http2 straight from the handle, counted by it all the same (the TLS socket's
      // bytes are the decrypted ones). Checked twice a second: a flood gets half a second of its bandwidth.
      if (s.socket.bytesRead > FLOOD_FREE_BYTES + FLOOD_RATIO * s.payload) {
        punish(s, 'RMP_ERR_EDGE_H2_FLOOD', 'h2_frame_flood', NGHTTP2_ENHANCE_YOUR_CALM);
        continue;
      }
      if (s.streams.size === 0) {
        const since = s.socket[kIdleSince];
        const limit = s.used ? limits.idleTimeoutMs : limits.headersTimeoutMs;
        if (since > 0 && now - since > limit) {
          s.closing = true;
          s.session.close();
        }
        continue;
      }
      for (const res of s.streams) {
        const stream = res.stream as http2.ServerHttp2Stream;
        // A request whose body is still coming after limits.requestTimeoutMs (a slow POST): cut, as
        // Node's HTTP/1.1 server cuts it. A request that is whole waits on its answer, not its client.
        if (now - res.ctx!.startMs > limits.requestTimeoutMs && !requestComplete(stream)) {
          timedOut++;
          res.ctx!.abort('RMP_ERR_EDGE_TIMEOUT');
          stream.close(NGHTTP2_CANCEL);
          continue;
        }
        const waiting = stream.writableNeedDrain || stream.writableLength > 0;
        // A whole reply written (a local one, small: no write ever waited) that the client's window
        // keeps from going out holds its stream as long: its clock starts here.
        if (res.stallSince === 0) {
          if (waiting && res.writableEnded) res.stallSince = now;
          continue;
        }
        // Drained since: the client reads again.
        if (!waiting) res.stallSince = 0;
        else if (now - res.stallSince > limits.slowReadTimeoutMs) {
          slow++;
          stream.close(NGHTTP2_CANCEL);
        }
      }
    }
    if (slow > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_SLOW_READ' }, slow);
    if (timedOut > 0) metrics.refusals.inc({ reason: 'RMP_ERR_EDGE_TIMEOUT' }, timedOut);
  }

  return {
    serverFor,
    sweep,
    drain() {
      draining = true;
      for (const s of sessions) s.session.close();
    },
    cutAll() {
      let busy = 0;
      cutting = true;
      for (const s of sessions) {
        if (s.streams.size > 0) busy++;
        s.session.destroy();
      }
      return busy;
    },
    get sessions() {
      return sessions.size;
    },
  };
}

/**
 * GOAWAY with `code`, then the connection destroyed once the frame is written: a destroy at once could
 * lose the frame (the GOAWAY is written on the next turn of the loop), and destroy's own final GOAWAY
 * says NO_ERROR. The streams the client opens meanwhile are past the GOAWAY's last stream: never requests.
 */
function closeWith(session: http2.ServerHttp2Session, code: number): void {
  session.goaway(code);
  setImmediate(destroySession, session);
}

function destroySession(session: http2.ServerHttp2Session): void {
  session.destroy();
}

/** Whether the client has sent the whole request (END_STREAM received). */
function requestComplete(stream: http2.ServerHttp2Stream): boolean {
  if (stream.endAfterHeaders || stream.destroyed) return true;
  return (stream.state as { remoteClose?: number }).remoteClose === 1;
}

function noop(): void {}
