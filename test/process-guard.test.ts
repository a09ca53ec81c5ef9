import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../src/core/log.ts';
import { LOG_EVERY_MS, rejectionLogger } from '../src/server/process-guard.ts';
import { memoryLog } from './helpers.ts';

test('an unhandled rejection is logged with its message and stack only, at most once per LOG_EVERY_MS with a count of the others', async () => {
  const { lines, stream } = memoryLog();
  const log = createLogger('info', stream);
  let t = 0;
  const handle = rejectionLogger(log, () => t);
  // ioredis puts the command and its arguments (client addresses, ban values) on its errors.
  const err = Object.assign(new Error('NOPERM this user has no permissions'), {
    command: { name: 'subscribe', args: ['203.0.113.9'] },
  });
  for (let i = 0; i < 100; i++) handle(err);
  t += LOG_EVERY_MS;
  handle('a plain string');
  await new Promise((r) => setImmediate(r));
  assert.equal(lines.length, 2);
  assert.equal(lines[0]!.level, 'error');
  assert.equal((lines[0]!.rejection as { message: string }).message, 'NOPERM this user has no permissions');
  assert.match(String((lines[0]!.rejection as { stack: string }).stack), /process-guard\.test\.ts/);
  assert.equal(lines[0]!.suppressed, 0);
  assert.ok(!JSON.stringify(lines).includes('203.0.113.9'), 'the command arguments are not logged');
  assert.equal(lines[1]!.suppressed, 99);
  assert.equal((lines[1]!.rejection as { message: string }).message, 'a plain string');
});
