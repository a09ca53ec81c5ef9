// The request path, in order: the one list that fixes which phases run and when. The composition root
// (src/app/compose.ts) builds each module with the same environment and mounts its admin routes;
// docs/lifecycle.md's phase table is generated from this list (`npm run docs`, test/docs.test.ts).
import type { PhaseModule } from '../pipeline/phase.ts';
import { identifyPhase } from './identify/index.ts';
import { edgePhase } from './edge/index.ts';
import { routePhase } from './route/index.ts';
import { banPhase } from './ban/index.ts';
import { levelPhase } from './level/index.ts';
import { rateLimitPhase } from './ratelimit/index.ts';
import { challengePhase, familiarityPhase } from './challenge/index.ts';
import { signaturesPhase } from './signatures/index.ts';
import { exfiltrationPhase } from './exfiltration/index.ts';
import { failoverPhase, unavailablePhase } from './failover/index.ts';
import { cachePhase } from './cache/index.ts';
import { waitingRoomPhase } from './waiting-room/index.ts';
import { bodyPhase } from './body/index.ts';
import { admissionPhase } from './admission/index.ts';

// A request is forwarded only by falling off the end of this list (no phase returns Verdict.Forward):
// `done` then runs every phase's onDone, and failover's feeds the upstream's breaker. A phase that
// forwarded early would skip the onDone of every phase after it.
export const PHASES: readonly PhaseModule[] = [
  // Who asks, for what, on which route: every later phase reads what these set.
  identifyPhase,
  edgePhase,
  routePhase,
  // The guards, cheapest first; `familiarity` leaves the known-client check (looked up only when read)
  // that `rateLimit`'s rules for unknown clients, `signatures` and `challenge` read, and `signatures`
  // may mark a request for `challenge`.
  banPhase,
  levelPhase,
  familiarityPhase,
  rateLimitPhase,
  signaturesPhase,
  challengePhase,
  exfiltrationPhase,
  // Which upstream, and what stands in for it: `failover` may mark the request unavailable, the
  // cache still gets its chance to answer, then `unavailable` answers with the status page.
  failoverPhase,
  cachePhase,
  unavailablePhase,
  // Protecting the upstream: the waiting room, reading the body ahead, then an admission slot.
  waitingRoomPhase,
  bodyPhase,
  admissionPhase,
];
