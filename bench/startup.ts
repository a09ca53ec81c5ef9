// Start-up time: from spawning `rempart --upstream …` to the first request answered through it by
// the origin (a 200 from the origin, not from Rempart), measured by polling the listener every 2 ms.
//
//   node bench/startup.ts [--bin PATH] [--runs N]
//
// --bin is the `rempart` entry point to time (default: this repository's bin/rempart.js, which runs
// the TypeScript sources); give an installed package's node_modules/rempart/bin/rempart.js to time
// the built JavaScript. Prints each run and the medians: wall-clock milliseconds, and the CPU
// milliseconds the process had used by then (user + system, from /proc: steadier on a busy machine).
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { bin: { type: 'string' }, runs: { type: 'string', default: '7' } } });
const bin = values.bin ?? fileURLToPath(new URL('../bin/rempart.js', import.meta.url));
const runs = Number(values.runs);

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function get(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/startup', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 ? body : null));
    });
    req.on('error', () => resolve(null));
  });
}

const origin = http.createServer((_req, res) => res.end('from-origin'));
await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
const upstream = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;

/** CPU ms (user + system) a process has used, from /proc/PID/stat (Linux; clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

const times: number[] = [];
const cpus: number[] = [];
for (let i = 0; i < runs; i++) {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(
    process.execPath,
    [bin, '--upstream', upstream, '--listen', `127.0.0.1:${port}`, '--admin', 'off', '--quiet'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  let ms = -1;
  for (;;) {
    if ((await get(port)) === 'from-origin') {
      ms = performance.now() - t0;
      cpus.push(cpuMs(child.pid!));
      break;
    }
    if (child.exitCode !== null) throw new Error(`rempart exited with ${child.exitCode}`);
    if (performance.now() - t0 > 30_000) throw new Error('no answer within 30 s');
    await new Promise((r) => setTimeout(r, 2));
  }
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  times.push(ms);
  process.stdout.write(`run ${i + 1}: ${ms.toFixed(0)} ms, CPU ${cpus.at(-1)} ms\n`);
}
origin.close();
const sorted = [...times].sort((a, b) => a - b);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(
  `median ${median(times).toFixed(0)} ms (min ${sorted[0]!.toFixed(0)}, max ${sorted.at(-1)!.toFixed(0)}), CPU median ${median(cpus)} ms (${runs} runs, ${bin})\n`,
);
