// `npm run build` (and `prepack`, so `npm pack` and `npm publish` always ship a fresh build): compile
// the sources to dist/ with tsconfig.build.json, then copy the files the code reads at run time
// beside the modules that read them. Development never needs it (Node runs the sources directly).
//
//   dist/src/**.js, .d.ts, .js.map        tsc (the tests are left out)
//   dist/src/control/dashboard/*          the cockpit's page, read by src/control/cockpit.ts
//   dist/examples/postal/*.js, rempart.yaml   `rempart demo` (bin/rempart.js adds it to the CLI)
//   dist/scenarios/*.yaml                 built-in drill scenarios (src/drill/scenario.ts: ../../scenarios)
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const at = (p: string) => `${root}${p}`;

/** Non-TypeScript files read at run time, relative to the repository root; each lands at dist/<same path>. */
export const RUNTIME_ASSETS = ['src/control/dashboard', 'examples/postal/rempart.yaml', 'scenarios'];

export function build(): void {
  // A stale module of a deleted source must not ship: start from nothing.
  rmSync(at('dist'), { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  // Everything on stderr: `npm pack --json` runs this first and its standard output must stay JSON.
  execFileSync(process.execPath, [tsc, '-p', at('tsconfig.build.json')], {
    stdio: ['ignore', process.stderr, process.stderr],
  });
  for (const asset of RUNTIME_ASSETS) {
    if (!existsSync(at(asset))) throw new Error(`build: ${asset} is missing`);
    cpSync(at(asset), at(`dist/${asset}`), { recursive: true, filter: (src) => !src.endsWith('.test.ts') });
  }
  const count = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce(
      (n, e) => n + (e.isDirectory() ? count(`${dir}/${e.name}`) : 1),
      0,
    );
  process.stderr.write(`build: dist/ holds ${count(at('dist'))} files\n`);
}

if (import.meta.main) build();
