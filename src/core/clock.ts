// Time, injected: limiters and detectors read a Clock so tests drive time instead of sleeping.

export interface Clock {
  /** Milliseconds, monotonic, fractional. */
  now(): number;
  /** Milliseconds since the Unix epoch, for logs and cookies. */
  wallMs(): number;
}

// One clock read per I/O callback, not one per use: a proxied request read the clock 17 times (the
// context's start, the admission gate, the cache, the pool's timeouts, the breaker, the log line...), at
// about 0.1 µs each. The engines' I/O callbacks (a client's bytes, an upstream's bytes, the tick that
// finishes answers) hold the clock (holdClock/releaseClock): within one, the first read is kept and the
// others return it, as an event loop iteration of nginx reads its time once. Outside a held callback
// (timers, tests, the node engine) every read is a real one. A callback's work takes microseconds, a
// pipelined batch at most a few milliseconds: every timeout and rate here is coarser than that.
let held = 0;
let heldMono = -1;
let heldWall = -1;

/** performance.now(), or the value read earlier in the same held callback. */
export function monoNow(): number {
  if (held === 0) return performance.now();
  if (heldMono < 0) heldMono = performance.now();
  return heldMono;
}

/** Date.now(), or the value read earlier in the same held callback. */
export function wallNow(): number {
  if (held === 0) return Date.now();
  if (heldWall < 0) heldWall = Date.now();
  return heldWall;
}

/** An I/O callback begins: clock reads until releaseClock() return the first. Pairs with releaseClock in a finally. */
export function holdClock(): void {
  if (held++ === 0) {
    heldMono = -1;
    heldWall = -1;
  }
}

export function releaseClock(): void {
  if (--held === 0) {
    heldMono = -1;
    heldWall = -1;
  }
}

export const systemClock: Clock = {
  now: monoNow,
  wallMs: wallNow,
};

/** A clock that only moves when told to. */
export function createManualClock(startMs = 0): Clock & { advance(ms: number): void } {
  let t = startMs;
  return {
    now: () => t,
    wallMs: () => 1_700_000_000_000 + t,
    advance(ms: number) {
      t += ms;
    },
  };
}
