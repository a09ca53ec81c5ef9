// `--workers N`: the primary forks N gateways sharing the listener, restarts a worker that dies, and
// stops them all on SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startUpstream } from './helpers.ts';
import { freePort } from './redis-server.ts';

const BIN = fileURLToPath(new URL('../bin/rempart.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

test('--workers 2 serves from two worker processes on one port, replaces a dead worker, and stops cleanly on SIGTERM', async () => {
  const up = await startUpstream();
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [BIN, '--upstream', up.url, '--listen', `127.0.0.1:${port}`, '--admin', 'off', '--quiet', '--workers', '2'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  const started = () => out.split('\n').filter((l) => l.includes('"rempart started"')).length;
  try {
    const deadline = Date.now() + 15000;
    while (started() < 2 && Date.now() < deadline) await sleep(50);
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
    while (started() < 3 && Date.now() < deadline + 10000) await sleep(50);
    assert.equal(started(), 3, 'a replacement worker started');
    assert.match(out, /worker exited; starting another/);
    const r = await fetch(`http://127.0.0.1:${port}/y`);
    assert.equal(r.status, 200);
    await r.text();
  } finally {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    await up.close();
  }
});
