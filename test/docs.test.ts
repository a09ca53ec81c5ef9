import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { renderAll } from '../scripts/gen-docs.ts';

test('the generated reference docs match the code (run `npm run docs` after changing schema, errors or metrics)', async () => {
  for (const [file, expected] of Object.entries(await renderAll())) {
    const actual = await readFile(new URL(`../${file}`, import.meta.url), 'utf8');
    assert.equal(actual, expected, `${file} is out of date: run npm run docs`);
  }
});

test('docs/lifecycle.md names every phase of the pipeline, in order', async () => {
  const { createGateway } = await import('../src/app/gateway.ts');
  assert.ok(createGateway);
  // Lower-cased on both sides: factory names are compared lower-cased (createWaitingRoomPhase → `waitingRoom`).
  const text = (await readFile(new URL('../docs/lifecycle.md', import.meta.url), 'utf8')).toLowerCase();
  const src = await readFile(new URL('../src/app/gateway.ts', import.meta.url), 'utf8');
  // Phases are made by createXxxPhase(getRuntime|defense, …) or taken from the challenge guard (familiarity, challenge).
  const order = [...src.matchAll(/create(\w+)Phase\((?:getRuntime|defense)[,)]|challengeGuard\.(familiarity|challenge),/g)].map((m) => (m[1] ?? m[2])!.toLowerCase());
  assert.ok(order.length >= 3, 'phases found in gateway.ts');
  let last = -1;
  for (const name of order) {
    const at = text.indexOf(`\`${name}\``);
    assert.ok(at > last, `phase ${name} appears in docs/lifecycle.md after the previous one`);
    last = at;
  }
});
