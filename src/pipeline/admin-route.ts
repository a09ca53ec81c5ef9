// What a phase's admin endpoints look like. A phase module lists its routes (PhaseModule.adminRoutes)
// and the composition root mounts them on the admin API (src/control/api.ts): a decision never
// depends on the cockpit, and building a phase registers nothing. The handler helpers live here too,
// so phases write handlers without importing the control plane.

export type Scope = 'read' | 'operator';

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  /** The `:name` segments of the route pattern. */
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** Parsed JSON body (POST/PUT/DELETE), or null. */
  readonly body: unknown;
  /** Who asked: the token's name. */
  readonly who: string;
  readonly scope: Scope;
}

export interface ApiResponse {
  readonly status: number;
  readonly body: unknown;
}

export type ApiHandler = (req: ApiRequest) => ApiResponse | Promise<ApiResponse>;

/** One JSON endpoint of the admin API. GET needs `read` at least; other methods always need `operator`. */
export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Under /api/; segments starting with `:` are parameters (`/api/bans/:target`). */
  readonly path: string;
  readonly scope: Scope;
  readonly handler: ApiHandler;
}

/** A client mistake the handler reports as 400 (or `status`) with this message. */
export class ApiError extends Error {
  readonly status: number;
  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}

/** Helpers for handlers validating a JSON body. */
export function bodyObject(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError('body must be a JSON object');
  }
  return body as Record<string, unknown>;
}
