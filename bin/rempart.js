#!/usr/bin/env node
// Entry point of the `rempart` command. Rempart is written in TypeScript and run by Node's own
// type stripping, so it needs Node.js 22.18 or newer.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`rempart needs Node.js 22.18 or newer (this is ${process.version}).\n`);
  process.exit(1);
}
const { main } = await import('../src/cli.ts');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`rempart: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
