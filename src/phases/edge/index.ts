// Phase `edge`: refuse what no upstream should see. Node's parser (llhttp, strict mode) already
// refuses most request-smuggling shapes (TE with CL, duplicate or invalid CL, obs-fold, bare LF,
// invalid TE) before a request exists; this phase closes the gaps it leaves open: a Transfer-Encoding
// other than exactly `chunked`, Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1), duplicate Host,
// and the configured URL, header-count and body limits.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import { ERRORS } from '../../core/errors.ts';
import { closingReason } from '../../pipeline/reply.ts';

/** What Node reads as asking for 100 Continue (lib/_http_server.js continueExpression). */
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i;

export function createEdgePhase(getRuntime: () => Runtime): Phase {
  return {
    name: 'edge',
    onRequest(ctx: RequestContext) {
      const req = ctx.req;
      // A request parsed after a reply that closes this connection (pipelined behind a refused
      // request, or smuggled in its body): never forwarded. Its reply is never sent either.
      const closing = req.socket === null ? undefined : closingReason(req.socket);
      if (closing !== undefined) {
        ctx.refuse(closing, ERRORS[closing].status || 400);
        return Verdict.Reply;
      }
      const limits = getRuntime().config.limits;
      if ((req.url ?? '').length > limits.maxUrlBytes) {
        ctx.refuse('RMP_ERR_EDGE_URL_TOO_LONG', 414);
        return Verdict.Reply;
      }
      const raw = req.rawHeaders;
      if (raw.length > limits.maxHeaderCount * 2) {
        ctx.refuse('RMP_ERR_EDGE_HEADERS_TOO_LARGE', 431);
        return Verdict.Reply;
      }
      let hosts = 0;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!;
        if (name.length === 4 && name.toLowerCase() === 'host') hosts++;
      }
      if (hosts > 1) {
        ctx.refuse('RMP_ERR_EDGE_DUPLICATE_HOST', 400);
        return Verdict.Reply;
      }
      // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400. Refused here rather than by
      // Node (requireHostHeader is off) so the refusal marks the connection closing like any other and
      // nothing pipelined behind it is forwarded; upgrades pass here too, where Node never checked.
      if (hosts === 0 && (req.httpVersionMinor !== 0 || ctx.h2)) {
        ctx.refuse('RMP_ERR_EDGE_BAD_HOST', 400);
        return Verdict.Reply;
      }
      // An HTTP/2 stream's framing was checked by nghttp2 (no Transfer-Encoding, Content-Length against
      // its DATA frames); a body without Content-Length reads as chunked (src/server/h2/messages.ts).
      if (ctx.h2) return Verdict.Continue;
      // Only HTTP/1.0 and 1.1 are spoken here (Node's parser lets `HTTP/2.0` and others through), and
      // PRI is the HTTP/2 preface's method: an origin reading it would expect HTTP/2 framing next.
      if (req.httpVersionMajor !== 1 || req.method === 'PRI') {
        ctx.refuse('RMP_ERR_EDGE_BAD_REQUEST', 400);
        return Verdict.Reply;
      }
      const te = req.headers['transfer-encoding'];
      if (te !== undefined) {
        if (req.httpVersionMinor === 0 || te.trim().toLowerCase() !== 'chunked') {
          ctx.refuse('RMP_ERR_EDGE_SMUGGLING', 400);
          return Verdict.Reply;
        }
      }
      // An expectation other than 100-continue cannot be met (Node hands such requests to us rather
      // than answering them itself: see gateway.ts). After the framing checks, so that bad framing
      // is still refused as such, with the connection closed.
      const expect = req.headers.expect;
      if (expect !== undefined && req.httpVersionMinor !== 0 && !CONTINUE.test(expect)) {
        ctx.refuse('RMP_ERR_EDGE_EXPECTATION', 417);
        return Verdict.Reply;
      }
      return Verdict.Continue;
    },
  };
}

export const edgePhase: PhaseModule = {
  name: 'edge',
  folder: 'edge',
  summary:
    '414, 431, 400; 417 for an `Expect` other than `100-continue` (answered here, after the framing checks, not ' +
    'by Node before them)',
  codes: [
    'RMP_ERR_EDGE_URL_TOO_LONG',
    'RMP_ERR_EDGE_HEADERS_TOO_LARGE',
    'RMP_ERR_EDGE_SMUGGLING',
    'RMP_ERR_EDGE_DUPLICATE_HOST',
    'RMP_ERR_EDGE_EXPECTATION',
  ],
  create: (env) => createEdgePhase(env.getRuntime),
};
