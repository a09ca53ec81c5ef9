// The status page: what clients see when the service is down (a route and its fallback unavailable,
// or an upstream that cannot be reached). The operator's message (statusPage.message), as a small
// HTML page for browsers or the JSON error body with the code kept, plus Retry-After.
import type { RequestContext } from '../../core/context.ts';
import type { Config } from '../../config/schema.ts';
import { ERRORS, type ErrorCode } from '../../core/errors.ts';
import { wantsHtml } from '../admission/index.ts';

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Rendered bodies, per statusPage settings object (one per loaded config), code and status. */
const rendered = new WeakMap<Config['statusPage'], Map<string, { json: string; html: string; retryAfter: string }>>();

function render(page: Config['statusPage'], code: ErrorCode, status: number) {
  let byCode = rendered.get(page);
  if (byCode === undefined) {
    byCode = new Map();
    rendered.set(page, byCode);
  }
  const key = `${code}:${status}`;
  let r = byCode.get(key);
  if (r === undefined) {
    const message = escapeHtml(page.message);
    r = {
      json: `${JSON.stringify({ error: { code, status, message: page.message, retryable: ERRORS[code].retryable } })}\n`,
      html:
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">' +
        '<title>Service unavailable</title></head><body style="font-family:sans-serif;max-width:36rem;margin:3rem auto">' +
        `<h1>Service temporarily unavailable</h1><p>${message}</p>` +
        `<p><small>${status} &middot; ${code}</small></p></body></html>\n`,
      retryAfter: String(page.retryAfterSec),
    };
    byCode.set(key, r);
  }
  return r;
}

/**
 * Make the status page this request's local reply (decision `upstream_error`, reason `code`); the
 * caller then returns Verdict.Reply or calls sendLocalReply.
 * @example setStatusPage(ctx, config.statusPage, 'RMP_ERR_UPSTREAM_UNAVAILABLE', 503);
 */
export function setStatusPage(ctx: RequestContext, page: Config['statusPage'], code: ErrorCode, status: number): void {
  const r = render(page, code, status);
  const html = wantsHtml(ctx.req.headers.accept);
  ctx.decision = 'upstream_error';
  ctx.reason = code;
  ctx.replyStatus = status;
  ctx.replyBody = html ? r.html : r.json;
  ctx.replyHeaders = { 'content-type': html ? 'text/html; charset=utf-8' : 'application/json', 'retry-after': r.retryAfter };
}
