// Alerts (stub: a log line; the webhook is filled in by the alerts work).
import type { Logger } from '../core/log.ts';

export interface AlertSink {
  /** Raise an alert: always a log line, a metric, and the webhook when configured. Never throws, never blocks. */
  raise(kind: string, message: string, fields: Record<string, unknown>): void;
}

export class Alerts implements AlertSink {
  readonly #log: Logger;
  constructor(log: Logger) {
    this.#log = log;
  }
  raise(kind: string, message: string, fields: Record<string, unknown>): void {
    this.#log.warn({ alert: kind, ...fields }, message);
  }
}
