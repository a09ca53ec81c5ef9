import { test } from 'node:test';
import assert from 'node:assert/strict';
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
