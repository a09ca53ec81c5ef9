// JWT familiarity: a client presenting a JWT our configured key verifies is known. Small and strict:
// one algorithm fixed by configuration (the token's `alg` must equal it: no `none`, no HS256 signed
// with an RSA public key), compact form only, `exp` required, `nbf`/`iss`/`aud` checked. node:crypto
// only. Cheap checks (shape, header, claims) come before the signature, so an expired or foreign
// token costs no public-key operation.
import { createHmac, createPublicKey, createSecretKey, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { cookieValue } from '../../core/client-key.ts';

export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256';

export interface JwtSettings {
  readonly algorithm: JwtAlgorithm;
  readonly keyFile: string;
  readonly header: string;
  readonly cookie?: string;
  readonly issuer?: string;
  readonly audience?: string;
  readonly leewaySec: number;
}

/** Tokens longer than this are refused unread. */
const MAX_JWT_CHARS = 8192;
/**
 * Tokens that verified are remembered until they expire, so a client sending the same token on every
 * request (an app under attack, asked at each request) pays one public-key operation, not one per
 * request. Only tokens our key signed get in (a forger cannot fill it), at most VERIFIED_MAX of them,
 * each at most VERIFIED_MAX_CHARS long (≤ 8 MiB); the oldest goes first.
 */
export const VERIFIED_MAX = 4096;
const VERIFIED_MAX_CHARS = 2048;

/** Whether token[from, to) is base64url as an encoder writes it (no padding, no spare bits set). */
function canonical(token: string, from: number, to: number): boolean {
  if (to - from === 0 || (to - from) % 4 === 1) return false;
  for (let i = from; i < to; i++) {
    const c = token.charCodeAt(i);
    const ok =
      (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
    if (!ok) return false;
  }
  const seg = token.slice(from, to);
  return Buffer.from(seg, 'base64url').toString('base64url') === seg;
}

export class JwtVerifier {
  readonly settings: JwtSettings;
  /** HS256: a KeyObject (createHmac imports a raw Buffer key on every call). */
  readonly #secret: KeyObject | null;
  readonly #publicKey: KeyObject | null;
  /** Verified token → the time (ms) past which it is no longer valid (exp + leeway). */
  readonly #verified = new Map<string, number>();
  /** Signature (or MAC) checks done: a token found in the verified table costs none. */
  verifications = 0;

  constructor(settings: JwtSettings, key: Buffer | KeyObject) {
    this.settings = settings;
    if (settings.algorithm === 'HS256') {
      if (!Buffer.isBuffer(key) || key.length < 32)
        throw new Error('defense.familiarity.jwt: an HS256 secret must hold at least 32 bytes');
      this.#secret = createSecretKey(key);
      this.#publicKey = null;
    } else {
      const k = Buffer.isBuffer(key) ? createPublicKey(key) : key;
      const type = k.asymmetricKeyType;
      if (
        (settings.algorithm === 'RS256' && type !== 'rsa') ||
        (settings.algorithm === 'ES256' && (type !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1'))
      )
        throw new Error(
          `defense.familiarity.jwt: the key file does not hold a ${settings.algorithm === 'RS256' ? 'RSA' : 'P-256'} public key`,
        );
      this.#secret = null;
      this.#publicKey = k;
    }
  }

  /** Read the key file and build a verifier; throws on a key that does not fit the algorithm. */
  static async load(settings: JwtSettings): Promise<JwtVerifier> {
    const bytes = await readFile(settings.keyFile);
    return new JwtVerifier(
      settings,
      settings.algorithm === 'HS256' ? Buffer.from(bytes.toString('utf8').trim(), 'utf8') : bytes,
    );
  }

  /** The token a request carries (`Authorization: Bearer …`, another header, or a cookie value), or ''. */
  tokenFrom(headers: Record<string, string | string[] | undefined>): string {
    const s = this.settings;
    if (s.cookie !== undefined) {
      const cookies = headers.cookie;
      return typeof cookies === 'string' ? cookieValue(cookies, s.cookie) : '';
    }
    const v = headers[s.header];
    if (typeof v !== 'string') return '';
    if (s.header === 'authorization')
      return v.length > 7 && v.slice(0, 7).toLowerCase() === 'bearer ' ? v.slice(7).trim() : '';
    return v.trim();
  }

  /** Whether `token` is a valid, current JWT for our key, issuer and audience. Never throws. */
  isValid(token: string, nowMs: number): boolean {
    if (token === '' || token.length > MAX_JWT_CHARS) return false;
    const until = this.#verified.get(token);
    if (until !== undefined) {
      this.#verified.delete(token);
      if (nowMs >= until) return false;
      this.#verified.set(token, until); // most recently used: the oldest unused token goes first
      return true;
    }
    const validUntil = this.#verify(token, nowMs);
    if (validUntil === 0) return false;
    if (token.length <= VERIFIED_MAX_CHARS) {
      if (this.#verified.size >= VERIFIED_MAX) this.#verified.delete(this.#verified.keys().next().value!);
      // A flat copy: the token is a slice of the whole header (a Cookie line, padded spaces), which V8
      // would otherwise keep alive with it, and the bound above would not bound the memory.
      this.#verified.set(Buffer.from(token, 'latin1').toString('latin1'), validUntil);
    }
    return true;
  }

  /** Tokens remembered as verified (bounded by VERIFIED_MAX). */
  get verifiedSize(): number {
    return this.#verified.size;
  }

  /** The full check: the time (ms) until which the token is valid (exp + leeway), or 0 when it is not. */
  #verify(token: string, nowMs: number): number {
    const d1 = token.indexOf('.');
    const d2 = d1 === -1 ? -1 : token.indexOf('.', d1 + 1);
    if (d2 === -1 || token.indexOf('.', d2 + 1) !== -1) return 0;
    // Canonical base64url only: Node's decoder ignores '=', whitespace, stray characters and the spare
    // low bits of the last character, so one signed token would have countless texts, each a fresh key
    // for the budget and the sharing bounds (keyed by the text). A token that does not re-encode to
    // exactly its own text is refused: one token, one text.
    if (!canonical(token, 0, d1) || !canonical(token, d1 + 1, d2) || !canonical(token, d2 + 1, token.length)) return 0;
    const s = this.settings;
    let header: unknown;
    let claims: unknown;
    try {
      header = JSON.parse(Buffer.from(token.slice(0, d1), 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(token.slice(d1 + 1, d2), 'base64url').toString('utf8'));
    } catch {
      return 0;
    }
    if (typeof header !== 'object' || header === null || (header as { alg?: unknown }).alg !== s.algorithm) return 0;
    if ((header as { crit?: unknown }).crit !== undefined) return 0; // no extension is understood
    if (typeof claims !== 'object' || claims === null) return 0;
    const c = claims as { exp?: unknown; nbf?: unknown; iss?: unknown; aud?: unknown };
    const now = nowMs / 1000;
    if (typeof c.exp !== 'number' || !Number.isFinite(c.exp) || now >= c.exp + s.leewaySec) return 0;
    if (c.nbf !== undefined && (typeof c.nbf !== 'number' || now < c.nbf - s.leewaySec)) return 0;
    if (s.issuer !== undefined && c.iss !== s.issuer) return 0;
    if (s.audience !== undefined && !(c.aud === s.audience || (Array.isArray(c.aud) && c.aud.includes(s.audience))))
      return 0;
    const validUntil = (c.exp + s.leewaySec) * 1000;
    this.verifications++;
    const signed = token.slice(0, d2);
    const sig = Buffer.from(token.slice(d2 + 1), 'base64url');
    try {
      if (this.#secret !== null) {
        const mac = createHmac('sha256', this.#secret).update(signed).digest();
        return sig.length === mac.length && timingSafeEqual(sig, mac) ? validUntil : 0;
      }
      if (s.algorithm === 'ES256')
        return sig.length === 64 &&
          verify('sha256', Buffer.from(signed), { key: this.#publicKey!, dsaEncoding: 'ieee-p1363' }, sig)
          ? validUntil
          : 0;
      return verify('sha256', Buffer.from(signed), this.#publicKey!, sig) ? validUntil : 0;
    } catch {
      return 0;
    }
  }
}
