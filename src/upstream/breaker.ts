// A circuit breaker per upstream (passive failover), fed by real traffic. Two kinds of failure, judged
// apart because only one of them can be caused by a client:
//
// - Connect failures (refused, unreachable, DNS, connect timeout, TLS handshake): the upstream could
//   not be reached at all, whatever the request. No request can make a live origin refuse a connection,
//   so `consecutiveFailures` of them in a row open the breaker alone.
// - Response failures (502/504 answered, no response head within headersTimeoutMs, a reset after the
//   request went out, an unparsable answer): these depend on the request. One client asking five times
//   at once for a slow path (or one the origin drops) used to open the breaker for every user of the
//   upstream; now they open it only when, over a rolling window, there were at least `minRequests`
//   answers, at least `failurePercent` of them failed, and the failures came from at least `minClients`
//   client networks (IPv4 /24s, IPv6 /48s: spreadKey) AND on at least `minPaths` paths. One client, or one slow path however many clients
//   ask for it, cannot meet that; an origin really down fails every path for everyone and does. A slow
//   path is its own request's timeout, not the whole upstream's outage.
//
// The model is Envoy's outlier detection with split_external_local_origin_errors: local-origin
// (connect) failures counted in a row (consecutive_local_origin_failure), the origin's own errors
// judged by a failure percentage with a minimum request volume per interval (failure_percentage_*,
// like Hystrix's 50 % over 20 requests in 10 s), to which the spread over prefixes and paths is added
// because a breaker here sits in front of hostile clients. Envoy's consecutive_5xx and HAProxy's
// `observe layer7` (error-limit consecutive 5xx) are the old model: one client can trip both.
//
//   closed ──(connect failures in a row, or spread response failures)──▶ open ──(openMs)──▶ half_open
//     ▲                                          ▲                                              │ one probe
//     └──────────────(probe succeeds)────────────┼──────────────(probe fails)───────────────────┘
//
// Time comes from an injected Clock, so the transitions are tested without sleeping.
import type { Clock } from '../core/clock.ts';
import { addDistinct, distinct, spreadKey } from './spread.ts';

export const BREAKER_STATES = ['closed', 'open', 'half_open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

export interface BreakerSettings {
  /** Connect failures in a row that open the breaker. */
  readonly consecutiveFailures: number;
  readonly openMs: number;
  /** The rolling window response failures are judged over. */
  readonly windowMs: number;
  /** Answers (successes and response failures) in the window before response failures may open it. */
  readonly minRequests: number;
  /** Response failures, in percent of the window's answers, that may open it. */
  readonly failurePercent: number;
  /** Distinct client prefixes among the window's response failures needed to open it. */
  readonly minClients: number;
  /** Distinct paths among the window's response failures needed to open it. */
  readonly minPaths: number;
}

/**
 * One window's counts. The distinct prefixes and paths are the first few seen (up to minClients and
 * minPaths): enough to say "at least N", bounded whatever clients send, and strings the request
 * already held (nothing copied).
 */
class Bucket {
  start = 0;
  answers = 0;
  failures = 0;
  readonly prefixes: string[] = [];
  readonly paths: string[] = [];

  reset(start: number): void {
    this.start = start;
    this.answers = 0;
    this.failures = 0;
    this.prefixes.length = 0;
    this.paths.length = 0;
  }
}

export class CircuitBreaker {
  readonly name: string;
  #settings: BreakerSettings;
  readonly #clock: Clock;
  /** Plain property so the hot path reads it without a call. */
  state: BreakerState;
  /** Connect failures in a row. */
  #failures: number;
  #openedAt: number;
  /** When the half-open probe was let through (0 if none is out). */
  #probeAt: number;
  // A sliding window of two fixed ones: the current, and the one before weighted by how much of it
  // still lies within windowMs of now (the estimate nginx's and Cloudflare's rate limits use).
  #cur = new Bucket();
  #prev = new Bucket();
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
    const now = clock.now();
    this.#cur.reset(now);
    this.#prev.reset(now - settings.windowMs);
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

  /** An answer below 500: the upstream is reachable and serving. */
  onSuccess(): void {
    this.#failures = 0;
    if (this.state !== 'closed') {
      this.#probeAt = 0;
      this.#clearWindow();
      this.#set('closed');
      return;
    }
    this.#bucket().answers++;
  }

  /** The upstream could not be reached (connect refused or timed out, unreachable, DNS, TLS handshake). */
  onConnectFailure(): void {
    if (this.state === 'half_open') {
      this.#open();
      return;
    }
    if (this.state === 'open') return;
    this.#failures++;
    if (this.#failures >= this.#settings.consecutiveFailures) this.#open();
  }

  /**
   * The upstream was reached but failed this request (502/504, response timeout, reset, unparsable
   * answer), asked by a client of `clientPrefix` for `path`.
   */
  onResponseFailure(clientPrefix: string, path: string): void {
    if (this.state === 'half_open') {
      this.#open();
      return;
    }
    if (this.state === 'open') return;
    // The connection was made: whatever went wrong after, the connect-failure streak is over.
    this.#failures = 0;
    const s = this.#settings;
    const b = this.#bucket();
    b.answers++;
    b.failures++;
    addDistinct(b.prefixes, spreadKey(clientPrefix), s.minClients);
    addDistinct(b.paths, path, s.minPaths);
    const p = this.#prev;
    if (distinct(b.prefixes, p.prefixes, s.minClients) < s.minClients) return;
    if (distinct(b.paths, p.paths, s.minPaths) < s.minPaths) return;
    const w = Math.max(0, 1 - (this.#clock.now() - b.start) / s.windowMs);
    const answers = b.answers + p.answers * w;
    const failures = b.failures + p.failures * w;
    if (answers < s.minRequests || failures * 100 < answers * s.failurePercent) return;
    this.#open();
  }

  /** The current window's bucket, rolled over first when its window is past. */
  #bucket(): Bucket {
    const b = this.#cur;
    const now = this.#clock.now();
    const windowMs = this.#settings.windowMs;
    if (now - b.start < windowMs) return b;
    const p = this.#prev;
    this.#prev = b;
    this.#cur = p;
    // Aligned to the window's grid; a bucket more than a window old says nothing of now.
    const start = now - ((now - b.start) % windowMs);
    p.reset(start);
    if (start - b.start >= 2 * windowMs) b.reset(start - windowMs);
    return p;
  }

  #clearWindow(): void {
    const now = this.#clock.now();
    this.#cur.reset(now);
    this.#prev.reset(now - this.#settings.windowMs);
  }

  #open(): void {
    this.#failures = 0;
    this.#probeAt = 0;
    this.#openedAt = this.#clock.now();
    // Failures that opened it are spent: after the probe closes it, the count starts afresh.
    this.#clearWindow();
    this.#set('open');
  }

  #set(to: BreakerState): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.onChange?.(this, from, to);
  }
}
