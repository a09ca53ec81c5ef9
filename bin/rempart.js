#!/usr/bin/env node
// Entry point of the `rempart` command, in the repository and in the installed package alike.
//
// Which code runs: the TypeScript sources when they are here (src/cli.ts exists only in a checkout:
// the package ships no src/), else the build (dist/, which only the package has, or a checkout after
// `npm run build`). So a checkout always runs its sources, even next to a stale dist/, and an
// installed package always runs JavaScript, wherever it is unpacked: under node_modules (where Node
// refuses to strip types), in /opt/rempart (deploy/Dockerfile), or linked with `npm link` (which
// runs the checkout's sources, as development should).
import { existsSync } from 'node:fs';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`rempart needs Node.js 22.18 or newer (this is ${process.version}).\n`);
  process.exit(1);
}
const sources = new URL('../src/cli.ts', import.meta.url);
const built = new URL('../dist/src/cli.js', import.meta.url);
const entry = existsSync(sources) ? sources : built;
if (!existsSync(entry)) {
  process.stderr.write(`rempart: neither ${sources.pathname} nor ${built.pathname} exists; run \`npm run build\`\n`);
  process.exit(1);
}
// `rempart demo` is the bundled example (examples/postal), not part of the gateway: nothing in src/
// imports examples/ (docs/architecture.md), so this entry point adds it to main()'s commands, taken
// from the same tree as the CLI (scripts/build.ts compiles it to dist/examples/postal/).
const demo = new URL(
  entry === sources ? '../examples/postal/demo.ts' : '../dist/examples/postal/demo.js',
  import.meta.url,
);
const extra = {
  demo: {
    line:
      '  rempart demo [--listen HOST:PORT] [--admin HOST:PORT] [--origin-port N] [--sms-port N]' +
      '   (the bundled demo, as `npm start`)',
    load: async () => (await import(demo.href)).demoCommand,
  },
};
const { main } = await import(entry.href);
main(process.argv.slice(2), extra).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    // main() reports failures itself and never rejects; a stack here only when asked for.
    const debug = process.argv.includes('--debug') || process.env.REMPART_DEBUG === '1';
    process.stderr.write(`rempart: ${debug ? (err?.stack ?? err) : (err?.message ?? err)}\n`);
    process.exitCode = 1;
  },
);
