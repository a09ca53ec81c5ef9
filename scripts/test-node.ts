// The second half of `npm test` (issue 17: "the full test suite passes with either engine, run both in
// CI"): the whole suite runs first on the default engine (`server.engine: lean`); then the test files
// whose requests go through the client connection handler, the forward path or the upstream pool run
// once more on the node:http + undici engine, kept as a fallback (RMP_ENGINE=node: test/helpers.ts's
// startGateway, ENGINE_FLAGS and withEngine give it to every gateway a test starts). The rest of the
// suite does not depend on the engine (config, stores, phases' own logic, drills through a child gateway).
// Left out: the files that already run every case on both engines themselves (edge-smuggling,
// lean-engine, lean-upstream, silent-connection), and engine-neutral ones too slow for the budget
// (admission, defaults, exfiltration: a phase's own logic, answered through the same reply path as the
// cache and challenge files here).
// Budget: ~90 s of wall time on CI's 2 cores. Run alone: `node scripts/test-node.ts [file…]`; the whole
// suite on node: `RMP_ENGINE=node node --test …` as package.json's test script runs it.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const NODE_SUITE: readonly string[] = [
  // The HTTP/1.1 edge: request-target forms, limits, abuse, caps, slow clients, trust of the peer.
  'test/edge-limits.test.ts',
  'test/path-forms.test.ts',
  'test/path-and-trust.test.ts',
  'test/client-address.test.ts',
  'test/connection-abuse.test.ts',
  'test/connection-caps.test.ts',
  'test/slow-post.test.ts',
  'test/body-limits.test.ts',
  'test/review-slow-read-progress.test.ts',
  'test/review2-pin-cuts-real-download.test.ts',
  // Forwarding both ways, the upstream pool and its failures.
  'test/smoke.test.ts',
  'test/proxy-forwarding.test.ts',
  'test/proxy-failures.test.ts',
  'test/streaming.test.ts',
  'test/upstream-pools.test.ts',
  'test/pool-kill.test.ts',
  'test/review-pool-pin.test.ts',
  'test/upstream-stale-retry.test.ts',
  'test/upstream-tls-name.test.ts',
  'test/upstream-tls-trust.test.ts',
  // A request held past its burst resumes through each engine's request cycle (ctx.resumer).
  'test/ratelimit-wait.test.ts',
  'test/review-s28-stale.test.ts',
  // Upgrades and TLS.
  'test/upgrade-bypass.test.ts',
  'test/review-upgrade-pipelined.test.ts',
  'test/websocket-tls.test.ts',
  // Phases that answer or hold a reply on the connection.
  'test/cache.test.ts',
  'test/challenge.test.ts',
  'test/shutdown.test.ts',
  // The short fuzzing run (test/fuzz/harness.ts reads RMP_ENGINE for its child gateway).
  'test/fuzz.test.ts',
];

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = process.argv.length > 2 ? process.argv.slice(2) : NODE_SUITE;
  const child = spawn(
    process.execPath,
    ['--test', '--test-concurrency=2', '--test-timeout=120000', '--test-force-exit', ...files],
    {
      stdio: 'inherit',
      env: { ...process.env, RMP_ENGINE: 'node' },
    },
  );
  child.on('exit', (code, signal) => process.exit(code ?? (signal !== null ? 1 : 0)));
}
