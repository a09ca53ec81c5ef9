// The audit trail: operator actions, attack-level changes, bans, failovers and configuration reloads,
// with who, when, why and the node, in an embedded SQLite file (Node's built-in `node:sqlite`, no
// native addon). SQLite calls are synchronous, so nothing here runs on the request path: record()
// only appends to a bounded in-memory batch, written in one transaction by a timer; old rows are
// pruned by age (docs/admin-api.md#audit-trail).
//
//   record() ─► pending (≤ MAX_PENDING, oldest dropped and counted) ─► every FLUSH_MS: BEGIN; INSERT…; COMMIT
//   query()  ─► flush, then SELECT … ORDER BY id DESC LIMIT n       (admin API / dashboard only)
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { Logger } from '../core/log.ts';

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
}

const FLUSH_MS = 500;
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
  readonly #maxRows: number;
  /** Id of the last row written (ids only grow: AUTOINCREMENT). */
  #lastId = 0;
  /** Called after each event is queued (the dashboard's live feed); never throws into record(). */
  onRecord: ((kind: string, who: string, why: string) => void) | null = null;

  constructor(opts: AuditOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#maxRows = opts.maxRows ?? (opts.file === ':memory:' ? MAX_ROWS_MEMORY : MAX_ROWS_FILE);
    this.#db = new DatabaseSync(opts.file);
    this.#db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
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
    this.prune();
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
    this.#db.exec('BEGIN');
    try {
      for (const p of batch)
        this.#lastId = Number(this.#insert.run(p.atMs, node, p.kind, p.who, p.why, p.detail).lastInsertRowid);
      // Beyond maxRows the oldest go (a range delete on the primary key: cheap at every flush).
      if (this.#lastId > this.#maxRows) this.#trim.run(this.#lastId - this.#maxRows);
      this.#db.exec('COMMIT');
    } catch (err) {
      // SQLite rolls back by itself on some errors (a full disk, an I/O error): a ROLLBACK then
      // throws "no transaction is active" and would hide the error that says what went wrong.
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw err;
    }
    if (this.#dropped > 0) {
      this.#opts.log.warn(
        { dropped: this.#dropped },
        'audit: events dropped (more than the batch holds between two writes)',
      );
      this.#dropped = 0;
    }
    if (this.#now() - this.#lastPruneMs > PRUNE_EVERY_MS) this.prune();
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
    this.#flushSafely();
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
