// The admin listener: Prometheus metrics, health, the dashboard (src/control/cockpit.ts) and the
// token-guarded JSON API (/api/, src/control/api.ts), on 127.0.0.1 by default. Non-loopback clients
// are refused unless admin.allowRemote is set; /metrics needs a token with admin.metricsRequireToken.
// Every answer needs a Host the listener knows (adminHostAllowed): DNS rebinding guard.
import http from 'node:http';
import { isIP } from 'node:net';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import { errorBody } from '../pipeline/reply.ts';
import { hostName, normalizeHost } from '../phases/identify/host.ts';
import type { AdminApi } from './api.ts';
import type { Cockpit } from './cockpit.ts';

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

/**
 * May the admin listener answer a request with this Host? A page on `evil.example` that an operator
 * opens can make its name resolve to 127.0.0.1 (DNS rebinding) and then read the listener as its own
 * origin; its requests still say `Host: evil.example`. So only `localhost`, IP addresses (a rebinding
 * page is always served under a name) and the names in admin.allowedHosts are answered, whatever the
 * port. No Host at all (HTTP/1.0 tools) is answered too: a browser always sends one.
 */
export function adminHostAllowed(host: string | undefined, allowed: readonly string[]): boolean {
  if (host === undefined) return true;
  const normal = normalizeHost(host, -1);
  if (normal === null || normal === '') return false;
  const name = hostName(normal);
  if (name === 'localhost' || name.charCodeAt(0) === 0x5b /* [ */ || isIP(name) === 4) return true;
  for (const a of allowed) if (a.length === name.length && a.toLowerCase() === name) return true;
  return false;
}

export function createAdminServer(opts: {
  metrics: Metrics;
  getRuntime: () => Runtime;
  log: Logger;
  api: AdminApi;
  cockpit: Cockpit | null;
  ready?: () => boolean;
}): http.Server {
  const server = http.createServer({ requireHostHeader: false }, (req, res) => {
    if (!opts.getRuntime().config.admin.allowRemote && !isLoopback(req.socket.remoteAddress)) {
      res.writeHead(403, { 'content-type': 'application/json' }).end(errorBody('RMP_ERR_ADMIN_FORBIDDEN'));
      return;
    }
    if (!adminHostAllowed(req.headers.host, opts.getRuntime().config.admin.allowedHosts)) {
      res.writeHead(421, { 'content-type': 'application/json' }).end(errorBody('RMP_ERR_ADMIN_HOST'));
      return;
    }
    const path = (req.url ?? '/').split('?')[0]!;
    if (path.startsWith('/api/')) {
      opts.api.handle(req, res);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/dashboard' || path.startsWith('/dashboard/')) {
      // The page and its scripts hold no data and no secret: what they show comes from /api/ with the token.
      if (opts.cockpit?.handlePage(req, res, path)) return;
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (path === '/metrics') {
      if (opts.getRuntime().config.admin.metricsRequireToken && opts.api.authenticate(req) === null) {
        res
          .writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="rempart"' })
          .end(errorBody('RMP_ERR_ADMIN_UNAUTHORIZED'));
        return;
      }
      opts.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(text),
        (err) => {
          opts.log.error({ err }, 'metrics rendering failed');
          res.writeHead(500).end();
        },
      );
      return;
    }
    // Liveness: the process answers. Readiness: it wants traffic; false from the first moment of a
    // graceful stop, so a load balancer takes it out before its listeners close (config `shutdown`).
    // Browsers ask every origin for /favicon.ico; a 404 there is a console error on the dashboard.
    if (path === '/favicon.ico') {
      res.writeHead(204, { 'cache-control': 'max-age=86400' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      if (opts.ready?.() === false)
        res.writeHead(503, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end('draining\n');
      else res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end('ok\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;
}
