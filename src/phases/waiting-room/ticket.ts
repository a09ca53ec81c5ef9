// The waiting room's signed cookies: a `ticket` (route, number, issuedAt, binding) and a `pass`
// (route, expiresAt, binding), each `fields.mac` with an HMAC-SHA256 over the kind, the route and the
// fields, checked with timingSafeEqual. Nothing about a visitor is stored on the server. Cookie values
// and the key are never logged.
//
// The binding is the challenge's clearance binding (../challenge/tokens.ts: a hash of the client's
// /24 or /64 prefix and its User-Agent): a pass or ticket copied to another network or browser is no
// pass and no ticket there. The same trade-off as clearances: a phone that changes network waits again.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { MIN_KEY_BYTES, parseKey } from '../../core/signing-keys.ts';

export { parseKey };

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

/** Cookie names per route (route names are cookie-safe tokens), so rooms of two routes do not clash. */
export function ticketCookieName(route: string): string {
  return `rempart_wr_ticket_${route}`;
}
export function passCookieName(route: string): string {
  return `rempart_wr_pass_${route}`;
}

const MAC_BYTES = 32;

export class CookieSigner {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length < MIN_KEY_BYTES) throw new Error(`waiting-room key must be at least ${MIN_KEY_BYTES} bytes`);
    this.#key = key;
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

/**
 * The signing key: REMPART_WAITING_ROOM_KEY, else the file `keyFile`, else a random key for this
 * process (`random: true`: the caller warns; tickets then do not survive a restart).
 * Throws when a key is given but unusable: a misconfigured key must stop start-up.
 */
export async function loadKey(
  env: NodeJS.ProcessEnv,
  keyFile: string | undefined,
): Promise<{ key: Buffer; random: boolean; source: string }> {
  const fromEnv = env.REMPART_WAITING_ROOM_KEY;
  if (fromEnv !== undefined && fromEnv !== '') {
    const key = parseKey(fromEnv);
    if (key === null) throw new Error('REMPART_WAITING_ROOM_KEY must hold at least 32 bytes, hex or base64');
    return { key, random: false, source: 'env' };
  }
  if (keyFile !== undefined) {
    const key = parseKey(await readFile(keyFile, 'utf8'));
    if (key === null) throw new Error(`waitingRoom.keyFile ${keyFile} must hold at least 32 bytes, hex or base64`);
    return { key, random: false, source: 'file' };
  }
  return { key: randomBytes(32), random: true, source: 'random' };
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  let at = 0;
  while (at < header.length) {
    let end = header.indexOf(';', at);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', at);
    if (eq !== -1 && eq < end && header.slice(at, eq).trim() === name) return header.slice(eq + 1, end).trim();
    at = end + 1;
  }
  return undefined;
}
