// The drill's proof-of-work solving for its bots, off the generator's event loop: a small pool of
// worker threads (src/drill/solve-worker.ts), so a thousand solves never delay a real user's click,
// an arrival of the attack or the origin model's answers (they share the generator's loop). The
// threads run niced on Linux: the gateway under test keeps the cores it needs, its timing honest.
//
//   bot challenged ─► solve(token, bits) ─► FIFO queue ─► free thread hashes ─► solution ─► retry
//                         │ refused (null) when the work already queued would keep it waiting past
//                         │ maxQueueSec: the bot stays refused, counted as a skipped solve
//
// What a solve costs is split in two, so a report can tell the defence from the generator:
// - the work: the hashes the challenge's difficulty asked, as the thread's own CPU time. A real
//   attacker pays it too, on its own machines: a bot waiting for it is the defence working;
// - the time the generator held the bot: waiting in the queue for a thread, and the thread waiting
//   for a core (wall time on the thread minus its CPU time; the machine is shared with the gateway
//   under test). A botnet with a core per bot never waits so: this is the generator's shortfall,
//   and what decides whether a scenario was produced as drawn (src/drill/matrix.ts, docs/drill.md).
//
// The cap is work, not solves a second: the queue takes a job only while the expected hashes queued
// ahead of it (2^bits each), at the rate the threads achieve, drain within maxQueueSec. Higher difficulty then
// means fewer solves a second, as it does for a real attacker, without the cap biting at the first
// rise. A job for a token that is not a challenge (no nonce in 2^(bits+8) hashes) fails.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SolveAnswer, SolveJob } from './solve-worker.ts';

/** Difficulty above this is refused (as rempart/client does): 2^28 hashes is minutes of work. */
const MAX_BITS = 28;
/** Rate assumed before a thread has reported one: ~1.8 M/s measured on an idle core, halved. */
const INITIAL_HASHES_PER_SEC = 900_000;

export interface SolvePoolOptions {
  /** Threads (0 or unset: one per core, at most 2; niced, they take the cores the gateway leaves idle). */
  workers?: number;
  /** The threads' nice value on Linux (default 10: the gateway under test, at 0, comes first). */
  nice?: number;
  /** Queue no job whose expected wait for a thread exceeds this (seconds). */
  maxQueueSec?: number;
}

export interface SolveResult {
  /** `<token>.<nonce>`, or null when no nonce was found or the pool closed first. */
  solution: string | null;
  /** Queued before a thread took it (ms). */
  waitMs: number;
  /** On the thread, wall time (ms). */
  runMs: number;
  /** On the thread, its CPU time (ms): the work the difficulty asked for. */
  cpuMs: number;
  /** What the generator added to the work: the wait, and the thread's wall time beyond its CPU time. */
  heldMs: number;
  hashes: number;
}

interface Pending {
  job: SolveJob;
  expected: number;
  queuedAt: number;
  startedAt: number;
  resolve: (r: SolveResult) => void;
}

interface Thread {
  worker: Worker;
  busy: Pending | null;
}

/**
 * Threads for a machine: one per core, 1 to 2. They run niced (below the gateway under test and the
 * generator's loop), so a second thread only uses a core the others leave idle; more than 2 would
 * mostly add threads waiting for a core on the small machines the drills run on.
 */
export function defaultSolveWorkers(): number {
  return Math.max(1, Math.min(2, availableParallelism()));
}

export class SolvePool {
  readonly workers: number;
  readonly maxQueueSec: number;
  readonly nice: number;
  readonly #threads: Thread[] = [];
  readonly #queue: Pending[] = [];
  /** Expected hashes of the jobs queued, not yet on a thread. */
  #queuedHashes = 0;
  /** Hashes a second one thread achieves (wall time, so contention for cores counts), smoothed. */
  #rate = INITIAL_HASHES_PER_SEC;
  #nextId = 1;
  #closed = false;

  constructor(opts: SolvePoolOptions = {}) {
    this.workers = opts.workers && opts.workers > 0 ? Math.floor(opts.workers) : defaultSolveWorkers();
    this.maxQueueSec = opts.maxQueueSec ?? 5;
    this.nice = opts.nice ?? 10;
    // Started now (before the attack), so no solve waits for a thread to boot.
    for (let i = 0; i < this.workers; i++) this.#spawn();
  }

  /** Jobs waiting for a thread. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Seconds the work queued now takes to drain at the threads' rate. */
  get expectedWaitSec(): number {
    return this.#queuedHashes / (this.workers * this.#rate);
  }

  /**
   * Solve a challenge token on a thread. Null (at once) when the pool will not take it: closed, a
   * difficulty past MAX_BITS, or the work queued ahead past maxQueueSec.
   */
  solve(token: string, bits: number): Promise<SolveResult> | null {
    if (this.#closed || !(bits >= 0 && bits <= MAX_BITS)) return null;
    const expected = 2 ** bits;
    // A free thread takes it at once; else it waits behind the queued work, which must drain in time.
    const free = this.#threads.length < this.workers || this.#threads.some((t) => t.busy === null);
    if (!free && this.#queuedHashes / (this.workers * this.#rate) > this.maxQueueSec) return null;
    return new Promise<SolveResult>((resolve) => {
      const p: Pending = {
        job: { id: this.#nextId++, prefix: `${token}.`, bits },
        expected,
        queuedAt: performance.now(),
        startedAt: 0,
        resolve,
      };
      this.#queue.push(p);
      this.#queuedHashes += expected;
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      let t = this.#threads.find((x) => x.busy === null);
      if (t === undefined && this.#threads.length < this.workers) t = this.#spawn();
      if (t === undefined) return;
      // At most one job per cookie jar of the attack: the queue stays short enough for shift().
      const p = this.#queue.shift()!;
      this.#queuedHashes -= p.expected;
      p.startedAt = performance.now();
      t.busy = p;
      t.worker.ref();
      t.worker.postMessage(p.job);
    }
  }

  #spawn(): Thread {
    const worker = new Worker(new URL('./solve-worker.ts', import.meta.url), { workerData: { nice: this.nice } });
    const t: Thread = { worker, busy: null };
    worker.on('message', (a: SolveAnswer) => this.#answered(t, a));
    // A thread that dies (it should not) fails its job and is replaced by the next pump.
    const lost = () => {
      const i = this.#threads.indexOf(t);
      if (i >= 0) this.#threads.splice(i, 1);
      const p = t.busy;
      t.busy = null;
      if (p !== null) p.resolve(this.#result(p, null, 0, 0));
      if (!this.#closed) this.#pump();
    };
    worker.on('error', lost);
    worker.on('exit', lost);
    // An idle thread does not keep the process alive (a pool not closed cannot hang a drill's exit).
    worker.unref();
    this.#threads.push(t);
    return t;
  }

  #answered(t: Thread, a: SolveAnswer): void {
    const p = t.busy;
    if (p === null || p.job.id !== a.id) return;
    t.busy = null;
    t.worker.unref();
    const runMs = performance.now() - p.startedAt;
    if (a.hashes >= 4096 && runMs > 0) this.#rate = 0.8 * this.#rate + 0.2 * ((a.hashes * 1000) / runMs);
    p.resolve(this.#result(p, a.nonce >= 0 ? `${p.job.prefix}${a.nonce}` : null, a.hashes, a.cpuUs / 1000));
    this.#pump();
  }

  #result(p: Pending, solution: string | null, hashes: number, cpuMs: number): SolveResult {
    const now = performance.now();
    const waitMs = (p.startedAt || now) - p.queuedAt;
    const runMs = p.startedAt ? now - p.startedAt : 0;
    return { solution, waitMs, runMs, cpuMs, heldMs: waitMs + Math.max(0, runMs - cpuMs), hashes };
  }

  /** Ends every thread; jobs not answered resolve with no solution. Resolves once the threads exited. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const queued = this.#queue.splice(0);
    this.#queuedHashes = 0;
    for (const p of queued) p.resolve(this.#result(p, null, 0, 0));
    const threads = this.#threads.splice(0);
    await Promise.all(
      threads.map(async (t) => {
        const p = t.busy;
        t.busy = null;
        await t.worker.terminate();
        if (p !== null) p.resolve(this.#result(p, null, 0, 0));
      }),
    );
  }
}
