// Phases `familiarity` (is this client known?) and `challenge` (proof of work for unknown clients
// when the attack level or a rule asks), and the verify endpoint under /.rempart/challenge/.
// Stateless per client: challenges, delay tokens and clearances are signed (tokens.ts); the server
// keeps only bounded tables: used solutions (replay.ts), origin-granted sessions (sessions.ts) and a
// fixed sketch of ignored challenges (ignored.ts). Protocol and doors: docs/challenge.md.
import type { Phase, PhaseModule } from '../../pipeline/phase.ts';
import { Verdict } from '../../pipeline/phase.ts';
import type { RequestContext } from '../../pipeline/context.ts';
import type { ErrorCode } from '../../core/errors.ts';
import type { Config } from '../../config/schema.ts';
import { AttackLevel, type DefenseDeps } from '../../pipeline/env.ts';
import { decide } from '../../pipeline/guard.ts';
import { errorBody } from '../../pipeline/reply.ts';
import { addressKey, cookieValue, cookieValues, v6PrefixKey } from '../../core/client-key.ts';
import { wantsHtml } from '../../core/html.ts';
import { loadChallengeKeys, type KeyRing } from './keys.ts';
import { TokenSigner, binding, type Refusal } from './tokens.ts';
import { ReplayGuard } from './replay.ts';
import {
  MemorySessionStore,
  Refused,
  learnSessions,
  type PaceBudget,
  type Session,
  type SessionStore,
  type Usage,
} from './sessions.ts';
import { PrefixWork } from './work.ts';
import { MintLineage, type MintSite, SpentAddresses } from './lineage.ts';
import { JwtVerifier, type JwtSettings } from './jwt.ts';
import { IgnoredChallenges, SecondsInARow } from './ignored.ts';
import { WindowQuota } from '../../core/window-quota.ts';
import { CHALLENGE_PAGE, RESERVED_PREFIX, VERIFY_PATH, challengePageHtml } from './pages.ts';

export { RESERVED_PREFIX, VERIFY_PATH } from './pages.ts';

/** Cookie holding the clearance (API clients may send it in the Rempart-Clearance header instead). */
export const CLEARANCE_COOKIE = '__rempart_clr';
/** Cookie a client that can only manage cookies (the drill's users) puts a solution in, for its retry. */
export const SOLUTION_COOKIE = '__rempart_sol';
export const CHALLENGE_HEADER = 'rempart-challenge';

// The challenge answer's constant parts (challengeReply): its headers, frozen (the token header is
// added per request), and the JSON body's error object and submit instructions.
const PAGE_HEADERS = Object.freeze({ ...CHALLENGE_PAGE.headers, 'cache-control': 'no-store' });
const API_HEADERS = Object.freeze({ 'content-type': 'application/json', 'cache-control': 'no-store' });
const errorJson = (code: ErrorCode) => JSON.stringify((JSON.parse(errorBody(code)) as { error: unknown }).error);
const CHALLENGE_ERROR_JSON = errorJson('RMP_ERR_CHALLENGE');
const FAILED_ERROR_JSON = errorJson('RMP_ERR_CHALLENGE_FAILED');
const SUBMIT_JSON = JSON.stringify({ header: 'Rempart-Solution', value: '<token>.<nonce>', verify: VERIFY_PATH });
export const SOLUTION_HEADER = 'rempart-solution';
export const CLEARANCE_HEADER = 'rempart-clearance';

type ChallengeConfig = Config['defense']['challenge'];
type Door = 'html' | 'nojs' | 'api';

export interface ChallengeGuard {
  readonly familiarity: Phase;
  /** How many times a client was looked up (clearance, session, JWT): only when a phase asked. */
  readonly familiarityLookups: number;
  readonly challenge: Phase;
  /** Called by the forward handler with every upstream response head: learns origin-granted sessions. */
  onUpstreamHead(ctx: RequestContext, status: number, rawHeaders: readonly (Buffer | string)[]): void;
  /** Read keys for a new config (throws on a bad key: the reload is refused); the returned function applies them. */
  prepare(config: Config): Promise<() => void>;
  readonly signer: TokenSigner;
  readonly sessions: SessionStore;
  /** Used solutions and delay tokens (the state file keeps them across restarts). */
  readonly replay: ReplayGuard;
}

// Characters of a return path that mean something in HTML or JavaScript; a browser sends them
// percent-encoded anyway (path and query percent-encode sets), so encoding them changes nothing for
// the origin and leaves no markup character for any page or header to carry.
const RETURN_ENCODE = /["'<>`]/g;

function percentEncodeChar(c: string): string {
  return `%${c.charCodeAt(0).toString(16).toUpperCase()}`;
}

/**
 * Same-origin relative path to return to after a clearance, or '/' (never an open redirect): one
 * '/' then not '/' nor a backslash anywhere (browsers read it as '/': '/\host' is '//host', another
 * site), printable ASCII only (tabs and newlines are dropped by URL parsers: '/\t/host'), not under
 * Rempart's own prefix (a loop). Quotes, '<', '>' and '`' are percent-encoded.
 */
export function safeReturnPath(value: string | null | undefined): string {
  if (value === null || value === undefined || value.length === 0 || value.length > 2048) return '/';
  if (value.charCodeAt(0) !== 47 /* / */ || value.charCodeAt(1) === 47 || value.indexOf('\\') !== -1) return '/';
  let markup = false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return '/';
    if (c === 0x22 || c === 0x27 || c === 0x3c || c === 0x3e || c === 0x60) markup = true;
  }
  if (value.startsWith(RESERVED_PREFIX)) return '/';
  return markup ? value.replace(RETURN_ENCODE, percentEncodeChar) : value;
}

function levelNumber(name: 'elevated' | 'under_attack'): AttackLevel {
  return name === 'elevated' ? AttackLevel.elevated : AttackLevel.underAttack;
}

/** The pace budget of one credential table (clearances are also bound to few addresses). */
function paceOf(f: Config['defense']['familiarity'], clearance: boolean): PaceBudget {
  const b = f.budget;
  return {
    ratePerMinute: b.ratePerMinute,
    burst: b.burst,
    underAttackBurst: b.underAttackBurst,
    maxAddresses: clearance ? b.clearanceMaxAddresses : 0,
  };
}

/** The pace budget every known client address shares between its credentials (`budget.perAddress` times one). */
function addressPaceOf(f: Config['defense']['familiarity']): PaceBudget {
  const b = f.budget;
  return {
    ratePerMinute: b.ratePerMinute * b.perAddress,
    burst: Math.ceil(b.burst * b.perAddress),
    underAttackBurst: Math.ceil(b.underAttackBurst * b.perAddress),
    maxAddresses: 0,
  };
}

/** A client's network: its IPv4 /24 (the client prefix), or its IPv6 /48 (a tunnel broker's whole grant). */
function networkKey(ctx: RequestContext): string {
  const v6 = ctx.clientAddress.indexOf(':') !== -1 && ctx.clientPrefix.indexOf(':') !== -1;
  return v6 ? v6PrefixKey(ctx.clientAddress, 48) : ctx.clientPrefix;
}

function headerString(v: string | string[] | undefined): string {
  return typeof v === 'string' ? v : '';
}

/**
 * @example
 *   const guard = await createChallengeGuard(defense);
 *   const phases = [..., guard.familiarity, rateLimit, signatures, guard.challenge, ...];
 */
export async function createChallengeGuard(
  deps: DefenseDeps,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ChallengeGuard> {
  const initial = deps.getRuntime().config.defense;
  const ring = await loadChallengeKeys(env, initial.challenge.keyFile);
  if (ring.source === 'random')
    deps.log.warn(
      'challenge: no REMPART_CHALLENGE_KEY nor defense.challenge.keyFile, using a random key for this process (clearances do not survive a restart nor work across nodes)',
    );
  const signer = new TokenSigner(ring);
  const sessions = new MemorySessionStore(
    initial.familiarity.maxSessions,
    initial.familiarity.sessionTtlSec,
    initial.familiarity.sessionBounds,
    paceOf(initial.familiarity, false),
  );
  // Verified JWTs by how widely each is used (a token shared by a crowd is not one person's).
  const jwtUsage = new MemorySessionStore(
    initial.familiarity.maxSessions,
    initial.familiarity.sessionTtlSec,
    initial.familiarity.sessionBounds,
    paceOf(initial.familiarity, false),
  );
  // Clearances by how they are used: one person's pace, from few addresses (a budget, not a free pass).
  const clearanceUsage = new MemorySessionStore(
    initial.familiarity.maxSessions,
    initial.challenge.clearanceTtlSec,
    initial.familiarity.sessionBounds,
    paceOf(initial.familiarity, true),
  );
  // Every known client address's own budget, shared by the credentials used from it.
  const addressPace = new MemorySessionStore(
    initial.familiarity.maxSessions,
    initial.familiarity.sessionTtlSec,
    initial.familiarity.sessionBounds,
    addressPaceOf(initial.familiarity),
  );
  // Addresses (with the clearance binding) whose credential went over its budget, with its debt then: a
  // clearance minted there later starts with that debt (re-solving does not buy a fresh budget).
  const spent = new SpentAddresses(initial.familiarity.maxSessions);
  // The last clearance minted at each address (and binding) and network, and how many this minute: past a
  // few, a new one inherits the last one's budget when that was burned quickly (minting pays; lineage.ts).
  const mints = new MintLineage(initial.familiarity.maxSessions);
  clearanceUsage.firstUse = (s, site, nowMs) => mints.firstUse(s, site as MintSite, nowMs);
  // Clearances minted per address (IPv6: /64), overrun or not: the work asked there rises with them as
  // with `work`, log-scaled (after fifty people behind one carrier-NAT address who each solved once, the
  // next pays four times the base; a bot minting a clearance a second eight times within minutes). Not
  // per network: a carrier's /24 holds thousands of people, and MintLineage already ties a network's
  // clearances burned quickly together.
  const mintWork = new PrefixWork(initial.challenge.difficultyRise.maxPrefixes);
  // The budget the clearance grant() just minted spends (read at once by inheritedRoom), and whether it
  // is one an overrun left at this address (SpentAddresses: the prefix's work rises with those).
  let mintedBudget: Session | null = null;
  let mintedSpent = false;
  // overPace() is answering the inheritedRoom() refusal of the request a clearance was minted on.
  let refusingHeir = false;
  // Trusted session grants per client address and window (budget.trustedGrants.perAddress).
  let grantQuota = new WindowQuota(initial.familiarity.sessionBounds.windowSec * 1000, 14);
  // Credentials that already raised their prefix's work this window (once each).
  const overOnce = new WindowQuota(initial.challenge.difficultyRise.halfLifeSec * 1000, 14);
  // Clearances per prefix that then went over their budget: the work asked of the next one rises with
  // them (a farm re-solving to get around the budget), not with clearances bought (a carrier NAT's /24
  // where people solve every few seconds, or an attacker buying cheap clearances there to raise it).
  const work = new PrefixWork(initial.challenge.difficultyRise.maxPrefixes);
  // Seconds a client key kept going past its Retry-After, per minute (past banAfter: a ban), and which
  // keys were refused this second and the one before (at most one count a second, none for a page).
  const overBudget = new IgnoredChallenges();
  const overSeconds = new SecondsInARow();
  // No-JS clearances per client prefix and minute (the door costs no work, only a wait). 4 × 2^16
  // counters (512 KiB): at 2^12, the /64s of a quarter of one /48 filled it and locked fresh prefixes out.
  const noScriptQuota = new WindowQuota(60_000, 16);
  const replay = new ReplayGuard(
    initial.challenge.replayCapacity,
    initial.challenge.challengeTtlSec * 1000 + 1000,
    deps.clock.wallMs(),
  );
  const ignored = new IgnoredChallenges();
  const tables = deps.metrics.tableSizes;
  tables.set('sessions', () => sessions.size);
  tables.set('jwt_usage', () => jwtUsage.size);
  tables.set('clearance_usage', () => clearanceUsage.size);
  tables.set('address_pace', () => addressPace.size);
  tables.set('prefix_work', () => work.size);
  tables.set('replay_guard', () => replay.size);
  let jwt: JwtVerifier | null =
    initial.familiarity.jwt === undefined ? null : await JwtVerifier.load(initial.familiarity.jwt as JwtSettings);

  function cookieLine(ctx: RequestContext, value: string, maxAgeSec: number): string {
    return `${CLEARANCE_COOKIE}=${value}; Path=/; Max-Age=${maxAgeSec}; HttpOnly; SameSite=Lax${ctx.protocol === 'https' ? '; Secure' : ''}`;
  }

  /**
   * From `elevated` up, the clearance just minted gets its budget entry now: a fresh one, or the budget
   * of an earlier credential at its address (one that overran: SpentAddresses) or its address or network
   * (the last one minted there, burned quickly: MintLineage). Once per mint, never per request.
   */
  function minted(ctx: RequestContext, cfg: ChallengeConfig, token: string, bind: string, nowMs: number): void {
    mintedBudget = null;
    mintedSpent = false;
    if (deps.level.level < AttackLevel.elevated) return;
    const defense = deps.getRuntime().config.defense;
    const address = addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength);
    const network = networkKey(ctx);
    mintWork.add(address, nowMs, cfg.difficultyRise);
    const b = defense.familiarity.budget;
    const burst = deps.level.level >= AttackLevel.underAttack ? b.underAttackBurst : b.burst;
    // "Burned quickly": more than half its burst spent and not yet refilled.
    const burnedMs = ((burst - 1) * 60_000) / b.ratePerMinute / 2;
    // Linked by address and binding (user agent): people behind one carrier-NAT address, each with their
    // own browser, do not inherit what one client there left (lineage.ts).
    const bound = `${address}\n${bind}`;
    const lineage = mints.heir(bound, network, nowMs, burnedMs);
    const overran = spent.size === 0 ? 0 : spent.heir(bound, nowMs);
    mintedSpent = overran !== 0;
    // An overrun's debt and the network's lineage are copied into an entry of its own, never shared: its
    // spending does not keep an earlier client's budget from refilling, the link ends once it is paid.
    // The same address and browser share the lineage's budget: a stock of clearances minted ahead and
    // burned in turn would otherwise each refill while the others are burned.
    const shared = lineage !== null && mints.lastShared ? lineage : null;
    const s = clearanceUsage.prepare(token, shared, nowMs);
    if (s === null) return;
    const debt = lineage !== null && shared === null && lineage.paceTatMs > overran ? lineage.paceTatMs : overran;
    const p = s.parent ?? s;
    if (debt > p.paceTatMs) p.paceTatMs = debt;
    // Only an heir holds the request it was minted on (a fresh budget has room for it anyway).
    mintedBudget = shared !== null || debt !== 0 ? p : null;
    mints.minted(bound, network, p);
    // Looked at again on its first use (a clearance minted ahead, used once the one before is burned).
    if (s.parent === null)
      clearanceUsage.pend(s, {
        address: bound,
        network,
        overAddress: mints.lastOverAddress,
        overNetwork: mints.lastOverNetwork,
        burnedMs,
      } satisfies MintSite);
  }

  /** Give this client a clearance on whatever answer it gets. */
  function grant(
    ctx: RequestContext,
    cfg: ChallengeConfig,
    bind: string,
    nowMs: number,
    door: Door,
  ): { token: string; expiresSec: number } {
    const c = signer.issueClearance(nowMs, cfg.clearanceTtlSec, bind);
    minted(ctx, cfg, c.token, bind, nowMs);
    ctx.addResponseHeader('set-cookie', cookieLine(ctx, c.token, cfg.clearanceTtlSec));
    ctx.addResponseHeader(CLEARANCE_HEADER, c.token);
    ctx.known = true;
    deps.metrics.challenges.inc({ door, result: 'solved' });
    return c;
  }

  /**
   * One no-JS clearance from the quota of this client's prefix (IPv4 /24, IPv6 /64), and for IPv6 also
   * from its /48's, 16 times larger: a free tunnel broker hands out a /48, 65,536 /64s each with a
   * fresh quota otherwise, while a carrier's /48 holds many devices that must not share one small quota.
   */
  function takeNoScript(ctx: RequestContext, cfg: ChallengeConfig): boolean {
    const limit = noScriptQuotaNow(cfg);
    const now = deps.clock.now();
    const v6 = ctx.clientAddress.indexOf(':') !== -1 && ctx.clientPrefix.indexOf(':') !== -1;
    if (v6 && !noScriptQuota.take(v6PrefixKey(ctx.clientAddress, 48), limit * 16, now)) return false;
    return noScriptQuota.take(ctx.clientPrefix, limit, now);
  }

  function noScriptQuotaNow(cfg: ChallengeConfig): number {
    const q = cfg.noScriptPerPrefixPerMinute;
    return deps.level.level >= AttackLevel.underAttack ? q.underAttack : q.elevated;
  }

  /** A failed solution or delay token; past the per-minute allowance it is an offence. */
  function failed(ctx: RequestContext, cfg: ChallengeConfig, door: Door, why: Refusal, ruleId: string): void {
    deps.metrics.challenges.inc({ door, result: 'failed' });
    // An expired token is what a slow or returning honest client holds, and a no-JS client past its
    // prefix's quota waited as asked: not offences.
    if (why !== 'expired' && why !== 'not_yet' && why !== 'over_quota') countTowardsOffence(ctx, cfg, ruleId);
  }

  function countTowardsOffence(ctx: RequestContext, cfg: ChallengeConfig, ruleId: string): void {
    if (cfg.ignoredPerMinute === 0) return;
    // Counted per client key (an IPv6 client as its /64), as offences and bans are.
    const key = addressKey(ctx.clientAddress, ctx.clientPrefix, deps.getRuntime().config.defense.ipv6PrefixLength);
    if (ignored.add(key, deps.clock.now()) > cfg.ignoredPerMinute)
      deps.bans.offence(ctx.clientAddress, 'challenge_ignored', ruleId);
  }

  /**
   * The bits added to this client's work: the larger of its prefix's (clearances that went over their
   * budget there) and its address's (clearances minted there recently, overrun or not).
   */
  function extraBits(ctx: RequestContext, cfg: ChallengeConfig, nowMs: number): number {
    const rise = cfg.difficultyRise;
    const extra = work.extraBits(ctx.clientPrefix, nowMs, rise);
    if (mintWork.size === 0 || extra >= rise.maxExtraBits) return extra;
    const defense = deps.getRuntime().config.defense;
    const address = addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength);
    const byAddress = mintWork.extraBits(address, nowMs, rise);
    return extra > byAddress ? extra : byAddress;
  }

  /**
   * The challenge answer for this request: the HTML page (with its no-JS door) or the JSON one. The
   * token also goes out in the Rempart-Challenge header, added here: the reply's own headers are then
   * the same frozen set for every challenge (pipeline/reply.ts keeps its checked head fields).
   */
  function challengeReply(
    ctx: RequestContext,
    cfg: ChallengeConfig,
    bind: string,
    nowMs: number,
    returnTo: string,
    wasFailure: boolean,
  ): { body: string; headers: Readonly<Record<string, string>>; door: Door } {
    const underAttack = deps.level.level >= AttackLevel.underAttack;
    const base = underAttack ? cfg.difficultyBits.underAttack : cfg.difficultyBits.elevated;
    const bits = Math.min(32, base + extraBits(ctx, cfg, nowMs));
    const token = signer.issueChallenge(bits, nowMs, cfg.challengeTtlSec, bind);
    ctx.addResponseHeader(CHALLENGE_HEADER, token);
    if (wantsHtml(ctx.req.headers.accept)) {
      const delaySec = underAttack ? cfg.noScriptDelaySec.underAttack : cfg.noScriptDelaySec.elevated;
      const delay = signer.issueDelay(nowMs, delaySec, cfg.challengeTtlSec, bind);
      return {
        body: challengePageHtml(token, bits, delay, delaySec, returnTo, wasFailure),
        headers: PAGE_HEADERS,
        door: 'html',
      };
    }
    // JSON.stringify({ error, challenge: { token, bits, algorithm, expiresAt, submit } }) with its
    // constant parts made once; the token is base64url and dots, stringified all the same.
    const expiresAt = Math.floor(nowMs / 1000) + cfg.challengeTtlSec;
    const error = wasFailure ? FAILED_ERROR_JSON : CHALLENGE_ERROR_JSON;
    return {
      body: `{"error":${error},"challenge":{"token":${JSON.stringify(token)},"bits":${bits},"algorithm":"sha256","expiresAt":${expiresAt},"submit":${SUBMIT_JSON}}}\n`,
      headers: API_HEADERS,
      door: 'api',
    };
  }

  /** GET/HEAD/POST /.rempart/challenge/verify: redeem a solution or a no-JS delay token for a clearance. */
  function verify(ctx: RequestContext, cfg: ChallengeConfig): Verdict {
    const method = ctx.req.method;
    if (
      ctx.path !== VERIFY_PATH ||
      cfg.mode === 'off' ||
      (method !== 'GET' && method !== 'HEAD' && method !== 'POST')
    ) {
      ctx.refuse('RMP_ERR_ROUTE_NOT_FOUND', 404);
      return Verdict.Reply;
    }
    const q = ctx.target.indexOf('?');
    const params = new URLSearchParams(q === -1 ? '' : ctx.target.slice(q + 1));
    const returnParam = params.get('return');
    const returnTo = safeReturnPath(returnParam);
    const browser = returnParam !== null || wantsHtml(ctx.req.headers.accept);
    const nowMs = deps.clock.wallMs();
    const bind = binding(ctx.clientPrefix, ctx.req.headers['user-agent']);
    const solution = params.get('solution') ?? headerString(ctx.req.headers[SOLUTION_HEADER]);
    const delay = params.get('delay') ?? '';
    let door: Door = delay !== '' && solution === '' ? 'nojs' : browser ? 'html' : 'api';
    let refusal: Refusal = 'malformed';
    if (solution !== '') {
      const r = signer.checkSolution(solution, nowMs, bind);
      if (typeof r === 'string') refusal = r;
      else if (!replay.use(r.rand, r.issuedSec * 1000, nowMs)) refusal = 'replayed';
      else return cleared(ctx, cfg, bind, nowMs, door, browser, returnTo);
    } else if (delay !== '') {
      door = 'nojs';
      const r = signer.openDelay(delay, nowMs, bind);
      if (typeof r === 'string') refusal = r;
      else if (!replay.use(`d${r.rand}`, r.expiresSec * 1000 - cfg.challengeTtlSec * 1000, nowMs)) refusal = 'replayed';
      // Waiting is all the door asks, and bots wait in parallel: so many clearances per prefix a minute.
      else if (!takeNoScript(ctx, cfg)) refusal = 'over_quota';
      else return cleared(ctx, cfg, bind, nowMs, door, browser, returnTo);
    }
    failed(ctx, cfg, door, refusal, 'verify');
    const reply = challengeReply(ctx, cfg, bind, nowMs, returnTo, true);
    deps.metrics.challenges.inc({ door: reply.door, result: 'issued' });
    ctx.ruleId = 'verify';
    ctx.refuse('RMP_ERR_CHALLENGE_FAILED', 403, reply.body, reply.headers);
    return Verdict.Reply;
  }

  function cleared(
    ctx: RequestContext,
    cfg: ChallengeConfig,
    bind: string,
    nowMs: number,
    door: Door,
    browser: boolean,
    returnTo: string,
  ): Verdict {
    const c = grant(ctx, cfg, bind, nowMs, door);
    // Rempart's own answer, not a refusal (no origin was asked, nothing refused): decision `answered`.
    ctx.ruleId = 'verify';
    if (browser) ctx.answer(303, 'See Other\n', { location: returnTo, 'cache-control': 'no-store' });
    else {
      const body = `${JSON.stringify({ clearance: { token: c.token, expiresAt: c.expiresSec } })}\n`;
      ctx.answer(200, body, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    }
    return Verdict.Reply;
  }

  // The look-up itself runs on the first read of ctx.known (challenge, signatures, a queued request),
  // not for every request: one shared object, nothing allocated per request.
  // Scratch for the session cookie's values and for how a credential is used (the check is synchronous).
  const sids: string[] = [];
  const usage: Usage = { prefix: '', userAgent: undefined, address: '', underAttack: false, paced: false };
  const check = {
    lookups: 0,
    /** The request last looked up, and why it was not known (Refused): the challenge phase answers by it. */
    lastCtx: null as RequestContext | null,
    refusal: Refused.none as Refused,
    retryAfterMs: 0,
    /** For a pace refusal: the client came back before its Retry-After; the credential's first time over. */
    ignoredRetry: false,
    firstOver: false,
    /** Keep the strongest reason a credential was refused (pace over budget over shared). */
    note(store: MemorySessionStore | SessionStore): void {
      if (store.lastRefusal <= check.refusal) return;
      check.refusal = store.lastRefusal;
      check.retryAfterMs = store.retryAfterMs;
      check.ignoredRetry = store.lastIgnoredRetry;
      check.firstOver = store.lastFirstOver;
    },
    /**
     * A credential of `store` said yes: from `elevated` up the address's shared budget must have room too,
     * and the request is held on both at once (given back in onDone if it does not reach the origin):
     * checked now and charged only once done, a client with many requests queued at once would get them
     * all past its burst.
     */
    hold(ctx: RequestContext, store: MemorySessionStore, now: number): boolean {
      if (!usage.paced) return true;
      const a = addressPace.paceCheck(usage.address, now, usage.underAttack);
      if (a === null) {
        check.note(addressPace);
        return false;
      }
      const b = store.lastBudget;
      if (b !== null) store.spendOn(b, now, 1, false, usage.underAttack);
      addressPace.spendOn(a, now, 1, false, usage.underAttack);
      ctx.heldBudget = b;
      ctx.heldAddressBudget = a;
      return true;
    },
    isFamiliar(ctx: RequestContext): boolean {
      check.lookups++;
      check.lastCtx = ctx;
      check.refusal = Refused.none;
      const headers = ctx.req.headers;
      const cookies = headers.cookie;
      const defense = deps.getRuntime().config.defense;
      const fam = defense.familiarity;
      const level = deps.level.level;
      const now = deps.clock.wallMs();
      usage.prefix = ctx.clientPrefix;
      usage.userAgent = headers['user-agent'];
      usage.address = addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength);
      usage.underAttack = level >= AttackLevel.underAttack;
      usage.paced = level >= AttackLevel.elevated;
      let clearance = headerString(headers[CLEARANCE_HEADER]);
      if (clearance === '' && cookies !== undefined) clearance = cookieValue(cookies, CLEARANCE_COOKIE);
      if (
        clearance !== '' &&
        signer.checkClearance(clearance, now, binding(ctx.clientPrefix, usage.userAgent)) === true
      ) {
        // Ours and this client's: known while used at one person's pace from few addresses.
        if (clearanceUsage.use(clearance, now, usage)) return check.hold(ctx, clearanceUsage, now);
        check.note(clearanceUsage);
      }
      if (fam.sessionCookie !== '' && sessions.size > 0 && cookies !== undefined) {
        // Several values (`sid=<known>; sid=other`): the origin may read either, so known only when
        // every one is (as the origin set them: the store learnt them undecoded), and each is known as
        // one person's session: not from too many networks or browsers, within its budget.
        const n = cookieValues(cookies, fam.sessionCookie, sids, false);
        let known = n > 0;
        for (let i = 0; known && i < n; i++) known = sessions.isKnown(sids[i]!, now, usage);
        if (known) return check.hold(ctx, sessions, now);
        if (n > 0) check.note(sessions);
      }
      if (jwt !== null) {
        const token = jwt.tokenFrom(headers);
        if (token !== '' && jwt.isValid(token, now)) {
          // Valid (and canonical: one token has one text), and used as one person uses it.
          if (jwtUsage.use(token, now, usage)) return check.hold(ctx, jwtUsage, now);
          check.note(jwtUsage);
        }
      }
      return false;
    },
  };

  /**
   * A solution just earned a clearance (grant() gave it its budget): the request it came with is held on
   * that budget like any other, so a clearance that shares an earlier one's spent budget (an overrun, or
   * a lineage of clearances burned quickly) buys no request to the origin either. An heir of an overrun
   * also counts towards its prefix's work, once per clearance: re-solving after an overrun is what the
   * rising difficulty is for.
   */
  function inheritedRoom(ctx: RequestContext, cfg: ChallengeConfig, nowMs: number): boolean {
    const heir = mintedBudget;
    mintedBudget = null;
    if (heir === null || deps.level.level < AttackLevel.elevated) return true;
    if (mintedSpent) work.add(ctx.clientPrefix, nowMs, cfg.difficultyRise);
    const underAttack = deps.level.level >= AttackLevel.underAttack;
    if (clearanceUsage.paceOn(heir, nowMs, underAttack)) {
      clearanceUsage.spendOn(heir, nowMs, 1, false, underAttack);
      ctx.heldBudget = heir;
      return true;
    }
    check.lastCtx = ctx;
    check.refusal = Refused.none;
    check.note(clearanceUsage);
    // Its first overrun was counted already: this one raises no work again.
    check.firstOver = false;
    refusingHeir = true;
    return false;
  }

  /**
   * This request's credential is over its pace budget: 429 with Retry-After (not a challenge: solving
   * again must not buy a way around the budget), and past `banAfter` such refusals a minute, a ban.
   */
  function overPace(ctx: RequestContext, cfg: ChallengeConfig): Verdict {
    const defense = deps.getRuntime().config.defense;
    const retrySec = Math.max(1, Math.ceil(check.retryAfterMs / 1000));
    const ruleId = 'familiarity:budget';
    const headers = { 'retry-after': String(retrySec), 'cache-control': 'no-store' };
    if (!decide(deps, ctx, 'challenge', cfg.mode, 'RMP_ERR_RATE_LIMITED', ruleId, 429, '', headers))
      return Verdict.Continue;
    // A credential over its budget: its prefix's next challenges ask more work. Once per credential a
    // window (a sketch keyed by its text, paid only at the start of a refusal episode): one clearance
    // refused again and again (an attacker in a carrier NAT's /24 raising everyone's work) counts once.
    if (check.firstOver) {
      const nowMs = deps.clock.wallMs();
      const v = voucherOf(ctx, nowMs);
      if (voucherText === '' || overOnce.take(`o${voucherText}`, 1, deps.clock.now()))
        work.add(ctx.clientPrefix, nowMs, cfg.difficultyRise);
      // The clearances this address and browser mint next start with this debt, until it is paid.
      if (v !== undefined) {
        const address = addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength);
        const bind = binding(ctx.clientPrefix, ctx.req.headers['user-agent']);
        spent.overran(`${address}\n${bind}`, (v.parent ?? v).paceTatMs, nowMs);
      }
    }
    const banAfter = defense.familiarity.budget.banAfter;
    // Towards a ban: only a client that came back before its Retry-After, once for each second it is
    // refused in that follows a second it was refused in (SecondsInARow): a page's requests overrunning
    // the budget within a second, or people behind one carrier NAT each refused now and then, are not a
    // client ignoring the 429s for half a minute.
    // Not the refusal of an inherited debt (the request a clearance was minted on): that client was
    // never told to wait, and people at a carrier-NAT address must not add up to a ban for a debt.
    const inherited = refusingHeir;
    refusingHeir = false;
    const key =
      banAfter > 0 && check.ignoredRetry && !inherited
        ? addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength)
        : '';
    if (key !== '' && overSeconds.mark(key, deps.clock.now())) {
      const n = overBudget.add(key, deps.clock.now());
      // Once per `banAfter` refusals (a ban that expired while the client kept going is made again).
      if (n % banAfter === 0) {
        const v6 = ctx.clientAddress.indexOf(':') !== -1 && ctx.clientAddress.indexOf('.') === -1;
        const target = v6 ? v6PrefixKey(ctx.clientAddress, defense.ipv6PrefixLength) : key;
        deps.bans.ban(target, defense.bans.ttlMs, 'offences:familiarity_budget', ruleId, 'familiarity', true);
      }
    }
    return Verdict.Reply;
  }

  // A session vouches only for what its holder proved before the origin granted it: a client already
  // known (it passed a challenge, or holds another credential) gets a trusted session. One nobody
  // vouched for is not remembered from `elevated` up (an origin that grants a session to anyone who
  // POSTs /login would otherwise make every bot known by asking), and in calm is on probation for
  // `sessionProbationSec` (bots logging in at the onset of an attack, before the level rose).
  // A trusted session shares the budget of the credential that vouched for it (voucherOf), and one
  // credential (one address) vouches for few sessions a window: logging in again and again does not
  // turn one solved challenge into many budgets.
  let headCtx: RequestContext | null = null;
  let headVoucher: Session | null = null;
  const trust = (): number => {
    headVoucher = null;
    const defense = deps.getRuntime().config.defense;
    if (headCtx !== null && headCtx.known && trustedGrant(headCtx, defense)) return 0;
    if (deps.level.level >= AttackLevel.elevated) return -1;
    return defense.familiarity.sessionProbationSec * 1000;
  };
  const voucher = (): Session | null => headVoucher;

  function trustedGrant(ctx: RequestContext, defense: Config['defense']): boolean {
    const f = defense.familiarity;
    const now = deps.clock.wallMs();
    const v = voucherOf(ctx, now);
    // Counted per credential text in the same fixed sketch as addresses (grants are rare: the key's
    // concatenation is paid only on a Set-Cookie of the session cookie).
    if (v !== undefined && !grantQuota.take(`v${voucherText}`, f.budget.trustedGrants.perCredential, deps.clock.now()))
      return false;
    headVoucher = v ?? null;
    const key = addressKey(ctx.clientAddress, ctx.clientPrefix, defense.ipv6PrefixLength);
    return grantQuota.take(key, f.budget.trustedGrants.perAddress, deps.clock.now());
  }

  /**
   * The budget entry of the credential this request was known by (the same order as the look-up), or
   * undefined (known by a clearance granted on this very request: the solution it carried is the work).
   */
  let voucherText = '';
  function voucherOf(ctx: RequestContext, now: number): Session | undefined {
    const headers = ctx.req.headers;
    const cookies = headers.cookie;
    let clearance = headerString(headers[CLEARANCE_HEADER]);
    if (clearance === '' && cookies !== undefined) clearance = cookieValue(cookies, CLEARANCE_COOKIE);
    voucherText = clearance;
    const c = clearance === '' ? undefined : clearanceUsage.budgetOf(clearance);
    if (c !== undefined) return c;
    const name = deps.getRuntime().config.defense.familiarity.sessionCookie;
    if (name !== '' && cookies !== undefined && cookieValues(cookies, name, sids, false) > 0) {
      voucherText = sids[0]!;
      const s = sessions.budgetOf(voucherText);
      if (s !== undefined) return s;
    }
    if (jwt !== null) {
      const token = jwt.tokenFrom(headers);
      voucherText = token;
      if (token !== '' && jwt.isValid(token, now)) return jwtUsage.budgetOf(token);
    }
    return undefined;
  }

  const familiarity: Phase = {
    name: 'familiarity',
    onRequest(ctx: RequestContext) {
      ctx.familiarity = check;
      return Verdict.Continue;
    },
    // Here, not in the challenge phase: familiarity runs before every phase that reads ctx.known (a
    // rate-limit rule for unknown clients does), so a request refused by such a phase before the
    // challenge phase still gets its hold back.
    onDone(ctx: RequestContext) {
      if (ctx.knownState !== 1) return;
      const held = ctx.heldBudget as Session | null;
      const heldAddress = ctx.heldAddressBudget as Session | null;
      const r = ctx.reason;
      const shed = r === 'RMP_ERR_ADMISSION_SHED' || r === 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT';
      const reached = !shed && ctx.forwardStartMs !== 0;
      // Held on the look-up: given back unless it reached the origin (a cache hit, a later refusal, a
      // shed), whatever the level is now (it may have dropped since the hold was taken).
      if (!reached) {
        // A session's or JWT's entry too: the three credential tables share one pace (paceOf).
        if (held !== null) clearanceUsage.giveBack(held);
        if (heldAddress !== null) addressPace.giveBack(heldAddress);
      }
      if (deps.level.level < AttackLevel.elevated) return;
      if (shed) charge(ctx, deps.getRuntime().config.defense.familiarity.budget.shedCost, true, null, false);
      else if (reached) charge(ctx, 1, false, held, heldAddress !== null);
    },
  };

  /**
   * Charge a known client's request to its budgets once it is done: one request when it reached the
   * origin (an answer from the cache, or a refusal by a later guard, cost the origin nothing), and when
   * admission shed it `shedCost` (busy clients only: MemorySessionStore.spendOn). Each budget entry is
   * charged once (a browser sends its clearance and the session it vouched for: one budget), and the
   * address's shared budget too.
   */
  function charge(
    ctx: RequestContext,
    tokens: number,
    shed: boolean,
    held: Session | null,
    heldAddress: boolean,
  ): void {
    const headers = ctx.req.headers;
    const cookies = headers.cookie;
    const now = deps.clock.wallMs();
    const ua = deps.level.level >= AttackLevel.underAttack;
    let clearance = headerString(headers[CLEARANCE_HEADER]);
    if (clearance === '' && cookies !== undefined) clearance = cookieValue(cookies, CLEARANCE_COOKIE);
    const a = clearance === '' ? undefined : clearanceUsage.budgetOf(clearance);
    if (a !== undefined && a !== held) clearanceUsage.spendOn(a, now, tokens, shed, ua);
    let b: Session | undefined;
    const name = deps.getRuntime().config.defense.familiarity.sessionCookie;
    if (name !== '' && cookies !== undefined) {
      const n = cookieValues(cookies, name, sids, false);
      for (let i = 0; i < n; i++) {
        const s = sessions.budgetOf(sids[i]!);
        if (s === undefined || s === a || s === b) continue;
        b = s;
        if (s !== held) sessions.spendOn(s, now, tokens, shed, ua);
      }
    }
    if (jwt !== null) {
      const token = jwt.tokenFrom(headers);
      const s = token === '' ? undefined : jwtUsage.budgetOf(token);
      if (s !== undefined && s !== a && s !== b && s !== held) jwtUsage.spendOn(s, now, tokens, shed, ua);
    }
    if (heldAddress) return;
    const address = addressKey(ctx.clientAddress, ctx.clientPrefix, deps.getRuntime().config.defense.ipv6PrefixLength);
    addressPace.spend(address, now, tokens, shed, ua);
  }

  const challenge: Phase = {
    name: 'challenge',
    onRequest(ctx: RequestContext) {
      const config = deps.getRuntime().config;
      const cfg = config.defense.challenge;
      if (ctx.path.startsWith(RESERVED_PREFIX)) return verify(ctx, cfg);
      if (cfg.mode === 'off') return Verdict.Continue;
      const route = ctx.route;
      if (route === null || config.routes[route.index]?.challenge === false) return Verdict.Continue;
      const headers = ctx.req.headers;
      const asked = deps.level.level >= levelNumber(cfg.atLevel) || ctx.challengeRequiredBy !== '';
      let solution = headerString(headers[SOLUTION_HEADER]);
      if (solution === '' && headers.cookie !== undefined) solution = cookieValue(headers.cookie, SOLUTION_COOKIE);
      if (!asked && solution === '') return Verdict.Continue;
      // Only now: whether the client is known costs a MAC or a signature check (ctx.known).
      if (ctx.known) return Verdict.Continue;
      const ruleId = ctx.challengeRequiredBy !== '' ? ctx.challengeRequiredBy : `level:${cfg.atLevel}`;
      const nowMs = deps.clock.wallMs();
      const bind = binding(ctx.clientPrefix, headers['user-agent']);
      let wasFailure = false;
      if (solution !== '') {
        // The retried request itself (a POST with its body) goes through with the clearance.
        const r = signer.checkSolution(solution, nowMs, bind);
        const refusal: Refusal | null =
          typeof r === 'string' ? r : replay.use(r.rand, r.issuedSec * 1000, nowMs) ? null : 'replayed';
        if (refusal === null) {
          grant(ctx, cfg, bind, nowMs, 'api');
          return inheritedRoom(ctx, cfg, nowMs) ? Verdict.Continue : overPace(ctx, cfg);
        }
        if (!asked) return Verdict.Continue; // a stale solution when nothing is asked: no harm, no challenge
        failed(ctx, cfg, 'api', refusal, ruleId);
        wasFailure = true;
      }
      // A credential of ours used past one person's pace: rate-limited (then banned), not challenged, even
      // when it came with a failed solution (a stale or replayed one): a fresh challenge would only be
      // another way to solve around the budget.
      if (check.lastCtx === ctx && check.refusal === Refused.pace) {
        check.lastCtx = null;
        return overPace(ctx, cfg);
      }
      if (cfg.mode === 'observe') {
        decide(deps, ctx, 'challenge', 'observe', 'RMP_ERR_CHALLENGE', ruleId, 403);
        return Verdict.Continue;
      }
      const method = ctx.req.method;
      const returnTo = safeReturnPath(method === 'GET' || method === 'HEAD' ? ctx.target : ctx.path);
      const reply = challengeReply(ctx, cfg, bind, nowMs, returnTo, wasFailure);
      decide(
        deps,
        ctx,
        'challenge',
        'enforce',
        wasFailure ? 'RMP_ERR_CHALLENGE_FAILED' : 'RMP_ERR_CHALLENGE',
        ruleId,
        403,
        reply.body,
        reply.headers,
      );
      deps.metrics.challenges.inc({ door: reply.door, result: 'issued' });
      if (!wasFailure) countTowardsOffence(ctx, cfg, ruleId);
      return Verdict.Reply;
    },
  };

  return {
    familiarity,
    get familiarityLookups() {
      return check.lookups;
    },
    challenge,
    signer,
    sessions,
    replay,
    onUpstreamHead(ctx, status, rawHeaders) {
      const name = deps.getRuntime().config.defense.familiarity.sessionCookie;
      if (status >= 200 && status < 300 && name !== '') {
        headCtx = ctx;
        learnSessions(sessions, name, status, rawHeaders, deps.clock.wallMs(), trust, voucher);
        headCtx = null;
        headVoucher = null;
      }
    },
    async prepare(config) {
      const d = config.defense;
      const newRing: KeyRing = await loadChallengeKeys(env, d.challenge.keyFile);
      const newJwt = d.familiarity.jwt === undefined ? null : await JwtVerifier.load(d.familiarity.jwt as JwtSettings);
      return () => {
        // A random ring is kept across reloads: replacing it would log everyone out for nothing.
        if (newRing.source !== 'random' || signer.ring.source !== 'random') signer.setRing(newRing);
        jwt = newJwt;
        const f = d.familiarity;
        sessions.configure(f.maxSessions, f.sessionTtlSec, f.sessionBounds, paceOf(f, false));
        jwtUsage.configure(f.maxSessions, f.sessionTtlSec, f.sessionBounds, paceOf(f, false));
        clearanceUsage.configure(f.maxSessions, d.challenge.clearanceTtlSec, f.sessionBounds, paceOf(f, true));
        addressPace.configure(f.maxSessions, f.sessionTtlSec, f.sessionBounds, addressPaceOf(f));
        spent.configure(f.maxSessions);
        mints.configure(f.maxSessions);
        mintWork.configure(d.challenge.difficultyRise.maxPrefixes);
        grantQuota = new WindowQuota(f.sessionBounds.windowSec * 1000, 14);
        work.configure(d.challenge.difficultyRise.maxPrefixes);
        replay.configure(d.challenge.replayCapacity, d.challenge.challengeTtlSec * 1000 + 1000);
      };
    },
  };
}

export const familiarityPhase: PhaseModule = {
  name: 'familiarity',
  folder: 'challenge',
  summary:
    '— (leaves the check that marks the client known — a valid clearance, a session the origin granted on a ' +
    '2xx, or a verified JWT — run on the first read of `ctx.known`; see [challenge.md](challenge.md))',
  // Built with the challenge phase by createChallengeGuard (the composition root makes the guard first).
  create: (env) => env.challenge.familiarity,
};

export const challengePhase: PhaseModule = {
  name: 'challenge',
  folder: 'challenge',
  summary:
    '403 with a proof-of-work challenge (HTML interstitial, no-JS refresh, or JSON) for unknown clients when ' +
    'the level or a rule asks; a good `Rempart-Solution` lets the request on with a clearance; answers ' +
    '`/.rempart/challenge/verify` itself (303 or 200 with the clearance) whatever the routes',
  codes: ['RMP_ERR_CHALLENGE', 'RMP_ERR_CHALLENGE_FAILED'],
  create: (env) => env.challenge.challenge,
};
