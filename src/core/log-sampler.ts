// Sampled logging for refusals and upstream errors: under attack, logs are an amplifier. The first
// few lines per reason in each window are written; the rest are counted and summed up in one line
// when the window turns. Keyed by reason code only (a bounded set from the error table), never by
// anything a client chooses.
import type { Clock } from './clock.ts';

interface Window {
  startMs: number;
  written: number;
  suppressed: number;
}

export class LogSampler {
  readonly #clock: Clock;
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #windows = new Map<string, Window>();

  constructor(clock: Clock, perWindow = 5, windowMs = 10_000) {
    this.#clock = clock;
    this.#perWindow = perWindow;
    this.#windowMs = windowMs;
  }

  /**
   * Whether to write this line. When a window closes with lines held back, `onSummary` is called
   * once with their count, so the log still says how much happened.
   */
  allow(reason: string, onSummary: (reason: string, suppressed: number, windowMs: number) => void): boolean {
    const now = this.#clock.now();
    let w = this.#windows.get(reason);
    if (w === undefined) {
      w = { startMs: now, written: 0, suppressed: 0 };
      this.#windows.set(reason, w);
    } else if (now - w.startMs >= this.#windowMs) {
      if (w.suppressed > 0) onSummary(reason, w.suppressed, now - w.startMs);
      w.startMs = now;
      w.written = 0;
      w.suppressed = 0;
    }
    if (w.written < this.#perWindow) {
      w.written++;
      return true;
    }
    w.suppressed++;
    return false;
  }
}
