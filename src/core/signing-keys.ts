// What the challenge's tokens (src/phases/challenge/tokens.ts) and the waiting room's tickets and
// passes (src/phases/waiting-room/ticket.ts) share: the form of a signing key, and the binding that
// makes a token good only for the client network and browser it was given to. Here, below both
// phases, so neither imports the other.
import { hash } from 'node:crypto';

/** Shortest signing key accepted (HMAC-SHA256: a key shorter than its output weakens it). */
export const MIN_KEY_BYTES = 32;

/** Parse a key given as hex (64+ hex digits) or base64; null when it is shorter than 32 bytes. */
export function parseKey(text: string): Buffer | null {
  const t = text.trim();
  const key = /^(?:[0-9a-fA-F]{2})+$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  return key.length >= MIN_KEY_BYTES ? key : null;
}

/** base64url(SHA-256(clientPrefix + "\n" + User-Agent))[0..12): what a signed token is bound to. */
export function binding(prefix: string, userAgent: string | undefined): string {
  // 9 bytes are exactly 12 base64url characters: the one-shot hash's prefix is the same value.
  return hash('sha256', `${prefix}\n${userAgent ?? ''}`, 'base64url').slice(0, 12);
}
