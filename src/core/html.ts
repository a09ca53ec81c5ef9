// Every HTML page Rempart writes itself (the challenge interstitial, the waiting room, the status
// page, admission's 503) is served on the protected site's origin: a script injected into one of them
// runs with the site's cookies. So each page is built the same way, here:
//   - dynamic values go through escapeHtml (text and double-quoted attributes) or, for data a
//     script reads, jsonForScript in a <script type="application/json"> block; never into code;
//   - the only inline script and style are static texts, allowed by their SHA-256 in a strict
//     Content-Security-Policy computed once at start-up (no per-request nonce, no per-request crypto),
//     so even a missed escape cannot run script: the CSP would refuse it.
import { createHash } from 'node:crypto';

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const HTML_SPECIAL = /[&<>"']/g;
const HTML_SPECIAL_TEST = /[&<>"']/;

function htmlEscapeChar(c: string): string {
  return HTML_ESCAPES[c]!;
}

/**
 * Text for HTML element content or a quoted attribute value (always quote attributes: unquoted,
 * a space would end the value). Not for URLs in href/src (a `javascript:` URL survives escaping:
 * validate those, e.g. safeReturnPath), nor for script or style content (use jsonForScript).
 * @example `<p title="${escapeHtml(name)}">${escapeHtml(message)}</p>`
 */
export function escapeHtml(value: string): string {
  return HTML_SPECIAL_TEST.test(value) ? value.replace(HTML_SPECIAL, htmlEscapeChar) : value;
}

/** Attribute values are escaped like text; the value must be in double (or single) quotes. */
export const escapeAttr = escapeHtml;

const SCRIPT_SPECIAL = /[<>&\u2028\u2029]/g;

function scriptEscapeChar(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/**
 * JSON safe to put between <script> tags (a `type="application/json"` block or a script literal):
 * `<`, `>` and `&` as \u escapes, so no `</script>` nor `<!--` can end or bend the element, and
 * U+2028/U+2029 escaped for older JavaScript parsers. JSON.parse gives back the same value.
 * @example `<script type="application/json" id="data">${jsonForScript({ returnTo })}</script>`
 */
export function jsonForScript(value: unknown): string {
  const json = JSON.stringify(value) ?? 'null';
  return json.replace(SCRIPT_SPECIAL, scriptEscapeChar);
}

/** The CSP source of a static inline script or style: `'sha256-<base64>'` of its exact text. */
export function cspHash(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/**
 * The one style sheet of Rempart's pages (a <style> element, not style="" attributes, which a hash
 * cannot allow without 'unsafe-hashes').
 */
export const PAGE_STYLE = 'body{font-family:sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}';
const STYLE_HASH = cspHash(PAGE_STYLE);

export interface PageOptions {
  /** A static inline script: allowed by its hash. Never put a request's value in it. */
  readonly script?: string;
  /** Whether the script starts a Web Worker from a blob: URL (worker-src blob:). */
  readonly blobWorker?: boolean;
}

/**
 * One kind of page: the shell (doctype, charset, viewport, the style sheet, the static script) and
 * its response headers, both fixed at start-up. `render` only concatenates strings.
 * @example
 *   const BUSY = new HtmlPage();
 *   ctx.refuse(code, 503, BUSY.render('Busy', `<h1>${escapeHtml(title)}</h1>`), BUSY.headers);
 */
export class HtmlPage {
  /** Content-Type, Content-Security-Policy and the other headers every HTML page carries. */
  readonly headers: Readonly<Record<string, string>>;
  readonly csp: string;
  readonly #tail: string;

  constructor(options: PageOptions = {}) {
    const script = options.script ?? '';
    // What would end or bend the <script> element: a static script never needs it.
    if (/<\/|<!--|<script/i.test(script)) throw new Error('a page script must not contain "</", "<!--" nor "<script"');
    const directives = ["default-src 'none'"];
    if (script !== '') directives.push(`script-src ${cspHash(script)}`);
    if (options.blobWorker === true) directives.push('worker-src blob:');
    directives.push(
      `style-src ${STYLE_HASH}`,
      "img-src 'self' data:",
      "form-action 'self'",
      // The site may frame its own pages (a challenged iframe must still get through); no one else.
      "frame-ancestors 'self'",
      "base-uri 'none'",
    );
    this.csp = directives.join('; ');
    this.headers = Object.freeze({
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': this.csp,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'SAMEORIGIN',
    });
    this.#tail = script === '' ? '</body></html>\n' : `<script>${script}</script></body></html>\n`;
  }

  /**
   * The whole document. `title` is text (escaped here); `head` and `body` are HTML the caller built
   * with escapeHtml/jsonForScript around every dynamic value.
   */
  render(title: string, body: string, head = ''): string {
    return (
      '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">' +
      `<title>${escapeHtml(title)}</title><style>${PAGE_STYLE}</style>${head}</head><body>${body}${this.#tail}`
    );
  }

  /** These headers plus `extra` (per-request values such as a cookie or a token header). */
  headersWith(extra: Record<string, string>): Record<string, string> {
    return Object.assign({}, this.headers, extra);
  }
}

/** The shell of pages without script: status page, waiting room, admission's 503. */
export const PLAIN_PAGE = new HtmlPage();

/** A browser asking for a page gets HTML; API clients (and anything else) get the JSON error body. */
export function wantsHtml(accept: string | undefined): boolean {
  return accept !== undefined && accept.indexOf('text/html') !== -1 && accept.indexOf('json') === -1;
}
