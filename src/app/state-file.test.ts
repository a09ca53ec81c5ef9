import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { DatabaseSync } from 'node:sqlite';
import { createManualClock, type Clock } from '../core/clock.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { createMetrics } from '../core/metrics.ts';
import { validateConfig } from '../config/load.ts';
import { compileRuntime } from '../pipeline/runtime.ts';
import { AttackLevel } from '../pipeline/env.ts';
import { BanTable } from '../phases/ban/table.ts';
import { AttackLevelMonitor } from '../phases/level/monitor.ts';
import { hashPair } from '../phases/level/familiar.ts';
import { ReplayGuard } from '../phases/challenge/replay.ts';
import { MemorySessionStore } from '../phases/challenge/sessions.ts';
import { openStateFile, resolveStateFile, ROWS_PER_WRITE, StateFile, STATE_FILE_NAME } from './state-file.ts';

function capture(): { lines: Record<string, unknown>[]; log: Logger } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, log: createLogger('info', stream) };
}

const flushLogs = () => new Promise((r) => setImmediate(r));

/** One "process": its tables on its own clock (a restart is a new one, later on the wall clock). */
function node(clock: Clock, bans: Record<string, unknown> = {}) {
  const config = validateConfig({
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'o', url: 'http://127.0.0.1:9' }],
    routes: [{ name: 'site', path: '/*', upstream: 'o' }],
    defense: { bans, level: { warmupSeconds: 5 } },
  });
  const rt = compileRuntime(config).runtime;
  const getRuntime = () => rt;
  const { lines, log } = capture();
  const alerts: string[] = [];
  const sink = { raise: (_k: string, m: string) => void alerts.push(m) };
  const level = new AttackLevelMonitor({ getRuntime, metrics: createMetrics(), log, clock, alerts: sink });
  return {
    lines,
    log,
    alerts,
    bans: new BanTable(clock, { getRuntime, log }),
    level,
    replay: new ReplayGuard(1000, 60_000, clock.wallMs()),
    sessions: new MemorySessionStore(100, 3600),
  };
}

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rempart-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('state.file: auto is $STATE_DIRECTORY, else beside the config file, else nothing; off is nothing', () => {
  assert.equal(resolveStateFile('off', '/etc/rempart/rempart.yaml', { STATE_DIRECTORY: '/var/lib/rempart' }), null);
  const systemd = { STATE_DIRECTORY: '/var/lib/rempart:/var/lib/other' };
  assert.equal(resolveStateFile('auto', '/etc/rempart/rempart.yaml', systemd), `/var/lib/rempart/${STATE_FILE_NAME}`);
  assert.equal(resolveStateFile('auto', '/srv/gw/rempart.yaml', {}), `/srv/gw/${STATE_FILE_NAME}`);
  assert.equal(resolveStateFile('auto', null, {}), null, 'a command line without a config file');
  assert.equal(
    resolveStateFile('auto', null, { STATE_DIRECTORY: '/var/lib/rempart' }),
    `/var/lib/rempart/${STATE_FILE_NAME}`,
  );
  const byCode = resolveStateFile('auto', undefined, { STATE_DIRECTORY: '/var/lib/rempart' });
  assert.equal(byCode, null, 'a gateway built by code keeps nothing unless asked');
  assert.equal(resolveStateFile('/data/s.db', undefined, {}), '/data/s.db');
  assert.equal(resolveStateFile('s.db', undefined, {}), path.resolve('s.db'));
});

test('bans, the level, its learned baselines and familiar prefixes, sessions and used solutions survive a restart', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const c1 = createManualClock(1000);
  const a = node(c1);
  const state1 = await openStateFile({ file, log: a.log, clock: c1 }, a);
  // An operator ban, an escalated offence ban (its second), a prefix, and one long expired.
  a.bans.ban('203.0.113.7', 600_000, 'abuse', '', 'operator:ann');
  a.bans.ban('198.51.100.0/24', 600_000, 'abuse', '', 'operator:ann');
  a.bans.ban('192.0.2.9', 1000, 'offences:rate_limit', 'r1', 'offences', true);
  c1.advance(2000);
  a.bans.ban('192.0.2.9', 1000, 'offences:rate_limit', 'r1', 'offences', true);
  a.bans.ban('192.0.2.50', 500, 'short', '', 'operator:ann');
  // The level: warm (calm ticks learned), a familiar prefix, then an operator's override.
  const h = new Uint32Array(2);
  hashPair('10.1.2', h);
  a.level.traffic.familiar.add(h[0]!, h[1]!, c1.now());
  for (let i = 0; i < 6; i++) {
    c1.advance(1000);
    a.level.tick();
  }
  assert.equal(a.level.warm, true);
  a.level.setOverride('under_attack', 'test', 'ann');
  // A used solution, and a session the origin granted.
  assert.equal(a.replay.use('sol-1', c1.wallMs() - 1000, c1.wallMs()), true);
  a.sessions.grant('session-id-1', c1.wallMs());
  state1.flush();
  assert.equal(state1.failures, 0);
  // kill -9: no close(), the second write never happens.
  const banned = a.bans.entryFor('192.0.2.9')!;
  assert.equal(banned.level, 1);

  // The new process starts 3 s later (wall clock), its monotonic clock anywhere.
  const c2 = createManualClock(1000 + 2000 + 3000 + 6000);
  const b = node(c2);
  const state2 = await openStateFile({ file, log: b.log, clock: c2 }, b);
  t.after(() => state2.close());
  assert.equal(b.bans.isBanned('203.0.113.7'), true);
  assert.equal(b.bans.isBanned('198.51.100.77'), true, 'the /24');
  assert.equal(b.bans.isBanned('192.0.2.50'), false, 'expired before the restart');
  assert.ok(b.bans.entryFor('192.0.2.50') !== null, 'but remembered for escalation');
  const e = b.bans.entryFor('192.0.2.9')!;
  assert.equal(e.count, 2);
  assert.equal(e.level, 1);
  // Its escalation history holds: the next offence ban is the third step.
  c2.advance(5000);
  b.bans.ban('192.0.2.9', 1000, 'offences:rate_limit', 'r1', 'offences', true);
  assert.equal(b.bans.entryFor('192.0.2.9')!.level, 2);
  assert.equal(b.level.level, AttackLevel.underAttack);
  assert.equal(b.level.override?.by, 'ann');
  assert.equal(b.level.warm, true, 'no new warm-up');
  assert.equal(b.level.traffic.familiar.has(h[0]!, h[1]!), true, 'familiar prefixes kept');
  assert.equal(b.replay.use('sol-1', c2.wallMs() - 5000, c2.wallMs()), false, 'a replayed solution stays refused');
  assert.equal(b.sessions.isKnown('session-id-1', c2.wallMs()), true);
  await flushLogs();
  const restored = b.lines.find((l) => l.msg === 'state restored from the state file')!;
  assert.equal(restored.activeBans, 2);
  assert.equal(restored.attackLevel, 'under_attack');
  assert.equal(restored.level, 'info', "the record's own level is not overwritten");
  assert.ok(
    b.alerts.some((m) => m.includes('calm → under_attack')),
    'the restored level is alerted like any change',
  );
  state1.close();
});

test('the detected level comes back less one step per fallSeconds down, and bans that ended long ago do not', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const c1 = createManualClock(0);
  const a = node(c1, { escalation: { windowMs: 60_000 } });
  const s1 = await openStateFile({ file, log: a.log, clock: c1 }, a);
  a.level.detected = AttackLevel.underAttack;
  a.bans.ban('192.0.2.1', 1000, 'x', '', 'operator:a');
  s1.flush();
  s1.close();
  // Down 25 s: fallSeconds is 20, so one step (under attack → elevated); the ban ended 24 s ago.
  const c2 = createManualClock(25_000);
  const b = node(c2, { escalation: { windowMs: 60_000 } });
  const s2 = await openStateFile({ file, log: b.log, clock: c2 }, b);
  assert.equal(b.level.detected, AttackLevel.elevated);
  assert.equal(b.level.level, AttackLevel.elevated);
  assert.ok(b.bans.entryFor('192.0.2.1') !== null);
  s2.close();
  // Down 5 min more: past the escalation window, the ban is of no use; the level is calm.
  const c3 = createManualClock(25_000 + 300_000);
  const c = node(c3, { escalation: { windowMs: 60_000 } });
  const s3 = await openStateFile({ file, log: c.log, clock: c3 }, c);
  assert.equal(c.bans.entryFor('192.0.2.1'), null);
  assert.equal(c.level.level, AttackLevel.calm);
  s3.close();
});

test('a corrupt state file is set aside: the gateway starts empty with a warning, and keeps state again', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, STATE_FILE_NAME);
  writeFileSync(file, Buffer.from('this is not a database at all, just garbage bytes \u0000\u0001\u00ff'.repeat(200)));
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await openStateFile({ file, log: a.log, clock }, a);
  await flushLogs();
  const warn = a.lines.find((l) => l.msg === 'state file unreadable: set aside, starting with empty state');
  assert.ok(warn !== undefined, JSON.stringify(a.lines));
  assert.ok(
    readdirSync(dir).some((f) => f.startsWith(`${STATE_FILE_NAME}.corrupt-`)),
    'kept for a look',
  );
  a.bans.ban('203.0.113.1', 60_000, 'x', '', 'operator:a');
  s.close();
  const b = node(clock);
  const s2 = await openStateFile({ file, log: b.log, clock }, b);
  assert.equal(b.bans.isBanned('203.0.113.1'), true);
  s2.close();
});

test('a state file that cannot be opened (no such directory): nothing kept, a warning, no failure', async (t) => {
  const file = path.join(tempDir(t), 'missing-dir', STATE_FILE_NAME);
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await StateFile.open({ file, log: a.log, clock });
  a.bans.ban('203.0.113.1', 60_000, 'x', '', 'operator:a');
  s.load(a);
  s.flush();
  s.close();
  assert.equal(s.file, null);
  await flushLogs();
  assert.ok(a.lines.some((l) => String(l.msg).startsWith('state file cannot be opened')));
});

test('a part that cannot be read back starts empty; the others still come back', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await openStateFile({ file, log: a.log, clock }, a);
  a.bans.ban('203.0.113.1', 60_000, 'x', '', 'operator:a');
  a.level.setOverride('elevated', 'x', 'ann');
  s.close();
  const db = new DatabaseSync(file);
  db.prepare("UPDATE meta SET json = '{not json' WHERE key = 'level'").run();
  db.close();
  const b = node(clock);
  const s2 = await openStateFile({ file, log: b.log, clock }, b);
  assert.equal(b.bans.isBanned('203.0.113.1'), true);
  assert.equal(b.level.level, AttackLevel.calm);
  await flushLogs();
  assert.ok(b.lines.some((l) => l.part === 'level'));
  s2.close();
});

test("rows stay bounded by the tables' caps: a smaller maxEntries after a restart trims the file too", async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const clock = createManualClock(0);
  const a = node(clock, { maxEntries: 1000 });
  const s = await openStateFile({ file, log: a.log, clock }, a);
  for (let i = 0; i < 300; i++) a.bans.ban(`10.0.${i >> 8}.${i & 255}`, 60_000, 'x', '', 'offences');
  s.flush();
  // Evictions (a full table) are written as deletions.
  for (let i = 0; i < 300; i++) a.bans.unban(`10.0.${i >> 8}.${i & 255}`, 'operator:a');
  for (let i = 0; i < 200; i++) a.bans.ban(`10.1.${i >> 8}.${i & 255}`, 60_000, 'x', '', 'offences');
  s.close();
  const count = () => {
    const db = new DatabaseSync(file);
    const n = Number((db.prepare('SELECT COUNT(*) AS n FROM bans').get() as { n: number }).n);
    db.close();
    return n;
  };
  assert.equal(count(), 200);
  const b = node(clock, { maxEntries: 100 });
  const s2 = await openStateFile({ file, log: b.log, clock }, b);
  assert.equal(b.bans.size, 100);
  s2.close();
  assert.equal(count(), 100);
});

test('a backlog is written ROWS_PER_WRITE rows at a time, and a failed write hands everything over again', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await openStateFile({ file, log: a.log, clock }, a);
  const rows = (table: string) => {
    const db = new DatabaseSync(file);
    const n = Number((db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n);
    db.close();
    return n;
  };
  const n = ROWS_PER_WRITE + 2000;
  for (let i = 0; i < n; i++) a.bans.ban(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, 60_000, 'x', '', 'offences');
  s.flush();
  assert.equal(rows('bans'), ROWS_PER_WRITE);
  s.flush();
  assert.equal(rows('bans'), n);
  // A write that failed: the tables hand everything over again (the whole table, in chunks).
  a.bans.changesLost();
  a.bans.unban('10.0.0.0', 'operator:a');
  s.flush();
  s.flush();
  assert.equal(rows('bans'), n - 1);
  // More used solutions between two writes than the journal holds: both generations are written whole.
  for (let i = 0; i < 2100; i++) a.replay.use(`id-${i}`, clock.wallMs(), clock.wallMs());
  s.close();
  const b = node(clock);
  const s2 = await openStateFile({ file, log: b.log, clock }, b);
  t.after(() => s2.close());
  assert.equal(b.bans.size, n - 1);
  assert.equal(b.replay.size, a.replay.size);
  assert.equal(b.replay.use('id-2099', clock.wallMs(), clock.wallMs()), false);
});

test('no memory map: a rollback journal (no -shm), a WAL file from an older version switched once it lets go', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, STATE_FILE_NAME);
  // An older version's file, still open by it in WAL mode (the other side of an upgrade).
  const old = new DatabaseSync(file);
  old.exec(
    'PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, json TEXT NOT NULL, blob BLOB)',
  );
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await openStateFile({ file, log: a.log, clock }, a);
  t.after(() => s.close());
  a.bans.ban('203.0.113.7', 600_000, 'abuse', '', 'operator:ann');
  s.flush();
  assert.equal(s.failures, 0);
  const mode = () => {
    const db = new DatabaseSync(file);
    const m = (db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode;
    db.close();
    return m;
  };
  assert.equal(mode(), 'wal', 'left in WAL while the older version holds it');
  old.close();
  a.bans.ban('203.0.113.8', 600_000, 'abuse', '', 'operator:ann');
  s.flush();
  // Out of WAL for good (a rollback journal's mode is per connection: a new one reports its default).
  assert.notEqual(mode(), 'wal');
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('-shm') || f.endsWith('-wal')),
    [],
    'nothing left to map into memory',
  );
});

test('a file another process keeps locked: the write is put off to the next one, nothing is lost or rewritten', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const clock = createManualClock(0);
  const a = node(clock);
  const s = await openStateFile({ file, log: a.log, clock }, a);
  t.after(() => s.close());
  a.bans.ban('203.0.113.7', 600_000, 'abuse', '', 'operator:ann');
  // A sibling worker in the middle of its own write.
  const other = new DatabaseSync(file);
  other.exec('BEGIN IMMEDIATE');
  s.flush();
  assert.equal(s.busy, 1);
  assert.equal(s.failures, 0, 'not a failure: no 30 s wait, no error logged');
  other.exec('ROLLBACK');
  // The next write (FLUSH_MS later) carries the ban, and only what changed (not the whole table again).
  const changes = a.bans.takeChanges(Infinity);
  assert.equal(changes.all, false);
  assert.deepEqual(
    changes.saved.map((b) => b.key),
    ['203.0.113.7'],
  );
  a.bans.changesLost();
  s.flush();
  assert.equal(s.writes, 1);
  const n = Number((other.prepare('SELECT COUNT(*) AS n FROM bans').get() as { n: number }).n);
  other.close();
  assert.equal(n, 1);
  await flushLogs();
  assert.equal(a.lines.filter((l) => l.level === 'error').length, 0);
});

test('an upgrade: the old process writes at the hand-over, the successor merges what is new and keeps what it has', async (t) => {
  const file = path.join(tempDir(t), STATE_FILE_NAME);
  const clock = createManualClock(1000);
  const a = node(clock);
  const old = await openStateFile({ file, log: a.log, clock }, a);
  t.after(() => old.close());
  a.bans.ban('203.0.113.1', 600_000, 'early', '', 'operator:ann');
  old.flush();
  // The successor starts and reads the file; then the old process bans once more and hands over.
  const b = node(clock);
  const successor = await openStateFile({ file, log: b.log, clock }, b);
  t.after(() => successor.close());
  assert.equal(b.bans.size, 1);
  b.bans.ban('203.0.113.1', 1000, 'changed here', '', 'operator:bob');
  clock.advance(500);
  a.bans.ban('203.0.113.2', 600_000, 'late', '', 'operator:ann');
  assert.equal(a.replay.use('sol-late', clock.wallMs(), clock.wallMs()), true);
  assert.deepEqual(successor.merge(), { bans: 0, replayIds: 0 }, 'not written yet: the next write is 2 s away');
  old.handOver();
  assert.deepEqual(successor.merge(), { bans: 1, replayIds: 1 });
  assert.equal(b.bans.entryFor('203.0.113.2')?.reason, 'late');
  assert.equal(b.bans.entryFor('203.0.113.1')?.reason, 'changed here', 'what the successor has stays');
  assert.equal(b.replay.use('sol-late', clock.wallMs(), clock.wallMs()), false, 'the used solution stays used');
  assert.deepEqual(successor.merge(), { bans: 0, replayIds: 0 }, 'merging again adds nothing');
});
