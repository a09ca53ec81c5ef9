// What a write costs the event loop in each SQLite journal mode (issue 18: the WAL's `-shm` is a shared
// memory map, and a disk that refuses a write to it kills the process with SIGBUS; a rollback journal
// maps nothing). node:sqlite is synchronous: the time one transaction takes is the time the event loop
// is blocked. Two workloads as the gateway writes them: an audit batch (20 rows, as every 0.5 s under
// a ban wave) and a state-file write (200 ban upserts and the level's few hundred bytes, every 2 s).
//
//   node bench/sqlite-journal.ts [--rounds 6] [--per-round 40] [--dir /var/lib/rempart]
//
// Modes run interleaved (ABCD, then rotated) in one process, each on its own file in --dir (default: a
// temp dir on the disk /tmp is on). Prints per mode and workload p50, p99 and max per transaction (ms),
// and the ratio of p50 to WAL + synchronous=NORMAL (what the files used before).
import { DatabaseSync } from 'node:sqlite';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo } from './lib/sysinfo.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '6' },
    'per-round': { type: 'string', default: '40' },
    dir: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const perRound = Number(values['per-round']);
const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'rempart-journal-'));

const MODES = [
  ['wal', 'NORMAL'],
  ['truncate', 'OFF'],
  ['truncate', 'NORMAL'],
  ['truncate', 'FULL'],
] as const;
type Mode = (typeof MODES)[number];
const name = (m: Mode) => `${m[0]} + synchronous=${m[1]}`;

interface Db {
  mode: Mode;
  db: DatabaseSync;
  audit: number[];
  state: number[];
  seq: number;
}

const dbs: Db[] = MODES.map((mode, i) => {
  const db = new DatabaseSync(join(dir, `m${i}.db`), { timeout: 50 });
  db.exec(`
    PRAGMA journal_mode = ${mode[0]};
    PRAGMA synchronous = ${mode[1]};
    PRAGMA mmap_size = 0;
    CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER, node TEXT, kind TEXT, who TEXT,
      why TEXT, detail TEXT);
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE INDEX audit_kind ON audit (kind, at_ms);
    CREATE TABLE meta (key TEXT PRIMARY KEY, json TEXT NOT NULL, blob BLOB);
    CREATE TABLE bans (key TEXT PRIMARY KEY, target TEXT, reason TEXT, rule TEXT, by TEXT, since_ms INTEGER,
      until_ms INTEGER, count INTEGER, level INTEGER);
  `);
  return { mode, db, audit: [], state: [], seq: 0 };
});

function auditBatch(d: Db): number {
  const ins = d.db.prepare('INSERT INTO audit (at_ms, node, kind, who, why, detail) VALUES (?, ?, ?, ?, ?, ?)');
  const t0 = performance.now();
  d.db.exec('BEGIN IMMEDIATE');
  for (let i = 0; i < 20; i++)
    ins.run(Date.now(), 'node-1', 'ban', 'rempart', `rate limit exceeded by 198.51.${d.seq % 256}.${i}`, '{"ttl":600}');
  d.db.exec('COMMIT');
  d.seq++;
  return performance.now() - t0;
}

function stateWrite(d: Db): number {
  const put = d.db.prepare(
    'INSERT OR REPLACE INTO bans (key, target, reason, rule, by, since_ms, until_ms, count, level) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const meta = d.db.prepare('INSERT OR REPLACE INTO meta (key, json, blob) VALUES (?, ?, ?)');
  const t0 = performance.now();
  d.db.exec('BEGIN IMMEDIATE');
  for (let i = 0; i < 200; i++) {
    const ip = `10.${(d.seq >> 8) & 255}.${d.seq & 255}.${i}`;
    put.run(ip, ip, 'rate', 'search', 'rempart', Date.now(), Date.now() + 600_000, 1, 0);
  }
  meta.run('level', JSON.stringify({ level: 2, history: new Array(20).fill({ at: Date.now(), level: 2 }) }), null);
  d.db.exec('COMMIT');
  d.seq++;
  return performance.now() - t0;
}

for (let r = 0; r < rounds; r++) {
  // Rotate the order each round so no mode always runs first (or right after another's fsync).
  const order = dbs.map((_, i) => dbs[(i + r) % dbs.length]!);
  for (const d of order) {
    for (let k = 0; k < perRound; k++) {
      d.audit.push(auditBatch(d));
      d.state.push(stateWrite(d));
    }
  }
}

const q = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const f = (ms: number) => ms.toFixed(ms < 1 ? 3 : 2);
const base = dbs[0]!;
const info = machineInfo();
const lines = [
  `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${info.cpuModel} × ${info.nproc} · Node ${info.node} · SQLite ${String((base.db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v)}`,
  `Command: \`node bench/sqlite-journal.ts --rounds ${rounds} --per-round ${perRound}${values.dir ? ` --dir ${values.dir}` : ''}\` (${rounds * perRound} transactions per mode and workload, interleaved)`,
  '',
  '| journal | audit batch (20 rows) p50 / p99 / max ms | vs WAL | state write (200 bans + level) p50 / p99 / max ms | vs WAL |',
  '| --- | --- | --- | --- | --- |',
  ...dbs.map(
    (d) =>
      `| ${name(d.mode)} | ${f(q(d.audit, 0.5))} / ${f(q(d.audit, 0.99))} / ${f(Math.max(...d.audit))} | ×${(q(d.audit, 0.5) / q(base.audit, 0.5)).toFixed(2)} | ${f(q(d.state, 0.5))} / ${f(q(d.state, 0.99))} / ${f(Math.max(...d.state))} | ×${(q(d.state, 0.5) / q(base.state, 0.5)).toFixed(2)} |`,
  ),
];
process.stdout.write(`${lines.join('\n')}\n`);
for (const d of dbs) d.db.close();
rmSync(dir, { recursive: true, force: true });
