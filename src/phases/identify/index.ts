// Phase `identify`: who is asking and for what. The client address is the TCP peer's (or the one a
// trusted PROXY protocol header gave); X-Forwarded-For is believed only when the peer is a trusted
// proxy, and then only up to the first untrusted hop, so a client cannot spoof its address.
import { isIP } from 'node:net';
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import { isTrusted, type Runtime } from '../../pipeline/runtime.ts';
import { kH2Fingerprint, kJa4, kPeerAddress, kPeerPrefix, kPeerPrefixOf } from '../../pipeline/symbols.ts';
import { normalizePath, pathWithoutParams } from './normalize-path.ts';
import { hostName, normalizeHost } from './host.ts';
import { prefixKey } from '../../core/client-key.ts';

/** The address X-Forwarded-For names as the client, walking right to left past trusted hops. */
export function addressFromForwardedFor(header: string, peer: string, runtime: Runtime): string {
  let end = header.length;
  let candidate = peer;
  while (end > 0) {
    const comma = header.lastIndexOf(',', end - 1);
    const hop = header.slice(comma + 1, end).trim();
    end = comma === -1 ? 0 : comma;
    if (isIP(hop) === 0) return candidate; // a malformed hop ends what we can believe
    candidate = hop;
    if (!isTrusted(runtime.trustedProxies, hop)) return hop;
  }
  return candidate;
}

/** A connection's last Host (the value as sent, the scheme's default port) and its normal form and name. */
interface HostCache {
  readonly raw: string;
  readonly port: number;
  readonly host: string;
  readonly name: string;
}
const kHostCache = Symbol('rempart.hostCache');

export function createIdentifyPhase(getRuntime: () => Runtime): Phase {
  return {
    name: 'identify',
    onRequest(ctx: RequestContext) {
      const req = ctx.req;
      const socket = ctx.socket as typeof ctx.socket & {
        [kPeerAddress]?: string;
        [kJa4]?: string;
        [kH2Fingerprint]?: string;
        [kPeerPrefix]?: string;
        [kPeerPrefixOf]?: string;
        [kHostCache]?: HostCache;
        encrypted?: boolean;
      };
      const peer = socket[kPeerAddress] ?? socket.remoteAddress ?? '';
      ctx.peerAddress = peer;
      // The connection's fingerprints, as the accept layer and the h2 entry left them on the socket.
      ctx.ja4 = socket[kJa4] ?? '';
      ctx.h2Fingerprint = socket[kH2Fingerprint] ?? '';
      ctx.clientAddress = peer;
      ctx.protocol = socket.encrypted === true ? 'https' : 'http';
      const runtime = getRuntime();
      if (runtime.trustedProxies !== null && isTrusted(runtime.trustedProxies, peer)) {
        ctx.peerTrusted = true;
        const xff = req.headers['x-forwarded-for'];
        if (typeof xff === 'string') ctx.clientAddress = addressFromForwardedFor(xff, peer, runtime);
        const proto = req.headers['x-forwarded-proto'];
        if (proto === 'https' || proto === 'http') ctx.protocol = proto;
      }
      // Every request of a connection comes from its peer: the peer's prefix is made once per connection.
      if (ctx.clientAddress !== peer) ctx.clientPrefix = prefixKey(ctx.clientAddress);
      else if (socket[kPeerPrefixOf] === peer) ctx.clientPrefix = socket[kPeerPrefix]!;
      else {
        ctx.clientPrefix = socket[kPeerPrefix] = prefixKey(peer);
        socket[kPeerPrefixOf] = peer;
      }
      let url = req.url ?? '/';
      // RFC 9110 §4.2.4: a fragment is never sent. Some origins cut it, routes would not: refused, as
      // Envoy does, or `POST /login#x` walks past the `/login` route's limits.
      if (url.indexOf('#') !== -1) {
        ctx.refuse('RMP_ERR_EDGE_BAD_PATH', 400);
        return Verdict.Reply;
      }
      let authority = req.headers.host ?? '';
      if (url.charCodeAt(0) !== 47 /* '/' */) {
        // absolute-form (RFC 9112 §3.2.2) becomes origin-form, and its authority replaces Host (the
        // RFC says so, and the origin is sent that Host). Anything else (`*`, authority-form) is refused.
        const lead = url.slice(0, 8).toLowerCase();
        const scheme = lead.startsWith('http://') ? 7 : lead === 'https://' ? 8 : 0;
        if (scheme === 0) {
          ctx.refuse('RMP_ERR_EDGE_BAD_REQUEST', 400);
          return Verdict.Reply;
        }
        let end = url.indexOf('/', scheme);
        const query = url.indexOf('?', scheme);
        if (query !== -1 && (end === -1 || query < end)) end = query;
        if (end === -1) end = url.length;
        authority = url.slice(scheme, end);
        if (authority === '') {
          ctx.refuse('RMP_ERR_EDGE_BAD_HOST', 400);
          return Verdict.Reply;
        }
        url = end === url.length ? '/' : url.charCodeAt(end) === 47 ? url.slice(end) : `/${url.slice(end)}`;
      }
      const defaultPort = ctx.protocol === 'https' ? 443 : 80;
      // A keep-alive connection sends the same Host each time: its normal form is kept on the socket with
      // the value and default port it was made from (a bad Host is never kept: refused every time).
      const known = socket[kHostCache];
      if (known !== undefined && known.raw === authority && known.port === defaultPort) {
        ctx.host = known.host;
        ctx.hostName = known.name;
      } else {
        const host = normalizeHost(authority, defaultPort);
        if (host === null) {
          ctx.refuse('RMP_ERR_EDGE_BAD_HOST', 400);
          return Verdict.Reply;
        }
        ctx.host = host;
        ctx.hostName = hostName(host);
        socket[kHostCache] = { raw: authority, port: defaultPort, host, name: ctx.hostName };
      }
      const q = url.indexOf('?');
      const rawPath = q === -1 ? url : url.slice(0, q);
      const normal = normalizePath(rawPath);
      const path = normal === null ? null : pathWithoutParams(normal);
      if (normal === null || path === null) {
        ctx.refuse('RMP_ERR_EDGE_BAD_PATH', 400);
        return Verdict.Reply;
      }
      ctx.path = path;
      // The origin gets the path the routes judged, not the one the client wrote (its `;parameters`
      // kept: a servlet container reads them; routes judged the path without them, see pathWithoutParams).
      ctx.target = normal === rawPath ? url : q === -1 ? normal : normal + url.slice(q);
      return Verdict.Continue;
    },
  };
}

export const identifyPhase: PhaseModule = {
  name: 'identify',
  folder: 'identify',
  summary:
    '400 for a request target that is neither origin- nor absolute-form, a path that cannot be normalised ' +
    'safely, or a malformed Host ([below](#paths-and-hosts))',
  codes: ['RMP_ERR_EDGE_BAD_REQUEST', 'RMP_ERR_EDGE_BAD_PATH', 'RMP_ERR_EDGE_BAD_HOST'],
  create: (env) => createIdentifyPhase(env.getRuntime),
};
