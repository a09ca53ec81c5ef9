// The admin API: JSON endpoints under /api/ on the admin listener, behind bearer tokens. Tokens are
// stored only as SHA-256 hashes (a tokens file written by `rempart token create`, which shows the
// plain token once) or given whole in REMPART_ADMIN_TOKEN (hashed at start, never logged). A
// presented token is hashed and compared with every stored hash in constant time. Scopes: `read`
// may GET, `operator` may also act. Phase modules list their endpoints (PhaseModule.adminRoutes) and the
// composition root mounts them with mount(); see docs/admin-api.md.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../core/log.ts';
import { ApiError, type AdminRoute, type ApiHandler, type ApiResponse, type Scope } from '../pipeline/admin-route.ts';

// The route types and handler helpers live below the phases, which write handlers with them.
export {
  ApiError,
  bodyObject,
  type AdminRoute,
  type ApiHandler,
  type ApiRequest,
  type ApiResponse,
  type Scope,
} from '../pipeline/admin-route.ts';

export interface TokenEntry {
  readonly name: string;
  readonly scope: Scope;
  /** SHA-256 of the token, 32 bytes. */
  readonly hash: Buffer;
}

/** A long-lived answer (Server-Sent Events): the handler owns `res` once the token and scope passed. */
export type StreamHandler = (req: IncomingMessage, res: ServerResponse, who: string) => void;

/** One successful acting call, as the audit trail records it. */
export interface ApiAction {
  readonly who: string;
  readonly method: string;
  readonly path: string;
  /** The request body as sent (validated by the handler), or null. */
  readonly body: unknown;
  readonly status: number;
}

interface RouteEntry {
  readonly method: string;
  readonly segments: readonly string[];
  readonly scope: Scope;
  readonly handler: ApiHandler | null;
  readonly stream: StreamHandler | null;
}

const MAX_BODY_BYTES = 65536;
const TOKEN_PREFIX = 'rmp_';

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** A new random token (shown once) and the line to store for it. */
export function createToken(name: string, scope: Scope): { token: string; line: string } {
  if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(name))
    throw new Error(`token name must be 1-64 of [A-Za-z0-9_.@-], got ${JSON.stringify(name)}`);
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  return { token, line: `${name} ${scope} sha256:${hashToken(token).toString('hex')}` };
}

/** Parse a tokens file: `name scope sha256:hex` per line, `#` comments. Throws with the line number on a bad line. */
export function parseTokensFile(text: string, file: string): TokenEntry[] {
  const out: TokenEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z0-9_.@-]{1,64})\s+(read|operator)\s+sha256:([0-9a-f]{64})$/.exec(line);
    if (m === null)
      throw new Error(
        `${file}:${i + 1}: expected "NAME read|operator sha256:HEX" (the file holds hashes, never tokens)`,
      );
    out.push({ name: m[1]!, scope: m[2] as Scope, hash: Buffer.from(m[3]!, 'hex') });
  }
  return out;
}

/** Tokens from REMPART_ADMIN_TOKEN (operator scope, name `env`) and the tokens file. */
export async function loadTokens(env: NodeJS.ProcessEnv, tokensFile: string | undefined): Promise<TokenEntry[]> {
  const out: TokenEntry[] = [];
  const plain = env.REMPART_ADMIN_TOKEN;
  if (plain !== undefined && plain !== '') {
    if (plain.length < 16) throw new Error('REMPART_ADMIN_TOKEN must be at least 16 characters');
    out.push({ name: 'env', scope: 'operator', hash: hashToken(plain) });
  }
  if (tokensFile !== undefined) out.push(...parseTokensFile(await readFile(tokensFile, 'utf8'), tokensFile));
  return out;
}

/** The entry whose hash matches, comparing against every entry so timing says nothing about which. */
export function findToken(tokens: readonly TokenEntry[], presented: string): TokenEntry | null {
  const h = hashToken(presented);
  let found: TokenEntry | null = null;
  for (const t of tokens) if (timingSafeEqual(t.hash, h) && found === null) found = t;
  return found;
}

export interface AdminApi {
  /** Register an endpoint. `pattern` is under /api/, segments starting with `:` are parameters. GET needs `read`, others need the scope given. */
  route(method: 'GET' | 'POST' | 'PUT' | 'DELETE', pattern: string, scope: Scope, handler: ApiHandler): void;
  /** Register the endpoints a phase module lists (the composition root calls it once per module). */
  mount(routes: readonly AdminRoute[]): void;
  /** Register a streaming GET endpoint (read scope at least): the handler writes the answer itself. */
  stream(pattern: string, scope: Scope, handler: StreamHandler): void;
  /** Answer a request under /api/ (the admin server calls it). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** The token a request presents (`Authorization: Bearer`), or null: for admin pages outside /api/. */
  authenticate(req: IncomingMessage): TokenEntry | null;
  /**
   * Call a GET endpoint from inside the process (the dashboard's snapshot reads the defence state
   * through the same handlers as any client). Null when no such endpoint is registered (yet).
   */
  get(path: string, query?: Record<string, string>): Promise<ApiResponse | null>;
  /** Replace the token list (start, reload). */
  setTokens(tokens: readonly TokenEntry[]): void;
  /** Called after every successful non-GET call: the audit trail's feed. Never throws into the caller. */
  onAction: ((action: ApiAction) => void) | null;
}

function send(res: ServerResponse, status: number, body: unknown, extra?: Record<string, string>): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...extra,
  });
  res.end(text);
}

function apiError(code: string, message: string) {
  return { error: { code, message } };
}

export function createAdminApi(log: Logger): AdminApi {
  const routes: RouteEntry[] = [];
  let tokens: readonly TokenEntry[] = [];

  function match(
    method: string,
    segments: string[],
  ): { entry: RouteEntry; params: Record<string, string> } | 'method' | null {
    let methodMismatch = false;
    for (const entry of routes) {
      if (entry.segments.length !== segments.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segments.length; i++) {
        const want = entry.segments[i]!;
        if (want.startsWith(':')) params[want.slice(1)] = segments[i]!;
        else if (want !== segments[i]) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      if (entry.method !== method) {
        methodMismatch = true;
        continue;
      }
      return { entry, params };
    }
    return methodMismatch ? 'method' : null;
  }

  async function readBody(req: IncomingMessage): Promise<unknown> {
    let size = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) throw new ApiError(`body larger than ${MAX_BODY_BYTES} bytes`, 413);
      chunks.push(chunk);
    }
    if (size === 0) return null;
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new ApiError('body is not valid JSON');
    }
  }

  function authenticate(req: IncomingMessage): TokenEntry | null {
    const auth = req.headers.authorization;
    const presented = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
    return presented === '' ? null : findToken(tokens, presented);
  }

  const api: AdminApi = {
    onAction: null,
    authenticate,
    setTokens(t) {
      tokens = t;
    },
    route(method, pattern, scope, handler) {
      if (!pattern.startsWith('/api/')) throw new Error(`admin API routes live under /api/: ${pattern}`);
      routes.push({
        method,
        segments: pattern.slice(1).split('/'),
        scope: method === 'GET' ? scope : 'operator',
        handler,
        stream: null,
      });
    },
    mount(list) {
      for (const r of list) api.route(r.method, r.path, r.scope, r.handler);
    },
    stream(pattern, scope, handler) {
      if (!pattern.startsWith('/api/')) throw new Error(`admin API routes live under /api/: ${pattern}`);
      routes.push({ method: 'GET', segments: pattern.slice(1).split('/'), scope, handler: null, stream: handler });
    },
    async get(path, query = {}) {
      const found = match('GET', path.slice(1).split('/'));
      if (found === null || found === 'method' || found.entry.handler === null) return null;
      return found.entry.handler({
        method: 'GET',
        path,
        params: found.params,
        query: new URLSearchParams(query),
        body: null,
        who: 'dashboard',
        scope: 'read',
      });
    },
    handle(req, res) {
      const token = authenticate(req);
      if (token === null) {
        send(
          res,
          401,
          apiError('RMP_ERR_ADMIN_UNAUTHORIZED', 'a valid bearer token is required (rempart token create)'),
          { 'www-authenticate': 'Bearer realm="rempart"' },
        );
        return;
      }
      const url = new URL(req.url ?? '/', 'http://admin');
      const segments = url.pathname
        .slice(1)
        .split('/')
        .map((s) => {
          try {
            return decodeURIComponent(s);
          } catch {
            return s;
          }
        });
      const method = req.method ?? 'GET';
      const found = match(method === 'HEAD' ? 'GET' : method, segments);
      if (found === null) return send(res, 404, apiError('RMP_ERR_ADMIN_NOT_FOUND', `no endpoint ${url.pathname}`));
      if (found === 'method')
        return send(res, 405, apiError('RMP_ERR_ADMIN_BAD_REQUEST', `method ${method} not allowed on ${url.pathname}`));
      const { entry, params } = found;
      if (entry.scope === 'operator' && token.scope !== 'operator')
        return send(
          res,
          403,
          apiError('RMP_ERR_ADMIN_FORBIDDEN', `token "${token.name}" has scope read; this needs operator`),
        );
      if (entry.stream !== null) {
        entry.stream(req, res, token.name);
        return;
      }
      const handler = entry.handler!;
      let sent: unknown = null;
      readBody(req)
        .then((body) => {
          sent = body;
          return handler({
            method,
            path: url.pathname,
            params,
            query: url.searchParams,
            body,
            who: token.name,
            scope: token.scope,
          });
        })
        .then(
          (out) => {
            send(res, out.status, out.body);
            if (method !== 'GET' && method !== 'HEAD' && out.status < 400) {
              log.info({ audit: true, who: token.name, method, path: url.pathname }, 'admin action');
              try {
                api.onAction?.({ who: token.name, method, path: url.pathname, body: sent, status: out.status });
              } catch (err) {
                log.error({ err }, 'admin action hook failed');
              }
            }
          },
          (err: unknown) => {
            if (err instanceof ApiError) send(res, err.status, apiError('RMP_ERR_ADMIN_BAD_REQUEST', err.message));
            else {
              log.error({ err, path: url.pathname }, 'admin API handler failed');
              send(res, 500, apiError('RMP_ERR_INTERNAL', 'internal error; see the log'));
            }
          },
        );
    },
  };
  return api;
}
