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

export class SpentAddresses {
  readonly #table = new Map<string, Session>();
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
   * A credential used from `address` went over its budget (`budget`: the entry its budget lives in).
   * An address already linked keeps its first spent budget (one debt per address, not one per overrun).
   */
  overran(address: string, budget: Session, nowMs: number): void {
    if (this.#max === 0 || address === '') return;
    const root = budget.parent ?? budget;
    const old = this.#table.get(address);
    if (old !== undefined && old.paceTatMs > nowMs) {
      this.#table.delete(address);
      this.#table.set(address, old);
      return;
    }
    if (old !== undefined) this.#table.delete(address);
    while (this.#table.size >= this.#max) this.#dropOldest();
    this.#table.set(ownCopy(address), root);
  }

  /** The budget a clearance first seen at `address` now shares, or null (its own, fresh). */
  heir(address: string, nowMs: number): Session | null {
    if (this.#table.size === 0) return null;
    const b = this.#table.get(address);
    if (b === undefined) return null;
    // Refilled (the client waited its debt out): forgotten, the next clearance is a fresh one.
    if (b.paceTatMs <= nowMs) {
      this.#table.delete(address);
      return null;
    }
    return b;
  }
}
