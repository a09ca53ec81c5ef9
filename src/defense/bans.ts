// The ban table (stub: exact addresses only, no escalation, no memory bound yet; filled in by the bans work).
import type { BanList } from './types.ts';
import type { Clock } from '../core/clock.ts';

export class BanTable implements BanList {
  readonly #clock: Clock;
  readonly #until = new Map<string, number>();
  constructor(clock: Clock) {
    this.#clock = clock;
  }
  isBanned(address: string): boolean {
    const until = this.#until.get(address);
    if (until === undefined) return false;
    if (until > this.#clock.now()) return true;
    this.#until.delete(address);
    return false;
  }
  ban(target: string, ttlMs: number): void {
    this.#until.set(target, this.#clock.now() + ttlMs);
  }
  unban(target: string): boolean {
    return this.#until.delete(target);
  }
  offence(): void {}
}
