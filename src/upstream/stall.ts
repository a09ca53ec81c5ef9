// Rempart's own event-loop stalls, so the adaptive limiter does not read them as origin latency.
//
// A latency sample is taken in Rempart's event loop: dispatch to the upstream, then the moment the
// loop gets round to the end of the response. While the loop is busy (a burst of requests, a
// proof-of-work check, a GC pause, another process holding the core), a response that arrived at the
// socket waits in the kernel, and the sample grows by Rempart's own delay. Read as origin latency,
// that shrinks the limit and queues or sheds requests an idle origin could have taken: the gateway
// throttling itself (bench/proxy.ts once queued 89 % of pass-through requests that way).
//
// The probe: a timer every PROBE_MS that notes how late it fired. Lateness beyond the timer's own
// granularity is a stall, recorded as the interval [fired − lateness, fired] in a small ring. A
// sample then asks how much of its own span [start, end] overlapped stalls (stalledWithin). Why this
// and not the others the issue named:
// - perf_hooks.monitorEventLoopDelay gives a histogram, not when the delays happened: it cannot say
//   which samples a delay touched.
// - Timestamps from the socket (SO_TIMESTAMP) are not reachable from Node.
// - A utilisation gate (no decrease while the loop is busy) throws away the signal whenever Rempart
//   is busy, which is exactly when a flood also congests the origin; the overlap keeps every sample
//   the loop did not touch.
// The overlap is an upper bound of what the stall added (the origin may still have been working
// during part of it), so the limiter subtracts it only from samples it did not dominate and drops the
// others (limiter.ts, onSample): a lower bound of the origin's time errs towards keeping the origin
// busy, and the origin's own refusals (5xx, timeouts) still bring the limit down.
//
// One probe per process, started by the first gate on the system clock; its timer is unref'd and
// costs ~100 wake-ups a second. Memory: a fixed ring.

/** The probe's period. Stalls shorter than about this plus the timer's 1 ms granularity go unseen. */
export const PROBE_MS = 10;
/** Lateness at or below this is the timer's own granularity (libuv's clock has 1 ms resolution), not a stall. */
const GRANULARITY_MS = 1;
/** Stalls remembered: 256 × at least 10 ms apart covers the last 2.5 s or more of a saturated loop. */
const RING = 256;

export interface StallSource {
  /** Milliseconds of [startMs, endMs] (performance.now() times) during which the event loop was stalled. */
  stalledWithin(startMs: number, endMs: number): number;
}

class StallProbe implements StallSource {
  readonly #from = new Float64Array(RING);
  readonly #to = new Float64Array(RING);
  /** Stalls recorded so far (the ring's write position is count % RING). */
  #count = 0;
  #expectedMs: number;

  constructor() {
    this.#expectedMs = performance.now() + PROBE_MS;
    setInterval(this.#tick, PROBE_MS).unref();
  }

  readonly #tick = (): void => {
    const now = performance.now();
    const late = now - this.#expectedMs;
    if (late > GRANULARITY_MS) {
      const i = this.#count++ % RING;
      this.#from[i] = now - late;
      this.#to[i] = now;
    }
    // setInterval re-arms from when the callback runs, so the next tick is due PROBE_MS from now.
    this.#expectedMs = now + PROBE_MS;
  };

  stalledWithin(startMs: number, endMs: number): number {
    if (endMs <= startMs) return 0;
    let total = 0;
    // A stall still going on: the loop is only now running, past the tick that was due (the sample is
    // read in an I/O callback before the late timer has had its turn).
    const pending = endMs - this.#expectedMs;
    if (pending > GRANULARITY_MS) total += overlap(this.#expectedMs, endMs, startMs, endMs);
    const oldest = Math.max(0, this.#count - RING);
    for (let n = this.#count - 1; n >= oldest; n--) {
      const i = n % RING;
      const to = this.#to[i]!;
      if (to <= startMs) break; // stalls are recorded in time order: the rest are older
      total += overlap(this.#from[i]!, to, startMs, endMs);
    }
    return total;
  }
}

function overlap(a0: number, a1: number, b0: number, b1: number): number {
  const lo = a0 > b0 ? a0 : b0;
  const hi = a1 < b1 ? a1 : b1;
  return hi > lo ? hi - lo : 0;
}

let probe: StallProbe | null = null;

/** The process's stall probe (started on first use). */
export function eventLoopStalls(): StallSource {
  if (probe === null) probe = new StallProbe();
  return probe;
}
