// Active health checks: GET `path` on one server of an upstream every `intervalMs`, through the same
// keep-alive client as its requests (src/upstream/pool.ts).
// `unhealthyThreshold` failures in a row mark it unhealthy, `healthyThreshold` successes in a row
// healthy again. It starts healthy (optimistic), so a gateway that just started does not turn
// every request away before the first check. Timers are unref'd: they never hold the process open.
import type { Dispatcher } from 'undici';
import { isLocalShortage } from './errors.ts';

export interface HealthCheckSettings {
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
}

export type HealthResult = 'success' | 'failure';

export class HealthCheck {
  /** The upstream's name. */
  readonly name: string;
  /** The server's `host:port` ('' when built for a bare dispatcher). */
  readonly server: string;
  readonly settings: HealthCheckSettings;
  readonly #pool: Dispatcher;
  /** Plain property, read per request by the failover phase. */
  healthy: boolean;
  #successes: number;
  #failures: number;
  #timer: NodeJS.Timeout | null;
  #running: boolean;
  #inFlight: AbortController | null;
  /** Every check's result, and whether it changed `healthy`. */
  onResult: ((check: HealthCheck, result: HealthResult, changed: boolean) => void) | null;
  /** `healthy` changed (the server's pool recomputes who is in service). */
  onChange: ((check: HealthCheck) => void) | null;

  constructor(name: string, settings: HealthCheckSettings, pool: Dispatcher, server = '') {
    this.name = name;
    this.server = server;
    this.onChange = null;
    this.settings = settings;
    this.#pool = pool;
    this.healthy = true;
    this.#successes = 0;
    this.#failures = 0;
    this.#timer = null;
    this.#running = false;
    this.#inFlight = null;
    this.onResult = null;
  }

  get running(): boolean {
    return this.#running;
  }

  /** Start checking (idempotent). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule();
  }

  /** Stop checking and abandon a check in flight (idempotent). */
  stop(): void {
    this.#running = false;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#inFlight?.abort();
    this.#inFlight = null;
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.checkOnce().finally(() => this.#schedule());
    }, this.settings.intervalMs);
    this.#timer.unref();
  }

  /** Run one check now and record it. Exposed for tests. */
  async checkOnce(): Promise<HealthResult> {
    const ac = new AbortController();
    this.#inFlight = ac;
    const timer = setTimeout(() => ac.abort(), this.settings.timeoutMs);
    timer.unref();
    let ok = false;
    let local = false;
    try {
      const res = await this.#pool.request({
        path: this.settings.path,
        method: 'GET',
        signal: ac.signal,
        headersTimeout: this.settings.timeoutMs,
        bodyTimeout: this.settings.timeoutMs,
      });
      await res.body.dump();
      ok = res.statusCode >= 200 && res.statusCode < 400;
    } catch (err) {
      // The gateway out of descriptors or ports learns nothing about the upstream: not recorded.
      local = isLocalShortage(err);
    } finally {
      clearTimeout(timer);
      if (this.#inFlight === ac) this.#inFlight = null;
    }
    if (!this.#running && ac.signal.aborted) return 'failure'; // stopped mid-check: record nothing
    if (local) return 'failure';
    this.record(ok ? 'success' : 'failure');
    return ok ? 'success' : 'failure';
  }

  /** Count one result against the thresholds. */
  record(result: HealthResult): void {
    let changed = false;
    if (result === 'success') {
      this.#failures = 0;
      this.#successes++;
      if (!this.healthy && this.#successes >= this.settings.healthyThreshold) {
        this.healthy = true;
        changed = true;
      }
    } else {
      this.#successes = 0;
      this.#failures++;
      if (this.healthy && this.#failures >= this.settings.unhealthyThreshold) {
        this.healthy = false;
        changed = true;
      }
    }
    if (changed) this.onChange?.(this);
    this.onResult?.(this, result, changed);
  }
}
