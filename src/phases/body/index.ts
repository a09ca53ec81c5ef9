// Phase `body`: read a request body up to limits.bufferBodyBytes before the request may take an
// admission slot or an upstream connection, so a slow-POST client trickling its body holds only its
// own socket. Without this, twenty slow POSTs would hold twenty admission slots and the queue behind
// them would be shed. Larger bodies stream after the buffered part (src/pipeline/buffer-body.ts).
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import { bufferRequestBody, sendContinueIfExpected } from '../../pipeline/buffer-body.ts';
import { classifyUpstreamError } from '../../upstream/errors.ts';

export function createBodyPhase(getRuntime: () => Runtime): Phase {
  return {
    name: 'body',
    onRequest(ctx: RequestContext) {
      const req = ctx.req;
      const bufferBytes = getRuntime().config.limits.bufferBodyBytes;
      const h = req.headers;
      const hasBody =
        h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
      // Upgrades are tunnels: their bytes after the head belong to the new protocol.
      if (
        !hasBody ||
        req.complete ||
        bufferBytes === 0 ||
        ctx.route === null ||
        (req as { upgrade?: boolean }).upgrade === true
      )
        return Verdict.Continue;
      sendContinueIfExpected(req, ctx.res);
      return new Promise<Verdict>((resolve) => {
        bufferRequestBody(req, bufferBytes, ctx.route!.maxBodyBytes, (err, body) => {
          if (err !== null) {
            const { code, status } = classifyUpstreamError(err);
            if (code === 'RMP_ERR_CLIENT_ABORTED') ctx.abort(code, status || 400);
            else ctx.refuse(code, status || 400);
            resolve(Verdict.Reply);
            return;
          }
          ctx.bufferedBody = body;
          ctx.bodyBuffered = true;
          resolve(Verdict.Continue);
        });
      });
    },
  };
}

export const bodyPhase: PhaseModule = {
  name: 'body',
  folder: 'body',
  summary: "413 (body over the route's limit), 408 via the request timeout",
  codes: ['RMP_ERR_EDGE_BODY_TOO_LARGE'],
  create: (env) => createBodyPhase(env.getRuntime),
};
