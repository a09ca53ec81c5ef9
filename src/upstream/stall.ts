// Rempart's own event-loop stalls, so the adaptive limiter does not read them as origin latency.
//
// A latency sample is taken in Rempart's event loop: dispatch to the upstream, then the moment the
// loop gets round to the end of the response. While the loop is busy (a burst of requests, a
// proof-of-work check, a GC pause, another process holding the core), a response that arrived at the
// socket waits in the kernel, and the sample grows by Rempart's own delay. Read as origin latency,
// that shrinks the limit and queues or sheds requests an idle origin could have taken: the gateway
// throttling itself (bench/proxy.ts once queued 89 % of pass-through requests that way).
//
// The probe: a timer every PROBE_MS that notes, at each tick, when it fired, how late, and the loop's
// idle time so far (performance.eventLoopUtilization: time spent waiting for I/O). A sample then asks
// how long its reading waited behind Rempart's own work (stalledWithin): the busy stretch that ends at
// the read. Back from the read, tick by tick: an interval without idle time was busy throughout; in
// one with idle time the loop waited for I/O, so an answer arriving then was read at once, and only
// the part after that interval's due tick is known busy (a timer late by L means the loop was busy
// for the last L ms). A stall earlier in the span delayed nothing: the origin was working meanwhile,
// and the request had gone out at dispatch. Subtracting every stall of the span (as this did first)
// read a 200 ms origin as ~140 ms with the loop busy 30 % of the time in 4 ms chunks (a flood refused
// cheaply still costs CPU): the busier Rempart, the faster the origin looked. Why this and not the
// others the issue named:
// - perf_hooks.monitorEventLoopDelay gives a histogram, not when the delays happened: it cannot say
//   which samples a delay touched.
// - Timestamps from the socket (SO_TIMESTAMP) are not reachable from Node.
// - A utilisation gate (no decrease while the loop is busy) throws away the signal whenever Rempart
//   is busy, which is exactly when a flood also congests the origin; this keeps every sample the
//   loop did not delay.
// The stretch is an upper bound of what it added (the answer may have arrived during it, the origin
// still working), so the limiter subtracts it only from samples it did not dominate and drops the
// others (limiter.ts, onSample): a lower bound of the origin's time errs towards keeping the origin
// busy, and the origin's own refusals (5xx, timeouts) still bring the limit down.
//
// One probe per process, started by the first gate on the system clock; its timer is unref'd and
// costs ~100 wake-ups a second. Memory: a fixed ring.

import { performance } from 'node:perf_hooks';

/** The probe's period. Stalls shorter than about this plus the timer's 1 ms granularity go unseen. */
export const PROBE_MS = 10;
/** Lateness at or below this is the timer's own granularity (libuv's clock has 1 ms resolution), not a stall. */
const GRANULARITY_MS = 1;
/** Idle time at or below this in an interval is the loop's zero-timeout polls between callbacks, not waiting. */
const IDLE_EPSILON_MS = 0.5;
/** Ticks remembered: 256 × 10 ms covers the last 2.5 s or more. */
const RING = 256;

export interface StallSource {
  /**
   * Milliseconds of [startMs, endMs] (performance.now() times) by which Rempart's own event loop may
   * have delayed reading the answer at endMs: the part of the span under the busy stretch ending then.
   */
  stalledWithin(startMs: number, endMs: number): number;
}

// eventLoopUtilization().idle is this value (ms), read with a clock read and an object made per call;
// this is read once per admission release.
const loopIdleMs = (): number => performance.nodeTiming.idleTime;

export class StallProbe implements StallSource {
  /** Per tick: when it fired, when it was due, the loop's idle time so far. */
  readonly #at = new Float64Array(RING);
  readonly #due = new Float64Array(RING);
  readonly #idle = new Float64Array(RING);
  /** Ticks recorded so far (the ring's write position is count % RING). */
  #count = 0;
  #expectedMs: number;
  readonly #idleMs: () => number;

  /** `timer` false: no timer of its own, ticks come from tick() (tests), with `idleMs` the loop's idle time. */
  constructor(nowMs = performance.now(), timer = true, idleMs: () => number = loopIdleMs) {
    this.#expectedMs = nowMs + PROBE_MS;
    this.#idleMs = idleMs;
    if (timer) setInterval(() => this.tick(performance.now()), PROBE_MS).unref();
  }

  /** The probe's timer fired at `now`. */
  tick(now: number): void {
    const i = this.#count++ % RING;
    this.#at[i] = now;
    this.#due[i] = this.#expectedMs;
    this.#idle[i] = this.#idleMs();
    // setInterval re-arms from when the callback runs, so the next tick is due PROBE_MS from now.
    this.#expectedMs = now + PROBE_MS;
  }

  stalledWithin(startMs: number, endMs: number): number {
    if (endMs <= startMs) return 0;
    // The interval (upper's tick, read]: first from the last tick to the read, its due tick still to come.
    let upper = endMs;
    let upperDue = this.#expectedMs;
    let upperIdle = this.#idleMs();
    let busyFrom = endMs;
    const oldest = Math.max(0, this.#count - RING);
    for (let n = this.#count - 1; n >= oldest && upper > startMs; n--) {
      const i = n % RING;
      if (upperIdle - this.#idle[i]! > IDLE_EPSILON_MS) {
        // The loop waited for I/O in this interval: busy only since its due tick, if that came late.
        if (upper - upperDue > GRANULARITY_MS) busyFrom = upperDue;
        break;
      }
      // Busy throughout the interval: the stretch goes on before it.
      busyFrom = upper = this.#at[i]!;
      upperDue = this.#due[i]!;
      upperIdle = this.#idle[i]!;
    }
    return busyFrom > startMs ? endMs - busyFrom : endMs - startMs;
  }
}

let probe: StallProbe | null = null;

/** The process's stall probe (started on first use). */
export function eventLoopStalls(): StallSource {
  if (probe === null) probe = new StallProbe();
  return probe;
}
