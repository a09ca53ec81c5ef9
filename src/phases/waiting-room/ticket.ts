// The waiting room's signed cookies: a `ticket` (route, number, issuedAt, binding) and a `pass`
// (route, expiresAt, binding), each `fields.mac` with an HMAC-SHA256 over the kind, the route and the
// fields, checked with timingSafeEqual. Nothing about a visitor is stored on the server. Cookie values
// and the key are never logged.
//
// The binding is the challenge's clearance binding (../challenge/tokens.ts: a hash of the client's
// /24 or /64 prefix and its User-Agent): a pass or ticket copied to another network or browser is no
// pass and no ticket there. The same trade-off as clearances: a phone that changes network waits again.
import { randomBytes } from 'node:crypto';
import { CookieSigner, type Pass, type Ticket } from '../../core/cookie-signer.ts';
import { readFile } from 'node:fs/promises';
import { parseKey } from '../../core/signing-keys.ts';

export { parseKey };

export type { Pass, Ticket };
export { CookieSigner };

/** Cookie names per route (route names are cookie-safe tokens), so rooms of two routes do not clash. */
export function ticketCookieName(route: string): string {
  return `rempart_wr_ticket_${route}`;
}
export function passCookieName(route: string): string {
  return `rempart_wr_pass_${route}`;
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
