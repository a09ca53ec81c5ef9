// Challenge detection and solving for the drill's legitimate users. They pass challenges as real
// clients do, with rempart/client's solver: a "browser" reads the challenge its interstitial carries
// in the Rempart-Challenge header (what the page's worker solves), an API user the JSON challenge.
// The user's only channel back is its cookie jar and the retried request, so the solution rides in
// the `__rempart_sol` cookie on the retry (docs/challenge.md); the answer sets the clearance cookie,
// which the jar keeps. Attackers never call this.
import { SOLUTION_COOKIE, challengeFrom, solve } from '../client/index.ts';

export interface ChallengeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON `challenge` field when the body was JSON, else undefined. */
  challenge: unknown;
  /** The user's cookie jar: a solver may add the clearance cookie here before the retry. */
  cookies: Map<string, string>;
}

const CHALLENGE_STATUSES = new Set([403, 429, 503]);

/** Cheap pre-check: only these statuses can carry a challenge, so other bodies are never parsed. */
export function mayBeChallenge(status: number): boolean {
  return CHALLENGE_STATUSES.has(status);
}

/** True when the response is a Rempart challenge (header, or JSON body with a `challenge` field). */
export function isChallenge(status: number, headers: Record<string, unknown>, json: unknown): boolean {
  if (!CHALLENGE_STATUSES.has(status)) return false;
  if (headers['rempart-challenge'] !== undefined) return true;
  return typeof json === 'object' && json !== null && 'challenge' in json;
}

/**
 * Solve a challenge like a real client would: true once the solution is in `response.cookies`
 * (the drill then retries the request once, and that retry earns the clearance cookie).
 */
export async function solveChallenge(response: ChallengeResponse): Promise<boolean> {
  const info = challengeFrom(response.status, response.headers, { challenge: response.challenge });
  if (info === null) return false;
  try {
    response.cookies.set(SOLUTION_COOKIE, await solve(info));
    return true;
  } catch {
    return false; // a difficulty past what the client solves: counted as a challenged request
  }
}
