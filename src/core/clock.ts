// Time, injected: limiters and detectors read a Clock so tests drive time instead of sleeping.

export interface Clock {
  /** Milliseconds, monotonic, fractional. */
  now(): number;
  /** Milliseconds since the Unix epoch, for logs and cookies. */
  wallMs(): number;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallMs: () => Date.now(),
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
