// The status page: what clients see when the service is down (a route and its fallback unavailable,
// or an upstream that cannot be reached). The operator's message (statusPage.message), as a small
// HTML page for browsers or the JSON error body with the code kept, plus Retry-After.
import type { RequestContext } from '../../pipeline/context.ts';
import type { Config } from '../../config/schema.ts';
import { ERRORS, type ErrorCode } from '../../core/errors.ts';
import { PLAIN_PAGE, escapeHtml } from '../../core/html.ts';
import { wantsHtml } from '../../core/html.ts';

// The message is the operator's (the file, or PUT /api/status-page): text, escaped like any value,
// and the page carries the strict CSP of src/core/html.ts.
const HTML_HEADERS = { ...PLAIN_PAGE.headers };
const JSON_HEADERS = { 'content-type': 'application/json' };

interface Rendered {
  readonly json: string;
  readonly html: string;
  readonly htmlHeaders: Record<string, string>;
  readonly jsonHeaders: Record<string, string>;
}

/** Rendered bodies and headers, per statusPage settings object (one per loaded config), code and status. */
const rendered = new WeakMap<Config['statusPage'], Map<string, Rendered>>();

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
      html: PLAIN_PAGE.render(
        'Service unavailable',
        `<h1>Service temporarily unavailable</h1><p>${message}</p><p><small>${status} &middot; ${code}</small></p>`,
      ),
      htmlHeaders: { ...HTML_HEADERS, 'retry-after': String(page.retryAfterSec) },
      jsonHeaders: { ...JSON_HEADERS, 'retry-after': String(page.retryAfterSec) },
    };
    byCode.set(key, r);
  }
  return r;
}

/**
 * Make the status page this request's local reply (ctx.failUpstream: decision `upstream_error`, reason
 * `code`); the caller then returns Verdict.Reply or calls sendLocalReply.
 * @example setStatusPage(ctx, config.statusPage, 'RMP_ERR_UPSTREAM_UNAVAILABLE', 503);
 */
export function setStatusPage(ctx: RequestContext, page: Config['statusPage'], code: ErrorCode, status: number): void {
  const r = render(page, code, status);
  if (wantsHtml(ctx.req.headers.accept)) ctx.failUpstream(code, status, r.html, r.htmlHeaders);
  else ctx.failUpstream(code, status, r.json, r.jsonHeaders);
}

/** Per statusPage settings object: the Retry-After of the bare 503 (statusPage.enabled off). */
const bareHeaders = new WeakMap<Config['statusPage'], Record<string, string>>();

/**
 * No usable upstream: 503 RMP_ERR_UPSTREAM_UNAVAILABLE, the status page, or with statusPage.enabled
 * off the JSON error body of the code with Retry-After.
 */
export function failUnavailable(ctx: RequestContext, page: Config['statusPage']): void {
  if (page.enabled) return setStatusPage(ctx, page, 'RMP_ERR_UPSTREAM_UNAVAILABLE', 503);
  let headers = bareHeaders.get(page);
  if (headers === undefined) bareHeaders.set(page, (headers = { 'retry-after': String(page.retryAfterSec) }));
  ctx.failUpstream('RMP_ERR_UPSTREAM_UNAVAILABLE', 503, '', headers);
}
