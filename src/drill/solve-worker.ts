// One thread of the drill's solve pool (src/drill/solve-pool.ts): finds the nonce of one challenge at a
// time with the same solver browsers and rempart/client run (src/client/solver.ts), synchronously: the
// thread has nothing else to do, and the pool ends it with terminate(). It reports the hashes tried and
// its own CPU time, so the pool can tell the work the defence asked for from the time the generator
// added (waiting for a thread, or for a core the gateway under test was using).
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { solveRange } from '../client/solver.ts';

// Below the gateway under test, the origin model and the generator's own loop: on Linux a thread has
// its own nice value (setpriority on pid 0 changes only the calling thread; elsewhere it would change
// the whole process, so not there). Solving then takes the cores they leave idle, and the time it
// waits for one is counted as the generator's, not taken from the gateway being measured.
const nice = (workerData as { nice?: number } | null)?.nice ?? 0;
if (nice > 0 && process.platform === 'linux') {
  try {
    setPriority(0, nice);
  } catch {
    // Not permitted (a sandbox): the thread runs at the process's priority.
  }
}

export interface SolveJob {
  id: number;
  /** `<token>.`: the solution is this followed by the decimal nonce. */
  prefix: string;
  bits: number;
}

export interface SolveAnswer {
  id: number;
  /** -1 when no nonce was found within the limit (2^(bits+8) hashes: a bad token, not bad luck). */
  nonce: number;
  hashes: number;
  /** This thread's CPU time for the job, microseconds. */
  cpuUs: number;
}

/** Hashes per call into the solver: large, as nothing else runs on this thread. */
const SLICE = 1 << 16;

parentPort?.on('message', (job: SolveJob) => {
  const cpu0 = process.threadCpuUsage();
  // 2^(bits+8) hashes without an answer has a probability of e^-256: the token is not a challenge.
  const limit = 2 ** (job.bits + 8);
  let nonce = -1;
  let start = 0;
  for (; start < limit; start += SLICE) {
    nonce = solveRange(job.prefix, job.bits, start, SLICE);
    if (nonce >= 0) break;
  }
  const cpu = process.threadCpuUsage(cpu0);
  const answer: SolveAnswer = {
    id: job.id,
    nonce,
    hashes: nonce >= 0 ? nonce + 1 : start,
    cpuUs: cpu.user + cpu.system,
  };
  parentPort?.postMessage(answer);
});
