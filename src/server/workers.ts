// `--workers N`: one box, every core. The primary forks N workers running the same command line; they
// share the listening sockets (node:cluster hands each accepted connection to a worker in turn) and
// the primary restarts a worker that dies, forwards SIGHUP (reload), and stops them all on
// SIGTERM/SIGINT, or hands over on SIGUSR2 (each worker drains as a single gateway does, docs/operations.md).
// The workers' listening sockets are their own, with SO_REUSEPORT (src/core/listen.ts): the kernel spreads
// connections between them, and the workers of a new primary started with --upgrade bind beside them. Each worker is a whole gateway: with `cluster.store: memory` it keeps its own bans,
// limits and level (an address banned by worker 1 is refused by worker 1 only); with `redis` they
// share them as any nodes do (docs/cluster.md).
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../core/log.ts';

/** A worker that dies sooner than this after its start counts as crashing: restarts then back off. */
const STABLE_MS = 10_000;
const MAX_BACKOFF_MS = 30_000;

export function runPrimary(n: number, log: Logger, shareMemoryStore: boolean, stopMs = 10_000): Promise<number> {
  if (shareMemoryStore)
    log.warn(
      { workers: n },
      'cluster.store is memory: each worker keeps its own bans, rate limits and attack level (use store: redis to share them)',
    );
  const startedAt = new Map<Worker, number>();
  let failures = 0;
  let stopping = false;
  const fork = () => {
    const w = cluster.fork();
    startedAt.set(w, Date.now());
  };
  cluster.on('exit', (w, code, signal) => {
    const lived = Date.now() - (startedAt.get(w) ?? 0);
    startedAt.delete(w);
    if (stopping) return;
    failures = lived < STABLE_MS ? failures + 1 : 0;
    const delay = failures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 500 * 2 ** (failures - 1));
    log.error(
      { worker: w.id, pid: w.process.pid, code, signal, restartInMs: delay },
      'worker exited; starting another',
    );
    setTimeout(fork, delay).unref();
  });
  for (let i = 0; i < n; i++) fork();
  log.info({ workers: n, pid: process.pid }, 'rempart primary started');
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  });
  return new Promise<number>((resolve) => {
    const shutdown = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping workers');
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      if (workers.length === 0) return resolve(0);
      let left = workers.length;
      for (const w of workers) {
        w.once('exit', () => {
          if (--left === 0) resolve(0);
        });
        w.process.kill(signal === 'SIGUSR2' ? 'SIGUSR2' : 'SIGTERM');
      }
      // A worker stuck past its own graceful stop (config `shutdown`) and a margin is killed.
      setTimeout(() => {
        for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL');
      }, stopMs + 5_000).unref();
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGUSR2', () => shutdown('SIGUSR2'));
  });
}
