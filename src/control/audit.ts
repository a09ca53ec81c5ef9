// The audit trail: operator actions, attack-level changes, bans, failovers and configuration reloads,
// with who, when, why and the node, in an embedded SQLite file (Node's built-in `node:sqlite`, no
// native addon). SQLite calls are synchronous, so nothing here runs on the request path: record()
// only appends to a bounded in-memory batch, written in one transaction by a timer; old rows are
// pruned by age (docs/admin-api.md#audit-trail).
//
// A rollback journal, no memory map (src/core/sqlite.ts): a disk that refuses a write makes a batch fail
// and be logged, never kills the process (WAL's `-shm` map did, SIGBUS). synchronous=NORMAL: one fsync
// per batch (at most two a second, ~1 ms; bench/sqlite-journal.ts), so a power cut loses at most the
// last batch and never the trail: these rows are what an operator reads after the incident.
//
//   record() ─► pending (≤ MAX_PENDING, oldest dropped and counted) ─► every FLUSH_MS: BEGIN; INSERT…; COMMIT
//   query()  ─► flush, then SELECT … ORDER BY id DESC LIMIT n       (admin API / dashboard only)
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { Logger } from '../core/log.ts';
import { isBusy, openSqlite, switchToRollback } from '../core/sqlite.ts';

export interface AuditEvent {
  readonly id: number;
  /** Wall-clock ms. */
  readonly atMs: number;
  readonly time: string;
  readonly node: string;
  /** What happened: action, ban, unban, level_override, level_release, rule_approve, rule_reject, guard_mode, status_page, attack_level, failover, config_reload, alert kinds… */
  readonly kind: string;
  /** `operator:NAME` for an operator, `rempart` for the gateway itself. */
  readonly who: string;
  readonly why: string;
  readonly detail: Record<string, unknown>;
}

export interface AuditQuery {
  sinceMs?: number;
  kind?: string;
  limit?: number;
}

export interface AuditOptions {
  /** SQLite file, or ':memory:' (kept for the process only). */
  readonly file: string;
  readonly retentionDays: number;
  /** Rows kept at most, the oldest deleted first (default: MAX_ROWS_MEMORY or MAX_ROWS_FILE). */
  readonly maxRows?: number;
  readonly node: string;
  readonly log: Logger;
  readonly now?: () => number;
  /** Called for each batch that failed to be written (a metric); never throws into the trail. */
  readonly onWriteFailure?: () => void;
}

const FLUSH_MS = 500;
/** A batch that found the file locked by another process (SQLITE_BUSY) is tried again this much later. */
const BUSY_RETRY_MS = 250;
/** "Locked by another process" is logged once per this long at most. */
const BUSY_LOG_EVERY_MS = 60_000;
const PRUNE_EVERY_MS = 3_600_000;
/** Events waiting for the next flush at most; beyond, the oldest are dropped (and the drop logged). */
const MAX_PENDING = 10_000;
const MAX_WHY = 500;
const MAX_DETAIL_BYTES = 4096;
export const MAX_AUDIT_LIMIT = 1000;
/**
 * Rows kept at most: every automatic ban is a row, and an attacker rotating addresses (a /64 holds
 * 2^64) makes a ban each, so age alone does not bound the trail. About 250 bytes a row: 25 MB in
 * memory, 250 MB on disk. The oldest rows go first (docs/memory-budgets.md).
 */
export const MAX_ROWS_MEMORY = 100_000;
export const MAX_ROWS_FILE = 1_000_000;
/** Body fields never written to the trail, whatever an endpoint takes. */
const SECRET_KEY = /token|secret|password|authorization|cookie|key$/i;

interface Pending {
  atMs: number;
  kind: string;
  who: string;
  why: string;
  detail: string;
}

export class AuditTrail {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #trim: StatementSync;
  readonly #opts: AuditOptions;
  readonly #now: () => number;
  #pending: Pending[] = [];
  #dropped = 0;
  #timer: NodeJS.Timeout | null = null;
  #lastPruneMs = 0;
  #closed = false;
  /** In the rollback journal (false while an older version holds the file in WAL mode). */
  #rollback: boolean;
  #busyLoggedMs = -Infinity;
  /** Batches that failed to be written (disk full, read-only, I/O error): their events are lost. */
  writeFailures = 0;
  /** Batches put back because another process held the lock (written at a later attempt). */
  busyRetries = 0;
  readonly #maxRows: number;
  /** Id of the last row written (ids only grow: AUTOINCREMENT). */
  #lastId = 0;
  /** Rows written by this process and still kept (an upper bound: rows pruned by age are not counted). */
  get rowsHeld(): number {
    return Math.min(this.#lastId, this.#maxRows);
  }
  /** Called after each event is queued (the dashboard's live feed); never throws into record(). */
  onRecord: ((kind: string, who: string, why: string) => void) | null = null;

  constructor(opts: AuditOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#maxRows = opts.maxRows ?? (opts.file === ':memory:' ? MAX_ROWS_MEMORY : MAX_ROWS_FILE);
    const { db, rollback } = openSqlite(opts.file, 'NORMAL');
    this.#db = db;
    this.#rollback = rollback;
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        who TEXT NOT NULL,
        why TEXT NOT NULL,
        detail TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
      CREATE INDEX IF NOT EXISTS audit_kind ON audit (kind, at_ms);
    `);
    this.#insert = this.#db.prepare(
      'INSERT INTO audit (at_ms, node, kind, who, why, detail) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.#trim = this.#db.prepare('DELETE FROM audit WHERE id <= ?');
    try {
      this.prune();
    } catch (err) {
      // Another process writing now: the next flush prunes. Anything else (read-only) stops the start.
      if (!isBusy(err)) throw err;
      this.#lastPruneMs = -Infinity;
    }
  }

  get file(): string {
    return this.#opts.file;
  }

  /** Queue one event. Cheap, never throws, never touches the disk. */
  record(kind: string, who: string, why: string, detail: Record<string, unknown> = {}): void {
    if (this.#closed) return;
    if (this.#pending.length >= MAX_PENDING) {
      this.#pending.shift();
      this.#dropped++;
    }
    const w = String(why ?? '').slice(0, MAX_WHY);
    this.#pending.push({
      atMs: this.#now(),
      kind: String(kind).slice(0, 64),
      who: String(who).slice(0, 128),
      why: w,
      detail: boundedJson(detail),
    });
    this.#timer ??= setTimeout(() => this.#flushSafely(), FLUSH_MS).unref();
    try {
      this.onRecord?.(kind, who, w);
    } catch {
      // a listener's failure is not the trail's
    }
  }

  /** Write what is queued, in one transaction; prune once an hour. */
  flush(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#closed || this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    const node = this.#opts.node;
    try {
      // Left in WAL by an older version that had it open at our start: switch as soon as it let go.
      if (!this.#rollback) this.#rollback = switchToRollback(this.#db);
      // IMMEDIATE: the write lock now (waiting BUSY_MS at most), not at the first insert.
      this.#db.exec('BEGIN IMMEDIATE');
      for (const p of batch)
        this.#lastId = Number(this.#insert.run(p.atMs, node, p.kind, p.who, p.why, p.detail).lastInsertRowid);
      // Beyond maxRows the oldest go (a range delete on the primary key: cheap at every flush).
      if (this.#lastId > this.#maxRows) this.#trim.run(this.#lastId - this.#maxRows);
      this.#db.exec('COMMIT');
    } catch (err) {
      // SQLite rolls back by itself on some errors (a full disk, an I/O error): a ROLLBACK then
      // throws "no transaction is active" and would hide the error that says what went wrong.
      try {
        if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      } catch {
        // a rollback that fails too (the disk refuses every write) adds nothing to the first error
      }
      if (isBusy(err)) {
        this.#putBack(batch, err);
        return;
      }
      this.writeFailures++;
      try {
        this.#opts.onWriteFailure?.();
      } catch {
        // a metric's failure is not the trail's
      }
      throw err;
    }
    if (this.#dropped > 0) {
      this.#opts.log.warn(
        { dropped: this.#dropped },
        'audit: events dropped (more than the batch holds between two writes)',
      );
      this.#dropped = 0;
    }
    if (this.#now() - this.#lastPruneMs > PRUNE_EVERY_MS) {
      try {
        this.prune();
      } catch (err) {
        // The batch is written; a prune that failed (locked, disk) is tried again in an hour.
        if (!isBusy(err)) this.#opts.log.warn({ err, file: this.#opts.file }, 'audit: pruning old rows failed');
      }
    }
  }

  /**
   * Another process (a sibling worker, the other side of an upgrade) holds the file: the batch goes back
   * in front of what came since (within MAX_PENDING) and is tried again shortly, never waited for here.
   */
  #putBack(batch: Pending[], err: unknown): void {
    const merged = batch.concat(this.#pending);
    const over = merged.length - MAX_PENDING;
    if (over > 0) {
      merged.splice(0, over);
      this.#dropped += over;
    }
    this.#pending = merged;
    this.busyRetries++;
    this.#timer ??= setTimeout(() => this.#flushSafely(), BUSY_RETRY_MS).unref();
    const now = this.#now();
    if (now - this.#busyLoggedMs >= BUSY_LOG_EVERY_MS) {
      this.#busyLoggedMs = now;
      this.#opts.log.warn(
        { file: this.#opts.file, err, pending: merged.length },
        'audit: the trail is locked by another process; the batch is kept and written at the next attempt',
      );
    }
  }

  #flushSafely(): void {
    this.#timer = null;
    try {
      this.flush();
    } catch (err) {
      this.#opts.log.error({ err, file: this.#opts.file }, 'audit: writing the trail failed; these events are lost');
    }
  }

  /** Rows held now (written ones; tests and the memory budget). */
  get rows(): number {
    return Number((this.#db.prepare('SELECT COUNT(*) AS n FROM audit').get() as { n: number }).n);
  }

  /** Delete rows older than the retention. */
  prune(): number {
    this.#lastPruneMs = this.#now();
    const cutoff = this.#now() - this.#opts.retentionDays * 86_400_000;
    const r = this.#db.prepare('DELETE FROM audit WHERE at_ms < ?').run(cutoff);
    return Number(r.changes);
  }

  /** Newest first. */
  query(q: AuditQuery = {}): AuditEvent[] {
    this.#flushSafely();
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.sinceMs !== undefined) {
      where.push('at_ms >= ?');
      args.push(q.sinceMs);
    }
    if (q.kind !== undefined) {
      where.push('kind = ?');
      args.push(q.kind);
    }
    const limit = Math.max(1, Math.min(MAX_AUDIT_LIMIT, q.limit ?? 100));
    const sql = `SELECT id, at_ms, node, kind, who, why, detail FROM audit ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${limit}`;
    const rows = this.#db.prepare(sql).all(...args) as {
      id: number;
      at_ms: number;
      node: string;
      kind: string;
      who: string;
      why: string;
      detail: string;
    }[];
    return rows.map((r) => ({
      id: Number(r.id),
      atMs: Number(r.at_ms),
      time: new Date(Number(r.at_ms)).toISOString(),
      node: r.node,
      kind: r.kind,
      who: r.who,
      why: r.why,
      detail: safeParse(r.detail),
    }));
  }

  /** Write what is left and close the file. */
  close(): void {
    if (this.#closed) return;
    // Stopping: a batch another process keeps locked gets a few more tries (BUSY_MS each, ≤ 1 s).
    for (let i = 0; i < 20 && this.#pending.length > 0; i++) this.#flushSafely();
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#closed = true;
    this.#db.close();
  }
}

/** A copy of an API body fit for the trail: secret-looking keys replaced, size bounded. */
export function redact(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return typeof value === 'string' ? value.slice(0, 500) : value;
  if (depth > 4) return '…';
  if (Array.isArray(value)) return value.slice(0, 20).map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  let n = 0;
  for (const [k, v] of Object.entries(value)) {
    if (n++ >= 30) break;
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
}

function boundedJson(detail: Record<string, unknown>): string {
  try {
    const text = JSON.stringify(detail ?? {});
    return text.length > MAX_DETAIL_BYTES ? JSON.stringify({ truncated: true, bytes: text.length }) : text;
  } catch {
    return '{"unserializable":true}';
  }
}

function safeParse(text: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return {};
  }
}
