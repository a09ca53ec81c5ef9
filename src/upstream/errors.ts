// What went wrong with an upstream, as an error code and the status a client gets when nothing was
// sent yet: one table for the forward path, cache refreshes, body reads and health checks.
import { RempartError, type ErrorCode } from '../core/errors.ts';

/**
 * The gateway itself is out of something a connection needs: file descriptors (its own limit, or the
 * system's), ephemeral ports, kernel buffers. Nothing is learned about the upstream from these: charged
 * to its breaker they would open it for `openMs` after the shortage is over and blame the origin.
 */
export function isLocalShortage(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EMFILE' || code === 'ENFILE' || code === 'EADDRNOTAVAIL' || code === 'ENOBUFS';
}

/** Map an undici / socket error to a code and the status the client gets if nothing was sent yet. */
export function classifyUpstreamError(err: Error & { code?: string }): { code: ErrorCode; status: number } {
  if (err instanceof RempartError) return { code: err.code, status: err.status };
  if (isLocalShortage(err)) return { code: 'RMP_ERR_RESOURCES_EXHAUSTED', status: 503 };
  switch (err.code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return { code: 'RMP_ERR_UPSTREAM_TIMEOUT', status: 504 };
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EAI_AGAIN':
      return { code: 'RMP_ERR_UPSTREAM_CONNECT', status: 502 };
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CLOSED':
    case 'UND_ERR_DESTROYED':
      return { code: 'RMP_ERR_UPSTREAM_RESET', status: 502 };
    default:
      // undici's HTTPParserError usually has no code (it looks the llhttp error number up in a
      // name→number table), so the class name is the reliable mark of an unparsable response.
      if (
        err.name === 'HTTPParserError' ||
        err.code?.startsWith('HPE_') ||
        err.code === 'UND_ERR_INFO' ||
        err.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' ||
        err.code === 'UND_ERR_HEADERS_OVERFLOW'
      )
        return { code: 'RMP_ERR_UPSTREAM_BAD_RESPONSE', status: 502 };
      return { code: 'RMP_ERR_UPSTREAM_CONNECT', status: 502 };
  }
}

/**
 * Whether `err` says the upstream could not be reached at all, before any request went out: refused,
 * unreachable, unresolvable, the connect timing out, the TLS handshake failing. No request can cause
 * these at a live origin, so the breaker counts them alone (src/upstream/breaker.ts); every other
 * failure may be the request's doing (a slow or dropped path) and is judged with others.
 */
export function isConnectFailure(err: Error & { code?: string }): boolean {
  switch (err.code) {
    case 'ECONNREFUSED':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return true;
    default: {
      const c = err.code ?? '';
      // Certificate and handshake errors (Node's ERR_TLS_*/ERR_SSL_*, OpenSSL's CERT_*/…_CERT…, EPROTO).
      return c.startsWith('ERR_TLS_') || c.startsWith('ERR_SSL_') || c.includes('CERT') || c === 'EPROTO';
    }
  }
}
