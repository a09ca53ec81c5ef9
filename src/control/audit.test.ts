import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createLogger } from '../core/log.ts';
import { AuditTrail } from './audit.ts';
import { memoryLog } from '../../test/helpers.ts';

test('the audit trail keeps at most maxRows rows, the newest, whatever the number of automatic bans', () => {
  const { stream } = memoryLog();
  const trail = new AuditTrail({
    file: ':memory:',
    retentionDays: 90,
    node: 'n1',
    log: createLogger('info', stream),
    maxRows: 1000,
  });
  // An attacker rotating addresses inside a /64: one ban, so one row, per address.
  for (let i = 0; i < 5000; i++) {
    trail.record('ban', 'offences', 'offences:rate_limit', { target: `2001:db8::${i.toString(16)}` });
    if (i % 500 === 499) trail.flush();
  }
  trail.flush();
  assert.equal(trail.rows, 1000);
  const newest = trail.query({ limit: 1 })[0]!;
  assert.equal(newest.detail.target, '2001:db8::1387');
  assert.equal(trail.query({ limit: 1000 }).at(-1)!.detail.target, `2001:db8::${(4000).toString(16)}`);
});

test('without maxRows an in-memory trail keeps 100,000 rows', () => {
  const { stream } = memoryLog();
  const trail = new AuditTrail({ file: ':memory:', retentionDays: 90, node: 'n1', log: createLogger('info', stream) });
  for (let i = 0; i < 100_500; i++) {
    trail.record('ban', 'offences', 'offences:rate_limit', { target: `10.0.${(i >>> 8) & 255}.${i & 255}` });
    if (i % 5000 === 4999) trail.flush();
  }
  trail.flush();
  assert.equal(trail.rows, 100_000);
});

test('a trail another process keeps locked: the batch is kept and written at the next attempt, nothing lost', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rempart-audit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'audit.db');
  const { stream, lines } = memoryLog();
  const trail = new AuditTrail({ file, retentionDays: 90, node: 'n1', log: createLogger('info', stream) });
  t.after(() => trail.close());
  trail.record('ban', 'operator:ann', 'first', { target: '203.0.113.7' });
  trail.flush();
  // A sibling worker in the middle of its own write.
  const other = new DatabaseSync(file);
  other.exec('BEGIN IMMEDIATE');
  trail.record('ban', 'operator:ann', 'second', { target: '203.0.113.8' });
  trail.flush();
  assert.equal(trail.busyRetries, 1);
  assert.equal(trail.writeFailures, 0);
  other.exec('ROLLBACK');
  other.close();
  trail.record('ban', 'operator:ann', 'third', { target: '203.0.113.9' });
  trail.flush();
  assert.deepEqual(
    trail.query({ limit: 10 }).map((e) => e.why),
    ['third', 'second', 'first'],
  );
  assert.equal(lines.filter((l) => String(l.msg).includes('these events are lost')).length, 0);
  // A rollback journal: no WAL index mapped into memory (a refused write to it was SIGBUS).
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('-shm') || f.endsWith('-wal')),
    [],
  );
});
