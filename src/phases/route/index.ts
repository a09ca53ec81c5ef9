// Phase `route`: pick the route (host, path, method → upstream, class) and apply its body limit to
// a declared Content-Length. Chunked bodies are counted while they stream (pipeline/forward.ts).
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { Runtime } from '../../pipeline/runtime.ts';

export function createRoutePhase(getRuntime: () => Runtime): Phase {
  return {
    name: 'route',
    onRequest(ctx: RequestContext) {
      const req = ctx.req;
      const route = getRuntime().matchRoute(req.method ?? 'GET', ctx.hostName, ctx.path);
      if (route === null) {
        // Rempart's own challenge endpoint is answered by the `challenge` phase whatever the routes.
        if (ctx.path.startsWith('/.rempart/challenge/') && getRuntime().config.defense.challenge.mode !== 'off')
          return Verdict.Continue;
        ctx.refuse('RMP_ERR_ROUTE_NOT_FOUND', 404);
        return Verdict.Reply;
      }
      ctx.route = route;
      ctx.upstream = route.upstream;
      const cl = req.headers['content-length'];
      if (cl !== undefined && Number(cl) > route.maxBodyBytes) {
        ctx.refuse('RMP_ERR_EDGE_BODY_TOO_LARGE', 413);
        return Verdict.Reply;
      }
      return Verdict.Continue;
    },
  };
}

export const routePhase: PhaseModule = {
  name: 'route',
  folder: 'route',
  summary: '404, 413',
  codes: ['RMP_ERR_ROUTE_NOT_FOUND', 'RMP_ERR_EDGE_BODY_TOO_LARGE'],
  create: (env) => createRoutePhase(env.getRuntime),
};
