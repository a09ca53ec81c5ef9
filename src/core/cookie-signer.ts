// Signed cookies without server state: `fields.mac`, an HMAC-SHA256 over the kind, the route and the
// fields, checked with timingSafeEqual. The waiting room's tickets and passes use it
// (src/phases/waiting-room/ticket.ts). The key lives in a private field: a signer can be handed to a
// phase or logged by mistake without its key showing.
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { MIN_KEY_BYTES } from './signing-keys.ts';

export interface Ticket {
  readonly route: string;
  readonly n: number;
  /** Wall-clock ms when it was issued. */
  readonly issuedAtMs: number;
  /** binding(prefix, User-Agent) of the client it was given to (12 base64url characters, no dot). */
  readonly bind: string;
}

export interface Pass {
  readonly route: string;
  /** Wall-clock ms after which the pass is refused. */
  readonly expiresAtMs: number;
  /** binding(prefix, User-Agent) of the client it was given to. */
  readonly bind: string;
}

const MAC_BYTES = 32;

export class CookieSigner {
  /** A KeyObject: createHmac imports a raw Buffer key on every call (≈ 5× the cost of the MAC itself). */
  readonly #key: KeyObject;

  constructor(key: Buffer) {
    if (key.length < MIN_KEY_BYTES) throw new Error(`waiting-room key must be at least ${MIN_KEY_BYTES} bytes`);
    this.#key = createSecretKey(key);
  }

  #mac(text: string): Buffer {
    return createHmac('sha256', this.#key).update(text).digest();
  }

  #sign(kind: string, route: string, fields: string): string {
    return `${fields}.${this.#mac(`${kind}|${route}|${fields}`).toString('base64url')}`;
  }

  /** The fields of a cookie value if its MAC is right for this kind and route, else null. */
  #open(kind: string, route: string, value: string | undefined): string[] | null {
    if (value === undefined || value.length > 200) return null;
    const dot = value.lastIndexOf('.');
    if (dot <= 0) return null;
    const fields = value.slice(0, dot);
    const given = Buffer.from(value.slice(dot + 1), 'base64url');
    if (given.length !== MAC_BYTES) return null;
    if (!timingSafeEqual(given, this.#mac(`${kind}|${route}|${fields}`))) return null;
    return fields.split('.');
  }

  signTicket(t: Ticket): string {
    return this.#sign('ticket', t.route, `${t.n}.${t.issuedAtMs}.${t.bind}`);
  }

  signPass(p: Pass): string {
    return this.#sign('pass', p.route, `${p.expiresAtMs}.${p.bind}`);
  }

  /**
   * A ticket for `route`, signed by this key, given to the client whose binding is `bind`, and issued
   * no longer than ttlMs before nowMs; else null.
   */
  openTicket(route: string, value: string | undefined, nowMs: number, ttlMs: number, bind: string): Ticket | null {
    const f = this.#open('ticket', route, value);
    if (f === null || f.length !== 3 || f[2] !== bind) return null;
    const n = Number(f[0]);
    const issuedAtMs = Number(f[1]);
    if (
      !Number.isSafeInteger(n) ||
      n < 1 ||
      !Number.isFinite(issuedAtMs) ||
      nowMs - issuedAtMs > ttlMs ||
      issuedAtMs > nowMs + 60_000
    )
      return null;
    return { route, n, issuedAtMs, bind };
  }

  /** A pass for `route`, signed by this key, given to the client whose binding is `bind`, not expired at nowMs; else null. */
  openPass(route: string, value: string | undefined, nowMs: number, bind: string): Pass | null {
    const f = this.#open('pass', route, value);
    if (f === null || f.length !== 2 || f[1] !== bind) return null;
    const expiresAtMs = Number(f[0]);
    if (!Number.isFinite(expiresAtMs) || expiresAtMs <= nowMs) return null;
    return { route, expiresAtMs, bind };
  }
}
