// The drill matrix's attacker (src/drill/matrix.ts): one parametrised population of bots rather than
// one class per named attack, so a drawn scenario can be any mix of what the named attacks do. Each
// bot is a source address in 127/8 (its /24 chosen by `prefixes`), sends open-loop arrivals at
// `ratePerAddress` (all bots together: a step to the full rate or a linear ramp), plain or
// browser-like, keeping cookies or not, solving the proof of work or not, on random, popular or
// login paths. The generator is capped (in-flight requests; solving work queued for its threads,
// src/drill/solve-pool.ts): what it could not send, and how long it held solving bots, is counted,
// so a scenario it cannot produce is reported as such.
import { Pool, type Dispatcher } from 'undici';
import { takeRequest, wholeArrivals, classifyError, errorText, USER_AGENTS, type RunContext } from './context.ts';
import { isChallenge, mayBeChallenge } from './challenge.ts';
import { SOLUTION_COOKIE, challengeFrom } from '../client/index.ts';
import { SolvePool, type SolveResult } from './solve-pool.ts';

export const BOT_PATHS = ['random', 'popular', 'login', 'mixed'] as const;
export type BotPaths = (typeof BOT_PATHS)[number];

export interface BotSpec {
  addresses: number;
  /** /24 prefixes the addresses are spread over (at least addresses ÷ 254). */
  prefixes: number;
  ratePerAddress: number;
  /** Browser-like headers (accept, accept-language, sec-fetch-*) or a scripted client's few. */
  browser: boolean;
  /** A new user agent on every request rather than one per address. */
  rotateAgent: boolean;
  /** Keep the cookies the target sets (a clearance, a session) per address (solvers: per /24 and agent). */
  cookies: boolean;
  /** Solve proof-of-work challenges (with rempart/client's solver), then retry once. */
  solve: boolean;
  paths: BotPaths;
  /** Seconds from the attack's start to its full rate (0: a step). */
  rampSec: number;
  startSec: number;
  durationSec: number;
}

export interface BotCaps {
  /** Unanswered requests beyond which arrivals are dropped (not sent). */
  maxInFlight: number;
  /** Sockets per address. */
  connectionsPerAddress: number;
  /** Threads solving proof of work for all bots together (0: sized to the machine, 1 to 2). */
  solveWorkers: number;
  /** A solve is not queued when the work ahead of it would keep it waiting longer (seconds). */
  maxSolveQueueSec: number;
}

/** Solves held longer than this are counted apart (a figure of the report, not the rule). */
export const SOLVE_HELD_MS = 1000;

/** Share of the attack the generator may delay or drop before the scenario is "not produced". */
export const SHORTFALL_SHARE = 0.1;

export interface BotCounts {
  /** Arrivals the spec called for. */
  due: number;
  sent: number;
  notSent: number;
  answered: number;
  /** Answered with X-Origin: the origin answered it (even its own 503). */
  passed: number;
  blocked: number;
  /** Connections refused or reset before an answer (a ban on accept, a cap). */
  refused: number;
  timeout: number;
  other: number;
  error: number;
  challenged: number;
  solved: number;
  /** Challenges left unsolved because the solve pool's queue was full of work (counted apart). */
  solveSkipped: number;
  /** Solves the generator held over SOLVE_HELD_MS (queue wait + the thread's wait for a core). */
  solveHeld: number;
  /**
   * Bot-seconds the generator held: per solve, the time it added beyond the work (the wait for a
   * thread, the thread's wait for a core) times the bots sharing the jar that waited for it.
   */
  solveHeldBotSec: number;
  /** Of the time held, seconds waiting for a thread (the queue) and a thread waiting for a core. */
  solveQueueSec: number;
  solveCoreWaitSec: number;
  /** CPU seconds of solving: the work the difficulty asked for. */
  solveCpuSec: number;
  /** Per solve, what the generator added (ms), for percentiles; one entry per solve attempted. */
  solveHeldMs: number[];
  /** Sessions the target granted (a sid cookie stored). */
  sessions: number;
}

/** The attack's bot-seconds at its drawn rate: every bot over the attack, a ramp counted half. */
export function attackBotSec(spec: Pick<BotSpec, 'addresses' | 'durationSec' | 'rampSec'>): number {
  return spec.addresses * Math.max(0.1, spec.durationSec - spec.rampSec / 2);
}

/**
 * Why the generator, not the defence, kept an attack from being sent as drawn ('' when it did not):
 * - under 80 % of the drawn arrivals sent (its in-flight cap);
 * - over SHORTFALL_SHARE of the attack delayed or dropped by its solving (20 solve attempts at least):
 *   the bot-seconds it held solving bots (the time a solve waited for a thread, or its thread for a
 *   core, times the bots waiting for that solve) as a share of the attack's bot-seconds, plus the
 *   challenged requests whose solve it skipped (its queue full of work) as a share of those sent.
 *   Both estimate a share of the attack's requests: a bot's requests wait while its solve is held.
 * The work itself, the hashes the difficulty asked (the thread's CPU time), is never held against the
 * generator: a bot waiting for it is the defence working, and a rising difficulty only means fewer
 * solves, as for a real attacker with a core per bot.
 */
export function generatorShortfall(
  c: BotCounts,
  caps: BotCaps,
  spec: Pick<BotSpec, 'addresses' | 'durationSec' | 'rampSec'>,
  workers: number,
): string {
  if (c.due > 0 && c.sent < 0.8 * c.due)
    return `generator sent ${c.sent} of ${c.due} arrivals (in-flight cap ${caps.maxInFlight})`;
  const attempts = c.solveSkipped + c.solveHeldMs.length;
  if (attempts < 20) return '';
  const held = c.solveHeldBotSec / attackBotSec(spec);
  const skipped = c.sent > 0 ? c.solveSkipped / c.sent : 0;
  if (held + skipped <= SHORTFALL_SHARE) return '';
  const pct = (x: number) => Math.round(x * 1000) / 10;
  return (
    `generator held ${pct(held)} % of the attack's bot-time in its solve queue and skipped ${c.solveSkipped} ` +
    `solves (${pct(skipped)} % of requests sent), over ${pct(SHORTFALL_SHARE)} % (${workers} threads, ` +
    `${Math.round(c.solveCpuSec * 10) / 10} CPU s of work)`
  );
}

const BLOCK_STATUSES = new Set([403, 408, 429, 444, 503]);
const SCRIPTED = ['python-requests/2.32.3', 'Go-http-client/1.1', 'curl/8.5.0', 'okhttp/4.12.0', 'axios/1.7.7'];
/** The paths real users ask for most (the legit population's home page and popular parcels). */
const POPULAR = ['/', '/static/app.css', '/track/6A10000000000', '/track/6A10007919113', '/track/6A10015838226'];

/** Address of bot n: its /24 is n mod prefixes (spread over 127.B.x.0/24 for B from `firstBlock`). */
export function botAddress(firstBlock: number, prefixes: number, n: number): string {
  const p = n % prefixes;
  const host = Math.floor(n / prefixes);
  return `127.${firstBlock + (p >> 8)}.${p & 255}.${1 + (host % 254)}`;
}

const rnd = () => Math.random().toString(36).slice(2, 10);
const digits = () => String(Math.floor(Math.random() * 1e11)).padStart(11, '0');

/** A cookie jar, with the solve under way for it (resolves once its retry has stored the clearance). */
interface Jar {
  cookies: Map<string, string>;
  solving: Promise<boolean> | null;
  /** Bots sharing it: a solve held by the generator holds all of them. */
  bots: number;
}

interface Bot {
  pool: Pool;
  ua: string;
  jar: Jar | null;
}

/** Every counter at zero: a bot group's start (and a test's base). */
export function emptyBotCounts(): BotCounts {
  return {
    due: 0,
    sent: 0,
    notSent: 0,
    answered: 0,
    passed: 0,
    blocked: 0,
    refused: 0,
    timeout: 0,
    other: 0,
    error: 0,
    challenged: 0,
    solved: 0,
    solveSkipped: 0,
    solveHeld: 0,
    solveHeldBotSec: 0,
    solveQueueSec: 0,
    solveCoreWaitSec: 0,
    solveCpuSec: 0,
    solveHeldMs: [],
    sessions: 0,
  };
}

export class BotAttack {
  readonly ctx: RunContext;
  readonly spec: BotSpec;
  readonly caps: BotCaps;
  readonly firstBlock: number;
  readonly startMs: number;
  readonly endMs: number;
  readonly counts: BotCounts = emptyBotCounts();

  readonly bots: Array<Bot | undefined>;
  inFlight = 0;
  next = 0;
  finished = false;
  /** Solving bots' threads: off this loop, which times every arrival, click and origin answer. */
  readonly solver: SolvePool | null;

  constructor(ctx: RunContext, spec: BotSpec, caps: BotCaps, firstBlock: number, runStartMs: number) {
    this.ctx = ctx;
    this.spec = spec;
    this.caps = caps;
    this.firstBlock = firstBlock;
    this.startMs = runStartMs + spec.startSec * 1000;
    this.endMs = this.startMs + spec.durationSec * 1000;
    this.bots = new Array(spec.addresses);
    this.solver = spec.solve ? new SolvePool({ workers: caps.solveWorkers, maxQueueSec: caps.maxSolveQueueSec }) : null;
  }

  /** Arrivals due by `t` ms into the attack: the integral of the rate (linear ramp, then flat). */
  dueAt(t: number): number {
    const full = this.spec.addresses * this.spec.ratePerAddress;
    const ramp = this.spec.rampSec * 1000;
    if (t <= 0) return 0;
    if (ramp > 0 && t < ramp) return (full * t * t) / (2 * ramp * 1000);
    return (full * (t - ramp / 2)) / 1000;
  }

  tick(nowMs: number): void {
    if (this.finished || nowMs < this.startMs) return;
    const t = (nowMs < this.endMs ? nowMs : this.endMs) - this.startMs;
    const due = wholeArrivals(this.dueAt(t)) - this.counts.due;
    for (let k = 0; k < due && !this.ctx.stopped; k++) this.fire();
    if (nowMs >= this.endMs) this.finished = true;
  }

  /** At the run's end: arrivals due by `nowMs` but never issued (this loop fell behind) count as not sent. */
  settle(nowMs: number): void {
    if (nowMs < this.startMs) return;
    const t = (nowMs < this.endMs ? nowMs : this.endMs) - this.startMs;
    const left = wholeArrivals(this.dueAt(t)) - this.counts.due;
    if (left <= 0) return;
    this.counts.due += left;
    this.counts.notSent += left;
  }

  /** Jars shared by solving bots, per /24 and agent (at most prefixes × agents). */
  readonly jars = new Map<string, Jar>();

  sharedJar(prefix: number, ua: string): Jar {
    const key = `${prefix}|${ua}`;
    let jar = this.jars.get(key);
    if (jar === undefined) {
      jar = { cookies: new Map(), solving: null, bots: 0 };
      this.jars.set(key, jar);
    }
    return jar;
  }

  bot(a: number): Bot {
    let b = this.bots[a];
    if (b === undefined) {
      const spec = this.spec;
      b = {
        pool: new Pool(this.ctx.dialOrigin, {
          connections: this.caps.connectionsPerAddress,
          pipelining: 1,
          localAddress: this.ctx.target.bindSources ? botAddress(this.firstBlock, spec.prefixes, a) : undefined,
          connect: { timeout: this.ctx.deadlineMs },
          headersTimeout: this.ctx.deadlineMs,
          bodyTimeout: this.ctx.deadlineMs,
          // A bot at a human pace reconnects rather than hold thousands of idle sockets.
          keepAliveTimeout: 2000,
          keepAliveMaxTimeout: 2000,
        }),
        ua: spec.browser ? USER_AGENTS[a % USER_AGENTS.length]! : SCRIPTED[a % SCRIPTED.length]!,
        jar: null,
      };
      // A clearance is bound to the client's /24 and user agent: a solving botnet shares it between
      // the bots of one /24 that send the same agent (one solve each), as a thrifty operator would.
      if (spec.solve && !spec.rotateAgent) {
        b.jar = this.sharedJar(a % spec.prefixes, b.ua);
        b.jar.bots++;
      } else if (spec.cookies || spec.solve) b.jar = { cookies: new Map(), solving: null, bots: 1 };
      this.bots[a] = b;
    }
    return b;
  }

  fire(): void {
    this.counts.due++;
    if (this.inFlight >= this.caps.maxInFlight) {
      this.counts.notSent++;
      return;
    }
    if (!takeRequest(this.ctx)) {
      this.counts.notSent++;
      return;
    }
    const a = this.next;
    this.next = a + 1 === this.spec.addresses ? 0 : a + 1;
    const bot = this.bot(a);
    if (this.spec.rotateAgent) {
      const list = this.spec.browser ? USER_AGENTS : SCRIPTED;
      bot.ua = list[Math.floor(Math.random() * list.length)]!;
    }
    this.counts.sent++;
    this.inFlight++;
    void this.send(bot, this.request(bot), false).finally(() => {
      this.inFlight--;
    });
  }

  request(bot: Bot): Dispatcher.RequestOptions {
    const spec = this.spec;
    let kind = spec.paths;
    if (kind === 'mixed') kind = (['random', 'popular', 'login'] as const)[Math.floor(Math.random() * 3)]!;
    const headers: Record<string, string> = { host: this.ctx.hostHeader, 'user-agent': bot.ua };
    if (spec.browser) {
      headers.accept = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';
      headers['accept-language'] = 'fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7';
      headers['accept-encoding'] = 'gzip, deflate, br';
      headers['sec-fetch-dest'] = 'document';
      headers['sec-fetch-mode'] = 'navigate';
      headers['sec-fetch-site'] = 'same-origin';
    } else headers.accept = '*/*';
    headers['x-drill-kind'] = 'attack';
    if (kind === 'login') {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      const n = Math.floor(Math.random() * 200_000);
      return { method: 'POST', path: '/login', headers, body: `user=user${n}&password=${rnd()}` };
    }
    if (kind === 'popular')
      return { method: 'GET', path: POPULAR[Math.floor(Math.random() * POPULAR.length)]!, headers };
    // Random: never-cached parcels, or a search with a random query.
    return {
      method: 'GET',
      path: Math.random() < 0.5 ? `/track/6A${digits()}` : `/search?q=${rnd()}`,
      headers,
    };
  }

  async send(bot: Bot, opts: Dispatcher.RequestOptions, retried: boolean): Promise<void> {
    const c = this.counts;
    if (bot.jar !== null && bot.jar.cookies.size > 0) {
      let s = '';
      for (const [k, v] of bot.jar.cookies) s += s ? `; ${k}=${v}` : `${k}=${v}`;
      (opts.headers as Record<string, string>).cookie = s;
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await bot.pool.request(opts);
    } catch (err) {
      if (this.ctx.closing) return;
      const kind = classifyError(err);
      if (kind === 'timeout') c.timeout++;
      else if (kind === 'refused') {
        c.refused++;
        c.blocked++;
      } else {
        c.error++;
        this.ctx.warn(`bots: ${errorText(err)}`);
      }
      return;
    }
    if (bot.jar !== null) this.store(bot.jar, res.headers['set-cookie']);
    let json: unknown;
    if (mayBeChallenge(res.statusCode) && res.headers['x-origin'] === undefined) {
      try {
        json = JSON.parse(await res.body.text());
      } catch {
        json = undefined;
      }
    } else await res.body.dump().catch(() => {});
    if (this.ctx.closing) return;
    if (res.headers['x-origin'] === undefined && isChallenge(res.statusCode, res.headers, json)) {
      c.challenged++;
      const jar = bot.jar;
      if (this.spec.solve && !retried && jar !== null) {
        // A solver solves once per identity, as a scripted client would: the requests challenged
        // meanwhile wait for that solve's clearance, then go again with it.
        const pending = jar.solving;
        if (pending !== null) {
          if ((await pending) && !this.ctx.stopped) return this.send(bot, opts, true);
        } else if (this.solver !== null) {
          const info = challengeFrom(res.statusCode, res.headers, {
            challenge:
              typeof json === 'object' && json !== null ? (json as { challenge?: unknown }).challenge : undefined,
          });
          // Not a token the client can read: counted as a challenged request below, like an unsolved one.
          const job = info === null ? undefined : this.solver.solve(info.token, info.bits);
          if (job === null) {
            // The pool's queue holds more work than it drains in time: the bot stays refused.
            c.solveSkipped++;
            c.answered++;
            c.blocked++;
            return;
          }
          if (job !== undefined) {
            let settle!: (ok: boolean) => void;
            jar.solving = new Promise<boolean>((resolve) => {
              settle = resolve;
            });
            const ok = this.solved(jar, await job);
            // The retry carries the solution and earns the clearance cookie (a solution is good once).
            if (ok && !this.ctx.stopped) {
              c.solved++;
              await this.send(bot, opts, true);
            }
            jar.cookies.delete(SOLUTION_COOKIE);
            jar.solving = null;
            settle(ok);
            if (ok) return;
          }
        }
      }
    }
    c.answered++;
    if (res.headers['x-origin'] !== undefined) c.passed++;
    else if (BLOCK_STATUSES.has(res.statusCode) || res.headers['rempart-challenge'] !== undefined) c.blocked++;
    else c.other++;
  }

  /** Counts a solve's cost and puts its solution in the jar for the retry; false when none was found. */
  solved(jar: Jar, r: SolveResult): boolean {
    const c = this.counts;
    if (this.ctx.closing) return false;
    c.solveCpuSec += r.cpuMs / 1000;
    c.solveHeldMs.push(r.heldMs);
    c.solveHeldBotSec += (r.heldMs / 1000) * jar.bots;
    c.solveQueueSec += r.waitMs / 1000;
    c.solveCoreWaitSec += (r.heldMs - r.waitMs) / 1000;
    if (r.heldMs > SOLVE_HELD_MS) c.solveHeld++;
    if (r.solution === null) return false;
    jar.cookies.set(SOLUTION_COOKIE, r.solution);
    return true;
  }

  store(jar: Jar, setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return;
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const pair = line.split(';', 1)[0]!;
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      if (name === 'sid' && !jar.cookies.has('sid')) this.counts.sessions++;
      // A jar of a handful of cookies: a target setting thousands of names cannot grow it without end.
      if (jar.cookies.size < 16 || jar.cookies.has(name)) jar.cookies.set(name, pair.slice(eq + 1).trim());
    }
  }

  async close(): Promise<void> {
    this.finished = true;
    await Promise.allSettled([...this.bots.map((b) => b?.pool.destroy()), this.solver?.close()]);
  }
}
