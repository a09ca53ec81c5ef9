// Operator overrides applied on top of the configuration file: a guard's mode (off/observe/enforce)
// and the status-page message. Guards already read their mode from the runtime config on every
// decision, so an override is a small patch of the file's config, compiled into a new Runtime the
// same way a reload is; the patch is re-applied to every later reload until released, so a SIGHUP
// does not silently undo an operator's decision during an incident. Overrides live in memory: a
// restart goes back to the file (the audit trail says who changed what).
import type { Config } from '../config/schema.ts';
import { GUARD_MODES, type GuardMode } from '../pipeline/env.ts';
import { ApiError, bodyObject, type AdminApi } from './api.ts';

export interface OverrideState {
  readonly guards: Readonly<Record<string, GuardMode>>;
  readonly statusMessage: string | null;
}

/** Guards whose mode can be switched: every `defense.<name>` section with a `mode`. */
export function guardNames(config: Config): string[] {
  const out: string[] = [];
  for (const [name, section] of Object.entries(config.defense)) {
    if (
      section !== null &&
      typeof section === 'object' &&
      'mode' in section &&
      (GUARD_MODES as readonly unknown[]).includes((section as { mode: unknown }).mode)
    )
      out.push(name);
  }
  return out;
}

export class RuntimeOverrides {
  readonly #guards = new Map<string, GuardMode>();
  #statusMessage: string | null = null;

  get state(): OverrideState {
    return { guards: Object.fromEntries(this.#guards), statusMessage: this.#statusMessage };
  }

  get empty(): boolean {
    return this.#guards.size === 0 && this.#statusMessage === null;
  }

  setGuard(name: string, mode: GuardMode | null): void {
    if (mode === null) this.#guards.delete(name);
    else this.#guards.set(name, mode);
  }

  setStatusMessage(message: string | null): void {
    this.#statusMessage = message;
  }

  /** The file's config with the overrides applied (the same object when there are none). */
  apply(config: Config): Config {
    if (this.empty) return config;
    const out = structuredClone(config);
    const defense = out.defense as unknown as Record<string, { mode: GuardMode }>;
    for (const [name, mode] of this.#guards)
      if (defense[name] !== undefined && 'mode' in defense[name]) defense[name].mode = mode;
    if (this.#statusMessage !== null) out.statusPage.message = this.#statusMessage;
    return out;
  }
}

export interface OverridesApiDeps {
  readonly overrides: RuntimeOverrides;
  /** The config as loaded from the file (before overrides). */
  readonly fileConfig: () => Config;
  /** The config in force (after overrides). */
  readonly config: () => Config;
  /** Recompile the runtime from the file's config and the overrides. */
  readonly apply: () => void;
}

const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]/;

/** GET/PUT /api/guards, /api/guards/:name, GET/PUT/DELETE /api/status-page. */
export function registerOverridesApi(api: AdminApi, d: OverridesApiDeps): void {
  const guardsView = () => {
    const cfg = d.config();
    const file = d.fileConfig();
    const o = d.overrides.state.guards;
    return guardNames(cfg).map((name) => ({
      name,
      mode: (cfg.defense as unknown as Record<string, { mode: GuardMode }>)[name]!.mode,
      fileMode: (file.defense as unknown as Record<string, { mode: GuardMode }>)[name]?.mode ?? null,
      overridden: name in o,
    }));
  };
  api.route('GET', '/api/guards', 'read', () => ({ status: 200, body: { guards: guardsView() } }));
  api.route('PUT', '/api/guards/:name', 'operator', (req) => {
    const name = req.params.name ?? '';
    if (!guardNames(d.config()).includes(name))
      throw new ApiError(
        `no guard ${JSON.stringify(name.slice(0, 40))}; guards: ${guardNames(d.config()).join(', ')}`,
        404,
      );
    const body = bodyObject(req.body);
    for (const k of Object.keys(body))
      if (k !== 'mode' && k !== 'reason')
        throw new ApiError(`unknown field ${JSON.stringify(k.slice(0, 40))} (expected mode, reason)`);
    const { mode, reason } = body;
    if (mode !== 'file' && !(GUARD_MODES as readonly unknown[]).includes(mode))
      throw new ApiError(
        `mode must be one of ${GUARD_MODES.join(', ')}, or "file" to go back to the configuration file's mode`,
      );
    checkReason(reason);
    d.overrides.setGuard(name, mode === 'file' ? null : (mode as GuardMode));
    d.apply();
    return { status: 200, body: guardsView().find((g) => g.name === name) };
  });

  const pageView = () => ({
    message: d.config().statusPage.message,
    fileMessage: d.fileConfig().statusPage.message,
    overridden: d.overrides.state.statusMessage !== null,
    enabled: d.config().statusPage.enabled,
  });
  api.route('GET', '/api/status-page', 'read', () => ({ status: 200, body: pageView() }));
  api.route('PUT', '/api/status-page', 'operator', (req) => {
    const body = bodyObject(req.body);
    for (const k of Object.keys(body))
      if (k !== 'message' && k !== 'reason')
        throw new ApiError(`unknown field ${JSON.stringify(k.slice(0, 40))} (expected message, reason)`);
    const { message, reason } = body;
    if (typeof message !== 'string' || message.trim().length === 0 || message.length > 2000 || CONTROL.test(message))
      throw new ApiError('message must be a string of 1 to 2000 characters, without control characters');
    checkReason(reason);
    d.overrides.setStatusMessage(message.trim());
    d.apply();
    return { status: 200, body: pageView() };
  });
  api.route('DELETE', '/api/status-page', 'operator', () => {
    d.overrides.setStatusMessage(null);
    d.apply();
    return { status: 200, body: pageView() };
  });
}

function checkReason(reason: unknown): void {
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 200 || CONTROL.test(reason)))
    throw new ApiError('reason must be a string of at most 200 printable characters');
}
