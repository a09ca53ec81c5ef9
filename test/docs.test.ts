import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { renderAll } from '../scripts/gen-docs.ts';

test('the generated reference docs match the code (run `npm run docs` after changing schema, errors or metrics)', async () => {
  for (const [file, expected] of Object.entries(await renderAll())) {
    const actual = await readFile(new URL(`../${file}`, import.meta.url), 'utf8');
    assert.equal(actual, expected, `${file} is out of date: run npm run docs`);
  }
});

test('docs/lifecycle.md names every phase of the list, in order, and every phase folder is in the list', async () => {
  const { PHASES } = await import('../src/phases/index.ts');
  const text = await readFile(new URL('../docs/lifecycle.md', import.meta.url), 'utf8');
  assert.ok(PHASES.length >= 3, 'phases in src/phases/index.ts');
  let last = -1;
  for (const m of PHASES) {
    const at = text.indexOf(`\`${m.name}\``);
    assert.ok(at > last, `phase ${m.name} appears in docs/lifecycle.md after the previous one`);
    last = at;
    assert.ok(m.summary.trim() !== '' && !m.summary.includes('\n'), `phase ${m.name} has a one-line summary`);
  }
  assert.equal(new Set(PHASES.map((m) => m.name)).size, PHASES.length, 'phase names are unique');
  const entries = await readdir(new URL('../src/phases/', import.meta.url), { withFileTypes: true });
  const folders = entries.filter((d) => d.isDirectory()).map((d) => d.name);
  for (const m of PHASES) assert.ok(folders.includes(m.folder), `phase ${m.name}: src/phases/${m.folder}/ exists`);
  for (const f of folders)
    assert.ok(
      PHASES.some((m) => m.folder === f),
      `src/phases/${f}/ holds a phase of PHASES`,
    );
});
