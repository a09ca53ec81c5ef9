// The import rule of docs/architecture.md, checked on every import in src/ (type-only ones too):
// a folder imports only folders below it, so the core never depends on a phase, a phase never on
// the server or the control plane, and the drill and the client never on gateway internals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basename } from 'node:path';
import { folderOf, importEdges } from '../scripts/arch-report.ts';

/** Layers, lowest first: a folder may import its own layer's folders (phases: see below) and any below. */
export const LAYERS: readonly (readonly string[])[] = [
  ['core', 'client'],
  ['config'],
  ['store'],
  ['upstream'],
  ['pipeline'],
  ['phases'],
  ['server'],
  ['control'],
  ['app'],
  ['.', 'drill'],
];

function layerOf(folder: string): number {
  const top = folder.split('/')[0]!;
  const i = LAYERS.findIndex((l) => l.includes(top));
  assert.notEqual(i, -1, `folder src/${folder} is in no layer: add it to LAYERS and docs/architecture.md`);
  return i;
}

/** Schema fragments (`schema.ts`, `*-schema.ts`) live beside their phase but belong to the config layer. */
const isFragment = (path: string) => /(^|-)schema\.ts$/.test(basename(path));

const edges = importEdges('.');

test('every import in src/ points to its own layer or one below (config may gather schema fragments)', () => {
  const up: string[] = [];
  for (const e of edges) {
    if (!e.to.startsWith('src/')) continue;
    const from = layerOf(folderOf(e.from));
    let to = layerOf(folderOf(e.to));
    if (isFragment(e.to) && folderOf(e.from) === 'config') to = layerOf('config');
    if (to > from) up.push(`${e.from} → ${e.to}`);
  }
  assert.deepEqual(up, []);
});

test('schema fragments import only the core', () => {
  const bad = edges.filter(
    (e) => isFragment(e.from) && !folderOf(e.from).startsWith('config') && !folderOf(e.to).startsWith('core'),
  );
  assert.deepEqual(
    bad.map((e) => `${e.from} → ${e.to}`),
    [],
  );
});

test('the drill and the client use no gateway internals (only the core and the client)', () => {
  const bad = edges.filter(
    (e) =>
      /^(drill|client)$/.test(folderOf(e.from).split('/')[0]!) &&
      !/^(core|client|drill)$/.test(folderOf(e.to).split('/')[0]!),
  );
  assert.deepEqual(
    bad.map((e) => `${e.from} → ${e.to}`),
    [],
  );
});

test('nothing in src/ imports examples/, bench/, scripts/ or test/', () => {
  const bad = edges.filter((e) => !e.to.startsWith('src/'));
  assert.deepEqual(
    bad.map((e) => `${e.from} → ${e.to}`),
    [],
  );
});

test('phases do not import each other in a cycle', () => {
  const graph = new Map<string, Set<string>>();
  for (const e of edges) {
    const a = folderOf(e.from);
    const b = folderOf(e.to);
    if (a === b || !a.startsWith('phases/') || !b.startsWith('phases/')) continue;
    if (!graph.has(a)) graph.set(a, new Set());
    graph.get(a)!.add(b);
  }
  const cycles: string[] = [];
  for (const [a, outs] of graph) for (const b of outs) if (graph.get(b)?.has(a) && a < b) cycles.push(`${a} ⇄ ${b}`);
  assert.deepEqual(cycles, []);
});
