// Client addresses (an IPv6 client: its /64) one of whose credentials went over its pace budget, with
// that credential's budget entry: a clearance minted at such an address shares that budget from its
// first request instead of bringing a fresh one. A bot that throws away a spent clearance and solves
// again (each proof of work otherwise buys another burst) gets the debt it left, while people behind
// one carrier-NAT address, who each solve once and never go over, each keep a budget of their own.
// The link lasts while the spent budget has not refilled: a client that stops and waits its debt out
// is as fresh as one that never overran. Capped, least recently touched address dropped first (which
// only forgets that an address overran).
import { ownCopy } from '../../core/own-copy.ts';
import type { Session } from './sessions.ts';
import { WindowQuota } from '../../core/window-quota.ts';

// SpentAddresses keeps a debt (the pace budget's theoretical arrival time when it was recorded), never a live
// budget entry: a clearance that inherits one gets an entry of its own starting with that debt, so the
// link ends by itself once the debt is paid (heirs spending their own entries never keep it alive), and
// one overrun at a carrier-NAT address does not tie the people who solve there afterwards to the bot's
// budget. Its links are keyed by address and clearance binding (prefix and user agent): a bot
// re-solving with the same browser string meets its debt, a neighbour with another browser does not.

export class SpentAddresses {
  readonly #table = new Map<string, number>();
  #max: number;

  constructor(maxAddresses: number) {
    this.#max = maxAddresses;
  }

  configure(maxAddresses: number): void {
    this.#max = maxAddresses;
    while (this.#table.size > this.#max) this.#dropOldest();
  }

  get size(): number {
    return this.#table.size;
  }

  #dropOldest(): void {
    const first = this.#table.keys().next();
    if (first.done !== true) this.#table.delete(first.value);
  }

  /**
   * A credential used at `key` (address and binding) went over its budget, whose debt is now `tatMs`.
   * The larger debt is kept (one entry per key, not one per overrun).
   */
  overran(key: string, tatMs: number, nowMs: number): void {
    if (this.#max === 0 || key === '' || tatMs <= nowMs) return;
    const old = this.#table.get(key);
    if (old !== undefined) this.#table.delete(key);
    else while (this.#table.size >= this.#max) this.#dropOldest();
    this.#table.set(old === undefined ? ownCopy(key) : key, old !== undefined && old > tatMs ? old : tatMs);
  }

  /** The debt a clearance minted at `key` starts with, or 0 (none: paid, or never overran). */
  heir(key: string, nowMs: number): number {
    if (this.#table.size === 0) return 0;
    const t = this.#table.get(key);
    if (t === undefined) return 0;
    // Paid (the client waited its debt out): forgotten, the next clearance is a fresh one.
    if (t <= nowMs) {
      this.#table.delete(key);
      return 0;
    }
    return t;
  }
}

/** Clearances an address (IPv6: its /64) mints a minute that never join a lineage (a household solving again). */
export const MINTS_FREE_PER_ADDRESS = 1;
/** The same for its network (IPv4 /24, IPv6 /48): past these, a clearance burned quickly is inherited. */
export const MINTS_FREE_PER_NETWORK = 2;

/**
 * Minting pays: the last clearance minted at each address and each network (IPv4 /24, IPv6 /48), with
 * the budget it spends, and how many were minted there this minute (count-min sketches, fixed memory).
 * Past a few a minute, a new clearance shares the budget of the last one minted at its address and
 * binding (user agent: a neighbour with another browser is not tied to it), or at its network starts
 * with that one's debt, when that one burned more than half its burst and has not refilled: a bot that solves, burns a clearance quickly and solves again (before overrunning, or from
 * the next address of its /24) keeps one debt, which then overruns and stays refused while it floods. People behind one
 * carrier NAT each solve once and use their clearance at a person's pace (a page, then reading): the
 * one before them has not burned half a burst, so each still gets a budget of its own. The mint counts
 * alone cannot tell them apart (fifty people a minute at one address mint as often as a bot re-solving
 * every second); how fast the last clearance was burned can. What it costs: a person who solves right
 * after a neighbour burned more than half a burst (a page of 10+ origin requests at once, or a bot that
 * floods) starts with that debt: refused until it refilled, at most twice `burst` seconds. What it does not stop: a bot that burns less than
 * half a burst per clearance (it then mints one a second, and pays the work that rises with its mints,
 * index.ts). Both tables capped, least recently minted dropped first (which only forgets a lineage).
 */
/** Where a clearance was minted, kept beside its entry until its first use (MintLineage.firstUse). */
export interface MintSite {
  readonly address: string;
  readonly network: string;
  readonly overAddress: boolean;
  readonly overNetwork: boolean;
  readonly burnedMs: number;
}

export class MintLineage {
  readonly #addressMints = new WindowQuota(60_000, 13);
  readonly #networkMints = new WindowQuota(60_000, 13);
  readonly #byAddress = new Map<string, Session>();
  /** The last one minted at each network, with where (address and binding). */
  readonly #byNetwork = new Map<string, NetworkMint>();
  #max: number;
  /** Whether the last heir() counted its mint past the allowance at the address, at the network. */
  lastOverAddress = false;
  /** Whether the last heir() found the lineage at the address and binding (shared; else at its network). */
  lastShared = false;
  lastOverNetwork = false;

  constructor(maxEntries: number) {
    this.#max = maxEntries;
  }

  configure(maxEntries: number): void {
    this.#max = maxEntries;
    trim(this.#byAddress, maxEntries);
    trim(this.#byNetwork, maxEntries);
  }

  /**
   * A clearance is being minted at `address` (address and binding) of `network`: counted, and the last
   * one minted there when burned more than `burnedMs` ahead of now, or null; `lastShared` says whether
   * it was found at the address and binding (its budget shared) or only at the network (its debt copied).
   */
  heir(address: string, network: string, nowMs: number, burnedMs: number): Session | null {
    if (this.#max === 0 || address === '') return null;
    const overAddress = !this.#addressMints.take(address, MINTS_FREE_PER_ADDRESS, nowMs);
    const overNetwork = network !== '' && !this.#networkMints.take(network, MINTS_FREE_PER_NETWORK, nowMs);
    this.lastOverAddress = overAddress;
    this.lastOverNetwork = overNetwork;
    return this.#find(address, network, overAddress, overNetwork, nowMs, burnedMs);
  }

  /**
   * A clearance minted ahead is used for the first time: the lineage is looked at again (not counted
   * again), and it becomes the last one there. Minted in a row then burned in turn, each would otherwise
   * have looked at one not yet used. Shares at the address and binding, copies the debt at the network.
   */
  firstUse(s: Session, site: MintSite, nowMs: number): void {
    if (this.#max === 0) return;
    if (s.parent === null) {
      const b = this.#find(site.address, site.network, site.overAddress, site.overNetwork, nowMs, site.burnedMs);
      if (b !== null && b !== s) {
        if (this.lastShared) s.parent = b;
        else if (b.paceTatMs > s.paceTatMs) s.paceTatMs = b.paceTatMs;
      }
    }
    this.minted(site.address, site.network, s.parent ?? s);
  }

  #find(
    address: string,
    network: string,
    overAddress: boolean,
    overNetwork: boolean,
    nowMs: number,
    burnedMs: number,
  ): Session | null {
    this.lastShared = true;
    if (overAddress) {
      const b = this.#byAddress.get(address);
      if (b !== undefined && b.paceTatMs - nowMs > burnedMs) return b;
    }
    this.lastShared = false;
    if (overNetwork) {
      // Not from another browser at the same address: that is a neighbour behind one carrier NAT (a bot
      // moving on takes another address; one keeping its address meets its own lineage above).
      const e = this.#byNetwork.get(network);
      if (e !== undefined && e.budget.paceTatMs - nowMs > burnedMs && !sameAddress(e.at, address)) return e.budget;
    }
    return null;
  }

  /** The clearance just minted at `address` of `network` spends `budget` (its root entry). */
  minted(address: string, network: string, budget: Session): void {
    if (this.#max === 0 || address === '') return;
    put(this.#byAddress, address, budget, this.#max);
    if (network === '') return;
    if (!this.#byNetwork.delete(network)) trim(this.#byNetwork, this.#max - 1);
    this.#byNetwork.set(ownCopy(network), { budget, at: ownCopy(address) });
  }
}

interface NetworkMint {
  readonly budget: Session;
  /** Address and binding it was minted at (`address\nbinding`). */
  readonly at: string;
}

/** Whether two `address\nbinding` keys are of one address. */
function sameAddress(a: string, b: string): boolean {
  const i = a.indexOf('\n');
  return i === -1 ? a === b : b.startsWith(a.slice(0, i + 1));
}

function trim(m: Map<string, unknown>, max: number): void {
  while (m.size > max) {
    const first = m.keys().next();
    if (first.done === true) break;
    m.delete(first.value);
  }
}

function put(m: Map<string, Session>, key: string, budget: Session, max: number): void {
  if (!m.delete(key)) trim(m, max - 1);
  m.set(ownCopy(key), budget);
}
