// The state file: what a single node learned, kept across restarts and crashes in an embedded SQLite
// file (Node's built-in `node:sqlite`, as the audit trail). Bans with their ends and escalation steps,
// the attack level (detected, the operator's override, its history), the level's learned baselines
// and familiar prefixes (so no new warm-up), origin-granted session hashes and the used challenge
// solutions (a replayed solution stays refused). docs/operations.md#what-survives-a-restart.
//
//   start-up ─► open (corrupt/unreadable: set aside, start empty, warn) ─► read ─► restore into the tables
//   every FLUSH_MS (timer, never a request): tables' changes since the last write ─► BEGIN; upserts/deletes; COMMIT
//   stop ─► a last write, close
//   upgrade: old process on SIGUSR2 ─► handOver(): a write at once + a `handover` marker
//            successor (--upgrade)  ─► followHandover(): polls the marker (1/s), merges what is new
//
// SQLite calls are synchronous: they run at start-up (before the listeners accept) and on the timer
// only. The tables hand over what changed (their keys, bounded by their own caps), so a write costs the
// changes, not the table; rows mirror the in-memory tables and are bounded by the same caps. In cluster
// mode the store stays authoritative: the file only warms a node until the store's state arrives.
//
// A rollback journal, no memory map (src/core/sqlite.ts): a disk that refuses a write makes the write
// fail and be logged, never kills the process (WAL's `-shm` map did, SIGBUS). synchronous=OFF: no fsync
// on the event loop, ever. A process crash loses nothing written (the kernel holds it); a power cut or a
// kernel crash may leave a torn file, which the integrity check at open finds: set aside, start empty
// with a warning, as for any corrupt file. The file warms a node, the cluster store is the authority.
import type { DatabaseSync } from 'node:sqlite';
import { rename } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import { BUSY_MS, isBusy, openSqlite, switchToRollback } from '../core/sqlite.ts';
import type { AttackLevelView, BanList } from '../pipeline/env.ts';
import { BanTable, type BanRecord } from '../phases/ban/table.ts';
import { AttackLevelMonitor, type LevelState } from '../phases/level/monitor.ts';
import type { LearnedState } from '../phases/level/traffic.ts';
import type { FamiliarState } from '../phases/level/familiar.ts';
import type { ReplayGuard, ReplayState } from '../phases/challenge/replay.ts';
import { MemorySessionStore, type SessionRecord, type SessionStore } from '../phases/challenge/sessions.ts';

export const STATE_FILE_NAME = 'rempart-state.db';
/** How often the tables' changes are written: what a crash (kill -9) may lose at most. */
export const FLUSH_MS = 2000;
/** The learned baselines and familiar prefixes (hundreds of KiB) are written this often, and at stop. */
export const LEARNED_EVERY_MS = 30_000;
/**
 * Rows one write carries per table at most (about 30 ms each on a small machine); the rest wait for the
 * next write. A table with more changes than that every 2 s falls behind by that much, never blocks longer.
 */
export const ROWS_PER_WRITE = 10_000;
/** After a failed write (disk full, read-only), the next attempt waits this long. */
const RETRY_MS = 30_000;
/** Expired sessions are deleted from the file this often. */
const PRUNE_EVERY_MS = 60_000;
/** How often a successor (`--upgrade`) looks for the old process's hand-over marker. */
const HANDOVER_POLL_MS = 1000;
/** Rows a merge reads: those the old process made from this long before the successor's start on. */
const MERGE_MARGIN_MS = 10_000;
/** A successor stops looking for hand-over markers this long after the first one. */
const HANDOVER_FOLLOW_MS = 600_000;

/** At open, a file another process keeps locked is tried this many times, BUSY_MS apart (≈ 2 s). */
const OPEN_ATTEMPTS = 20;
const FORMAT = 1;

/**
 * Where `state.file` points: null when nothing is kept. `auto` is `$STATE_DIRECTORY` (systemd's
 * `StateDirectory=`, the first when it lists several) when set, else beside the config file, else
 * nowhere. `configFile`: the file the command line loaded, null for a command line without one;
 * undefined for a gateway built by code (createGateway, as the tests do): `auto` keeps nothing then.
 */
export function resolveStateFile(
  setting: string,
  configFile: string | null | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | null {
  if (setting === 'off') return null;
  if (setting !== 'auto') return path.resolve(setting);
  if (configFile === undefined) return null;
  const dir = env.STATE_DIRECTORY?.split(':')[0];
  if (dir !== undefined && dir !== '') return path.join(dir, STATE_FILE_NAME);
  if (configFile !== null) return path.join(path.dirname(path.resolve(configFile)), STATE_FILE_NAME);
  return null;
}

/** The state-owning tables (null or another implementation: not kept). */
export interface StateTargets {
  readonly bans: BanList | null;
  readonly level: AttackLevelView | null;
  readonly replay: ReplayGuard | null;
  readonly sessions: SessionStore | null;
  /**
   * The cluster store is this process's own (`cluster.store: memory`, empty at start): the restored
   * operator override is put in it. With a shared store (Redis) the store's override wins.
   */
  readonly localStore?: boolean;
}

export interface StateFileOptions {
  /** The SQLite file (resolveStateFile); null: nothing kept. */
  readonly file: string | null;
  readonly log: Logger;
  readonly clock: Clock;
  readonly flushMs?: number;
  /** Called for each write that failed (a metric). */
  readonly onWriteFailure?: () => void;
}

/** What was read back at start-up (logged, and for tests). */
export interface RestoreSummary {
  bans: number;
  activeBans: number;
  sessions: number;
  replayIds: number;
  level: string | null;
  warm: boolean;
  familiarPrefixes: number;
  /** Time the read took (ms). */
  readMs: number;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, json TEXT NOT NULL, blob BLOB);
  CREATE TABLE IF NOT EXISTS bans (
    key TEXT PRIMARY KEY, target TEXT NOT NULL, reason TEXT NOT NULL, rule TEXT NOT NULL, by TEXT NOT NULL,
    since_ms INTEGER NOT NULL, until_ms INTEGER NOT NULL, count INTEGER NOT NULL, level INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS replay (id TEXT PRIMARY KEY, used_ms INTEGER NOT NULL);
  CREATE INDEX IF NOT EXISTS replay_used ON replay (used_ms);
  CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL, window_start_ms INTEGER NOT NULL, shared INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);
`;

interface Tables {
  bans: BanTable | null;
  level: AttackLevelMonitor | null;
  replay: ReplayGuard | null;
  sessions: MemorySessionStore | null;
}

export class StateFile {
  readonly file: string | null;
  #db: DatabaseSync | null;
  readonly #opts: StateFileOptions;
  #t: Tables = { bans: null, level: null, replay: null, sessions: null };
  #timer: NodeJS.Timeout | null = null;
  #lastLearnedMs = -Infinity;
  #lastWarm = false;
  #lastPruneMs = 0;
  #failedAtMs = -Infinity;
  #closed = false;
  /** When this process read the file (wall ms): a merge takes rows made from shortly before on. */
  #loadedWallMs = 0;
  #handedOver = false;
  #follow: NodeJS.Timeout | null = null;
  /** The last hand-over marker merged (`pid:phase:atMs`). */
  #lastMarker = '';
  /** In the rollback journal (false while an older version holds the file in WAL mode). */
  #rollback: boolean;
  /** Writes that succeeded and failed (tests, and the log's view); busy: put off, another process held the lock. */
  writes = 0;
  failures = 0;
  busy = 0;

  private constructor(opened: { db: DatabaseSync; rollback: boolean } | null, opts: StateFileOptions) {
    const db = opened?.db ?? null;
    this.#db = db;
    this.#rollback = opened?.rollback ?? true;
    this.file = db === null ? null : opts.file;
    this.#opts = opts;
  }

  /**
   * Open `opts.file` (created if missing). Never throws: a file that is not a database (or fails its
   * first read) is renamed `<file>.corrupt-<time>` and a fresh one started; a file that cannot be
   * opened at all (its directory missing or read-only) means nothing is kept. Both with a warning.
   */
  static async open(opts: StateFileOptions): Promise<StateFile> {
    if (opts.file === null) return new StateFile(null, opts);
    const file = opts.file;
    try {
      return new StateFile(await openWaiting(file), opts);
    } catch (first) {
      let err = first;
      // Locked all along by another process (a sibling worker writing, the other side of an upgrade): not
      // a corrupt file, never set aside; this process keeps nothing rather than wait longer.
      if (isBusy(err)) {
        opts.log.warn(
          { file, err: errorText(err) },
          'state file locked by another process: starting with empty state, nothing is kept across restarts',
        );
        return new StateFile(null, opts);
      }
      const aside = `${file}.corrupt-${new Date(opts.clock.wallMs()).toISOString().replace(/[:.]/g, '-')}`;
      const moved = await rename(file, aside).then(
        () => true,
        () => false,
      );
      if (moved) {
        // Its journal (or an older version's write-ahead log and index) belongs to the file set aside.
        for (const ext of ['-journal', '-wal', '-shm']) await rename(file + ext, aside + ext).catch(() => {});
        try {
          const why = errorText(err);
          opts.log.warn(
            { file, err: why, setAside: aside },
            'state file unreadable: set aside, starting with empty state',
          );
          return new StateFile(await openWaiting(file), opts);
        } catch (again) {
          err = again;
        }
      }
      const why = errorText(err);
      opts.log.warn(
        { file, err: why },
        'state file cannot be opened: starting with empty state, nothing is kept across restarts (see state.file)',
      );
      return new StateFile(null, opts);
    }
  }

  /**
   * Read what the file holds into the tables (start-up, before the listeners accept), then track
   * their changes and start writing them every flushMs. Each part is read on its own: a bad part is
   * skipped with a warning, the others still come back.
   */
  load(targets: StateTargets): RestoreSummary {
    const t: Tables = {
      bans: targets.bans instanceof BanTable ? targets.bans : null,
      level: targets.level instanceof AttackLevelMonitor ? targets.level : null,
      replay: targets.replay,
      sessions: targets.sessions instanceof MemorySessionStore ? targets.sessions : null,
    };
    this.#t = t;
    this.#loadedWallMs = this.#opts.clock.wallMs();
    const summary: RestoreSummary = {
      bans: 0,
      activeBans: 0,
      sessions: 0,
      replayIds: 0,
      level: null,
      warm: false,
      familiarPrefixes: 0,
      readMs: 0,
    };
    const startedMs = performance.now();
    const db = this.#db;
    if (db === null) return summary;
    const { clock, log } = this.#opts;
    const part = (name: string, read: () => void) => {
      try {
        read();
      } catch (err) {
        const why = errorText(err);
        log.warn(
          { file: this.file, part: name, err: why },
          'state file: a part could not be read back, it starts empty',
        );
      }
    };
    const wall = clock.wallMs();
    part('bans', () => {
      if (t.bans === null) return;
      const sql = 'SELECT key, target, reason, rule, by, since_ms, until_ms, count, level FROM bans ORDER BY since_ms';
      const rows = db.prepare(sql).all() as Record<string, unknown>[];
      const r = t.bans.restore(rows.map(banRecord));
      summary.bans = r.restored;
      summary.activeBans = r.active;
      // Rows not taken back (expired past escalation, over the table's cap): rewritten from the table.
      t.bans.trackChanges();
      if (t.bans.size < rows.length) t.bans.changesLost();
    });
    part('level', () => {
      if (t.level === null) return;
      const learned = readMeta(db, 'learned');
      const familiar = readMeta(db, 'familiar');
      const cur = readBlob(db, 'familiar.current');
      const prev = readBlob(db, 'familiar.previous');
      if (learned !== null) {
        type Gen = { inserted: number; createdWallMs: number };
        const f = familiar as { bitCount: number; current: Gen; previous: Gen } | null;
        const fam: FamiliarState | null =
          f !== null && cur !== null && prev !== null
            ? { bitCount: f.bitCount, current: { ...f.current, bits: cur }, previous: { ...f.previous, bits: prev } }
            : null;
        const withFamiliar = fam === null ? undefined : { state: fam, nowMs: clock.now(), wallMs: wall };
        t.level.traffic.restoreLearned(learned as LearnedState, withFamiliar);
      }
      summary.warm = t.level.warm;
      summary.familiarPrefixes = t.level.traffic.familiar.size;
      const level = readMeta(db, 'level');
      if (level !== null) t.level.restoreState(level as LevelState, targets.localStore === true);
      summary.level = t.level.override?.level ?? ['calm', 'elevated', 'under_attack'][t.level.level]!;
    });
    part('replay', () => {
      if (t.replay === null) return;
      const starts = readMeta(db, 'replay') as { currentStartMs: number; previousStartMs: number | null } | null;
      if (starts === null) return;
      const since = starts.previousStartMs ?? starts.currentStartMs;
      const sql = 'SELECT id, used_ms FROM replay WHERE used_ms >= ?';
      const rows = db.prepare(sql).all(Number.isFinite(since) ? since : 0) as { id: string; used_ms: number }[];
      const ids = rows.map((r) => [String(r.id), Number(r.used_ms)] as const);
      const { currentStartMs, previousStartMs } = starts;
      const state: ReplayState = { currentStartMs, previousStartMs, ids };
      summary.replayIds = t.replay.restore(state, wall);
    });
    part('sessions', () => {
      if (t.sessions === null) return;
      const sql =
        'SELECT hash, expires_ms, window_start_ms, shared FROM sessions WHERE expires_ms > ? ORDER BY expires_ms';
      const rows = db.prepare(sql).all(wall) as Record<string, unknown>[];
      summary.sessions = t.sessions.restore(
        rows.map(
          (r): SessionRecord => ({
            hash: String(r.hash),
            expiresMs: Number(r.expires_ms),
            windowStartMs: Number(r.window_start_ms),
            shared: Number(r.shared) === 1,
          }),
        ),
        wall,
      );
    });
    t.bans?.trackChanges();
    t.replay?.trackChanges();
    t.sessions?.trackChanges();
    summary.readMs = Math.round(performance.now() - startedMs);
    this.#lastWarm = summary.warm;
    this.#lastLearnedMs = clock.now();
    // `attackLevel`, not `level`: a `level` field would replace the record's own log level in the JSON line.
    const { level: attackLevel, ...counts } = summary;
    log.info({ file: this.file, ...counts, attackLevel }, 'state restored from the state file');
    const every = this.#opts.flushMs ?? FLUSH_MS;
    this.#timer = setInterval(() => this.flush(), every);
    this.#timer.unref();
    return summary;
  }

  /**
   * Write what changed since the last write (at most `rows` rows per table), in one transaction.
   * Never throws: a failure (disk full, read-only file) is logged, and the tables hand everything over
   * again at the next attempt, RETRY_MS later.
   */
  flush(force = false, rows = ROWS_PER_WRITE): void {
    const db = this.#db;
    if (db === null || this.#closed) return;
    const { clock, log } = this.#opts;
    const now = clock.now();
    if (!force && now - this.#failedAtMs < RETRY_MS) return;
    const t = this.#t;
    const wall = clock.wallMs();
    let began = false;
    let taken = false;
    try {
      // Left in WAL by an older version that had it open at our start: switch as soon as it let go.
      if (!this.#rollback) this.#rollback = switchToRollback(db);
      // The write lock first (BUSY_MS at most): a file locked by another process costs no changes taken.
      db.exec('BEGIN IMMEDIATE');
      began = true;
      taken = true;
      const bans = t.bans?.takeChanges(rows);
      const replay = t.replay?.takeChanges(rows);
      const sessions = t.sessions?.takeChanges(rows);
      if (bans !== undefined) {
        if (bans.all) db.exec('DELETE FROM bans');
        const put = db.prepare(
          'INSERT OR REPLACE INTO bans (key, target, reason, rule, by, since_ms, until_ms, count, level) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        );
        for (const b of bans.saved) {
          const since = Math.round(b.sinceWallMs);
          put.run(b.key, b.target, b.reason, b.ruleId, b.by, since, b.untilWallMs, b.count, b.level);
        }
        const del = db.prepare('DELETE FROM bans WHERE key = ?');
        for (const k of bans.removed) del.run(k);
      }
      if (replay !== undefined) {
        if (replay.all) db.exec('DELETE FROM replay');
        const put = db.prepare('INSERT OR REPLACE INTO replay (id, used_ms) VALUES (?, ?)');
        for (const [id, usedMs] of replay.ids) put.run(id, Math.floor(usedMs));
        writeMeta(db, 'replay', { currentStartMs: replay.currentStartMs, previousStartMs: replay.previousStartMs });
        // Ids used before the oldest generation kept are refused by their issue time anyway.
        const oldest = replay.previousStartMs;
        if (oldest !== null) db.prepare('DELETE FROM replay WHERE used_ms < ?').run(Math.floor(oldest));
      }
      if (sessions !== undefined) {
        if (sessions.all) db.exec('DELETE FROM sessions');
        const put = db.prepare(
          'INSERT OR REPLACE INTO sessions (hash, expires_ms, window_start_ms, shared) VALUES (?, ?, ?, ?)',
        );
        for (const s of sessions.saved)
          put.run(s.hash, Math.round(s.expiresMs), Math.round(s.windowStartMs), s.shared ? 1 : 0);
        const del = db.prepare('DELETE FROM sessions WHERE hash = ?');
        for (const h of sessions.removed) del.run(h);
        if (now - this.#lastPruneMs >= PRUNE_EVERY_MS) {
          this.#lastPruneMs = now;
          db.prepare('DELETE FROM sessions WHERE expires_ms <= ?').run(wall);
        }
      }
      if (t.level !== null) {
        // Every write (a few hundred bytes): its time says how long the process was down.
        writeMeta(db, 'level', t.level.exportState());
        const warm = t.level.warm;
        if (force || warm !== this.#lastWarm || now - this.#lastLearnedMs >= LEARNED_EVERY_MS) {
          this.#lastWarm = warm;
          this.#lastLearnedMs = now;
          writeMeta(db, 'learned', t.level.traffic.exportLearned());
          const f = t.level.traffic.familiar.export(now, wall);
          const gen = (g: { inserted: number; createdWallMs: number }) => ({
            inserted: g.inserted,
            createdWallMs: g.createdWallMs,
          });
          writeMeta(db, 'familiar', { bitCount: f.bitCount, current: gen(f.current), previous: gen(f.previous) });
          writeMeta(db, 'familiar.current', {}, f.current.bits);
          writeMeta(db, 'familiar.previous', {}, f.previous.bits);
        }
      }
      db.exec('COMMIT');
      this.writes++;
      if (this.#failedAtMs !== -Infinity) log.warn({ file: this.file }, 'state file: writing works again');
      this.#failedAtMs = -Infinity;
    } catch (err) {
      if (began) {
        try {
          db.exec('ROLLBACK');
        } catch {
          // the transaction is gone already
        }
      }
      // Whatever was taken is written whole at the next attempt.
      if (taken) {
        t.bans?.changesLost();
        t.replay?.changesLost();
        t.sessions?.changesLost();
        this.#lastLearnedMs = -Infinity;
      }
      // Another process holds the file (a sibling worker's write, an upgrade's other side): the next
      // write, FLUSH_MS later, tries again; not a failure.
      if (isBusy(err)) {
        this.busy++;
        return;
      }
      this.failures++;
      this.#opts.onWriteFailure?.();
      if (this.#failedAtMs === -Infinity)
        log.error(
          { file: this.file, err: errorText(err), retryInMs: RETRY_MS },
          'state file: writing failed; the request path is not affected, state since the last write would not survive a crash',
        );
      this.#failedAtMs = now;
    }
  }

  /**
   * The old process of an upgrade, told to hand over (SIGUSR2): write what changed now rather than at
   * the next tick, and leave a marker the successor looks for (followHandover), so that a ban made in
   * the last 2 s before the hand-over is enforced by the successor. close() writes the marker again
   * once the drain is over (what changed meanwhile).
   */
  handOver(): void {
    this.#handedOver = true;
    this.flush(true);
    this.#mark('handover');
  }

  #mark(phase: 'handover' | 'drained'): void {
    const db = this.#db;
    if (db === null || this.#closed) return;
    try {
      writeMeta(db, 'handover', { pid: process.pid, phase, atMs: this.#opts.clock.wallMs() });
    } catch (err) {
      // Locked or refused: the successor still merges at the next marker, or keeps what it read.
      this.#opts.log.warn({ file: this.file, err: errorText(err) }, 'state file: the hand-over marker was not written');
    }
  }

  /**
   * The successor of an upgrade (or a new worker beside old ones): look for the old process's hand-over
   * marker every second and, at each new one, merge what the old process wrote since shortly before this
   * one read the file. Stops 10 minutes after the first hand-over seen: under `--workers` each old
   * worker writes its own markers (one `drained` is not the last), and a look is one small SELECT.
   */
  followHandover(): void {
    if (this.#db === null || this.#follow !== null || this.#closed) return;
    let handoverAtMs = Infinity;
    this.#follow = setInterval(() => {
      const marker = this.#readMarker();
      if (marker === null) return;
      if (marker.pid !== process.pid && marker.atMs >= this.#loadedWallMs) {
        const key = `${marker.pid}:${marker.phase}:${marker.atMs}`;
        if (key !== this.#lastMarker) {
          this.#lastMarker = key;
          handoverAtMs = Math.min(handoverAtMs, marker.atMs);
          const merged = this.merge();
          this.#opts.log.info(
            { file: this.file, from: marker.pid, phase: marker.phase, ...merged },
            'state merged from the process handing over',
          );
        }
      }
      if (this.#opts.clock.wallMs() - handoverAtMs > HANDOVER_FOLLOW_MS) this.#stopFollowing();
    }, HANDOVER_POLL_MS);
    this.#follow.unref();
  }

  #stopFollowing(): void {
    if (this.#follow !== null) clearInterval(this.#follow);
    this.#follow = null;
  }

  #readMarker(): { pid: number; phase: string; atMs: number } | null {
    const db = this.#db;
    if (db === null) return null;
    try {
      const m = readMeta(db, 'handover') as { pid?: unknown; phase?: unknown; atMs?: unknown } | null;
      if (m === null || typeof m.pid !== 'number' || typeof m.atMs !== 'number') return null;
      return { pid: m.pid, phase: String(m.phase), atMs: m.atMs };
    } catch {
      return null; // locked by the writer now: the next poll
    }
  }

  /**
   * Add what another process wrote since shortly before this one read the file: bans made since (an
   * entry this process has is kept as it is) and used challenge solutions. Only what is new is read
   * (a few rows: the old process's last seconds), never the whole file.
   */
  merge(): { bans: number; replayIds: number } {
    const db = this.#db;
    const out = { bans: 0, replayIds: 0 };
    if (db === null || this.#closed) return out;
    const t = this.#t;
    const since = this.#loadedWallMs - MERGE_MARGIN_MS;
    const wall = this.#opts.clock.wallMs();
    try {
      if (t.bans !== null) {
        const sql =
          'SELECT key, target, reason, rule, by, since_ms, until_ms, count, level FROM bans WHERE since_ms >= ? ORDER BY since_ms';
        const rows = db.prepare(sql).all(since) as Record<string, unknown>[];
        out.bans = t.bans.restore(rows.map(banRecord)).restored;
      }
      if (t.replay !== null) {
        const rows = db.prepare('SELECT id, used_ms FROM replay WHERE used_ms >= ?').all(since) as {
          id: string;
          used_ms: number;
        }[];
        for (const r of rows) if (t.replay.use(String(r.id), Number(r.used_ms), wall)) out.replayIds++;
      }
    } catch (err) {
      this.#opts.log.warn({ file: this.file, err: errorText(err) }, 'state file: merging the hand-over failed');
    }
    return out;
  }

  /** A last write, then close the file (stop). */
  close(): void {
    if (this.#closed) return;
    this.#stopFollowing();
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    // Everything left, however long it takes: the process is stopping. A file another process holds
    // locked gets a few more tries (BUSY_MS each, ≤ 1 s).
    for (let i = 0; i < 20; i++) {
      const busy = this.busy;
      this.flush(true, Infinity);
      if (this.busy === busy) break;
    }
    // The successor merges once more: what this process changed while it drained.
    if (this.#handedOver) this.#mark('drained');
    this.#closed = true;
    try {
      this.#db?.close();
    } catch {
      // closing a file that failed is not worth a stop's failure
    }
    this.#db = null;
  }
}

/**
 * Open the state file `opts.file` names and read it back into the tables (start-up, before the
 * listeners accept); changes are written every 2 s from then on, and at close().
 *
 * @example
 *   const file = resolveStateFile(config.state.file, configFile);
 *   const state = await openStateFile({ file, log, clock }, { bans, level, replay, sessions });
 *   // … stop():
 *   state.close();
 */
export async function openStateFile(opts: StateFileOptions, targets: StateTargets): Promise<StateFile> {
  const state = await StateFile.open(opts);
  state.load(targets);
  return state;
}

/** openChecked, tried again while another process holds the lock (SQLITE_BUSY), BUSY_MS apart. */
async function openWaiting(file: string): Promise<{ db: DatabaseSync; rollback: boolean }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return openChecked(file);
    } catch (err) {
      if (!isBusy(err) || attempt >= OPEN_ATTEMPTS) throw err;
      await new Promise((r) => setTimeout(r, BUSY_MS));
    }
  }
}

/**
 * Open, create the tables, and check the file: one that is not a database, or is torn (a power cut
 * with synchronous=OFF), fails here, not later. The check reads every page once: ~65 ms for a full
 * file (100 000 bans, 100 000 sessions, 200 000 used solutions, 36 MB).
 */
function openChecked(file: string): { db: DatabaseSync; rollback: boolean } {
  const opened = openSqlite(file, 'OFF');
  const db = opened.db;
  try {
    db.exec(SCHEMA);
    const check = db.prepare('PRAGMA quick_check(1)').get() as { quick_check?: string } | undefined;
    if (check?.quick_check !== 'ok') throw new Error(`integrity check: ${String(check?.quick_check)}`);
    const format = readMeta(db, 'format') as { version?: number } | null;
    if (format === null) writeMeta(db, 'format', { version: FORMAT });
    else if (format.version !== FORMAT)
      throw new Error(`state file format ${String(format.version)}, this version reads ${FORMAT}`);
    db.prepare('SELECT COUNT(*) FROM bans').get();
    return opened;
  } catch (err) {
    db.close();
    throw err;
  }
}

function banRecord(row: Record<string, unknown>): BanRecord {
  return {
    key: String(row.key),
    target: String(row.target),
    reason: String(row.reason),
    ruleId: String(row.rule),
    by: String(row.by),
    sinceWallMs: Number(row.since_ms),
    untilWallMs: Number(row.until_ms),
    count: Number(row.count),
    level: Number(row.level),
  };
}

function readMeta(db: DatabaseSync, key: string): unknown {
  const row = db.prepare('SELECT json FROM meta WHERE key = ?').get(key) as { json: string } | undefined;
  return row === undefined ? null : (JSON.parse(row.json) as unknown);
}

function readBlob(db: DatabaseSync, key: string): Uint8Array | null {
  const row = db.prepare('SELECT blob FROM meta WHERE key = ?').get(key) as { blob: Uint8Array | null } | undefined;
  return row?.blob ?? null;
}

function writeMeta(db: DatabaseSync, key: string, value: unknown, blob: Uint8Array | null = null): void {
  db.prepare('INSERT OR REPLACE INTO meta (key, json, blob) VALUES (?, ?, ?)').run(key, JSON.stringify(value), blob);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
