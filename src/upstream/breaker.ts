// A circuit breaker per upstream (passive failover). Failures are counted from real traffic:
// connect errors, timeouts, resets, bad responses and 502/504 answered by the upstream (not 503: an
// overloaded origin shedding its surplus is still serving).
//
//   closed ──(consecutiveFailures in a row)──▶ open ──(openMs elapsed)──▶ half_open
//     ▲                                          ▲                           │ one probe request
//     └──────────────(probe succeeds)────────────┼───────(probe fails)───────┘
//
// Time comes from an injected Clock, so the transitions are tested without sleeping.
import type { Clock } from '../core/clock.ts';

export const BREAKER_STATES = ['closed', 'open', 'half_open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

export interface BreakerSettings {
  readonly consecutiveFailures: number;
  readonly openMs: number;
}

export class CircuitBreaker {
  readonly name: string;
  #settings: BreakerSettings;
  readonly #clock: Clock;
  /** Plain property so the hot path reads it without a call. */
  state: BreakerState;
  #failures: number;
  #openedAt: number;
  /** When the half-open probe was let through (0 if none is out). */
  #probeAt: number;
  /** Called on every state change (metrics, logs). */
  onChange: ((breaker: CircuitBreaker, from: BreakerState, to: BreakerState) => void) | null;

  constructor(name: string, settings: BreakerSettings, clock: Clock) {
    this.name = name;
    this.#settings = settings;
    this.#clock = clock;
    this.state = 'closed';
    this.#failures = 0;
    this.#openedAt = 0;
    this.#probeAt = 0;
    this.onChange = null;
  }

  reconfigure(settings: BreakerSettings): void {
    this.#settings = settings;
  }

  /**
   * May a request go to this upstream now? Closed: yes. Open: no until openMs passed, then the
   * breaker turns half-open and the caller's request is the one probe. Half-open: no while the probe
   * is out; a probe whose outcome never came back (the client left, a cache hit answered it) is
   * replaced after another openMs.
   */
  allowRequest(): boolean {
    if (this.state === 'closed') return true;
    const now = this.#clock.now();
    if (this.state === 'open') {
      if (now - this.#openedAt < this.#settings.openMs) return false;
      this.#probeAt = now;
      this.#set('half_open');
      return true;
    }
    if (now - this.#probeAt < this.#settings.openMs) return false;
    this.#probeAt = now;
    return true;
  }

  /** Whether a request would be let through now, without taking the half-open probe. */
  wouldAllow(): boolean {
    if (this.state === 'closed') return true;
    const now = this.#clock.now();
    if (this.state === 'open') return now - this.#openedAt >= this.#settings.openMs;
    return now - this.#probeAt >= this.#settings.openMs;
  }

  onSuccess(): void {
    this.#failures = 0;
    if (this.state !== 'closed') {
      this.#probeAt = 0;
      this.#set('closed');
    }
  }

  onFailure(): void {
    if (this.state === 'half_open') {
      this.#open();
      return;
    }
    if (this.state === 'open') return;
    this.#failures++;
    if (this.#failures >= this.#settings.consecutiveFailures) this.#open();
  }

  #open(): void {
    this.#failures = 0;
    this.#probeAt = 0;
    this.#openedAt = this.#clock.now();
    this.#set('open');
  }

  #set(to: BreakerState): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.onChange?.(this, from, to);
  }
}
