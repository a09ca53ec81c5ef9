// Reads, validates and freezes a configuration. Every problem is collected and reported at once,
// each with file, line and key path, so an operator fixes a file in one pass rather than ten.
// The result is an immutable snapshot: reload builds a new one and swaps it, or keeps the old.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { FormatRegistry } from '@sinclair/typebox';
import { Value, ValueErrorType } from '@sinclair/typebox/value';
import { LineCounter, parseDocument, isMap, isSeq, type Node as YamlNode } from 'yaml';
import { ConfigSchema, TRAFFIC_CLASSES, type Config, type RouteConfig } from './schema.ts';
import { type AddProblem, convertUnit, unitOfKey, type Unit } from '../core/schema-util.ts';
import { checkSensitive } from '../phases/exfiltration/schema.ts';
import { checkUpstreamServers } from '../upstream/schema.ts';
import { checkClusterTls } from '../store/schema.ts';

export interface ConfigProblem {
  file: string;
  line: number; // 1-based; 0 when the key is absent from the file
  path: string; // dotted key path, e.g. routes[2].class
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'RMP_ERR_CONFIG_INVALID';
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(
      `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n` +
        problems.map(formatProblem).join('\n'),
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}` : p.file;
  return `  ${where}  ${p.path || '(root)'}: ${p.message}`;
}

/** True for `a.b.c.d`, `a.b.c.d/n`, `::1`, `fd00::/8`. */
export function isCidr(value: string): boolean {
  const slash = value.indexOf('/');
  const addr = slash === -1 ? value : value.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return false;
  if (slash === -1) return true;
  const bitsText = value.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(bitsText)) return false;
  return Number(bitsText) <= (family === 4 ? 32 : 128);
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return (
      (u.protocol === 'http:' || u.protocol === 'https:') &&
      u.hostname !== '' &&
      u.username === '' &&
      u.password === '' &&
      (u.pathname === '/' || u.pathname === '') &&
      u.search === ''
    );
  } catch {
    return false;
  }
}

FormatRegistry.Set('cidr', isCidr);
FormatRegistry.Set('http-url', isHttpUrl);

/** Validate an already-parsed object (from YAML, or built from CLI flags). */
export function validateConfig(
  input: unknown,
  file = '<config>',
  locate: (path: (string | number)[]) => number = () => 0,
): Config {
  const problems: ConfigProblem[] = [];
  const converted = structuredClone(input ?? {});
  // Human units first (`30s`, `64KiB`), so the schema sees the numbers it describes.
  const unitProblems = new Set<string>();
  convertUnits(converted, ConfigSchema as unknown as SchemaNode, [], undefined, (segments, message) => {
    unitProblems.add(dotted(segments));
    problems.push({ file, line: locate(segments), path: dotted(segments), message });
  });
  const withDefaults = Value.Default(ConfigSchema, converted);
  for (const e of Value.Errors(ConfigSchema, withDefaults)) {
    const segments = e.path
      .split('/')
      .slice(1)
      .map((s) => (/^[0-9]+$/.test(s) ? Number(s) : s.replaceAll('~1', '/').replaceAll('~0', '~')));
    // A value already reported as not a duration or size is not also "expected integer".
    if (unitProblems.has(dotted(segments))) continue;
    // An unknown key is best pointed at where it is written; other problems at the value.
    problems.push({
      file,
      line: locate(segments),
      path: dotted(segments),
      message: describe(e.type, e.message, e.schema, e.value, segments),
    });
  }
  // Cross-checks run even when the schema found problems, so one pass lists everything; they
  // look only at the parts whose shape they need and skip the rest.
  crossCheck(withDefaults as Config, file, locate, problems);
  // In file order (problems without a line last), whichever check found them.
  if (problems.length > 0)
    throw new ConfigError(dedupe(problems).sort((a, b) => (a.line || Infinity) - (b.line || Infinity)));
  return deepFreeze(withDefaults as Config);
}

type SchemaNode = {
  type?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  errorHint?: string;
};

/** The schema of `key` inside an object schema (or any object member of a union). */
function childSchema(schema: SchemaNode | undefined, key: string | number): SchemaNode | undefined {
  if (!schema) return undefined;
  if (typeof key === 'number') return schema.items ?? schema.anyOf?.map((s) => s.items).find(Boolean);
  return schema.properties?.[key] ?? schema.anyOf?.map((s) => s.properties?.[key]).find(Boolean);
}

function numericType(schema: SchemaNode): 'integer' | 'number' | undefined {
  if (schema.type === 'integer' || schema.type === 'number') return schema.type;
  return schema.anyOf?.map(numericType).find(Boolean);
}

/**
 * Rewrite, in place, each string written where the schema wants a number: a duration or size for
 * keys whose name carries a unit (src/core/schema-util.ts unitOfKey), a plain number for the
 * others, `true`/`false` where a boolean is expected (as `${VAR}` interpolation gives). Anything else is left for the schema to refuse.
 * An object under a unit key (admission.queue.timeoutMs.critical) passes the unit to its keys.
 */
function convertUnits(
  value: unknown,
  schema: SchemaNode | undefined,
  at: (string | number)[],
  unit: Unit | undefined,
  fail: (at: (string | number)[], message: string) => void,
): void {
  if (value === null || typeof value !== 'object' || !schema) return;
  const entries: [string | number, unknown][] = Array.isArray(value)
    ? value.map((v, i) => [i, v])
    : Object.entries(value);
  for (const [key, v] of entries) {
    const child = childSchema(schema, key);
    if (!child) continue;
    const childUnit = (typeof key === 'string' ? unitOfKey(key) : undefined) ?? unit;
    const num = numericType(child);
    if (
      typeof v === 'string' &&
      (child.type === 'boolean' || child.anyOf?.some((a) => a.type === 'boolean')) &&
      (v === 'true' || v === 'false')
    ) {
      // `enabled: ${FEATURE}` gives the string "true": take it as the boolean it says.
      (value as Record<string | number, unknown>)[key] = v === 'true';
    } else if (typeof v === 'string' && num !== undefined) {
      const path = [...at, key];
      const out = childUnit
        ? convertUnit(childUnit, v, num === 'integer')
        : /^\s*-?[0-9]+(\.[0-9]+)?\s*$/.test(v)
          ? Number(v)
          : v;
      if (typeof out === 'number') (value as Record<string | number, unknown>)[key] = out;
      else if (childUnit) fail(path, out);
    } else convertUnits(v, child, [...at, key], childUnit, fail);
  }
}

export interface ParseOptions {
  /** Where `${VAR}` takes its values; process.env by default. */
  env?: Record<string, string | undefined>;
  /** Applied to the parsed, interpolated object before validation (command-line overrides). */
  override?: (raw: Record<string, unknown>) => void;
}

/** Parse and validate YAML text. */
export function parseConfig(text: string, file = '<config>', options: ParseOptions = {}): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      // linePos is only filled in with prettyErrors; the line counter knows the line either way.
      doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0]?.line ?? lineCounter.linePos(e.pos[0]).line,
        path: '',
        message: `YAML: ${e.message.split('\n')[0]}`,
      })),
    );
  }
  const locate = (path: (string | number)[]): number => {
    // Walk to the deepest node that exists and report its line.
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as YamlNode | undefined;
      const pair =
        n > 0 ? findKeyNode(doc.getIn(path.slice(0, n - 1), true) as YamlNode | undefined, path[n - 1]!) : undefined;
      const range = pair?.range ?? (node && typeof node === 'object' && 'range' in node ? node.range : undefined);
      if (range) return lineCounter.linePos(range[0]).line;
    }
    return 0;
  };
  const raw = doc.toJS() as unknown;
  // On the parsed values, not the text: a variable's value is a string and can never become YAML
  // structure (a newline, a `key:` or a `[` in it stays characters).
  const problems: ConfigProblem[] = [];
  interpolate(raw, [], options.env ?? process.env, (at, message) =>
    problems.push({ file, line: locate(at), path: dotted(at), message }),
  );
  if (problems.length > 0) throw new ConfigError(problems);
  if (options.override && raw !== null && typeof raw === 'object' && !Array.isArray(raw))
    options.override(raw as Record<string, unknown>);
  return validateConfig(raw, file, locate);
}

/** Read, parse and validate a YAML file. */
export async function loadConfigFile(file: string, options: ParseOptions = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 0, path: '', message: `cannot read file: ${(err as Error).message}` }]);
  }
  return parseConfig(text, file, options);
}

const VARIABLE = /\$\$\{|\$\{([^}]*)\}|\$\{/g;

/**
 * Replace, in place, `${NAME}` and `${NAME:-default}` in every string value with the environment's
 * value; `$${` is a literal `${`. An unset (or, with `:-`, empty) variable takes the default; unset
 * without one is an error naming the key and the variable. Keys are not interpolated.
 */
export function interpolate(
  value: unknown,
  at: (string | number)[],
  env: Record<string, string | undefined>,
  fail: (at: (string | number)[], message: string) => void,
): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value;
    return value.replace(VARIABLE, (match: string, body: string | undefined) => {
      if (match === '$${') return '${';
      const m = body === undefined ? null : /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s.exec(body);
      if (!m) {
        fail(
          at,
          `${JSON.stringify(match)} is not a variable: write \${NAME} or \${NAME:-default} (NAME of letters, digits and _), or $\${ for a literal \${`,
        );
        return match;
      }
      const v = env[m[1]!];
      if (m[2] !== undefined) return v === undefined || v === '' ? m[2] : v;
      if (v === undefined) {
        fail(at, `environment variable ${m[1]} is not set (give a default with \${${m[1]}:-VALUE})`);
        return match;
      }
      return v;
    });
  }
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string | number, unknown>;
    for (const k of Object.keys(o)) o[k] = interpolate(o[k], [...at, Array.isArray(o) ? Number(k) : k], env, fail);
  }
  return value;
}

function findKeyNode(parent: YamlNode | undefined, key: string | number): YamlNode | undefined {
  if (parent && isMap(parent)) {
    for (const item of parent.items) {
      const k = item.key as { value?: unknown } | null;
      if (k && k.value === key) return item.key as YamlNode;
    }
  }
  if (parent && isSeq(parent) && typeof key === 'number') return parent.items[key] as YamlNode | undefined;
  return undefined;
}

function dotted(segments: (string | number)[]): string {
  let out = '';
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : out === '' ? s : `.${s}`;
  return out;
}

function describe(
  type: ValueErrorType,
  message: string,
  schema: {
    anyOf?: { const?: unknown; errorHint?: string }[];
    description?: string;
    format?: string;
    pattern?: string;
    errorHint?: string;
    properties?: Record<string, unknown>;
  },
  value: unknown,
  segments: (string | number)[],
): string {
  if (type === ValueErrorType.ObjectAdditionalProperties || message === 'Unexpected property') {
    const key = segments.at(-1);
    const near = typeof key === 'string' ? closest(key, Object.keys(schema.properties ?? {})) : undefined;
    return `unknown key${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''} (refused: a typo in a security setting must not pass silently)`;
  }
  if (type === ValueErrorType.Union && schema.anyOf?.every((s) => 'const' in s)) {
    return `must be one of ${schema.anyOf.map((s) => JSON.stringify(s.const)).join(', ')}; got ${JSON.stringify(value)}`;
  }
  // A union that carries a readable form (HostPort | 'off'): say that, not "expected union value".
  const hint = schema.errorHint ?? schema.anyOf?.find((s) => s.errorHint)?.errorHint;
  if (hint && (type === ValueErrorType.StringPattern || type === ValueErrorType.Union))
    return `expected ${hint}; got ${JSON.stringify(value)}`;
  if (type === ValueErrorType.StringFormat && schema.format === 'cidr')
    return `not an IP address or CIDR block: ${JSON.stringify(value)}`;
  if (type === ValueErrorType.StringFormat && schema.format === 'http-url')
    return `not an http(s)://host:port URL without path or credentials: ${JSON.stringify(value)}`;
  // Only the first letter is lowered: a pattern quoted in the message must stay as written.
  const text = message.charAt(0).toLowerCase() + message.slice(1);
  if (type === ValueErrorType.StringPattern && schema.description)
    return `${text} — ${schema.description}; got ${JSON.stringify(value)}`;
  return `${text}; got ${JSON.stringify(value)}`;
}

/** The sibling key nearest to a mistyped one, when it is near enough to be the likely intent. */
export function closest(key: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lower = key.toLowerCase();
  for (const c of candidates) {
    const d = c.toLowerCase() === lower ? 0 : levenshtein(lower, c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  // A third of the key's length, at least 2 edits: `idleTimeoutMS`, `maxConection`, `adress`.
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Infinity; // a key that long is no typo of a schema key
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

function crossCheck(c: Config, file: string, locate: (p: (string | number)[]) => number, out: ConfigProblem[]): void {
  const add = (path: (string | number)[], message: string) =>
    out.push({ file, line: locate(path), path: dotted(path), message });
  const list = <T>(v: unknown): T[] =>
    Array.isArray(v) ? (v as T[]).filter((x) => x !== null && typeof x === 'object') : [];
  checkClusterTls(c.cluster, add);
  const upstreams = new Set<string>();
  list<Config['upstreams'][number]>(c.upstreams).forEach((u, i) => {
    checkUpstreamAdmission(u.admission, ['upstreams', i, 'admission'], add);
    checkUpstreamServers(u, ['upstreams', i], add);
    if (typeof u.name !== 'string') return;
    if (upstreams.has(u.name)) add(['upstreams', i, 'name'], `duplicate upstream name ${JSON.stringify(u.name)}`);
    upstreams.add(u.name);
  });
  const routes = new Set<string>();
  // With the upstreams section itself broken, "no upstream named …" would only repeat its problems.
  const upstreamsUsable = Array.isArray(c.upstreams);
  list<Config['routes'][number]>(c.routes).forEach((r, i) => {
    if (typeof r.name === 'string') {
      if (routes.has(r.name)) add(['routes', i, 'name'], `duplicate route name ${JSON.stringify(r.name)}`);
      routes.add(r.name);
    }
    if (upstreamsUsable && typeof r.upstream === 'string' && !upstreams.has(r.upstream))
      add(
        ['routes', i, 'upstream'],
        `no upstream named ${JSON.stringify(r.upstream)} (known: ${[...upstreams].join(', ')})`,
      );
    if (upstreamsUsable && typeof r.fallback === 'string') {
      if (!upstreams.has(r.fallback))
        add(
          ['routes', i, 'fallback'],
          `no upstream named ${JSON.stringify(r.fallback)} (known: ${[...upstreams].join(', ')})`,
        );
      else if (r.fallback === r.upstream)
        add(
          ['routes', i, 'fallback'],
          `the fallback must differ from the route's upstream ${JSON.stringify(r.upstream)}`,
        );
    }
    checkSensitive(r.sensitive, ['routes', i, 'sensitive'], add);
    const wr = r.waitingRoom as RouteConfig['waitingRoom'] | undefined;
    if (wr?.enabled === true && Array.isArray(r.methods) && !r.methods.includes('GET') && !r.methods.includes('HEAD'))
      add(
        ['routes', i, 'waitingRoom', 'enabled'],
        'only GET and HEAD requests enter a waiting room, and this route matches neither',
      );
    if (typeof r.host === 'string' && /:[0-9]+$/.test(r.host) && !r.host.endsWith(']'))
      add(
        ['routes', i, 'host'],
        `host matching ignores the port, so ${JSON.stringify(r.host)} can never match; write the host alone`,
      );
    if (typeof r.path !== 'string') return;
    const star = r.path.indexOf('*');
    if (star !== -1 && star !== r.path.length - 1)
      add(['routes', i, 'path'], `"*" is only allowed at the end of a path; got ${JSON.stringify(r.path)}`);
  });
  checkShadowedRoutes(list<Config['routes'][number]>(c.routes), add);
  // Rate-limit rules name routes: a typo would silently limit nothing.
  const rl = (c.defense as Config['defense'] | undefined)?.rateLimit;
  const ruleIds = new Set<string>();
  list<Config['defense']['rateLimit']['rules'][number]>(rl?.rules).forEach((rule, i) => {
    if (typeof rule.id === 'string') {
      if (ruleIds.has(rule.id))
        add(['defense', 'rateLimit', 'rules', i, 'id'], `duplicate rate-limit rule id ${JSON.stringify(rule.id)}`);
      ruleIds.add(rule.id);
    }
    // A global rule decides from its leases at once; a wait would apply only while the store is gone.
    if (rule.scope === 'global' && typeof rule.maxDelayMs === 'number' && rule.maxDelayMs > 0)
      add(
        ['defense', 'rateLimit', 'rules', i, 'maxDelayMs'],
        'a rule with scope: global never waits (its leases decide at once): maxDelayMs must be 0',
      );
    if (Array.isArray(rule.routes))
      rule.routes.forEach((name, j) => {
        if (typeof name === 'string' && !routes.has(name))
          add(
            ['defense', 'rateLimit', 'rules', i, 'routes', j],
            `no route named ${JSON.stringify(name)} (known: ${[...routes].join(', ')})`,
          );
      });
  });
  const addresses = new Set<string>();
  list<Config['listeners'][number]>(c.listeners).forEach((l, i) => {
    if (typeof l.address !== 'string') return;
    // Port 0 (an ephemeral port, for tests) never collides.
    if (addresses.has(l.address) && !l.address.endsWith(':0'))
      add(['listeners', i, 'address'], `duplicate listener address ${l.address}`);
    addresses.add(l.address);
    const port = Number(l.address.slice(l.address.lastIndexOf(':') + 1));
    if (port > 65535) add(['listeners', i, 'address'], `port out of range: ${port}`);
  });
  const admin = c.admin as Config['admin'] | undefined;
  if (typeof admin?.address === 'string' && admin.address !== 'off') {
    const port = Number(admin.address.slice(admin.address.lastIndexOf(':') + 1));
    if (port > 65535) add(['admin', 'address'], `port out of range: ${port}`);
  }
  if (
    typeof admin?.address === 'string' &&
    admin.address !== 'off' &&
    !admin.address.endsWith(':0') &&
    addresses.has(admin.address)
  )
    add(['admin', 'address'], 'the admin listener cannot share an address with a client listener');
  checkAdmission(c.admission as Config['admission'] | undefined, add);
  const limits = c.limits as Config['limits'] | undefined;
  if (
    typeof limits?.headersTimeoutMs === 'number' &&
    typeof limits.requestTimeoutMs === 'number' &&
    limits.headersTimeoutMs > limits.requestTimeoutMs
  )
    add(['limits', 'headersTimeoutMs'], 'must not exceed limits.requestTimeoutMs');
  const trusted = (c.clientAddress as Config['clientAddress'] | undefined)?.trustedProxies;
  if (Array.isArray(trusted)) {
    trusted.forEach((cidr, i) => {
      if (typeof cidr !== 'string' || !isCidr(cidr)) return; // already reported as malformed
      const bits = typeof cidr === 'string' && cidr.includes('/') ? Number(cidr.slice(cidr.indexOf('/') + 1)) : 128;
      const minBits = cidr.includes(':') ? 7 : 8; // 10.0.0.0/8 and fc00::/7 (private) are the widest sane lists
      if (bits < minBits)
        add(
          ['clientAddress', 'trustedProxies', i],
          `${JSON.stringify(cidr)} trusts a large part of the Internet: any client in it could choose its own address through X-Forwarded-For or PROXY protocol`,
        );
    });
  }
  list<Config['listeners'][number]>(c.listeners).forEach((l, i) => {
    if (l.proxyProtocol === true && Array.isArray(trusted) && trusted.length === 0)
      add(
        ['listeners', i, 'proxyProtocol'],
        'no peer is in clientAddress.trustedProxies, so no PROXY header would ever be read',
      );
  });
  const cache = (c as { cache?: { maxBytes?: unknown; maxObjectBytes?: unknown } }).cache;
  if (
    typeof cache?.maxBytes === 'number' &&
    typeof cache.maxObjectBytes === 'number' &&
    cache.maxObjectBytes > cache.maxBytes
  )
    add(['cache', 'maxObjectBytes'], `exceeds cache.maxBytes (${cache.maxBytes})`);
}

function checkUpstreamAdmission(
  a: Config['upstreams'][number]['admission'] | undefined,
  at: (string | number)[],
  add: AddProblem,
): void {
  if (a === null || typeof a !== 'object') return;
  const { minLimit, maxLimit, initialLimit } = a;
  if (typeof minLimit === 'number' && typeof maxLimit === 'number' && minLimit > maxLimit)
    add([...at, 'minLimit'], 'must not exceed maxLimit');
  else if (
    typeof initialLimit === 'number' &&
    typeof minLimit === 'number' &&
    typeof maxLimit === 'number' &&
    (initialLimit < minLimit || initialLimit > maxLimit)
  )
    add([...at, 'initialLimit'], `must lie between minLimit (${minLimit}) and maxLimit (${maxLimit})`);
  if (a.mode === 'static' && a.staticLimit === undefined) add([...at, 'staticLimit'], 'required with mode: static');
}

function checkAdmission(a: Config['admission'] | undefined, add: AddProblem): void {
  const order = a?.classOrder as unknown;
  if (!Array.isArray(order)) return;
  const missing = TRAFFIC_CLASSES.filter((c) => !order.includes(c));
  if (missing.length > 0 || new Set(order).size !== order.length)
    add(
      ['admission', 'classOrder'],
      `must name each of ${TRAFFIC_CLASSES.join(', ')} exactly once${missing.length > 0 ? ` (missing: ${missing.join(', ')})` : ''}`,
    );
  const reserve = a?.reservePercent as Record<string, unknown> | undefined;
  if (reserve !== undefined && typeof reserve === 'object') {
    let total = 0;
    for (const c of TRAFFIC_CLASSES) if (typeof reserve[c] === 'number') total += reserve[c] as number;
    if (total > 100)
      add(['admission', 'reservePercent'], `the reserved shares add up to ${total}%: they must total at most 100`);
  }
}

function dedupe(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.path}\u0000${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/**
 * A route that an earlier one fully covers can never match (routes are tried in order, the first
 * match wins): a catch-all before the specific routes of its host, or the same host, path and
 * methods written twice. Start-up refuses it rather than let the later route's limits sit unused.
 */
function checkShadowedRoutes(routes: readonly Config['routes'][number][], add: AddProblem): void {
  const shapes: Array<{ host: string; path: string; prefix: boolean; methods: Set<string> | null } | null> = routes.map(
    (r) => {
      if (typeof r.path !== 'string' || (r.host !== undefined && typeof r.host !== 'string')) return null;
      if (r.methods !== undefined && !Array.isArray(r.methods)) return null;
      const prefix = r.path.endsWith('*');
      // Matching ignores ASCII case (src/pipeline/runtime.ts).
      const path = (prefix ? r.path.slice(0, -1) : r.path).toLowerCase();
      return {
        host: (r.host ?? '').toLowerCase().replace(/\.$/, ''),
        path,
        prefix,
        methods: r.methods === undefined ? null : new Set(r.methods),
      };
    },
  );
  for (let j = 1; j < shapes.length; j++) {
    const later = shapes[j];
    if (!later) continue;
    for (let i = 0; i < j; i++) {
      const first = shapes[i];
      if (!first) continue;
      // Host: any host covers every host; otherwise the same name (wildcards only cover themselves here).
      if (first.host !== '' && first.host !== later.host) continue;
      // A prefix route `/admin/*` also meets the bare `/admin` (and an exact `/admin` meets only that and `/admin/`).
      const pathCovered = first.prefix
        ? later.path.startsWith(first.path) || (!later.prefix && `${later.path}/` === first.path)
        : !later.prefix && later.path === first.path;
      if (!pathCovered) continue;
      if (first.methods !== null && (later.methods === null || [...later.methods].some((m) => !first.methods!.has(m))))
        continue;
      const same =
        first.host === later.host &&
        first.path === later.path &&
        first.prefix === later.prefix &&
        (first.methods === null
          ? later.methods === null
          : later.methods !== null && later.methods.size === first.methods.size);
      add(
        ['routes', j],
        same
          ? `duplicate route: routes[${i}] has the same host, path and methods, so this one never matches`
          : `unreachable: routes[${i}] before it matches every request this route would (routes are tried in order; put the more specific route first)`,
      );
      break;
    }
  }
}
