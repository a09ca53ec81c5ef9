// Cluster mode: what binds this node's defence to the shared store. Bans travel by pub/sub (another
// node applies them within milliseconds) and a periodic resync re-reads the shared table, so a node
// that missed a message converges; the attack level in force is the highest any live node detects
// (a heartbeat table), and an operator's override made on one node applies on all; global rate
// limits lease tokens (src/store/leases.ts). None of it runs per request.
//
//   node A: ban ──▶ BanTable.onChange ──▶ store.tablePut('bans') ─▶ store.publish('events')
//                                                                         │ (ms)
//   node B: ◀── BanTable.applyRemote ◀── message ◀─────────────────────────┘
//           ◀── resync every resyncMs: version changed without a message? read the table, converge
//
// The store gone: everything stays local (bans made meanwhile are pushed when it returns: a union,
// so a store restarted empty is refilled), logged once per outage and counted.
import cluster from 'node:cluster';
import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import type { Clock } from '../core/clock.ts';
import { loadTlsFiles, type TlsMaterial } from '../core/tls-files.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Runtime } from '../pipeline/runtime.ts';
import type { BanChange, BanTable } from '../phases/ban/table.ts';
import type { AttackLevelMonitor, LevelOverride } from '../phases/level/monitor.ts';
import { AttackLevel, ATTACK_LEVEL_NAMES } from '../pipeline/env.ts';
import { LeaseBroker } from '../store/leases.ts';
import { MemoryStore } from '../store/memory.ts';
import { describeUrl, RedisStore, redisUrlProblem } from '../store/redis.ts';
import type { ClusterStore } from '../store/types.ts';

export type ClusterConfig = Runtime['config']['cluster'];

const BANS = 'bans';
const LEVELS = 'levels';
const OVERRIDE = 'override';
const EVENTS = 'events';
/** A local ban absent from the shared table is lifted by a resync only when older than this (its put may be in flight). */
const RESYNC_GRACE_MS = 2000;
/** Live nodes in the level table at most. */
const MAX_NODES = 10000;

export interface ClusterOptions {
  readonly getRuntime: () => Runtime;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  readonly bans: BanTable;
  readonly level: AttackLevelMonitor;
  /** A store made by the caller (tests share one MemoryStore between gateways in one process). */
  readonly store?: ClusterStore;
  readonly env?: NodeJS.ProcessEnv;
}

/** This node's name: cluster.nodeName, else the host name, with `#N` for worker N of `--workers`. */
export function nodeNameOf(cfg: ClusterConfig): string {
  const base = cfg.nodeName ?? hostname();
  return cluster.isWorker && cluster.worker !== undefined ? `${base}#${cluster.worker.id}` : base;
}

/**
 * The store's URL: REMPART_REDIS_URL, else `cluster.redis.urlFile`'s content, else `cluster.redis.url`;
 * null when none is given (start-up refuses that; `rempart check` only warns: the URL may be in the
 * service's environment alone).
 */
export async function storeUrl(cfg: ClusterConfig, env: NodeJS.ProcessEnv): Promise<string | null> {
  const r = cfg.redis;
  let url = env.REMPART_REDIS_URL;
  if (url === undefined || url === '')
    url =
      r.urlFile !== undefined
        ? (
            await readFile(r.urlFile, 'utf8').catch((err: unknown) => {
              throw new Error(
                `cluster.redis.urlFile ${r.urlFile}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`,
              );
            })
          ).trim()
        : r.url;
  if (url === undefined || url === '') return null;
  const problem = redisUrlProblem(url);
  if (problem !== null) throw new Error(`cluster: ${problem}`);
  return url;
}

export const NO_STORE_URL =
  'cluster.store is redis but no URL is given: set REMPART_REDIS_URL, cluster.redis.urlFile or cluster.redis.url';

/** The store is opened once: its TLS files are read again at the next start (said in the expiry warning). */
const STORE_TLS_APPLIES_AT = 'restart (or upgrade: SIGUSR2)';
const loadStoreTls = (files: NonNullable<ClusterConfig['redis']['tls']>) =>
  loadTlsFiles('cluster.redis', files, Date.now(), STORE_TLS_APPLIES_AT);

/**
 * `cluster.redis.tls`'s files as one TLS context (src/core/tls-files.ts), null without them. Said rather
 * than ignored with a plain `redis://` URL: an operator who wrote them believes the connection is checked.
 */
export async function storeTls(cfg: ClusterConfig, url: string | null): Promise<TlsMaterial | null> {
  const files = cfg.redis.tls;
  if (files === undefined) return null;
  if (url !== null && !url.startsWith('rediss://'))
    throw new Error(
      `cluster.redis.tls is set but the store's URL is ${describeUrl(url)}: TLS needs rediss://, or remove tls`,
    );
  return loadStoreTls(files);
}

/**
 * At a reload: the store keeps the TLS files it was opened with (`openedWith`: their digest, null when it
 * was opened without), so a reload reads `cluster.redis.tls` again only to say what it would not otherwise:
 * what the files warn of now (a client certificate near its end: started months ago, the gateway said it
 * once), that they changed and apply at the next restart, or that they no longer load (the next start
 * would fail). Never fails the reload: nothing in it is applied.
 */
export async function storeTlsAtReload(cfg: ClusterConfig, openedWith: string | null): Promise<string[]> {
  const files = cfg.redis.tls;
  if (cfg.store !== 'redis' || files === undefined || openedWith === null) return [];
  try {
    const m = await loadStoreTls(files);
    const changed =
      m.digest === openedWith
        ? []
        : [
            'cluster.redis.tls: the files differ from those the store was opened with, which it keeps until ' +
              `the next ${STORE_TLS_APPLIES_AT}`,
          ];
    return [...m.warnings, ...changed];
  } catch (err) {
    return [
      `${(err as Error).message} (the store keeps the files it was opened with; the next restart or upgrade ` +
        'fails on this)',
    ];
  }
}

/** A store as opened: the digest of the TLS files it was opened with (null without), for storeTlsAtReload. */
export interface OpenedStore {
  readonly store: ClusterStore;
  readonly tlsDigest: string | null;
}

/**
 * The store `cfg` asks for, connected (or still trying: start-up never waits longer than connectTimeoutMs).
 * `warn`: what its TLS files say (a client certificate near its end, a key others can read).
 */
export async function openStore(
  cfg: ClusterConfig,
  env: NodeJS.ProcessEnv,
  clock: Clock,
  warn: (message: string) => void = () => {},
): Promise<OpenedStore> {
  if (cfg.store === 'memory') return { store: new MemoryStore({ clock }), tlsDigest: null };
  const r = cfg.redis;
  const url = await storeUrl(cfg, env);
  if (url === null) throw new Error(NO_STORE_URL);
  const tls = await storeTls(cfg, url);
  for (const w of tls?.warnings ?? []) warn(w);
  const store = new RedisStore({
    url,
    keyPrefix: r.keyPrefix,
    commandTimeoutMs: r.commandTimeoutMs,
    connectTimeoutMs: r.connectTimeoutMs,
    reconnectMaxMs: r.reconnectMaxMs,
    secureContext: tls?.secureContext ?? null,
  });
  await store.connect();
  return { store, tlsDigest: tls?.digest ?? null };
}

interface Message {
  /** Origin node. */
  o: string;
  k: 'ban' | 'unban' | 'override';
  /** Table version after the change. */
  v: number;
  c?: BanChange;
  ov?: LevelOverride | null;
}

export class Cluster {
  readonly store: ClusterStore;
  readonly nodeName: string;
  readonly leases: LeaseBroker;
  readonly #o: ClusterOptions;
  readonly #ownsStore: boolean;
  #resyncTimer: NodeJS.Timeout | null = null;
  #levelTimer: NodeJS.Timeout | null = null;
  /** Version of the bans table at the last full read, plus changes seen since (messages and our own writes). */
  #bansKnown = -1;
  /** Push every local ban at the next resync (after an outage or a failed write). */
  #union = false;
  #overrideDirty = false;
  /** Local override changes so far: a resync read that raced one is not applied. */
  #overrideEpoch = 0;
  #resyncing = false;
  #peerLevelAt = -Infinity;
  #downSinceWall = 0;
  #stopped = false;
  /** The digest of `cluster.redis.tls`'s files the store was opened with (storeTlsAtReload), null without. */
  readonly storeTlsDigest: string | null;
  /** Bans and unbans received from other nodes (tests, the docs' figures). */
  received = 0;
  resyncs = 0;
  fullReads = 0;

  constructor(store: ClusterStore, ownsStore: boolean, o: ClusterOptions, storeTlsDigest: string | null = null) {
    this.store = store;
    this.storeTlsDigest = storeTlsDigest;
    this.#ownsStore = ownsStore;
    this.#o = o;
    const cfg = () => o.getRuntime().config.cluster;
    this.nodeName = nodeNameOf(cfg());
    this.leases = new LeaseBroker(
      store,
      () => cfg(),
      () => o.clock.now(),
    );
    o.bans.onChange = (c) => this.#shareBan(c);
    o.level.onOverrideChange = (ov) => this.#shareOverride(ov);
    store.onHealth((healthy) => this.#onHealth(healthy));
    const m = o.metrics.cluster;
    m.readers.storeUp = (g) => g.set(store.healthy ? 1 : 0);
    m.readers.operations = () => store.operations;
    m.readers.localDecisions = () => this.leases.localDecisions;
  }

  /** The store is this process's own (`cluster.store: memory`, made here): empty at every start. */
  get local(): boolean {
    return this.#ownsStore && this.store.kind === 'memory';
  }

  get #cfg(): ClusterConfig {
    return this.#o.getRuntime().config.cluster;
  }

  async start(): Promise<void> {
    this.store.onSubscribeTrouble?.((failing, reason) => {
      const { log } = this.#o;
      if (failing)
        log.error(
          { store: this.store.kind, reason },
          'cluster store refuses the subscription: bans and overrides from other nodes arrive by resync only (every resyncMs) until it works again',
        );
      else log.warn({ store: this.store.kind }, 'cluster store subscription works again');
    });
    await this.store.subscribe(EVENTS, (m) => this.#onMessage(m));
    if (!this.store.healthy) this.#onHealth(false);
    this.#union = true; // a restarted node re-shares nothing it lacks, but reads everything
    await this.resync();
    const cfg = this.#cfg;
    this.#resyncTimer = setInterval(() => void this.resync(), cfg.resyncMs);
    this.#resyncTimer.unref();
    this.#levelTimer = setInterval(() => void this.heartbeat(), cfg.levelHeartbeatMs);
    this.#levelTimer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#resyncTimer !== null) clearInterval(this.#resyncTimer);
    if (this.#levelTimer !== null) clearInterval(this.#levelTimer);
    this.#o.bans.onChange = null;
    this.#o.level.onOverrideChange = null;
    // Leave the level table at once, so this node's level stops counting.
    if (this.store.healthy) await this.store.tableDelete(LEVELS, this.nodeName).catch(() => {});
    if (this.#ownsStore) await this.store.close();
  }

  #onHealth(healthy: boolean): void {
    const { log, metrics, clock } = this.#o;
    if (!healthy) {
      if (this.#downSinceWall !== 0) return;
      this.#downSinceWall = clock.wallMs();
      metrics.cluster.storeFailures.inc();
      log.error(
        { store: this.store.kind, failMode: this.#cfg.failMode },
        'cluster store unreachable: bans, rate limits and the attack level are decided locally until it returns',
      );
      this.#union = true;
      return;
    }
    if (this.#downSinceWall !== 0)
      log.warn(
        { store: this.store.kind, downMs: clock.wallMs() - this.#downSinceWall },
        'cluster store reachable again: reconciling',
      );
    this.#downSinceWall = 0;
    this.#union = true;
    if (!this.#stopped) void this.resync();
  }

  #shareBan(c: BanChange): void {
    if (!this.store.healthy) {
      this.#union = true;
      return;
    }
    const cfg = this.#o.getRuntime().config.defense.bans;
    const write =
      c.op === 'ban'
        ? this.store.tablePut(
            BANS,
            c.target,
            JSON.stringify({ reason: c.reason, rule: c.ruleId, by: c.by, o: this.nodeName }),
            c.ttlMs,
            cfg.maxEntries,
          )
        : this.store.tableDelete(BANS, c.target);
    write
      .then((v) => {
        if (this.#bansKnown >= 0) this.#bansKnown++;
        return this.store.publish(EVENTS, JSON.stringify({ o: this.nodeName, k: c.op, v, c } satisfies Message));
      })
      .catch(() => {
        this.#union = true;
      });
  }

  #shareOverride(ov: LevelOverride | null): void {
    this.#overrideEpoch++;
    if (!this.store.healthy) {
      this.#overrideDirty = true;
      return;
    }
    const write =
      ov === null
        ? this.store.tableDelete(OVERRIDE, 'api')
        : this.store.tablePut(OVERRIDE, 'api', JSON.stringify(ov), 30 * 86400000, 1);
    write
      .then((v) =>
        this.store.publish(EVENTS, JSON.stringify({ o: this.nodeName, k: 'override', v, ov } satisfies Message)),
      )
      .catch(() => (this.#overrideDirty = true));
  }

  #onMessage(raw: string): void {
    let m: Message;
    try {
      m = JSON.parse(raw) as Message;
    } catch {
      return;
    }
    if (typeof m !== 'object' || m === null || m.o === this.nodeName) return;
    try {
      if ((m.k === 'ban' || m.k === 'unban') && isBanChange(m.c)) {
        if (this.#bansKnown >= 0) this.#bansKnown++;
        this.received++;
        this.#o.bans.applyRemote(m.c);
      } else if (m.k === 'override' && m.ov !== undefined && (m.ov === null || isOverride(m.ov))) {
        this.#o.level.applyCluster(this.#o.level.peerLevel, m.ov);
      }
    } catch (err) {
      this.#o.log.warn({ err }, 'cluster: a message could not be applied');
    }
  }

  /**
   * Converge with the shared bans (and the override). Skips the full read when the table's version
   * shows every change reached us as a message. After an outage (`union`), pushes local bans the
   * store lacks instead of lifting them. Never throws.
   */
  async resync(): Promise<void> {
    if (this.#resyncing || this.#stopped || !this.store.healthy) return;
    this.#resyncing = true;
    this.resyncs++;
    try {
      await this.#resyncOverride();
      const union = this.#union;
      this.#union = false;
      if (!union && this.#bansKnown >= 0 && (await this.store.tableVersion(BANS)) === this.#bansKnown) return;
      const { bans, clock } = this.#o;
      const startedWall = clock.wallMs();
      const { version, entries } = await this.store.tableEntries(BANS);
      this.fullReads++;
      this.#bansKnown = version;
      const now = clock.now();
      const shared = new Set<string>();
      for (const e of entries) {
        shared.add(e.field);
        const local = bans.entryFor(e.field);
        const localLeft = local === null ? 0 : local.untilMs - now;
        if (e.ttlMs <= localLeft + 1000) continue;
        const v = parseValue(e.value);
        bans.applyRemote({ op: 'ban', target: e.field, ttlMs: e.ttlMs, reason: v.reason, ruleId: v.rule, by: v.by });
        this.received++;
      }
      const cfg = this.#o.getRuntime().config.defense.bans;
      let deferred = false;
      for (const e of [...bans.active()]) {
        const target = e.target.display;
        if (shared.has(target)) continue;
        if (union && e.restored && !this.local) {
          // Kept by the state file across this node's restart, and lifted elsewhere meanwhile: the store decides.
          bans.applyRemote({ op: 'unban', target, by: 'cluster-resync' });
        } else if (union) {
          // Ours, made while the store was away (or a store restarted empty): share it.
          const v = await this.store.tablePut(
            BANS,
            target,
            JSON.stringify({ reason: e.reason, rule: e.ruleId, by: e.by, o: this.nodeName }),
            e.untilMs - now,
            cfg.maxEntries,
          );
          this.#bansKnown = v;
        } else if (e.sinceWallMs < startedWall - RESYNC_GRACE_MS) {
          // Lifted elsewhere and the message missed us.
          bans.applyRemote({ op: 'unban', target, by: 'cluster-resync' });
        } else deferred = true;
      }
      // A young local ban missing from the table was left alone: look again next time.
      if (deferred) this.#bansKnown = -1;
      // Restored bans the store holds are the store's from now on (shared again after an outage).
      for (const e of bans.active()) e.restored = false;
    } catch {
      this.#union = true; // the store failed midway: next time, a full union
    } finally {
      this.#resyncing = false;
    }
  }

  async #resyncOverride(): Promise<void> {
    const level = this.#o.level;
    const local = level.override?.source === 'api' ? level.override : null;
    if (this.#overrideDirty) {
      this.#overrideDirty = false;
      this.#shareOverride(local);
      return;
    }
    const epoch = this.#overrideEpoch;
    const { entries } = await this.store.tableEntries(OVERRIDE);
    if (epoch !== this.#overrideEpoch) return; // an operator changed it here meanwhile: the read may predate the write
    const e = entries.find((x) => x.field === 'api');
    let shared: LevelOverride | null = null;
    if (e !== undefined) {
      try {
        const o = JSON.parse(e.value) as unknown;
        if (isOverride(o)) shared = o;
      } catch {
        // a bad value is ignored
      }
    }
    level.applyCluster(level.peerLevel, shared);
  }

  /** Report this node's detected level and take the highest of the others'. Never throws. */
  async heartbeat(): Promise<void> {
    const { level, clock } = this.#o;
    const cfg = this.#cfg;
    const now = clock.now();
    if (this.store.healthy) {
      try {
        await this.store.tablePut(LEVELS, this.nodeName, String(level.detected), cfg.levelHeartbeatMs * 3, MAX_NODES);
        const { entries } = await this.store.tableEntries(LEVELS);
        let peers: AttackLevel = AttackLevel.calm;
        for (const e of entries) {
          const l = Number(e.value);
          if (e.field !== this.nodeName && (l === 1 || l === 2) && l > peers) peers = l as AttackLevel;
        }
        this.#peerLevelAt = now;
        level.applyCluster(peers, undefined);
        return;
      } catch {
        // fall through: no news from the others
      }
    }
    // Without news for three heartbeats, the others' levels no longer count.
    if (now - this.#peerLevelAt > cfg.levelHeartbeatMs * 3 && level.peerLevel !== AttackLevel.calm)
      level.applyCluster(AttackLevel.calm, undefined);
  }
}

/** Make the cluster layer for a gateway: the store it is given, or the one the config asks for. */
export async function createCluster(o: ClusterOptions): Promise<Cluster> {
  if (o.store !== undefined) return new Cluster(o.store, false, o);
  const cfg = o.getRuntime().config.cluster;
  const { store, tlsDigest } = await openStore(cfg, o.env ?? process.env, o.clock, (w) => o.log.warn(w));
  return new Cluster(store, true, o, tlsDigest);
}

function parseValue(v: string): { reason: string; rule: string; by: string } {
  try {
    const o = JSON.parse(v) as Record<string, unknown>;
    return { reason: String(o.reason ?? 'cluster'), rule: String(o.rule ?? ''), by: String(o.by ?? 'cluster') };
  } catch {
    return { reason: 'cluster', rule: '', by: 'cluster' };
  }
}

function isBanChange(c: unknown): c is BanChange {
  if (typeof c !== 'object' || c === null) return false;
  const x = c as Record<string, unknown>;
  if (typeof x.target !== 'string' || typeof x.by !== 'string') return false;
  if (x.op === 'unban') return true;
  return (
    x.op === 'ban' &&
    typeof x.ttlMs === 'number' &&
    x.ttlMs > 0 &&
    typeof x.reason === 'string' &&
    typeof x.ruleId === 'string'
  );
}

function isOverride(o: unknown): o is LevelOverride {
  if (typeof o !== 'object' || o === null) return false;
  const x = o as Record<string, unknown>;
  return (
    (ATTACK_LEVEL_NAMES as readonly unknown[]).includes(x.level) &&
    x.source === 'api' &&
    typeof x.reason === 'string' &&
    typeof x.by === 'string' &&
    typeof x.sinceWallMs === 'number'
  );
}
