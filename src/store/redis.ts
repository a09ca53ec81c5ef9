// The Valkey/Redis store (ioredis): what lets several nodes share one defence. Two connections: one
// for commands (no offline queue, a command timeout: a dead or slow store fails fast, and callers
// decide locally) and one for pub/sub (re-subscribed by ioredis after each reconnection).
// Reconnection uses exponential backoff with jitter, up to reconnectMaxMs. The URL may carry a
// password: it is never logged (describeUrl gives the loggable part).
//
// Keys (P is cluster.redis.keyPrefix):
//   P rl:{bucket}          string  a GCRA bucket's TAT in ms (expires when the bucket is full again)
//   P {t:NAME}:v           hash    a table's values          ┐ one hash tag, so both land on one
//   P {t:NAME}:x           zset    field → expiry ms         │ slot of a Valkey cluster
//   P {t:NAME}:n           string  the table's version       ┘ (puts and deletes so far)
//   P NAME (channel)               pub/sub
// Times come from the store's clock (TIME inside the scripts), so node clocks need not agree.
import { isIP } from 'node:net';
import type tls from 'node:tls';
import { Redis, type RedisOptions } from 'ioredis';
import type { ClusterStore, LeaseGrant, LeaseRequest, TableEntry } from './types.ts';

export interface RedisStoreOptions {
  url: string;
  keyPrefix: string;
  /** A command not answered within this fails (the store is then "unhealthy" until a ping answers). */
  commandTimeoutMs: number;
  connectTimeoutMs: number;
  /** Longest wait between two reconnection attempts. */
  reconnectMaxMs: number;
  /** rediss://: `cluster.redis.tls`'s authorities and client certificate (src/core/tls-files.ts); null: the system's authorities. */
  secureContext?: tls.SecureContext | null;
}

// GCRA lease (the same arithmetic as gcraLease in types.ts). ARGV: intervalMs, burst, want, minGrant, maxDelayMs.
const LEASE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local T = tonumber(ARGV[1])
local tau = T * tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local min = math.max(1, math.min(tonumber(ARGV[4]), want))
local v = redis.call('GET', KEYS[1])
local base = now
if v then
  local tat = tonumber(v)
  if tat > now then base = tat end
end
local avail = math.floor((tau - (base - now)) / T + 1e-9)
local n = math.min(want, avail)
if n < min then
  local delay = math.max(1, math.ceil(base + min * T - tau - now))
  if delay > tonumber(ARGV[5]) then return {0, delay} end
  local tat = base + min * T
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
  return {min, delay}
end
local tat = base + n * T
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
return {n, 0}
`;

// Drop the expired fields of a table (KEYS[1] hash, KEYS[2] zset) at `now`.
const EXPIRE_LUA = `
local function expire(h, x, now)
  local dead = redis.call('ZRANGEBYSCORE', x, '-inf', now)
  for i = 1, #dead do redis.call('HDEL', h, dead[i]) end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', x, '-inf', now) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
`;

// ARGV: field, value, ttlMs, maxEntries.
const PUT_LUA = `${EXPIRE_LUA}
expire(KEYS[1], KEYS[2], now)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local max = tonumber(ARGV[4])
local n = redis.call('ZCARD', KEYS[2])
if n > max then
  local extra = redis.call('ZRANGE', KEYS[2], 0, n - max - 1)
  for i = 1, #extra do redis.call('HDEL', KEYS[1], extra[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1)
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last == 2 then
  local ttl = math.ceil(tonumber(last[2]) - now) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return redis.call('INCR', KEYS[3])
`;

const ENTRIES_LUA = `${EXPIRE_LUA}
expire(KEYS[1], KEYS[2], now)
local z = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #z, 2 do
  local v = redis.call('HGET', KEYS[1], z[i])
  if v then
    out[#out + 1] = z[i]
    out[#out + 1] = v
    out[#out + 1] = math.ceil(tonumber(z[i + 1]) - now)
  end
end
out[#out + 1] = tonumber(redis.call('GET', KEYS[3]) or '0')
return out
`;

const DELETE_LUA = `
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
`;

interface Scripted {
  rmpLease(
    key: string,
    intervalMs: number,
    burst: number,
    want: number,
    minGrant: number,
    maxDelayMs: number,
  ): Promise<[number, number]>;
  rmpPut(h: string, x: string, n: string, field: string, value: string, ttlMs: number, max: number): Promise<number>;
  rmpEntries(h: string, x: string, n: string): Promise<Array<string | number>>;
  rmpDelete(h: string, x: string, n: string, field: string): Promise<number>;
}

/**
 * The URL as it may be logged: scheme, host, port and database, never the user or password. A URL
 * without a host (`rediss:user:password@host`, `redis:/:password@host`: a slash missing) parses with
 * everything in its path, so a path is shown only when it is a database number; one whose `@` is not
 * after a user part (an unencoded '/' in the password) shows no host.
 */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.host === '') return `${u.protocol} (no host)`;
    // An '@' outside the user part: a '/' or '?' in an unencoded password ended the authority early, and
    // what parsed as the host is the user and the password's start (redis://user:12/34@host).
    if (url.includes('@') && u.username === '' && u.password === '') return `${u.protocol}//(host hidden: a stray @)`;
    const path = u.pathname === '/' || u.pathname === '' ? '' : /^\/\d{1,5}$/.test(u.pathname) ? u.pathname : '/…';
    return `${u.protocol}//${u.host}${path}`;
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * Why `url` cannot be the store's URL, or null. ioredis reads a URL's query (`?name=value`) as connection
 * options that take precedence over the ones Rempart gives beside it: `rediss://…?tls=` would connect in
 * plain TCP (the password in clear), `?tls=x` drop the certificate check and `cluster.redis.tls`,
 * `?keyPrefix=` or `?enableOfflineQueue=` change what this file relies on. So a URL has none but `db` and
 * `family` (which a URL may have carried before this was checked).
 */
export function redisUrlProblem(url: string): string | null {
  if (!/^rediss?:\/\//.test(url))
    return `the Redis URL must start with redis:// or rediss:// (got ${describeUrl(url)})`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'the Redis URL does not parse';
  }
  // `db` and `family` change no option Rempart sets, nor how the connection is secured: kept.
  const harmless = (k: string, v: string) =>
    (k === 'db' && /^\d{1,5}$/.test(v)) || (k === 'family' && /^[046]$/.test(v));
  if ([...u.searchParams].some(([k, v]) => !harmless(k, v)))
    return (
      `the Redis URL ${describeUrl(url)} has a query (?…), which ioredis would take as connection options ` +
      "overriding Rempart's (?tls= turns TLS off): remove it (only ?db=N and ?family=4|6 are taken; a " +
      'database number may go in the path: /2)'
    );
  return null;
}

export class RedisStore implements ClusterStore {
  readonly kind = 'redis' as const;
  healthy = false;
  operations = 0;
  /** Commands that failed (timeouts, a lost connection). */
  errors = 0;
  readonly #opts: RedisStoreOptions;
  readonly #cmd: Redis;
  readonly #sub: Redis;
  readonly #scripted: Scripted;
  readonly #healthListeners: Array<(healthy: boolean) => void> = [];
  readonly #handlers = new Map<string, Set<(message: string) => void>>();
  #probe: NodeJS.Timeout | null = null;
  #resubscribe: NodeJS.Timeout | null = null;
  #subscribeFailing = false;
  readonly #subscribeListeners: Array<(failing: boolean, reason: string) => void> = [];
  #closed = false;

  constructor(opts: RedisStoreOptions) {
    const problem = redisUrlProblem(opts.url);
    if (problem !== null) throw new Error(`cluster: ${problem}`);
    this.#opts = opts;
    // Node sends no SNI unless told (and ioredis does not tell it): a store behind a TLS proxy that routes
    // by name would answer with another certificate. The name sent is the one the certificate is checked
    // against (the URL's host); an IP address is not sent (RFC 6066).
    const host = new URL(opts.url).hostname.replace(/^\[|\]$/g, '');
    const retryStrategy = (times: number) => {
      const capped = Math.min(opts.reconnectMaxMs, 100 * 2 ** Math.min(times, 16));
      return Math.round(capped / 2 + Math.random() * (capped / 2));
    };
    const common: RedisOptions = {
      lazyConnect: true,
      connectTimeout: opts.connectTimeoutMs,
      retryStrategy,
      // ioredis otherwise prints unhandled errors: ours are counted and logged once by the caller.
      showFriendlyErrorStack: false,
      // rediss://: the server's certificate checked whatever NODE_TLS_REJECT_UNAUTHORIZED says (the URL
      // carries the password). A plain redis:// URL stays plain.
      ...(opts.url.startsWith('rediss://')
        ? {
            tls: {
              rejectUnauthorized: true,
              ...(host !== '' && isIP(host) === 0 ? { servername: host } : {}),
              ...(opts.secureContext != null ? { secureContext: opts.secureContext } : {}),
            },
          }
        : {}),
    };
    this.#cmd = new Redis(opts.url, {
      ...common,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: opts.commandTimeoutMs,
      autoResubscribe: false,
    });
    // autoResubscribe stays off: ioredis re-sends SUBSCRIBE after a reconnection without handling its
    // promise, so a reply of NOPERM (an ACL changed) or a connection lost again before the reply is an
    // unhandled rejection, and Node ends the process on one. We re-subscribe on 'ready' ourselves.
    this.#sub = new Redis(opts.url, {
      ...common,
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      autoResubscribe: false,
    });
    this.#cmd.defineCommand('rmpLease', { numberOfKeys: 1, lua: LEASE_LUA });
    this.#cmd.defineCommand('rmpPut', { numberOfKeys: 3, lua: PUT_LUA });
    this.#cmd.defineCommand('rmpEntries', { numberOfKeys: 3, lua: ENTRIES_LUA });
    this.#cmd.defineCommand('rmpDelete', { numberOfKeys: 3, lua: DELETE_LUA });
    this.#scripted = this.#cmd as unknown as Scripted;
    this.#cmd.on('error', () => {
      this.errors++;
    });
    this.#sub.on('error', () => {});
    this.#sub.on('ready', () => {
      if (this.#handlers.size > 0)
        this.#sub.subscribe(...this.#handlers.keys()).then(this.#subscribed, this.#subscribeFailed);
    });
    this.#cmd.on('ready', () => this.#setHealthy(true));
    this.#cmd.on('close', () => this.#setHealthy(false));
    this.#sub.on('message', (channel: string, message: string) => {
      const subs = this.#handlers.get(channel);
      if (subs === undefined) return;
      for (const fn of subs) {
        try {
          fn(message);
        } catch {
          // A handler's bug must not stop the others nor the connection.
        }
      }
    });
  }

  /** Connect both connections; resolves when connected or after connectTimeoutMs (then keeps trying in the background). */
  async connect(): Promise<void> {
    const attempt = (c: Redis) => c.connect().catch(() => {});
    await Promise.race([
      Promise.all([attempt(this.#cmd), attempt(this.#sub)]),
      new Promise((r) => setTimeout(r, this.#opts.connectTimeoutMs).unref()),
    ]);
  }

  onHealth(fn: (healthy: boolean) => void): void {
    this.#healthListeners.push(fn);
  }

  async lease(requests: readonly LeaseRequest[]): Promise<LeaseGrant[]> {
    if (requests.length === 0) return [];
    const p = this.#opts.keyPrefix;
    const pipe = this.#cmd.pipeline() as unknown as Scripted & {
      exec(): Promise<Array<[Error | null, unknown]> | null>;
    };
    for (const r of requests)
      pipe.rmpLease(`${p}rl:${r.bucket}`, r.intervalMs, r.burst, r.want, r.minGrant, r.maxDelayMs);
    this.operations += requests.length;
    const results = await this.#guard(pipe.exec());
    if (results === null) throw new Error('store pipeline aborted');
    return results.map(([err, v]) => {
      if (err !== null) throw err;
      const [granted, waitMs] = v as [number, number];
      return { granted: Number(granted), waitMs: Number(waitMs) };
    });
  }

  async tablePut(table: string, field: string, value: string, ttlMs: number, maxEntries: number): Promise<number> {
    const [h, x, n] = this.#tableKeys(table);
    this.operations++;
    return Number(
      await this.#guard(this.#scripted.rmpPut(h, x, n, field, value, Math.max(1, Math.round(ttlMs)), maxEntries)),
    );
  }

  async tableDelete(table: string, field: string): Promise<number> {
    const [h, x, n] = this.#tableKeys(table);
    this.operations++;
    return Number(await this.#guard(this.#scripted.rmpDelete(h, x, n, field)));
  }

  async tableEntries(table: string): Promise<{ version: number; entries: TableEntry[] }> {
    const [h, x, n] = this.#tableKeys(table);
    this.operations++;
    const flat = await this.#guard(this.#scripted.rmpEntries(h, x, n));
    const entries: TableEntry[] = [];
    for (let i = 0; i + 3 < flat.length; i += 3)
      entries.push({ field: String(flat[i]), value: String(flat[i + 1]), ttlMs: Number(flat[i + 2]) });
    return { version: Number(flat[flat.length - 1] ?? 0), entries };
  }

  async tableVersion(table: string): Promise<number> {
    this.operations++;
    return Number((await this.#guard(this.#cmd.get(this.#tableKeys(table)[2]))) ?? 0);
  }

  async publish(channel: string, message: string): Promise<void> {
    this.operations++;
    await this.#guard(this.#cmd.publish(this.#opts.keyPrefix + channel, message));
  }

  async subscribe(channel: string, onMessage: (message: string) => void): Promise<void> {
    const name = this.#opts.keyPrefix + channel;
    let subs = this.#handlers.get(name);
    if (subs === undefined) {
      this.#handlers.set(name, (subs = new Set()));
      // Not connected yet: the 'ready' handler subscribes to every channel in #handlers, then and
      // after each reconnection.
      if (this.#sub.status === 'ready') this.#sub.subscribe(name).then(this.#subscribed, this.#subscribeFailed);
    }
    subs.add(onMessage);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#probe !== null) clearInterval(this.#probe);
    this.#probe = null;
    if (this.#resubscribe !== null) clearTimeout(this.#resubscribe);
    this.#resubscribe = null;
    this.#cmd.disconnect();
    this.#sub.disconnect();
    this.healthy = false;
  }

  readonly #subscribed = (): void => {
    if (!this.#subscribeFailing || this.#closed) return;
    this.#subscribeFailing = false;
    for (const fn of this.#subscribeListeners) fn(false, '');
  };

  onSubscribeTrouble(fn: (failing: boolean, reason: string) => void): void {
    this.#subscribeListeners.push(fn);
  }

  /**
   * A refused or lost SUBSCRIBE: counted, and tried again a second later (a reconnection tries at
   * once). Meanwhile the cluster's periodic resync converges without messages.
   */
  readonly #subscribeFailed = (err: unknown): void => {
    if (this.#closed) return;
    this.errors++;
    if (!this.#subscribeFailing) {
      this.#subscribeFailing = true;
      const reason = err instanceof Error ? err.message : String(err);
      for (const fn of this.#subscribeListeners) fn(true, reason);
    }
    if (this.#resubscribe !== null) return;
    this.#resubscribe = setTimeout(() => {
      this.#resubscribe = null;
      if (!this.#closed && this.#sub.status === 'ready' && this.#handlers.size > 0)
        this.#sub.subscribe(...this.#handlers.keys()).then(this.#subscribed, this.#subscribeFailed);
    }, 1000);
    this.#resubscribe.unref();
  };

  #tableKeys(table: string): [string, string, string] {
    const p = this.#opts.keyPrefix;
    return [`${p}{t:${table}}:v`, `${p}{t:${table}}:x`, `${p}{t:${table}}:n`];
  }

  /** Await a command: a failure marks the store unhealthy (a ping brings it back), a success healthy. */
  async #guard<T>(p: Promise<T>): Promise<T> {
    try {
      const v = await p;
      if (!this.healthy && this.#cmd.status === 'ready') this.#setHealthy(true);
      return v;
    } catch (err) {
      this.errors++;
      // A script error is our bug or bad input, not an unhealthy store.
      if (!(err instanceof Error && /ERR .*script|NOSCRIPT|WRONGTYPE/i.test(err.message))) this.#setHealthy(false);
      throw err;
    }
  }

  #setHealthy(h: boolean): void {
    if (this.#closed) h = false;
    if (h === this.healthy) return;
    this.healthy = h;
    if (!h && !this.#closed && this.#probe === null) {
      // Connected but failing (slow, timed out): ping until it answers. A lost connection is
      // reconnected by ioredis itself ('ready' then marks it healthy).
      this.#probe = setInterval(() => {
        if (this.#cmd.status !== 'ready') return;
        this.operations++;
        this.#cmd.ping().then(
          () => this.#setHealthy(true),
          () => {},
        );
      }, 1000);
      this.#probe.unref();
    } else if (h && this.#probe !== null) {
      clearInterval(this.#probe);
      this.#probe = null;
    }
    for (const fn of this.#healthListeners) fn(h);
  }
}
