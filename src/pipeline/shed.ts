// The answer to a request admission sheds (its queue is full, it was evicted, or it waited past its
// deadline): 503 with Retry-After, an HTML page for browsers, the JSON error body otherwise, or a
// stale copy standing in. Here, below the phases, because two of them give it: `admission` when it
// sheds, and `cache` when a fill its waiters hang on was shed (they get the same answer at once).
import type { RequestContext } from './context.ts';
import type { StaleSource } from './services.ts';
import type { ErrorCode } from '../core/errors.ts';
import { errorBody } from './reply.ts';
import { PLAIN_PAGE, escapeHtml, wantsHtml } from '../core/html.ts';

export type ShedCode = 'RMP_ERR_ADMISSION_SHED' | 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT';

// Retry-After spread over 1–3 s, so clients shed together do not all come back in the same second.
const RETRY_AFTER = ['1', '2', '3'] as const;
// Frozen: made once, so the reply's merged and checked head fields are kept with them (reply.ts).
const JSON_HEADERS = RETRY_AFTER.map((s) => Object.freeze({ 'content-type': 'application/json', 'retry-after': s }));
// The HTML page carries the CSP and other headers of every Rempart page (src/core/html.ts).
const HTML_HEADERS = RETRY_AFTER.map((s) => Object.freeze({ ...PLAIN_PAGE.headers, 'retry-after': s }));

function htmlPage(code: ErrorCode): string {
  return PLAIN_PAGE.render(
    'Busy: please retry',
    '<h1>Too busy right now</h1><p>This service is receiving more requests than it can answer. ' +
      'Your request was not processed; please try again in a few seconds.</p>' +
      `<p><small>503 &middot; ${escapeHtml(code)}</small></p>`,
  );
}
const HTML_BODIES: Record<string, string> = {
  RMP_ERR_ADMISSION_SHED: htmlPage('RMP_ERR_ADMISSION_SHED'),
  RMP_ERR_ADMISSION_QUEUE_TIMEOUT: htmlPage('RMP_ERR_ADMISSION_QUEUE_TIMEOUT'),
};

/** Whether a request ended shed by admission (a 503, or the stale copy that stood in for one). */
export function isShed(reason: string): reason is ShedCode {
  return reason === 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT' || reason === 'RMP_ERR_ADMISSION_SHED';
}

/**
 * Answer a shed request: 503 with Retry-After (1–3 s), an HTML page for browsers, JSON otherwise; a
 * stale copy instead when `stale` has one (the reason stays the shed). The caller returns Verdict.Reply.
 */
export function refuseShed(ctx: RequestContext, code: ShedCode, stale: StaleSource | null): void {
  const pick = (Math.random() * RETRY_AFTER.length) | 0;
  if (wantsHtml(ctx.req.headers.accept)) ctx.refuse(code, 503, HTML_BODIES[code]!, HTML_HEADERS[pick]!);
  else ctx.refuse(code, 503, errorBody(code), JSON_HEADERS[pick]!);
  stale?.serveStaleIfAny(ctx);
}
