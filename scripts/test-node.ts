// The second half of `npm test` (issue 17: "the full test suite passes with either engine, run both in
// CI"): the whole suite runs first on the default engine (`server.engine: lean`); then every test file
// that starts a gateway runs once more on the node:http + undici engine, kept as a fallback
// (RMP_ENGINE=node: test/helpers.ts's startGateway, ENGINE_FLAGS and withEngine give it to every gateway
// a test starts, test/fuzz/harness.ts to its child gateway).
//
// The list is read from the files themselves, not kept by hand: a file is engine-bound when it names one
// of those hooks, so a new test joins the second run without anyone remembering to add it. The files it
// leaves out either start no gateway (config, stores, a phase's own logic, the drill generator against
// bare origins, the docs and layer checks) or run every case on both engines themselves
// (BOTH_ENGINES below; checked here, so a file that stops doing so is run again rather than skipped).
//
// Both halves run four files at a time (`--test-concurrency=4`): the suite's tests wait on sockets and
// timers more than they compute (one core busy on average at two files at a time on this 2-core
// machine), and the two halves at two did not fit `npm test`'s 10 minutes (~360 s + ~260 s); at three
// a fresh clone's CI run took 265 s + 274 s, too close to them.
// Run alone: `node scripts/test-node.ts [file…]`; `--list` prints the files and exits.
import { spawn } from 'node:child_process';
import { existsSync, globSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The globs of the whole suite, as package.json's test script names them. */
export const SUITE_GLOBS: readonly string[] = ['src/**/*.test.ts', 'test/**/*.test.ts', 'examples/**/*.test.ts'];

/** Files that start their gateways with `server.engine` set to each engine in turn, case by case. */
export const BOTH_ENGINES: readonly string[] = [
  'test/edge-smuggling.test.ts',
  'test/lean-engine.test.ts',
  'test/lean-upstream.test.ts',
  'test/silent-connection.test.ts',
];

/**
 * A file whose gateways take RMP_ENGINE names one of the hooks that pass the engine on, itself or through
 * a local module it imports (test/heavy-page.ts, test/h2-client.ts, test/fuzz/harness.ts …);
 * test/helpers.ts, which defines the hooks, is not read as a user of them.
 */
const ENGINE_HOOK = /\b(startGateway\w*|ENGINE_FLAGS|withEngine|RMP_ENGINE|TEST_ENGINE)\b/;
const HOOKS_HOME = 'test/helpers.ts';

function textWithLocalImports(root: string, file: string, seen: Set<string> = new Set()): string {
  seen.add(file);
  let text = readFileSync(join(root, file), 'utf8');
  for (const m of text.matchAll(/from '(\.{1,2}\/[^']+\.ts)'/g)) {
    const dep = relative(root, resolve(root, dirname(file), m[1] as string));
    if (dep === HOOKS_HOME || dep.startsWith('src/') || dep.endsWith('.test.ts') || seen.has(dep)) continue;
    if (!existsSync(join(root, dep))) continue; // an import written inside a string
    text += textWithLocalImports(root, dep, seen);
  }
  return text;
}

/**
 * A file that runs its cases on both engines names both, and each of its gateways is started with an
 * `engine` (every `startGateway(` call names one before its closing `);`). One that does not is run again.
 */
function namesBothEngines(text: string): boolean {
  if (!/'node'/.test(text) || !/'lean'/.test(text)) return false;
  for (let at = text.indexOf('startGateway('); at !== -1; at = text.indexOf('startGateway(', at + 1)) {
    const end = text.indexOf(');', at);
    if (!/\bengine\b/.test(text.slice(at, end === -1 ? undefined : end))) return false;
  }
  return true;
}

export interface EngineSuite {
  /** Files run again with RMP_ENGINE=node, sorted. */
  files: string[];
  /** Files that start no gateway (nothing to run again). */
  neutral: string[];
  /** BOTH_ENGINES files left out because they loop over both engines themselves. */
  both: string[];
}

export function engineSuite(root: string = process.cwd()): EngineSuite {
  const all = [...new Set(SUITE_GLOBS.flatMap((g) => globSync(g, { cwd: root })))].sort();
  const files: string[] = [];
  const neutral: string[] = [];
  const both: string[] = [];
  for (const f of all) {
    const text = textWithLocalImports(root, f);
    if (!ENGINE_HOOK.test(text)) neutral.push(f);
    else if (BOTH_ENGINES.includes(f) && namesBothEngines(text)) both.push(f);
    else files.push(f);
  }
  return { files, neutral, both };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  if (args[0] === '--list') {
    const s = engineSuite();
    process.stdout.write(
      `${s.files.length} files run again on the node engine:\n${s.files.join('\n')}\n\n` +
        `${s.both.length} run both engines themselves: ${s.both.join(' ')}\n` +
        `${s.neutral.length} start no gateway\n`,
    );
    process.exit(0);
  }
  const files = args.length > 0 ? args : engineSuite().files;
  const child = spawn(
    process.execPath,
    ['--test', '--test-concurrency=4', '--test-timeout=120000', '--test-force-exit', ...files],
    {
      stdio: 'inherit',
      env: { ...process.env, RMP_ENGINE: 'node' },
    },
  );
  child.on('exit', (code, signal) => process.exit(code ?? (signal !== null ? 1 : 0)));
}
