// Challenge detection and the (future) solving hook for legitimate drill users.
// Until the defence ships a client module, a challenge counts as a failed legit request.

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
 * >>> HOOK for the defence issue: solve a challenge like a real browser would. <<<
 * Intended implementation: `const { solve } = await import('rempart/client'); return solve(response)`,
 * returning true once the clearance (cookie in `response.cookies`) is obtained; the drill then retries
 * the request once. Returns false for now: a challenged legit request is a failure.
 */
export async function solveChallenge(response: ChallengeResponse): Promise<boolean> {
  void response;
  return false;
}
