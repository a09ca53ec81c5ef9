// The ban table: temporary, escalating bans of addresses and prefixes, asked on every accept. Bans come
// from offences the guards report (enough in a short window), from rules, and from operators (admin
// API). Bounded: at most `maxEntries` bans (active, or expired and remembered for escalation) and
// `offences.maxAddresses` offence counters. See docs/bans.md.
//
//   isBanned(addr) ─▶ entries.get(addr) ─▶ entries.get(prefixKey(addr))   ─▶ cidr BlockList
//                     (one look-up)        (IPv4: only while a /24 ban       (only while an IPv4 ban
//                                           exists; IPv6: one look-up per    of another length exists)
//                                           prefix length banned)
import { BlockList } from 'node:net';
import { Value } from '@sinclair/typebox/value';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../core/log.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { Runtime } from '../../pipeline/runtime.ts';
import { ownCopy } from '../../core/own-copy.ts';
import { prefixKey, v6PrefixKey } from '../../core/client-key.ts';
import { BansSchema } from './schema.ts';
import { NftMirror, type NftRunner } from './nftables.ts';
import { parseTarget, unmapAddress, type BanTarget } from './target.ts';
import type { BanList, GuardMode } from '../../pipeline/env.ts';

export type BansConfig = Runtime['config']['defense']['bans'];

export interface BanEntry {
  readonly target: BanTarget;
  reason: string;
  ruleId: string;
  by: string;
  /** Wall-clock ms when this ban started. */
  sinceWallMs: number;
  /** Monotonic ms (clock.now()) when it ends. */
  untilMs: number;
  /** Times this target was banned (escalation counts from it). */
  count: number;
  /** Escalation step of the current ban: its TTL is ttl × factor^level (capped). */
  level: number;
  /**
   * Read back from the state file at start-up and not made again since. With a shared cluster store,
   * such a ban the store lacks at the first resync was lifted elsewhere meanwhile: it is lifted here too.
   */
  restored: boolean;
}

/** What GET /api/bans shows for one ban. */
export interface BanView {
  target: string;
  reason: string;
  rule: string;
  by: string;
  since: string;
  expires: string;
  ttlSec: number;
  count: number;
}

export interface BanTableOptions {
  /** Where the `defense.bans` settings come from (re-read on every decision, so a reload applies at once). Default: the schema's defaults. */
  getRuntime?: () => Runtime;
  log?: Logger;
  metrics?: Metrics;
  /** How nft is run (tests). */
  nftRunner?: NftRunner;
}

/** A change made on this node, for cluster mode to share (src/store/ban-sync.ts). */
export type BanChange =
  | {
      readonly op: 'ban';
      readonly target: string;
      readonly ttlMs: number;
      readonly reason: string;
      readonly ruleId: string;
      readonly by: string;
    }
  | { readonly op: 'unban'; readonly target: string; readonly by: string };

/** One ban as the state file keeps it (src/app/state-file.ts): wall-clock times, so it outlives the process. */
export interface BanRecord {
  /** The table's key (parseTarget(target).key). */
  readonly key: string;
  /** The target as written (address, prefix or CIDR). */
  readonly target: string;
  readonly reason: string;
  readonly ruleId: string;
  readonly by: string;
  readonly sinceWallMs: number;
  readonly untilWallMs: number;
  readonly count: number;
  readonly level: number;
}

interface OffenceCount {
  count: number;
  startMs: number;
  /** When the last offence counted here was (for `refusalSpacingMs`). */
  lastMs: number;
  /** Refusals within the spacing of the last counted one, this window (for `refusalsPerOffence`). */
  skipped: number;
}

/** What one offence did to a client's count: within `refusalSpacingMs` of the last one (part of the same burst), not counted; counted; counted and at the threshold: ban. */
const Counted = { no: 0, yes: 1, ban: 2 } as const;
type Counted = (typeof Counted)[keyof typeof Counted];

const DEFAULTS = Value.Default(BansSchema, {}) as BansConfig;
/** Entries one eviction pass inspects. */
const SWEEP_STEPS = 64;
/**
 * The fast path: bans that keep knocking are put (up to this many) in a BlockList that the listeners
 * hand to Node's net.Server (`blockList`), which closes such a connection before any JS socket exists.
 * Node checks that list linearly on every accept, so it stays small; other bans take the Map path.
 */
const FAST_PATH_MAX = 64;
/** Delay before a newly hot ban joins the fast path (batches a burst into one rebuild). */
const FAST_PATH_DELAY_MS = 20;

export class BanTable implements BanList {
  readonly #clock: Clock;
  readonly #getConfig: () => BansConfig;
  readonly #getRuntime: (() => Runtime) | null;
  readonly #log: Logger | null;
  readonly #metrics: Metrics | null;
  readonly #nftRunner: NftRunner | undefined;
  readonly #entries = new Map<string, BanEntry>();
  #cursor: MapIterator<BanEntry> | null = null;
  /** IPv4 /24 entries in the table; the /24 look-up is skipped while 0. */
  #v4PrefixEntries = 0;
  /** IPv6 prefix entries per prefix length (a /64 by default, what offences ban at defense.ipv6PrefixLength). */
  readonly #v6PrefixLengths = new Map<number, number>();
  /** Entries of other prefix lengths, checked through #cidrList (rebuilt when they change). */
  readonly #cidrs = new Map<string, BanEntry>();
  #cidrList: BlockList | null = null;
  readonly #offences = new Map<string, OffenceCount>();
  #mirror: NftMirror | null = null;
  #mirrorKey = '';
  #fullLoggedAt = -Infinity;
  /** Told of every ban and unban made here (not of those applied from other nodes). */
  onChange: ((change: BanChange) => void) | null = null;
  #replaying = false;
  /** Bans in the fast path (see FAST_PATH_MAX), and the BlockList built from them. */
  readonly #fast = new Set<BanEntry>();
  #fastList: BlockList | null = null;
  #fastTimer: NodeJS.Timeout | null = null;
  #fastTimerAt = Infinity;

  /**
   * Keys of entries set or removed since the state file last took them (null: not persisted). Bounded:
   * past 2 × maxEntries the set is dropped and the next save rewrites the whole table.
   */
  #changed: Set<string> | null = null;
  #rewrite = false;

  /** Called after every ban made (the audit trail records those not made by an operator's API call). */
  onBan: ((view: BanView, ttlMs: number) => void) | null = null;

  constructor(clock: Clock, options: BanTableOptions = {}) {
    this.#clock = clock;
    const getRuntime = options.getRuntime;
    this.#getRuntime = getRuntime ?? null;
    this.#getConfig = getRuntime === undefined ? () => DEFAULTS : () => getRuntime().config.defense.bans;
    this.#log = options.log ?? null;
    this.#metrics = options.metrics ?? null;
    this.#nftRunner = options.nftRunner;
    if (this.#metrics !== null) {
      this.#metrics.defenseReaders.bansActive = (g) => g.set(this.activeCount());
      // Expired bans stay (escalation history) until the table is full: a table that fills for hours.
      this.#metrics.defenseReaders.banEntries = (g) => g.set(this.#entries.size);
      this.#metrics.tableSizes.set('ban_offences', () => this.#offences.size);
    }
  }

  get mode(): GuardMode {
    return this.#getConfig().mode;
  }

  /** Whether `address` is banned and bans are enforced. The accept layer's question: one Map look-up in the common case. */
  isBanned(address: string): boolean {
    if (this.#entries.size === 0) return false;
    const e = this.lookup(address);
    if (e === null || this.#getConfig().mode !== 'enforce') return false;
    // Knocking again while banned: a candidate for the listeners' fast path.
    if (e.target.kind !== 'cidr' && this.#fast.size < FAST_PATH_MAX && !this.#fast.has(e)) {
      this.#fast.add(e);
      this.#scheduleFast(FAST_PATH_DELAY_MS);
    }
    return true;
  }

  /**
   * The BlockList of the hottest bans for net.Server's `blockList` (connections closed before a
   * socket object is made), or undefined when there is none or bans are not enforced.
   */
  get fastPath(): BlockList | undefined {
    return this.#fastList !== null && this.#getConfig().mode === 'enforce' ? this.#fastList : undefined;
  }

  /** Rebuild the fast path in `delayMs` (or sooner, if a rebuild is already due sooner). */
  #scheduleFast(delayMs: number): void {
    const at = performance.now() + Math.max(0, delayMs);
    if (this.#fastTimer !== null) {
      if (this.#fastTimerAt <= at) return;
      clearTimeout(this.#fastTimer);
    }
    this.#fastTimerAt = at;
    this.#fastTimer = setTimeout(
      () => {
        this.#fastTimer = null;
        this.#fastTimerAt = Infinity;
        this.#rebuildFast();
      },
      Math.max(0, delayMs),
    );
    this.#fastTimer.unref();
  }

  /** Rebuild the fast-path BlockList from the bans still in force, and wake up at the next expiry. */
  #rebuildFast(): void {
    const now = this.#clock.now();
    let next = Infinity;
    for (const e of this.#fast) {
      if (e.untilMs <= now || this.#entries.get(e.target.key) !== e) this.#fast.delete(e);
      else if (e.untilMs < next) next = e.untilMs;
    }
    if (this.#fast.size === 0) {
      this.#fastList = null;
      return;
    }
    const list = new BlockList();
    for (const e of this.#fast) {
      const t = e.target;
      const family = t.family === 4 ? 'ipv4' : 'ipv6';
      if (t.kind === 'address') list.addAddress(t.network, family);
      else list.addSubnet(t.network, t.bits, family);
    }
    this.#fastList = list;
    // Wake up at the next expiry (the ban clock may be manual: its delay, in real time).
    if (next !== Infinity) this.#scheduleFast(next - now);
  }

  /** The ban in force on `address` (or its prefix), whatever the mode; null when none. */
  lookup(address: string): BanEntry | null {
    if (this.#entries.size === 0) return null;
    const a = unmapAddress(address);
    let e = this.#entries.get(a);
    if (e !== undefined && e.target.kind === 'address' && e.untilMs > this.#clock.now()) return e;
    if (a.indexOf(':') === -1) {
      if (this.#v4PrefixEntries > 0) {
        e = this.#entries.get(prefixKey(a));
        if (e !== undefined && e.untilMs > this.#clock.now()) return e;
      }
    } else if (this.#v6PrefixLengths.size > 0) {
      for (const bits of this.#v6PrefixLengths.keys()) {
        e = this.#entries.get(v6PrefixKey(a, bits));
        if (e !== undefined && e.untilMs > this.#clock.now()) return e;
      }
    }
    if (this.#cidrList !== null && this.#cidrList.check(a, a.indexOf(':') === -1 ? 'ipv4' : 'ipv6')) {
      const now = this.#clock.now();
      for (const c of this.#cidrs.values()) if (c.untilMs > now && matchesCidr(c.target, a)) return c;
    }
    return null;
  }

  /**
   * Ban `target` for `ttlMs`. With `escalate` (automatic bans), a repeat within escalation.windowMs of
   * the previous ban's end lasts factor × longer (capped), and a target already banned is left as it
   * is; without it (operators), the ban is set to exactly `ttlMs`. Ignored when bans are off or the
   * target is not an address or prefix (the admin API validates first).
   */
  ban(target: string, ttlMs: number, reason: string, ruleId: string, by: string, escalate = false): void {
    this.banEntry(target, ttlMs, reason, ruleId, by, escalate);
  }

  /** ban(), returning the entry made or kept (null when none). */
  banEntry(
    target: string,
    ttlMs: number,
    reason: string,
    ruleId: string,
    by: string,
    escalate = false,
  ): BanEntry | null {
    const cfg = this.#getConfig();
    if (cfg.mode === 'off') return null;
    const t = parseTarget(target);
    if (t === null || !(ttlMs > 0)) return null;
    const now = this.#clock.now();
    const old = this.#entries.get(t.key);
    const active = old !== undefined && old.untilMs > now;
    if (active && escalate) return old;
    let level = 0;
    let ttl = ttlMs;
    if (escalate && old !== undefined && now - old.untilMs <= cfg.escalation.windowMs) {
      level = old.level + 1;
      ttl = Math.min(ttlMs * cfg.escalation.factor ** level, cfg.escalation.maxTtlMs);
    }
    let e: BanEntry;
    if (old !== undefined) {
      // Re-inserted so insertion order stays "oldest ban first" for eviction.
      this.#entries.delete(t.key);
      e = old;
      e.reason = reason;
      e.ruleId = ruleId;
      e.by = by;
      e.sinceWallMs = this.#clock.wallMs();
      e.untilMs = now + ttl;
      e.count++;
      e.level = level;
      e.restored = false;
    } else {
      if (this.#entries.size >= cfg.maxEntries) this.#makeRoom(now);
      const since = this.#clock.wallMs();
      e = { target: t, reason, ruleId, by, sinceWallMs: since, untilMs: now + ttl, count: 1, level, restored: false };
      if (t.kind === 'prefix') {
        if (t.family === 4) this.#v4PrefixEntries++;
        else this.#v6PrefixLengths.set(t.bits, (this.#v6PrefixLengths.get(t.bits) ?? 0) + 1);
      }
    }
    this.#entries.set(t.key, e);
    if (this.#changed !== null) this.#markChanged(t.key);
    if (t.kind === 'cidr') {
      this.#cidrs.set(t.key, e);
      this.#rebuildCidrs();
    }
    if (this.onChange !== null && !this.#replaying)
      this.onChange({ op: 'ban', target: t.display, ttlMs: ttl, reason, ruleId, by });
    this.#metrics?.bans.inc({ source: sourceOf(by) });
    if (this.onBan !== null) {
      try {
        this.onBan(this.view(e), ttl);
      } catch {
        // the audit trail's failure is not the ban's
      }
    }
    this.#log?.warn(
      {
        target: t.display,
        reason,
        rule: ruleId || undefined,
        by,
        ttlMs: Math.round(ttl),
        count: e.count,
        enforced: cfg.mode === 'enforce',
      },
      'ban',
    );
    if (cfg.mode === 'enforce') this.#mirrorFor(cfg)?.add(t, ttl, old !== undefined);
    return e;
  }

  /** Lift the ban on `target` (its escalation history goes too). False when it was not banned. */
  unban(target: string, by: string): boolean {
    const t = parseTarget(target);
    if (t === null) return false;
    const e = this.#entries.get(t.key);
    if (e === undefined) return false;
    const wasActive = e.untilMs > this.#clock.now();
    this.#remove(t.key, e);
    if (this.onChange !== null && !this.#replaying) this.onChange({ op: 'unban', target: t.display, by });
    this.#log?.warn({ target: t.display, by }, 'ban lifted');
    const cfg = this.#getConfig();
    if (wasActive && cfg.mode === 'enforce') this.#mirrorFor(cfg)?.remove(t);
    return wasActive;
  }

  /**
   * A guard saw `address` misbehave: `offences.threshold` of them within `offences.windowMs` make an
   * escalating ban. They are counted, and the ban made, per client key: an IPv4 address, or an IPv6
   * address's /N (`defense.ipv6PrefixLength`, 64 by default), so rotating addresses inside one's own
   * /64 does not start a fresh count, and the ban covers the whole /64. IPv4 offences are also summed
   * per /24: `offences.prefixThreshold` of them (from however many addresses) ban the /24.
   */
  offence(address: string, kind: string, ruleId: string): void {
    const cfg = this.#getConfig();
    if (cfg.mode === 'off' || address === '') return;
    const a = unmapAddress(address);
    const now = this.#clock.now();
    const policy = cfg.offences;
    const v4 = a.indexOf(':') === -1;
    const v6Bits = v4 ? 128 : (this.#getRuntime?.().config.defense.ipv6PrefixLength ?? 64);
    // An IPv6 key (`2001:db8:1:2::/64`) is CIDR text: it is also the ban's target.
    const key = v6Bits >= 128 ? a : v6PrefixKey(a, v6Bits);
    // What an address already banned still does (on a keep-alive connection, in observe mode) is
    // not added to its /24: one address alone brings at most `threshold` offences there, so a /24
    // ban takes several addresses.
    const own = v4 && policy.prefixThreshold > 0 ? this.#entries.get(a) : undefined;
    const wasBanned = own !== undefined && own.untilMs > now;
    // A browser loading a heavy page (or restoring its tabs) sends its subresources at once: the part
    // over a rate limit's burst comes back as dozens of 429s within a few hundred ms, then it stops.
    // Those count as one offence per `refusalSpacingMs`, so a ban needs refusals that keep going
    // (about threshold x spacing: 1 s by default). Volume still counts: within the spacing, every
    // `refusalsPerOffence`-th refusal is an offence too, so a client flooding in sub-second pulses
    // (never refused for a whole second) is banned after threshold x that many refusals.
    // Capped so that `threshold` spaced offences fit in the window: a raised threshold (or a shorter
    // window) makes the spacing shorter rather than rate-limit bans impossible.
    const spacing =
      kind === 'rate_limited' ? Math.min(policy.refusalSpacingMs, Math.floor(policy.windowMs / policy.threshold)) : 0;
    const counted = this.#countOffence(key, policy.threshold, now, spacing, policy.refusalsPerOffence);
    if (counted === Counted.ban) this.banEntry(key, cfg.ttlMs, `offences:${kind}`, ruleId, 'offences', true);
    if (counted !== Counted.no && v4 && policy.prefixThreshold > 0 && !wasBanned) {
      const p = prefixKey(a);
      // Never fewer than two addresses' worth: with `threshold` raised above `prefixThreshold`, one
      // address could otherwise ban its whole /24 (a carrier NAT's neighbours) before it is banned itself.
      if (this.#countOffence(p, Math.max(policy.prefixThreshold, 2 * policy.threshold), now, 0, 1) === Counted.ban)
        this.banEntry(`${p}.0/24`, cfg.ttlMs, `offences:${kind}`, ruleId, 'offences', true);
    }
  }

  /**
   * One more offence for `key`, unless it comes within `spacingMs` of the last one counted (then only
   * every `perOffence`-th such one counts); `ban` (and the count forgotten) when it reaches `threshold`
   * within the window.
   */
  #countOffence(key: string, threshold: number, now: number, spacingMs: number, perOffence: number): Counted {
    const policy = this.#getConfig().offences;
    let o = this.#offences.get(key);
    if (o === undefined) {
      if (this.#offences.size >= policy.maxAddresses) {
        // The oldest counter goes: losing it only delays that key's ban.
        const first = this.#offences.keys().next();
        if (first.done !== true) this.#offences.delete(first.value);
      }
      o = { count: 0, startMs: now, lastMs: now, skipped: 0 };
      // Its own copy: an address cut from an X-Forwarded-For line would keep the whole line alive.
      this.#offences.set(ownCopy(key), o);
    } else if (now - o.startMs > policy.windowMs) {
      // Re-inserted: the map's order is then oldest window first.
      this.#offences.delete(key);
      this.#offences.set(key, o);
      o.count = 0;
      o.skipped = 0;
      o.startMs = now;
    } else if (now - o.lastMs < spacingMs && ++o.skipped % perOffence !== 0) return Counted.no;
    o.lastMs = now;
    if (++o.count < threshold) return Counted.yes;
    this.#offences.delete(key);
    return Counted.ban;
  }

  /** Apply a change another node made (cluster mode): exactly its TTL, no escalation, not shared again. */
  applyRemote(change: BanChange): void {
    this.#replaying = true;
    try {
      if (change.op === 'ban')
        this.banEntry(change.target, change.ttlMs, change.reason, change.ruleId, change.by, false);
      else this.unban(change.target, change.by);
    } finally {
      this.#replaying = false;
    }
  }

  /** The entry for exactly `target` (an address or prefix as written), active or not; null when none. */
  entryFor(target: string): BanEntry | null {
    const t = parseTarget(target);
    return t === null ? null : (this.#entries.get(t.key) ?? null);
  }

  /** Every active ban (cluster resync walks them). */
  *active(): Generator<BanEntry> {
    const now = this.#clock.now();
    for (const e of this.#entries.values()) if (e.untilMs > now) yield e;
  }

  /** Offence counters held now (tests, memory checks). */
  get offenceCount(): number {
    return this.#offences.size;
  }

  /** Entries held now, active or remembered. */
  get size(): number {
    return this.#entries.size;
  }

  activeCount(): number {
    const now = this.#clock.now();
    let n = 0;
    for (const e of this.#entries.values()) if (e.untilMs > now) n++;
    return n;
  }

  /** Active bans, soonest expiry last, at most `limit`. */
  list(limit = 1000): BanView[] {
    const now = this.#clock.now();
    const wall = this.#clock.wallMs();
    if (limit <= 100) {
      // A small page (the dashboard asks for one every second): keep the `limit` latest expiries in a
      // small sorted array, so a table of many bans is not turned into views and sorted whole.
      const top: BanEntry[] = [];
      for (const e of this.#entries.values()) {
        if (e.untilMs <= now || (top.length === limit && e.untilMs <= top[top.length - 1]!.untilMs)) continue;
        let i = top.length;
        while (i > 0 && top[i - 1]!.untilMs < e.untilMs) i--;
        top.splice(i, 0, e);
        if (top.length > limit) top.pop();
      }
      return top.map((e) => this.view(e, now, wall));
    }
    const out: BanView[] = [];
    for (const e of this.#entries.values()) if (e.untilMs > now) out.push(this.view(e, now, wall));
    out.sort((x, y) => (x.expires < y.expires ? 1 : x.expires > y.expires ? -1 : 0));
    return out.slice(0, limit);
  }

  /** How GET /api/bans shows `e`. */
  view(e: BanEntry, now = this.#clock.now(), wall = this.#clock.wallMs()): BanView {
    return {
      target: e.target.display,
      reason: e.reason,
      rule: e.ruleId,
      by: e.by,
      since: new Date(e.sinceWallMs).toISOString(),
      expires: new Date(wall + (e.untilMs - now)).toISOString(),
      ttlSec: Math.ceil((e.untilMs - now) / 1000),
      count: e.count,
    };
  }

  /** Persistence: from now on, remember which entries change (takeChanges() hands them over). */
  trackChanges(): void {
    this.#changed ??= new Set();
  }

  #markChanged(key: string): void {
    const changed = this.#changed!;
    if (this.#rewrite) return;
    if (changed.size >= 2 * this.#getConfig().maxEntries) {
      changed.clear();
      this.#rewrite = true;
    } else changed.add(key);
  }

  /**
   * At most `limit` of the entries set (`saved`) and keys removed (`removed`) since the last call; the
   * rest wait for the next. `all`: too many changed to list, so every stored row goes first and the
   * whole table follows, `limit` at a time.
   */
  takeChanges(limit = Infinity): { all: boolean; saved: BanRecord[]; removed: string[] } {
    const all = this.#rewrite;
    const saved: BanRecord[] = [];
    const removed: string[] = [];
    if (this.#changed === null) return { all: false, saved, removed };
    if (all) {
      this.#rewrite = false;
      this.#changed = new Set(this.#entries.keys());
    }
    const now = this.#clock.now();
    const wall = this.#clock.wallMs();
    for (const key of this.#changed) {
      if (saved.length + removed.length >= limit) break;
      this.#changed.delete(key);
      const e = this.#entries.get(key);
      if (e === undefined) removed.push(key);
      else saved.push(this.#record(e, now, wall));
    }
    return { all, saved, removed };
  }

  /** Hand the whole table over again at the next takeChanges() (a failed write). */
  changesLost(): void {
    if (this.#changed === null) return;
    this.#changed.clear();
    this.#rewrite = true;
  }

  #record(e: BanEntry, now: number, wall: number): BanRecord {
    return {
      key: e.target.key,
      target: e.target.display,
      reason: e.reason,
      ruleId: e.ruleId,
      by: e.by,
      sinceWallMs: e.sinceWallMs,
      untilWallMs: Math.round(wall + (e.untilMs - now)),
      count: e.count,
      level: e.level,
    };
  }

  /**
   * Put back bans read from the state file at start-up, before the listeners accept: each with its
   * end, count and escalation step, told to nobody (not the cluster, the audit trail, nor the log
   * line by line). Entries past their end by more than escalation.windowMs are of no use and skipped;
   * so are targets already in the table. Returns how many were put back, and how many of them are in force.
   */
  restore(records: Iterable<BanRecord>): { restored: number; active: number } {
    const cfg = this.#getConfig();
    let restored = 0;
    let active = 0;
    if (cfg.mode === 'off') return { restored, active };
    const now = this.#clock.now();
    const wall = this.#clock.wallMs();
    for (const r of records) {
      const t = parseTarget(r.target);
      if (t === null || this.#entries.has(t.key) || !Number.isFinite(r.untilWallMs)) continue;
      const left = r.untilWallMs - wall;
      if (left <= -cfg.escalation.windowMs) continue;
      if (this.#entries.size >= cfg.maxEntries) this.#makeRoom(now);
      const e: BanEntry = {
        target: t,
        reason: String(r.reason),
        ruleId: String(r.ruleId),
        by: String(r.by),
        sinceWallMs: Number(r.sinceWallMs),
        untilMs: now + left,
        count: Math.max(1, Number(r.count) | 0),
        level: Math.max(0, Number(r.level) | 0),
        restored: true,
      };
      if (t.kind === 'prefix') {
        if (t.family === 4) this.#v4PrefixEntries++;
        else this.#v6PrefixLengths.set(t.bits, (this.#v6PrefixLengths.get(t.bits) ?? 0) + 1);
      }
      this.#entries.set(t.key, e);
      if (t.kind === 'cidr') this.#cidrs.set(t.key, e);
      restored++;
      if (left > 0) {
        active++;
        if (cfg.mode === 'enforce') this.#mirrorFor(cfg)?.add(t, left, false);
      }
    }
    if (this.#cidrs.size > 0) this.#rebuildCidrs();
    return { restored, active };
  }

  /** The nftables mirror in use, if any (tests wait on it). */
  get mirror(): NftMirror | null {
    return this.#mirror;
  }

  #remove(key: string, e: BanEntry): void {
    this.#entries.delete(key);
    if (this.#changed !== null) this.#markChanged(key);
    if (this.#fast.delete(e)) this.#rebuildFast(); // an unban takes effect on the next connection
    const t = e.target;
    if (t.kind === 'prefix') {
      if (t.family === 4) this.#v4PrefixEntries--;
      else {
        const n = this.#v6PrefixLengths.get(t.bits)! - 1;
        if (n > 0) this.#v6PrefixLengths.set(t.bits, n);
        else this.#v6PrefixLengths.delete(t.bits);
      }
    } else if (e.target.kind === 'cidr') {
      this.#cidrs.delete(key);
      this.#rebuildCidrs();
    }
  }

  /** Free one place: an expired entry if the cursor finds one soon, else the oldest automatic ban. */
  #makeRoom(now: number): void {
    for (let i = 0; i < SWEEP_STEPS; i++) {
      if (this.#cursor === null) this.#cursor = this.#entries.values();
      const step = this.#cursor.next();
      if (step.done === true) {
        this.#cursor = null;
        continue;
      }
      if (step.value.untilMs <= now) {
        this.#remove(step.value.target.key, step.value);
        return;
      }
    }
    let i = 0;
    for (const e of this.#entries.values()) {
      if (!e.by.startsWith('operator') || ++i > SWEEP_STEPS) {
        this.#remove(e.target.key, e);
        break;
      }
    }
    if (now - this.#fullLoggedAt > 60000) {
      this.#fullLoggedAt = now;
      this.#log?.warn(
        { maxEntries: this.#getConfig().maxEntries },
        'ban table full of active bans: the oldest are dropped early (raise defense.bans.maxEntries?)',
      );
    }
  }

  #rebuildCidrs(): void {
    if (this.#cidrs.size === 0) {
      this.#cidrList = null;
      return;
    }
    const bl = new BlockList();
    for (const e of this.#cidrs.values())
      bl.addSubnet(e.target.network, e.target.bits, e.target.family === 4 ? 'ipv4' : 'ipv6');
    this.#cidrList = bl;
  }

  #mirrorFor(cfg: BansConfig): NftMirror | null {
    const n = cfg.nftables;
    if (!n.enabled) return null;
    const key = `${n.family}\0${n.table}\0${n.set}\0${n.dropRule}`;
    if (this.#mirror === null || this.#mirrorKey !== key) {
      const ports =
        this.#getRuntime?.()
          .config.listeners.map((l) => Number(l.address.slice(l.address.lastIndexOf(':') + 1)))
          .filter((p) => p > 0) ?? [];
      this.#mirror = new NftMirror(n, ports, this.#log, this.#nftRunner);
      this.#mirrorKey = key;
    }
    return this.#mirror;
  }
}

function matchesCidr(t: BanTarget, address: string): boolean {
  const bl = new BlockList();
  bl.addSubnet(t.network, t.bits, t.family === 4 ? 'ipv4' : 'ipv6');
  return bl.check(address, address.indexOf(':') === -1 ? 'ipv4' : 'ipv6');
}

/** The `source` label of rempart_bans_total: offences, operator or rule. */
function sourceOf(by: string): 'offences' | 'operator' | 'rule' {
  return by === 'offences' ? 'offences' : by.startsWith('operator') ? 'operator' : 'rule';
}
