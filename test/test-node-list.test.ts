// scripts/test-node.ts reads from the files themselves which of them run again on the node engine (issue
// 17: "the full test suite passes with either engine, run both in CI"). A gateway started through a local
// module (test/heavy-page.ts, test/fuzz/harness.ts) counts; a file kept out because it runs both engines
// itself is kept out only while every gateway it starts names its engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BOTH_ENGINES, engineSuite } from '../scripts/test-node.ts';
import { tempDir } from './helpers.ts';

test('the repository: gateway-starting files run again, directly or through a local module; others do not', () => {
  const s = engineSuite();
  for (const f of ['test/smoke.test.ts', 'test/heavy-page-browser.test.ts', 'test/fuzz.test.ts', 'test/cli.test.ts'])
    assert.ok(s.files.includes(f), `${f} runs on the node engine too`);
  for (const f of ['src/core/hot-metrics.test.ts', 'test/layers.test.ts', 'test/docs.test.ts'])
    assert.ok(s.neutral.includes(f), `${f} starts no gateway`);
  assert.deepEqual(s.both, [...BOTH_ENGINES].filter((f) => !s.files.includes(f)).sort());
  assert.equal(s.files.length + s.neutral.length + s.both.length, new Set([...s.files, ...s.neutral, ...s.both]).size);
});

test('a file of BOTH_ENGINES with one gateway started without an engine is run again', (t) => {
  const root = tempDir(t);
  mkdirSync(join(root, 'test'));
  const looped = `for (const engine of ['node', 'lean']) await startGateway(t, up.url, { server: { engine } });\n`;
  const [both, lapsed] = BOTH_ENGINES;
  writeFileSync(join(root, both!), looped);
  writeFileSync(join(root, lapsed!), `${looped}const gw = await startGateway(t, up.url);\n`);
  writeFileSync(join(root, 'test/direct.test.ts'), "import { ENGINE_FLAGS } from './helpers.ts';\n");
  writeFileSync(join(root, 'test/starter.ts'), 'export const start = () => startGateway(t, url);\n');
  writeFileSync(join(root, 'test/indirect.test.ts'), "import { start } from './starter.ts';\n");
  writeFileSync(join(root, 'test/helpers.ts'), 'export function startGateway() {}\n');
  writeFileSync(join(root, 'test/plain.test.ts'), "import { tempDir } from './helpers.ts';\n");
  const s = engineSuite(root);
  assert.deepEqual(s.both, [both]);
  assert.deepEqual(s.files, [lapsed, 'test/direct.test.ts', 'test/indirect.test.ts'].sort());
  assert.deepEqual(s.neutral, ['test/plain.test.ts']);
});
