// `--workers N`: the primary forks N gateways sharing the listener, restarts a worker that dies, and
// stops them all on SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { BIN, cleanup, ENGINE_FLAGS, freePort, startUpstream, stopChild, waitFor } from './helpers.ts';

/** Process ids whose parent is `pid` (Linux /proc; no pgrep needed). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

test('--workers 2 serves from two worker processes on one port, replaces a dead worker, and stops cleanly on SIGTERM', async (t) => {
  const up = await startUpstream(t);
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      BIN,
      '--upstream',
      up.url,
      '--listen',
      `127.0.0.1:${port}`,
      '--admin',
      'off',
      '--quiet',
      '--workers',
      '2',
      ...ENGINE_FLAGS,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  cleanup(t, () => stopChild(child));
  const started = () => out.split('\n').filter((l) => l.includes('"rempart started"')).length;
  const deadline = Date.now() + 15000;
  await waitFor(() => started() >= 2, {
    timeoutMs: 15000,
    intervalMs: 50,
    message: () => `two workers started:\n${out}`,
  });
  assert.equal(started(), 2, `two workers started:\n${out}`);
  assert.match(out, /cluster.store is memory: each worker keeps its own bans/);
  for (let i = 0; i < 10; i++) {
    const r = await fetch(`http://127.0.0.1:${port}/x`);
    assert.equal(r.status, 200);
    await r.text();
  }
  // Kill one worker: the primary starts another.
  const kids = childrenOf(child.pid!);
  assert.equal(kids.length, 2);
  process.kill(kids[0]!, 'SIGKILL');
  // The same bound as before: ten seconds past the start-up's.
  await waitFor(() => started() >= 3, {
    timeoutMs: deadline + 10000 - Date.now(),
    intervalMs: 50,
    message: 'a replacement worker',
  });
  assert.equal(started(), 3, 'a replacement worker started');
  assert.match(out, /worker exited; starting another/);
  const r = await fetch(`http://127.0.0.1:${port}/y`);
  assert.equal(r.status, 200);
  await r.text();
  // SIGTERM stops every worker and the primary exits 0 (the bound is generous: a clean exit is the point).
  assert.equal(await stopChild(child, 60_000), 0);
});
