// Drill scenarios: strict YAML validation (unknown keys refused, every error with its key path)
// and resolution of built-in names to the files in scenarios/.
import { readFile } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';

export const LEGIT_KINDS = ['browser', 'vault', 'approvals'] as const;
export type LegitKind = (typeof LEGIT_KINDS)[number];
export const ATTACK_KINDS = [
  'flood',
  'botnet',
  'cache-busting',
  'login-stuffing',
  'slowloris',
  'slow-post',
  'rapid-reset',
] as const;
export type AttackKind = (typeof ATTACK_KINDS)[number];

export const MAX_SECONDS = 600;
/** One /16 of 127/8 per population, last two octets in 1..254: 64 516 addresses. */
export const MAX_ADDRESSES = 64_000;

export interface LegitPopulation {
  kind: LegitKind;
  users: number;
  /** Think time between two pages, uniform in [min, max]. */
  pauseMs: [number, number];
  /** Share of visits that reuse the cookie jar of the user's previous visit. */
  returningShare: number;
  /** Pages per visit (after the first), uniform in [min, max]. */
  pagesPerVisit: [number, number];
  /** Seconds into the run when these users start arriving (a crowd after a calm start). */
  startSec: number;
  /** With startSec: each user also visits once before it, at a random time in the calm (returning customers were seen before). */
  previsit: boolean;
}

export interface Attack {
  kind: AttackKind;
  startSec: number;
  durationSec: number;
  addresses: number;
  /** Request-based attacks: total open-loop arrival rate across all addresses. */
  ratePerSecond: number;
  /** Request-based: sockets per address. Slow attacks: total connections held. */
  connections: number;
  /** Request-based: beyond this many unanswered requests, new arrivals are dropped ("not sent"). */
  maxInFlight: number;
  path: string;
  /** Slow attacks: pause between two trickled chunks. */
  trickleIntervalMs: number;
  /** Slow attacks: bytes per trickled chunk. */
  trickleBytes: number;
  /** slow-post: declared Content-Length. */
  bodyBytes: number;
}

export interface Scenario {
  version: 1;
  name: string;
  description: string;
  seconds: number;
  deadlineMs: number;
  legit: LegitPopulation[];
  attacks: Attack[];
  /** Where it was read from (file path), for the report. */
  source: string;
}

export class ScenarioError extends Error {
  errors: string[];
  constructor(source: string, errors: string[]) {
    super(`invalid scenario ${source}:\n  - ${errors.join('\n  - ')}`);
    this.name = 'ScenarioError';
    this.errors = errors;
  }
}

const ATTACK_DEFAULTS: Record<AttackKind, { addresses: number; connections: number; path: string; method: string }> = {
  flood: { addresses: 4, connections: 32, path: '/', method: 'GET' },
  botnet: { addresses: 2000, connections: 1, path: '/track/*', method: 'GET' },
  'cache-busting': { addresses: 200, connections: 1, path: '/track/popular', method: 'GET' },
  'login-stuffing': { addresses: 300, connections: 1, path: '/login', method: 'POST' },
  slowloris: { addresses: 50, connections: 500, path: '/', method: 'GET' },
  'slow-post': { addresses: 50, connections: 200, path: '/login', method: 'POST' },
  // Cleartext HTTP/2 (the target's listener needs http2.cleartext): connections per address.
  'rapid-reset': { addresses: 4, connections: 4, path: '/', method: 'GET' },
};
export const SLOW_KINDS: ReadonlySet<AttackKind> = new Set(['slowloris', 'slow-post']);

const TOP_KEYS = ['version', 'name', 'description', 'seconds', 'deadlineMs', 'legit', 'attacks'];
const LEGIT_KEYS = ['kind', 'users', 'pauseMs', 'returningShare', 'pagesPerVisit', 'startSec', 'previsit'];
const RATE_KEYS = [
  'kind',
  'startSec',
  'durationSec',
  'addresses',
  'ratePerSecond',
  'connections',
  'maxInFlight',
  'path',
];
const SLOW_KEYS = [
  'kind',
  'startSec',
  'durationSec',
  'addresses',
  'connections',
  'path',
  'trickleIntervalMs',
  'trickleBytes',
  'bodyBytes',
];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validates a parsed YAML document; throws ScenarioError listing every problem. */
export function validateScenario(doc: unknown, source = '<inline>'): Scenario {
  const errors: string[] = [];
  const err = (p: string, msg: string) => errors.push(`${p}: ${msg}`);
  const unknownKeys = (o: Obj, allowed: string[], p: string) => {
    for (const k of Object.keys(o))
      if (!allowed.includes(k)) err(p ? `${p}.${k}` : k, `unknown key (allowed: ${allowed.join(', ')})`);
  };
  const num = (
    o: Obj,
    key: string,
    p: string,
    opts: { min: number; max: number; int?: boolean; def?: number },
  ): number => {
    const v = o[key];
    if (v === undefined) {
      if (opts.def === undefined) {
        err(`${p}${key}`, 'is required');
        return opts.min;
      }
      return opts.def;
    }
    if (
      typeof v !== 'number' ||
      !Number.isFinite(v) ||
      (opts.int && !Number.isInteger(v)) ||
      v < opts.min ||
      v > opts.max
    ) {
      err(
        `${p}${key}`,
        `must be ${opts.int ? 'an integer' : 'a number'} in [${opts.min}, ${opts.max}] (got ${JSON.stringify(v)})`,
      );
      return opts.min;
    }
    return v;
  };
  const range = (o: Obj, key: string, p: string, min: number, max: number, def: [number, number]): [number, number] => {
    const v = o[key];
    if (v === undefined) return def;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return [v, v];
    if (
      !Array.isArray(v) ||
      v.length !== 2 ||
      !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max) ||
      v[0] > v[1]
    ) {
      err(
        `${p}${key}`,
        `must be an integer or [min, max] with ${min} <= min <= max <= ${max} (got ${JSON.stringify(v)})`,
      );
      return def;
    }
    return [v[0], v[1]];
  };
  const bool = (o: Obj, key: string, p: string, def: boolean): boolean => {
    const v = o[key];
    if (v === undefined) return def;
    if (typeof v !== 'boolean') {
      err(`${p}${key}`, `must be true or false (got ${JSON.stringify(v)})`);
      return def;
    }
    return v;
  };
  const str = (o: Obj, key: string, p: string, def?: string): string => {
    const v = o[key];
    if (v === undefined) {
      if (def === undefined) err(`${p}${key}`, 'is required');
      return def ?? '';
    }
    if (typeof v !== 'string' || v.trim() === '') {
      err(`${p}${key}`, 'must be a non-empty string');
      return def ?? '';
    }
    return v;
  };

  if (!isObj(doc)) throw new ScenarioError(source, ['(root): must be a mapping']);
  unknownKeys(doc, TOP_KEYS, '');
  if (doc.version !== 1) err('version', `must be 1 (got ${JSON.stringify(doc.version)})`);
  const name = str(doc, 'name', '');
  if (name && !/^[A-Za-z0-9._-]{1,64}$/.test(name))
    err('name', 'must match [A-Za-z0-9._-]{1,64} (it names the report directory)');
  const description = str(doc, 'description', '', '');
  const seconds = num(doc, 'seconds', '', { min: 1, max: MAX_SECONDS, int: true, def: 30 });
  const deadlineMs = num(doc, 'deadlineMs', '', { min: 100, max: 60_000, int: true, def: 5000 });

  const legit: LegitPopulation[] = [];
  if (doc.legit !== undefined && !Array.isArray(doc.legit)) err('legit', 'must be a list');
  (Array.isArray(doc.legit) ? doc.legit : []).forEach((item: unknown, i: number) => {
    const p = `legit[${i}].`;
    if (!isObj(item)) {
      err(`legit[${i}]`, 'must be a mapping');
      return;
    }
    unknownKeys(item, LEGIT_KEYS, `legit[${i}]`);
    const kind = item.kind as LegitKind;
    if (!LEGIT_KINDS.includes(kind))
      err(`${p}kind`, `must be one of ${LEGIT_KINDS.join(', ')} (got ${JSON.stringify(item.kind)})`);
    legit.push({
      kind,
      users: num(item, 'users', p, { min: 0, max: MAX_ADDRESSES, int: true }),
      pauseMs: range(item, 'pauseMs', p, 0, 600_000, [1000, 3000]),
      returningShare: num(item, 'returningShare', p, { min: 0, max: 1, def: 0.5 }),
      pagesPerVisit: range(item, 'pagesPerVisit', p, 1, 1000, [2, 5]),
      startSec: num(item, 'startSec', p, { min: 0, max: MAX_SECONDS, def: 0 }),
      previsit: bool(item, 'previsit', p, false),
    });
  });
  const totalUsers = legit.reduce((s, l) => s + l.users, 0);
  if (totalUsers > MAX_ADDRESSES) err('legit', `at most ${MAX_ADDRESSES} users in total (got ${totalUsers})`);

  const attacks: Attack[] = [];
  if (doc.attacks !== undefined && !Array.isArray(doc.attacks)) err('attacks', 'must be a list');
  (Array.isArray(doc.attacks) ? doc.attacks : []).forEach((item: unknown, i: number) => {
    const p = `attacks[${i}].`;
    if (!isObj(item)) {
      err(`attacks[${i}]`, 'must be a mapping');
      return;
    }
    const kind = item.kind as AttackKind;
    if (!ATTACK_KINDS.includes(kind)) {
      err(`${p}kind`, `must be one of ${ATTACK_KINDS.join(', ')} (got ${JSON.stringify(item.kind)})`);
      return;
    }
    const slow = SLOW_KINDS.has(kind);
    unknownKeys(item, slow ? SLOW_KEYS : RATE_KEYS, `attacks[${i}]`);
    const d = ATTACK_DEFAULTS[kind];
    const startSec = num(item, 'startSec', p, { min: 0, max: MAX_SECONDS, def: 0 });
    const durationSec = num(item, 'durationSec', p, {
      min: 0.1,
      max: MAX_SECONDS,
      def: Math.max(0.1, seconds - startSec),
    });
    const pathValue = str(item, 'path', p, d.path);
    if (!pathValue.startsWith('/')) err(`${p}path`, 'must start with /');
    attacks.push({
      kind,
      startSec,
      durationSec,
      path: pathValue,
      addresses: num(item, 'addresses', p, { min: 1, max: MAX_ADDRESSES, int: true, def: d.addresses }),
      ratePerSecond: slow ? 0 : num(item, 'ratePerSecond', p, { min: 0, max: 100_000 }),
      connections: num(item, 'connections', p, { min: 1, max: slow ? 10_000 : 256, int: true, def: d.connections }),
      maxInFlight: slow ? 0 : num(item, 'maxInFlight', p, { min: 1, max: 10_000, int: true, def: 1000 }),
      trickleIntervalMs: slow ? num(item, 'trickleIntervalMs', p, { min: 10, max: 120_000, int: true, def: 2000 }) : 0,
      trickleBytes: slow ? num(item, 'trickleBytes', p, { min: 1, max: 1024, int: true, def: 1 }) : 0,
      bodyBytes:
        kind === 'slow-post' ? num(item, 'bodyBytes', p, { min: 1, max: 10_000_000, int: true, def: 4096 }) : 0,
    });
    if (kind !== 'slow-post' && item.bodyBytes !== undefined) err(`${p}bodyBytes`, 'only applies to slow-post');
  });

  if (errors.length > 0) throw new ScenarioError(source, errors);
  return { version: 1, name, description, seconds, deadlineMs, legit, attacks, source };
}

export const SCENARIOS_DIR = fileURLToPath(new URL('../../scenarios/', import.meta.url));

/** Built-in name (e.g. "flood") or a path to a YAML file. */
export function resolveScenarioPath(nameOrPath: string): string {
  if (/^[A-Za-z0-9._-]+$/.test(nameOrPath) && !nameOrPath.endsWith('.yaml') && !nameOrPath.endsWith('.yml')) {
    const builtin = path.join(SCENARIOS_DIR, `${nameOrPath}.yaml`);
    if (existsSync(builtin)) return builtin;
  }
  if (existsSync(nameOrPath)) return path.resolve(nameOrPath);
  throw new ScenarioError(nameOrPath, [`not a built-in scenario (${listBuiltins().join(', ')}) nor an existing file`]);
}

/** The bundled scenarios: the files in scenarios/, read each time, so no list here can drift from them. */
export function listBuiltins(): string[] {
  try {
    return readdirSync(SCENARIOS_DIR)
      .filter((f) => f.endsWith('.yaml'))
      .map((f) => f.slice(0, -'.yaml'.length))
      .sort();
  } catch {
    return [];
  }
}

/** Each bundled scenario with its description (for `rempart drill --help`; reads the files). */
export function describeBuiltins(): Array<{ name: string; description: string }> {
  return listBuiltins().map((name) => {
    let description = '';
    try {
      const doc = parseYaml(readFileSync(path.join(SCENARIOS_DIR, `${name}.yaml`), 'utf8')) as {
        description?: unknown;
      };
      if (typeof doc?.description === 'string') description = doc.description;
    } catch {
      description = '(unreadable)';
    }
    return { name, description };
  });
}

export async function loadScenario(nameOrPath: string): Promise<Scenario> {
  const file = resolveScenarioPath(nameOrPath);
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(file, 'utf8'));
  } catch (e) {
    throw new ScenarioError(file, [`YAML: ${(e as Error).message}`]);
  }
  return validateScenario(doc, file);
}
