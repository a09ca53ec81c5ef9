// Alerts: what a guard, the attack level or failover raises when an operator should know now. Every
// alert is a log line and a count (`rempart_alerts_total{result="logged"}`); with a webhook configured
// it is also POSTed, off the request path: coalesced per kind, rate-limited, queued in a bounded queue,
// retried with backoff, signed with HMAC-SHA256. `raise()` never throws and never waits (docs/alerts.md).
//
//   raise(kind) ─► log line + metric ─► queue: at most one waiting POST per kind (later alerts of the kind
//                                       merge into it: count++, a few samples); oldest dropped past maxQueue
//                                          │ one POST in flight at a time, each kind at most once per minIntervalMs
//                                          ▼
//                                   POST url ─► 2xx: delivered │ 5xx, 429, network, timeout: retry after
//                                                              │ retryBaseMs·2ⁿ (then failed) │ other: failed
import type { AlertSink } from '../pipeline/env.ts';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { Agent, request } from 'undici';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { AlertsConfig } from './alerts-schema.ts';

export type { AlertSink };

/** Where alerts are POSTed. The URL and secret are secrets: only `host` is ever logged. */
export interface WebhookTarget {
  readonly url: string;
  readonly secret: string;
  /** host[:port] of the URL, the only part of it that is logged. */
  readonly host: string;
}

/** What a webhook receives (JSON, UTF-8). */
export interface AlertPayload {
  kind: string;
  message: string;
  fields: Record<string, unknown>;
  node: string;
  /** ISO time of the first alert in this POST. */
  time: string;
  /** Alerts of this kind this POST stands for (1 unless several were coalesced). */
  count: number;
  /** Up to MAX_SAMPLES of the other coalesced alerts, oldest first. */
  others: { message: string; fields: Record<string, unknown>; time: string }[];
}

const MAX_SAMPLES = 9;
/** Fields larger than this once serialised are replaced (an alert is a signal, not a data dump). */
const MAX_FIELDS_BYTES = 4096;
const MAX_BACKOFF_MS = 300_000;
/** Kinds are constants in code; anything else is folded into one label value so metrics stay bounded. */
const KIND = /^[a-z][a-z0-9_]{0,31}$/;
const MAX_KINDS = 64;

/**
 * Read the webhook URL and signing secret: the environment wins over the files. Throws an Error
 * naming where a bad value came from, never the value. Null when no URL is configured.
 */
export async function loadWebhookTarget(
  env: NodeJS.ProcessEnv,
  cfg: AlertsConfig['webhook'],
): Promise<WebhookTarget | null> {
  const fromFile = async (file: string, what: string): Promise<string> => {
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (err) {
      throw new Error(
        `alerts.webhook: cannot read the ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  };
  const envUrl = env.REMPART_ALERT_WEBHOOK_URL?.trim() ?? '';
  let url = envUrl;
  let origin = 'REMPART_ALERT_WEBHOOK_URL';
  if (url === '' && cfg.urlFile !== undefined) {
    url = await fromFile(cfg.urlFile, 'URL');
    origin = cfg.urlFile;
  }
  const envSecret = env.REMPART_ALERT_WEBHOOK_SECRET ?? '';
  const secret =
    envSecret !== '' ? envSecret : cfg.secretFile !== undefined ? await fromFile(cfg.secretFile, 'secret') : '';
  if (url === '') {
    if (secret !== '')
      throw new Error(
        'alerts.webhook: a signing secret is set but no webhook URL (REMPART_ALERT_WEBHOOK_URL or alerts.webhook.urlFile)',
      );
    return null;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`alerts.webhook: the webhook URL from ${origin} is not a valid URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new Error(`alerts.webhook: the webhook URL from ${origin} must be http:// or https://`);
  return { url: parsed.href, secret, host: parsed.host };
}

/** `sha256=<hex>`: the value of the Rempart-Signature header for this body. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

interface Pending {
  readonly kind: string;
  message: string;
  fields: Record<string, unknown>;
  timeMs: number;
  count: number;
  others: { message: string; fields: Record<string, unknown>; time: string }[];
  /** Attempts made so far. */
  attempts: number;
  /** Not sent before this wall time (the kind's interval, or a retry's backoff). */
  notBeforeMs: number;
}

export interface AlertsOptions {
  log: Logger;
  metrics: Pick<Metrics, 'alerts'>;
  /** The alerts settings in force (read at each decision, so a reload applies). */
  config: () => AlertsConfig;
}

type Outcome = 'delivered' | 'retry' | 'failed';

export class Alerts implements AlertSink {
  readonly #log: Logger;
  readonly #metrics: Pick<Metrics, 'alerts'>;
  readonly #config: () => AlertsConfig;
  #target: WebhookTarget | null;
  readonly #queue: Pending[];
  /** Kind → wall time of its last POST. Bounded by MAX_KINDS. */
  readonly #lastSentMs: Map<string, number>;
  #inFlight: Pending | null;
  #inFlightAbort: AbortController | null;
  #timer: NodeJS.Timeout | null;
  #agent: Agent | null;
  /** Set by stop(): send what waits now, no more retries. */
  #flushing: boolean;
  #stopped: boolean;
  #idle: (() => void) | null;

  constructor(opts: AlertsOptions) {
    this.#log = opts.log;
    this.#metrics = opts.metrics;
    this.#config = opts.config;
    this.#target = null;
    this.#queue = [];
    this.#lastSentMs = new Map();
    this.#inFlight = null;
    this.#inFlightAbort = null;
    this.#timer = null;
    this.#agent = null;
    this.#flushing = false;
    this.#stopped = false;
    this.#idle = null;
  }

  /** Use this webhook from now on (null: log and count only). Waiting alerts go to the new target. */
  setWebhook(target: WebhookTarget | null): void {
    const before = this.#target;
    this.#target = target;
    if (target !== null && (before === null || before.host !== target.host))
      this.#log.info({ webhookHost: target.host }, 'alerts: webhook configured');
    if (target === null && this.#queue.length > 0) this.#drop(this.#queue.splice(0));
    this.#pump();
  }

  /** The webhook's host (never its full URL), or null. */
  get webhookHost(): string | null {
    return this.#target?.host ?? null;
  }

  /** Alerts waiting for delivery (coalesced entries), not counting the one in flight. */
  get queued(): number {
    return this.#queue.length;
  }

  raise(kind: string, message: string, fields: Record<string, unknown>, logged = false): void {
    try {
      const k = KIND.test(kind) ? kind : 'other';
      if (!logged) this.#log.warn({ ...fields, alert: k }, message);
      this.#metrics.alerts.inc({ kind: k, result: 'logged' });
      if (this.#target === null || this.#stopped) return;
      this.#enqueue(k, String(message), plainFields(fields), Date.now());
    } catch (err) {
      // An alert must never break the request that raised it.
      try {
        this.#log.error({ err: (err as Error).message }, 'alerts: raise failed');
      } catch {
        /* nothing left to do */
      }
    }
  }

  /**
   * Send what waits now (ignoring intervals and backoff, without retries), for at most `waitMs`;
   * then drop the rest (counted) and close the webhook connection. raise() goes on logging.
   */
  async stop(waitMs = 2000): Promise<void> {
    if (this.#stopped) return;
    this.#flushing = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#pump();
    if (this.#inFlight !== null || this.#queue.length > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, waitMs);
        this.#idle = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    this.#idle = null;
    this.#stopped = true;
    this.#inFlightAbort?.abort();
    if (this.#inFlight !== null) this.#drop([this.#inFlight]);
    this.#drop(this.#queue.splice(0));
    const agent = this.#agent;
    this.#agent = null;
    await agent?.destroy().catch(() => {});
  }

  #enqueue(kind: string, message: string, fields: Record<string, unknown>, now: number): void {
    for (const p of this.#queue) {
      if (p.kind !== kind) continue;
      p.count++;
      if (p.others.length < MAX_SAMPLES) p.others.push({ message, fields, time: new Date(now).toISOString() });
      return;
    }
    const cfg = this.#config().webhook;
    while (this.#queue.length >= cfg.maxQueue) this.#drop(this.#queue.splice(0, 1));
    const last = this.#lastSentMs.get(kind);
    this.#queue.push({
      kind,
      message,
      fields,
      timeMs: now,
      count: 1,
      others: [],
      attempts: 0,
      notBeforeMs: last === undefined ? now : last + cfg.minIntervalMs,
    });
    this.#pump();
  }

  #drop(entries: Pending[]): void {
    for (const p of entries) this.#metrics.alerts.inc({ kind: p.kind, result: 'dropped' }, p.count);
  }

  /** Start the next due POST, or arm a timer for when one is due. One POST in flight at a time. */
  #pump(): void {
    if (this.#inFlight !== null || this.#stopped) return;
    if (this.#queue.length === 0 || this.#target === null) {
      this.#idle?.();
      return;
    }
    let next = 0;
    for (let i = 1; i < this.#queue.length; i++)
      if (this.#queue[i]!.notBeforeMs < this.#queue[next]!.notBeforeMs) next = i;
    const now = Date.now();
    const due = this.#queue[next]!.notBeforeMs;
    if (due > now && !this.#flushing) {
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#pump();
      }, due - now);
      this.#timer.unref();
      return;
    }
    const p = this.#queue.splice(next, 1)[0]!;
    this.#inFlight = p;
    if (this.#lastSentMs.size >= MAX_KINDS && !this.#lastSentMs.has(p.kind)) this.#lastSentMs.clear();
    this.#lastSentMs.set(p.kind, now);
    void this.#send(p, this.#target).then((outcome) => this.#settle(p, outcome));
  }

  #settle(p: Pending, outcome: Outcome): void {
    this.#inFlight = null;
    this.#inFlightAbort = null;
    if (this.#stopped) return; // stop() counted what was left
    if (outcome === 'delivered') this.#metrics.alerts.inc({ kind: p.kind, result: 'delivered' }, p.count);
    else if (outcome === 'retry' && p.attempts <= this.#config().webhook.retries && !this.#flushing) this.#requeue(p);
    else this.#metrics.alerts.inc({ kind: p.kind, result: 'failed' }, p.count);
    this.#pump();
  }

  /** Back into the queue after a failed attempt; merged into a newer entry of its kind if one waits. */
  #requeue(p: Pending): void {
    const cfg = this.#config().webhook;
    const retryAt = Date.now() + Math.min(cfg.retryBaseMs * 2 ** (p.attempts - 1), MAX_BACKOFF_MS);
    const newer = this.#queue.find((q) => q.kind === p.kind);
    if (newer === undefined) {
      p.notBeforeMs = retryAt;
      this.#queue.unshift(p);
      return;
    }
    // The older alert leads: its message, fields and time; the newer ones become samples.
    const samples = [
      { message: newer.message, fields: newer.fields, time: new Date(newer.timeMs).toISOString() },
      ...newer.others,
    ];
    newer.message = p.message;
    newer.fields = p.fields;
    newer.timeMs = p.timeMs;
    newer.count += p.count;
    newer.others = [...p.others, ...samples].slice(0, MAX_SAMPLES);
    newer.attempts = p.attempts;
    newer.notBeforeMs = Math.min(newer.notBeforeMs, retryAt);
  }

  async #send(p: Pending, target: WebhookTarget | null): Promise<Outcome> {
    if (target === null) return 'failed';
    p.attempts++;
    const cfg = this.#config();
    const payload: AlertPayload = {
      kind: p.kind,
      message: p.message,
      fields: p.fields,
      node: cfg.node ?? hostname(),
      time: new Date(p.timeMs).toISOString(),
      count: p.count,
      others: p.others,
    };
    const body = JSON.stringify(payload);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'rempart-alerts' };
    if (target.secret !== '') headers['rempart-signature'] = signBody(target.secret, body);
    const timeoutMs = cfg.webhook.timeoutMs;
    const abort = new AbortController();
    this.#inFlightAbort = abort;
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    // rejectUnauthorized said outright: NODE_TLS_REJECT_UNAUTHORIZED=0 would otherwise send the signed
    // alert (and a URL's token) to whoever answers for the host.
    this.#agent ??= new Agent({
      connections: 2,
      keepAliveTimeout: 10_000,
      connect: { timeout: timeoutMs, rejectUnauthorized: true },
    });
    let detail: Record<string, unknown>;
    let outcome: Outcome;
    try {
      const res = await request(target.url, {
        method: 'POST',
        headers,
        body,
        signal: abort.signal,
        dispatcher: this.#agent,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      await res.body.dump({ limit: 65536 }).catch(() => {});
      if (res.statusCode >= 200 && res.statusCode < 300) return 'delivered';
      outcome = res.statusCode >= 500 || res.statusCode === 429 ? 'retry' : 'failed';
      detail = { status: res.statusCode };
    } catch (err) {
      outcome = 'retry';
      // The error's code only: undici messages may quote the URL, which can hold a token.
      const e = err as { code?: string; name?: string };
      detail = { error: abort.signal.aborted ? 'timeout' : (e.code ?? e.name ?? 'error') };
    } finally {
      clearTimeout(timer);
    }
    if (!this.#stopped) {
      const last = outcome === 'failed' || p.attempts > cfg.webhook.retries || this.#flushing;
      this.#log.warn(
        { webhookHost: target.host, alert: p.kind, count: p.count, attempt: p.attempts, ...detail },
        last ? 'alerts: webhook delivery failed, giving up' : 'alerts: webhook delivery failed, will retry',
      );
    }
    return outcome;
  }
}

/** A JSON-safe, bounded copy of an alert's fields (they may hold anything a caller put there). */
function plainFields(fields: Record<string, unknown>): Record<string, unknown> {
  try {
    const text = JSON.stringify(fields ?? {});
    if (text.length > MAX_FIELDS_BYTES) return { truncated: true, bytes: text.length };
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { unserializable: true };
  }
}
