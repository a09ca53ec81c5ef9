// Fairness under contention (issue 4): real users' p95 on a class, alone and while one client
// hammers the same class with many connections. Rate limits and bans are off, so what is measured is
// admission control alone: the hammering client may hold no more than its share of the class queue.
// The gateway (with the origin) and the hammering client each run in their own process, so the
// hammer's CPU is not taken from the gateway's event loop; the users run in this one.
// With --defense, the default rate limit and bans stay on (what a deployment runs): the hammer is then
// limited, banned and refused on accept, and the figure is what users see beside it.
// usage: node bench/fairness.ts [--seconds N] [--users N] [--hammer-connections N] [--defense]
import { fork, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { startPostalOrigin } from '../examples/postal/origin.ts';
import { validateConfig } from '../src/config/load.ts';
import { createGateway } from '../src/app/gateway.ts';
import { createLogger } from '../src/core/log.ts';
import { Histogram } from '../src/drill/histogram.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    users: { type: 'string' },
    'hammer-connections': { type: 'string' },
    defense: { type: 'boolean' },
    role: { type: 'string' },
    target: { type: 'string' },
  },
});
const seconds = Number(values.seconds ?? 10);
const users = Number(values.users ?? 40);
const hammerConnections = Number(values['hammer-connections'] ?? 200);

if (values.role === 'gateway') await gatewayRole();
else if (values.role === 'hammer') await hammerRole(values.target!);
else await main();

async function gatewayRole(): Promise<void> {
  const origin = await startPostalOrigin({ port: 0, workers: 8, serviceTimeMs: 20, queueLength: 64 });
  const config = validateConfig(
    {
      version: 1,
      listeners: [{ address: '127.0.0.1:0' }],
      upstreams: [{ name: 'postal', url: origin.url, admission: { mode: 'static', staticLimit: 8 } }],
      routes: [{ name: 'site', path: '/*', upstream: 'postal', class: 'public' }],
      admin: { address: 'off' },
      logging: { level: 'warn', requests: false },
      limits: { maxConnectionsPerAddress: 100000 },
      admission: {
        queue: { maxEntries: 200, maxEntriesPerClass: 200 },
        fairness: { key: 'prefix', maxSharePercent: 10 },
      },
      defense: values.defense ? {} : { rateLimit: { mode: 'off' }, bans: { mode: 'off' } },
    },
    '(bench)',
  );
  const gw = await createGateway(config, { logger: createLogger('silent') });
  await gw.start();
  process.send!(`http://127.0.0.1:${gw.addresses().listeners[0]!.port}`);
  process.on(
    'disconnect',
    () =>
      void gw
        .stop(200)
        .then(() => origin.close())
        .then(() => process.exit(0)),
  );
}

async function hammerRole(target: string): Promise<void> {
  const counts = { ok: 0, shed: 0, refused: 0 };
  await hammer(target, performance.now() + seconds * 1000, counts);
  process.send!(counts);
  process.disconnect();
}

/** One closed-loop user from its own /24: GET /, think 50–150 ms, again, until `stopAt`. */
async function user(target: string, i: number, stopAt: number, hist: Histogram): Promise<void> {
  const pool = new Pool(target, { connections: 1, localAddress: `127.10.${i}.1` });
  while (performance.now() < stopAt) {
    const t0 = performance.now();
    const res = await pool.request({ method: 'GET', path: '/' }).catch(() => null);
    if (res !== null) {
      await res.body.dump();
      if (res.statusCode === 200) hist.recordMs(performance.now() - t0);
    }
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
  }
  await pool.close();
}

/** One address, many connections, no pause: as many requests as it can get answered. */
async function hammer(
  target: string,
  stopAt: number,
  counts: { ok: number; shed: number; refused: number },
): Promise<void> {
  const pool = new Pool(target, { connections: hammerConnections, localAddress: '127.20.0.1' });
  await Promise.all(
    Array.from({ length: hammerConnections }, async () => {
      while (performance.now() < stopAt) {
        const res = await pool.request({ method: 'GET', path: '/' }).catch(() => null);
        if (res === null) {
          counts.refused++; // reset or closed: banned on accept
          continue;
        }
        await res.body.dump();
        if (res.statusCode === 200) counts.ok++;
        else counts.shed++;
      }
    }),
  );
  await pool.close();
}

function child(args: string[]): ChildProcess {
  return fork(new URL(import.meta.url).pathname, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

async function phase(
  target: string,
  withHammer: boolean,
): Promise<{ p50: number; p95: number; served: number; hammer: { ok: number; shed: number; refused: number } }> {
  const hist = new Histogram();
  let counts = { ok: 0, shed: 0, refused: 0 };
  const stopAt = performance.now() + seconds * 1000;
  const hammerDone = withHammer
    ? new Promise<void>((resolve) => {
        const h = child([
          '--role',
          'hammer',
          '--target',
          target,
          '--seconds',
          String(seconds),
          '--hammer-connections',
          String(hammerConnections),
        ]);
        h.once('message', (m) => (counts = m as typeof counts));
        h.once('exit', () => resolve());
      })
    : Promise.resolve();
  await Promise.all([...Array.from({ length: users }, (_, i) => user(target, i + 1, stopAt, hist)), hammerDone]);
  return { p50: hist.percentileMs(50)!, p95: hist.percentileMs(95)!, served: hist.total, hammer: counts };
}

async function main(): Promise<void> {
  const gwProc = child(['--role', 'gateway', ...(values.defense ? ['--defense'] : [])]);
  const target = await new Promise<string>((resolve) => gwProc.once('message', (m) => resolve(m as string)));
  const alone = await phase(target, false);
  const contended = await phase(target, true);
  const f = (v: number) => v.toFixed(1);
  process.stdout.write(
    [
      `origin: 8 workers x 20 ms (~400 req/s); Rempart: static limit 8, class queue 200, fairness by /24 at 10%, rate limits and bans ${values.defense ? 'on (defaults)' : 'off'}; ${users} users, ${seconds} s per phase`,
      `users alone:                 p50 ${f(alone.p50)} ms  p95 ${f(alone.p95)} ms  (${alone.served} answered)`,
      `users + one hammering /24:   p50 ${f(contended.p50)} ms  p95 ${f(contended.p95)} ms  (${contended.served} answered); hammer ${contended.hammer.ok} answered, ${contended.hammer.shed} refused with a status (503/429/403), ${contended.hammer.refused} connections refused (${hammerConnections} connections)`,
      `p95 ratio contended/alone: ${(contended.p95 / alone.p95).toFixed(2)} (target <= 2); hammer's share of answers: ${((100 * contended.hammer.ok) / (contended.hammer.ok + contended.served)).toFixed(1)}%`,
    ].join('\n') + '\n',
  );
  gwProc.disconnect();
}
