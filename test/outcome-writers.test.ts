// One writer of a request's outcome (docs/architecture.md): decision, reason and the reply fields of
// the RequestContext are assigned only inside src/pipeline/context.ts, by its verbs (refuse, answer,
// serveStored, failUpstream, abort, cutShort). Everyone else calls a verb, so the log line, the
// metrics and the reply always tell one story. And each phase writes only its own slots of the
// context (the groups of src/pipeline/context.ts). Read from the source, as test/layers.test.ts does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { sourceFiles } from '../scripts/arch-report.ts';

const OWNER = 'src/pipeline/context.ts';
/** An assignment (not a comparison) to an outcome field, on any receiver. */
const WRITE = /\.(decision|reason|replyStatus|replyBody|replyHeaders|replyStored)\s*(=(?!=)|\+=|\|\|=|\?\?=)/;
/** Fields of the same name on other objects, each on one exact line. */
const NOT_A_CONTEXT = new Set([
  // A ban's reason (src/phases/ban/table.ts), not a request's.
  'src/phases/ban/table.ts:e.reason = reason;',
]);

test('only the outcome verbs in src/pipeline/context.ts write decision, reason and the reply fields', () => {
  const writes: string[] = [];
  for (const file of sourceFiles('src')) {
    if (file === OWNER) continue;
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '').trim();
      if (!WRITE.test(code) || NOT_A_CONTEXT.has(`${file}:${code}`)) return;
      writes.push(`${file}:${i + 1}: ${code}`);
    });
  }
  assert.deepEqual(writes, []);
});

test('the check sees a write it must refuse', () => {
  assert.ok(WRITE.test('ctx.reason = code;'));
  assert.ok(WRITE.test('this.ctx.decision = "refused"'));
  assert.ok(WRITE.test('ctx.replyHeaders ??= {}'));
  assert.ok(!WRITE.test("if (ctx.decision === 'forwarded') return;"));
  assert.ok(!WRITE.test('const failed = ctx.reason !== "";'));
});

/**
 * The context fields each phase folder may assign (the owners named in src/pipeline/context.ts).
 * Two fields have two writers, both named there: `target` (identify sets it, cache narrows it to its
 * key's target) and `upstream` (route sets it, failover moves it to the fallback).
 */
const SLOTS: Record<string, readonly string[]> = {
  identify: [
    'clientAddress',
    'peerAddress',
    'peerTrusted',
    'protocol',
    'host',
    'hostName',
    'path',
    'clientPrefix',
    'ja4',
    'h2Fingerprint',
    'target',
  ],
  route: ['route', 'upstream'],
  failover: ['upstream', 'upstreamChoice'],
  cache: ['target', 'cache', 'cacheTap'],
  // The challenge guard: familiarity's check and its result, and the verify endpoint's own rule id.
  challenge: ['familiarity', 'known', 'ruleId', 'heldBudget', 'heldAddressBudget'],
  exfiltration: ['responseByteBudget'],
  body: ['bodyBuffered', 'bufferedBody'],
  admission: ['admissionGate', 'admissionClass', 'admissionEntry'],
};
/** A context assigned by its usual names in the phases (`ctx`, `this.ctx`, an entry's `owner`). */
const SLOT_WRITE = /\b(?:ctx|owner)\.([A-Za-z]+)\s*(?:=(?!=)|\+=|-=|\?\?=)/g;

test('each phase assigns only its own slots of the context', () => {
  const foreign: string[] = [];
  for (const file of sourceFiles('src/phases')) {
    const phase = relative('src/phases', file).split('/')[0]!;
    const own = SLOTS[phase] ?? [];
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        for (const m of line.replace(/\/\/.*$/, '').matchAll(SLOT_WRITE))
          if (!own.includes(m[1]!)) foreign.push(`${file}:${i + 1}: ctx.${m[1]}`);
      });
  }
  assert.deepEqual(foreign, []);
});
