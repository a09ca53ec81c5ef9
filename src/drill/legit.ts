// Legitimate users: closed-loop "people" with think time, cookies and one keep-alive connection
// each, bound to their own 127.1.x.y source address. Browsers track (Zipf-popular) parcels,
// vault users log in and read documents, approvals users approve payments.
import { Client } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LegitPopulation } from './scenario.ts';
import { takeRequest, classifyError, errorText, USER_AGENTS, type RunContext } from './context.ts';
import type { LegitClass, LegitFailure } from './stats.ts';
import { isChallenge, mayBeChallenge, solveChallenge } from './challenge.ts';
import { sourceAddress } from './safety.ts';

export const LEGIT_BLOCK = 1;
/** Vault documents of the reference origin (ids 1..50), used when the list cannot be parsed. */
const FALLBACK_DOC_IDS = Array.from({ length: 50 }, (_, i) => i + 1);

// Popular parcels repeat (a few are tracked by many people): Zipf(s=1.1) over 2000 ids.
const PARCELS = 2000;
const PARCEL_PATHS = Array.from(
  { length: PARCELS },
  (_, k) => `/track/6A${String(10_000_000_000 + k * 7_919_113).slice(0, 11)}`,
);
const ZIPF_CDF = (() => {
  const cdf = new Float64Array(PARCELS);
  let sum = 0;
  for (let k = 0; k < PARCELS; k++) cdf[k] = sum += 1 / (k + 1) ** 1.1;
  for (let k = 0; k < PARCELS; k++) cdf[k]! /= sum;
  return cdf;
})();

function zipfParcelPath(): string {
  const u = Math.random();
  let lo = 0;
  let hi = PARCELS - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ZIPF_CDF[mid]! < u) lo = mid + 1;
    else hi = mid;
  }
  return PARCEL_PATHS[lo]!;
}

const between = (r: [number, number]) => r[0] + Math.floor(Math.random() * (r[1] - r[0] + 1));

interface Answer {
  status: number;
  json: unknown;
}

/** Bodies we parse are small; a misbehaving target must not make us buffer megabytes. */
const MAX_PARSED_BODY_BYTES = 256 * 1024;

async function readBounded(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_PARSED_BODY_BYTES) {
      body.destroy();
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

class User {
  readonly ctx: RunContext;
  readonly pop: LegitPopulation;
  readonly client: Client;
  readonly cookies = new Map<string, string>();
  ua: string;
  /** Whether the current visit met a challenge (for the report's returning-users figure). */
  visitChallenged = false;
  /** Whether this person ever met a challenge, or a connection refused or reset (a ban, a cap). */
  everChallenged = false;
  everRefused = false;

  constructor(ctx: RunContext, pop: LegitPopulation, index: number, addressOf?: (n: number) => string) {
    this.ctx = ctx;
    this.pop = pop;
    this.ua = USER_AGENTS[index % USER_AGENTS.length]!;
    const localAddress = ctx.target.bindSources ? (addressOf ?? defaultAddress)(index) : undefined;
    this.client = new Client(ctx.dialOrigin, {
      localAddress, // a Client option: undici ignores connect.localAddress
      connect: { timeout: ctx.deadlineMs },
      headersTimeout: ctx.deadlineMs,
      bodyTimeout: ctx.deadlineMs,
      keepAliveTimeout: 10_000,
      pipelining: 1,
    });
  }

  /** Think time; resolves false when the run stops meanwhile. */
  async pause(range: [number, number]): Promise<boolean> {
    const ms = between(range);
    if (ms > 0) await sleep(ms, undefined, { ref: false });
    return !this.ctx.stopped;
  }

  async loop(): Promise<void> {
    let first = true;
    if (this.pop.previsit && this.pop.startSec > 0) {
      // A returning customer: one visit at some moment of the calm before the crowd, then back at startSec.
      const at = Math.random() * this.pop.startSec * 800;
      await sleep(at, undefined, { ref: false });
      if (this.ctx.stopped) return;
      this.visitChallenged = false;
      await this.visitOnce();
      if (!this.ctx.closing) this.ctx.rec.visit(false, this.visitChallenged);
      first = false;
      await sleep(Math.max(0, this.pop.startSec * 1000 - (performance.now() - this.ctx.rec.startMs)), undefined, {
        ref: false,
      });
    } else {
      // Stagger arrivals over one think time so users do not all click at t=0.
      await sleep(this.pop.startSec * 1000 + Math.random() * this.pop.pauseMs[1], undefined, { ref: false });
    }
    while (!this.ctx.stopped) {
      let returning = !first;
      if (Math.random() >= this.pop.returningShare) {
        this.cookies.clear(); // a new visitor: empty cookie jar, maybe another browser
        this.ua = USER_AGENTS[Math.floor(Math.random() * USER_AGENTS.length)]!;
        returning = false;
      }
      first = false;
      this.visitChallenged = false;
      await this.visitOnce();
      if (!this.ctx.closing) this.ctx.rec.visit(returning, this.visitChallenged);
      if (!(await this.pause(this.pop.pauseMs))) return;
    }
  }

  visitOnce(): Promise<void> {
    if (this.pop.kind === 'browser') return this.browse();
    if (this.pop.kind === 'vault') return this.vault();
    return this.approvals();
  }

  async browse(): Promise<void> {
    if (!(await this.request('home', 'GET', '/'))) return;
    await this.request('home', 'GET', '/static/app.css');
    const pages = between(this.pop.pagesPerVisit);
    for (let i = 0; i < pages; i++) {
      if (!(await this.pause(this.pop.pauseMs))) return;
      await this.request('tracking', 'GET', zipfParcelPath());
    }
  }

  async vault(): Promise<void> {
    if (!this.cookies.has('sid')) {
      const n = Math.floor(Math.random() * 100_000);
      const login = await this.request(
        'vault',
        'POST',
        '/login',
        `user=user${n}&password=pass${n}`,
        'application/x-www-form-urlencoded',
      );
      if (!login || login.status >= 300) return;
      if (!(await this.pause(this.pop.pauseMs))) return;
    }
    const list = await this.request('vault', 'GET', '/vault/documents', undefined, undefined, true);
    if (!list) return;
    if (list.status === 401) {
      this.cookies.delete('sid'); // session expired or evicted: log in again next visit
      return;
    }
    const ids =
      Array.isArray(list.json) && list.json.length > 0
        ? (list.json as Array<{ id?: unknown }>)
            .map((d) => d.id)
            .filter((id) => typeof id === 'number' || typeof id === 'string')
        : FALLBACK_DOC_IDS;
    const pages = between(this.pop.pagesPerVisit);
    for (let i = 0; i < pages; i++) {
      if (!(await this.pause(this.pop.pauseMs))) return;
      const id = ids[Math.floor(Math.random() * ids.length)] ?? 1;
      await this.request('vault', 'GET', `/vault/documents/${id}`);
    }
  }

  async approvals(): Promise<void> {
    const pages = between(this.pop.pagesPerVisit);
    for (let i = 0; i < pages; i++) {
      if (i > 0 && !(await this.pause(this.pop.pauseMs))) return;
      const paymentId = `PAY${Date.now().toString(36)}${Math.floor(Math.random() * 1e9).toString(36)}`;
      await this.request('approvals', 'POST', '/payments/approve', JSON.stringify({ paymentId }), 'application/json');
    }
  }

  /**
   * One request, recorded under `cls`. Returns the answer (status + parsed JSON when asked) or
   * null when the request failed at the transport level or was not sent.
   */
  async request(
    cls: LegitClass,
    method: string,
    path: string,
    body?: string,
    contentType?: string,
    wantJson = false,
    retried = false,
    waitedMs = 0,
    carriedMs = 0,
  ): Promise<Answer | null> {
    const ctx = this.ctx;
    if (!takeRequest(ctx)) {
      if (waitedMs > 0) ctx.rec.waitingRoom(cls, waitedMs, 'waiting');
      return null;
    }
    const headers: Record<string, string> = {
      host: ctx.hostHeader,
      'user-agent': this.ua,
      accept:
        wantJson || contentType === 'application/json'
          ? 'application/json'
          : 'text/html,application/xhtml+xml,*/*;q=0.8',
      'accept-language': 'fr-FR,fr;q=0.9,en;q=0.5',
      'x-drill-kind': 'legit',
    };
    if (contentType) headers['content-type'] = contentType;
    if (this.cookies.size > 0) {
      let c = '';
      for (const [k, v] of this.cookies) c += c ? `; ${k}=${v}` : `${k}=${v}`;
      headers.cookie = c;
    }
    const t0 = performance.now();
    try {
      const res = await this.client.request({ method, path, headers, body });
      this.storeCookies(res.headers['set-cookie']);
      if (res.statusCode === 503 && res.headers['rempart-waiting-room'] !== undefined) {
        // A person in a waiting room keeps the page open: it refreshes itself after Retry-After
        // seconds, with the ticket cookie, until they are let in.
        await res.body.dump();
        if (waitedMs === 0) ctx.rec.enteredLine(cls);
        const waitMs = Math.min(30, Math.max(1, Number(res.headers['retry-after']) || 1)) * 1000;
        const spent = performance.now() - t0;
        if (ctx.closing || ctx.stopped || !(await this.pause([waitMs, waitMs]))) {
          if (!ctx.closing) ctx.rec.waitingRoom(cls, waitedMs + spent, 'waiting');
          return null;
        }
        return this.request(cls, method, path, body, contentType, wantJson, retried, waitedMs + spent + waitMs);
      }
      let json: unknown;
      const challengeCandidate = mayBeChallenge(res.statusCode);
      if (wantJson || challengeCandidate) {
        const text = await readBounded(res.body);
        try {
          json = text === null ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
      } else {
        await res.body.dump();
      }
      // A request retried after a challenge counts once, with the time the challenge took.
      const latencyMs = performance.now() - t0 + carriedMs;
      if (ctx.closing) return null;
      let failure: LegitFailure | null = null;
      if (challengeCandidate && isChallenge(res.statusCode, res.headers, json)) {
        this.visitChallenged = true;
        this.everChallenged = true;
        const solved =
          !retried &&
          (await solveChallenge({
            status: res.statusCode,
            headers: res.headers,
            cookies: this.cookies,
            challenge:
              typeof json === 'object' && json !== null ? (json as { challenge?: unknown }).challenge : undefined,
          }));
        if (solved) {
          ctx.rec.classes[cls].challengesSolved++;
          return this.request(
            cls,
            method,
            path,
            body,
            contentType,
            wantJson,
            true,
            waitedMs,
            performance.now() - t0 + carriedMs,
          );
        }
        failure = 'challenge';
      } else if (res.statusCode >= 400) failure = 'status';
      else if (latencyMs > ctx.deadlineMs) failure = 'timeout';
      if (failure !== null) ctx.rec.legitReason(failureReason(failure, res.statusCode, res.headers, json));
      if (waitedMs > 0) ctx.rec.waitingRoom(cls, waitedMs, failure === null ? 'served' : 'refused');
      ctx.rec.legit(cls, latencyMs, failure);
      return { status: res.statusCode, json };
    } catch (err) {
      if (ctx.closing) return null;
      if (waitedMs > 0) ctx.rec.waitingRoom(cls, waitedMs, 'refused');
      const kind = classifyError(err);
      ctx.rec.legitReason(kind === 'refused' ? 'connection refused/reset' : kind);
      if (kind === 'refused') this.everRefused = true;
      if (kind === 'local') ctx.warn(`legit ${method} ${path}: ${errorText(err)}`);
      ctx.rec.legit(cls, performance.now() - t0, kind === 'timeout' ? 'timeout' : 'error');
      return null;
    }
  }

  storeCookies(setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return;
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const pair = line.split(';', 1)[0]!;
      const eq = pair.indexOf('=');
      if (eq > 0) this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }
}

const defaultAddress = (n: number) => sourceAddress(LEGIT_BLOCK, n);

/** What answered a failed request: the origin itself, Rempart's error code, a challenge, or lateness. */
function failureReason(
  failure: LegitFailure,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  json: unknown,
): string {
  if (failure === 'challenge') return `challenge ${status} (unsolved)`;
  if (failure === 'timeout') return 'late (past the deadline)';
  if (headers['x-origin'] !== undefined) return `origin ${status}`;
  const code = (json as { error?: { code?: unknown } } | undefined)?.error?.code;
  return typeof code === 'string' ? `${status} ${code.slice(0, 40)}` : `${status} (no code)`;
}

export interface LegitCrowd {
  done: Promise<void>;
  close(): Promise<void>;
  users: number;
  /** People who met a challenge at least once, and who had a connection refused or reset. */
  challengedUsers(): number;
  refusedUsers(): number;
}

/**
 * Starts every population; user n (over all populations) gets source address 127.1.x.y number n, or
 * `addressOf(n)` (the drill matrix spreads people over prefixes its own way).
 */
export function startLegit(
  ctx: RunContext,
  populations: LegitPopulation[],
  addressOf?: (n: number) => string,
): LegitCrowd {
  const users: User[] = [];
  for (const pop of populations)
    for (let i = 0; i < pop.users; i++) users.push(new User(ctx, pop, users.length, addressOf));
  const done = Promise.all(
    users.map((u) => u.loop().catch((e) => ctx.warn(`legit user crashed: ${errorText(e)}`))),
  ).then(() => undefined);
  return {
    done,
    users: users.length,
    challengedUsers: () => users.filter((u) => u.everChallenged).length,
    refusedUsers: () => users.filter((u) => u.everRefused).length,
    close: async () => {
      await Promise.allSettled(users.map((u) => u.client.destroy()));
    },
  };
}
