// How Rempart opens its SQLite files (the audit trail, the state file): a rollback journal, nothing
// mapped into memory, a short lock wait.
//
// Why not WAL: its `-shm` index is a shared memory map, and when the kernel refuses a write fault on
// it (the file made immutable, a file system shut down or turned read-only after a disk error) the
// process gets SIGBUS and dies; Node cannot catch that. With `journal_mode=TRUNCATE` and
// `mmap_size=0` SQLite only calls read() and write(), and a refused write is an error it returns (the
// caller logs it and the gateway keeps serving). TRUNCATE rather than DELETE: the journal file stays
// (empty) between transactions, so a database whose directory or files turned read-only still reads.
//
// Several processes share a file (`--workers`, an upgrade's old and new process): a writer takes the
// lock at BEGIN IMMEDIATE and waits BUSY_MS at most (SQLite's busy handler sleeps on the event loop),
// and a caller that gets SQLITE_BUSY tries again at its next write instead of waiting longer.
import { DatabaseSync } from 'node:sqlite';

/** How long a write waits for another process's lock before giving up until the next write (ms). */
export const BUSY_MS = 50;

export type Synchronous = 'OFF' | 'NORMAL';

/**
 * Open `file` with a rollback journal and no memory map. Returns the database and whether it is in the
 * rollback journal already: a file another process (an older version) holds open in WAL mode stays in
 * WAL until that process lets go (switchToRollback() at each write tries again).
 */
export function openSqlite(file: string, synchronous: Synchronous): { db: DatabaseSync; rollback: boolean } {
  const db = new DatabaseSync(file, { timeout: BUSY_MS });
  try {
    db.exec(`PRAGMA mmap_size = 0; PRAGMA synchronous = ${synchronous};`);
    return { db, rollback: switchToRollback(db) };
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Put the file in the rollback journal (true once it is). Leaving WAL needs every other connection
 * gone: while an older version still holds the file it fails (SQLITE_BUSY), and the file stays in WAL.
 */
export function switchToRollback(db: DatabaseSync): boolean {
  try {
    const row = db.prepare('PRAGMA journal_mode = TRUNCATE').get() as { journal_mode?: string } | undefined;
    return row?.journal_mode === 'truncate' || row?.journal_mode === 'memory';
  } catch (err) {
    if (isBusy(err)) return false;
    throw err;
  }
}

/** SQLITE_BUSY or SQLITE_LOCKED (and their extended codes): another connection holds the lock. */
export function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | null)?.errcode;
  return typeof code === 'number' && ((code & 0xff) === 5 || (code & 0xff) === 6);
}
