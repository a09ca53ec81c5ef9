// `rempart/client`: pass Rempart's proof-of-work challenge from Node (API clients, scripts, the drill)
// or a browser (single-page apps calling APIs behind Rempart). No dependency beyond fetch and, where
// present, Web Crypto; no Node built-in, so the same module runs in both. The protocol it speaks is
// in docs/challenge.md:
// a challenge token comes in the `Rempart-Challenge` header (and in the JSON body), the solution is
// `<token>.<nonce>` whose SHA-256 starts with `bits` zero bits, sent back in `Rempart-Solution` on a
// retry of the same request; the answer carries a clearance in `Rempart-Clearance` to send from then on.
import { solveRange } from './solver.ts';

export const CHALLENGE_HEADER = 'rempart-challenge';
export const SOLUTION_HEADER = 'rempart-solution';
export const CLEARANCE_HEADER = 'rempart-clearance';
/** Cookie a client that can only manage cookies may carry the solution in, instead of the header. */
export const SOLUTION_COOKIE = '__rempart_sol';
export const CLEARANCE_COOKIE = '__rempart_clr';

/** Statuses a challenge can come with (403 today; 429 and 503 accepted for the future). */
const CHALLENGE_STATUSES = new Set([403, 429, 503]);
/** Hashes between yields to the event loop (a few ms of work), so solving never stalls other work. */
const HASHES_PER_SLICE = 8192;
/** Difficulty above this is refused: 2^28 hashes is minutes of work, no server of ours asks it. */
const MAX_BITS = 28;

export interface ChallengeInfo {
  /** The challenge token: `v1.<kid>.<bits>.<issuedSec>.<expiresSec>.<rand>.<binding>.<mac>`. */
  readonly token: string;
  readonly bits: number;
  /** Unix seconds after which the challenge is refused. */
  readonly expiresAt: number;
}

/** The bits and expiry a challenge token says, or null when it is not a challenge token. */
export function parseChallengeToken(token: string): ChallengeInfo | null {
  if (typeof token !== 'string' || token.length > 256) return null;
  const f = token.split('.');
  if (f.length !== 8 || f[0] !== 'v1' || !/^\d{1,2}$/.test(f[2]!) || !/^\d{1,12}$/.test(f[4]!)) return null;
  return { token, bits: Number(f[2]), expiresAt: Number(f[4]) };
}

/**
 * The challenge in a response, from its `Rempart-Challenge` header or a JSON body's `challenge`
 * field; null when the response is not a challenge.
 */
export function challengeFrom(
  status: number,
  headers: Headers | Record<string, string | string[] | undefined>,
  json?: unknown,
): ChallengeInfo | null {
  if (!CHALLENGE_STATUSES.has(status)) return null;
  const h = headers instanceof Headers ? headers.get(CHALLENGE_HEADER) : headers[CHALLENGE_HEADER];
  const fromHeader = typeof h === 'string' ? parseChallengeToken(h.trim()) : null;
  if (fromHeader !== null) return fromHeader;
  const c =
    typeof json === 'object' && json !== null ? (json as { challenge?: { token?: unknown } }).challenge : undefined;
  return typeof c?.token === 'string' ? parseChallengeToken(c.token) : null;
}

/** Leading zero bits of a digest, from the most significant bit of its first byte. */
export function leadingZeroBits(digest: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < digest.length; i++) {
    const b = digest[i]!;
    if (b !== 0) return n + Math.clz32(b) - 24;
    n += 8;
  }
  return n;
}

/**
 * Web Crypto, to double-check the JS solver's answer: global in Node and in browsers, except on a
 * page served over plain http from another host than localhost (not a secure context), where the
 * answer goes unchecked (the server checks it anyway).
 */
const subtle: typeof globalThis.crypto.subtle | undefined = globalThis.crypto?.subtle;
const utf8 = new TextEncoder();

async function confirmed(solution: string, bits: number): Promise<boolean> {
  if (subtle === undefined) return true;
  return leadingZeroBits(new Uint8Array(await subtle.digest('SHA-256', utf8.encode(solution)))) >= bits;
}

/** The page's address in a browser, so relative URLs work there as they do in fetch. */
const pageUrl = (globalThis as { location?: { href?: string } }).location?.href;

const yieldToLoop: () => Promise<void> =
  typeof setImmediate === 'function'
    ? () => new Promise((r) => setImmediate(r))
    : () => new Promise((r) => setTimeout(r, 0));

export interface SolveOptions {
  /** Stop (rejecting with the signal's reason) when aborted. */
  readonly signal?: AbortSignal;
}

/**
 * Find a nonce for a challenge; resolves with the solution `<token>.<nonce>` to send in
 * `Rempart-Solution`. Yields to the event loop every few thousand hashes.
 *
 * @example
 *   const res = await fetch(url);
 *   const c = challengeFrom(res.status, res.headers);
 *   if (c) await fetch(url, { headers: { 'rempart-solution': await solve(c) } });
 */
export async function solve(challenge: ChallengeInfo | string, options: SolveOptions = {}): Promise<string> {
  const info = typeof challenge === 'string' ? parseChallengeToken(challenge) : challenge;
  if (info === null) throw new TypeError('not a Rempart challenge token');
  if (info.bits > MAX_BITS)
    throw new RangeError(`challenge asks ${info.bits} bits, more than this client does (${MAX_BITS})`);
  const prefix = `${info.token}.`;
  for (let start = 0; ; start += HASHES_PER_SLICE) {
    const nonce = solveRange(prefix, info.bits, start, HASHES_PER_SLICE);
    // One Web Crypto hash double-checks the JS solver's answer.
    if (nonce >= 0 && (await confirmed(prefix + nonce, info.bits))) return prefix + nonce;
    options.signal?.throwIfAborted();
    await yieldToLoop();
  }
}

export interface RempartClientOptions {
  /** The fetch to wrap (default: the global one). */
  readonly fetch?: typeof fetch;
  /** Called after each solved challenge, with how long solving took. */
  readonly onSolved?: (info: ChallengeInfo, ms: number) => void;
}

export interface RempartClient {
  /** fetch, passing Rempart challenges: solve, retry once with the solution, keep the clearance per origin. */
  fetch(input: string | URL, init?: RequestInit): Promise<Response>;
  /** Clearance tokens by origin (`http://host:port`). In a browser, a relative URL is the page's origin. */
  readonly clearances: Map<string, string>;
}

/**
 * A fetch that passes challenges. Request bodies are sent twice when challenged, so pass a string,
 * a Buffer, a URLSearchParams or FormData (not a stream).
 *
 * @example
 *   import { createClient } from 'rempart/client';
 *   const client = createClient();
 *   const res = await client.fetch('https://shop.example/api/orders', { method: 'POST', body: JSON.stringify(order) });
 */
export function createClient(options: RempartClientOptions = {}): RempartClient {
  const doFetch = options.fetch ?? globalThis.fetch;
  const clearances = new Map<string, string>();

  function remember(origin: string, res: Response): void {
    const c = res.headers.get(CLEARANCE_HEADER);
    if (c !== null && c !== '') clearances.set(origin, c);
  }

  return {
    clearances,
    async fetch(input, init = {}) {
      const origin = new URL(input, pageUrl).origin;
      const headers = new Headers(init.headers);
      const held = clearances.get(origin);
      if (held !== undefined) headers.set(CLEARANCE_HEADER, held);
      const res = await doFetch(input, { ...init, headers });
      remember(origin, res);
      const challenge = challengeFrom(res.status, res.headers);
      if (challenge === null) return res;
      await res.body?.cancel();
      const t0 = performance.now();
      const solution = await solve(challenge, { signal: init.signal ?? undefined });
      options.onSolved?.(challenge, performance.now() - t0);
      headers.delete(CLEARANCE_HEADER); // it was refused (expired, or for another key or client)
      headers.set(SOLUTION_HEADER, solution);
      const retried = await doFetch(input, { ...init, headers });
      remember(origin, retried);
      return retried;
    },
  };
}
