// What a challenged browser sees: one small self-contained HTML page (no external resource) that
// solves the proof of work in a Web Worker and sends the solution to the verify path, which sets the
// clearance cookie and redirects back; a <noscript> meta refresh redeems a signed delay token for
// browsers without JavaScript. Every tab gets its own challenge, so several tabs solve side by side.
import { SOLVER_JS } from '../../client/solver.ts';
import { HtmlPage, escapeHtml, jsonForScript } from '../../core/html.ts';

/** Where Rempart answers itself, whatever the routes: the verify endpoint lives here. */
export const RESERVED_PREFIX = '/.rempart/challenge/';
export const VERIFY_PATH = '/.rempart/challenge/verify';

/**
 * The interstitial's one script, static (the same bytes for every request, so a hash in the CSP
 * allows it and nothing else). It reads the request's values from the JSON block #rempart-challenge
 * and solves in a Web Worker built from a Blob (worker-src blob:), falling back to slices on the
 * main thread. The worker's source is the text of `solver` (Function.prototype.toString): no eval,
 * so the CSP needs no 'unsafe-eval'.
 */
export const CHALLENGE_SCRIPT =
  `(function(){var D=JSON.parse(document.getElementById('rempart-challenge').textContent),` +
  `T=D.token,B=D.bits,R=D.returnTo,V=${JSON.stringify(VERIFY_PATH)};` +
  `function solver(){${SOLVER_JS};return solve;}` +
  `function done(n){location.replace(V+'?solution='+encodeURIComponent(T+'.'+n)+'&return='+encodeURIComponent(R));}` +
  `function inPage(){var f=solver(),s=0;(function step(){var n=f(T+'.',B,s,20000);if(n>=0)return done(n);s+=20000;setTimeout(step,0);})();}` +
  `try{var u=URL.createObjectURL(new Blob(['var solve=('+solver+')();onmessage=function(e){var d=e.data,s=0,n;while((n=solve(d[0],d[1],s,1e6))<0)s+=1e6;postMessage(n);};'],{type:'text/javascript'}));` +
  `var w=new Worker(u);w.onmessage=function(e){done(e.data);};w.onerror=function(e){e.preventDefault();inPage();};w.postMessage([T+'.',B]);}catch(e){inPage();}` +
  `})();`;

/** The interstitial's shell and headers (CSP with the script's hash), built once. */
export const CHALLENGE_PAGE = new HtmlPage({ script: CHALLENGE_SCRIPT, blobWorker: true });

/** The verify URL a solution (or delay token) is redeemed at, returning to `returnTo` after. */
export function verifyUrl(param: 'solution' | 'delay', value: string, returnTo: string): string {
  return `${VERIFY_PATH}?${param}=${encodeURIComponent(value)}&return=${encodeURIComponent(returnTo)}`;
}

/**
 * The interstitial. The request's values (token, bits, the path to return to) are data, never code:
 * escaped in attributes, and as JSON in a non-executed block the static script reads. `returnTo`
 * was validated as a same-origin path (safeReturnPath) and is escaped all the same.
 *
 * The page is made once per `failed` (PAGE_TEMPLATES) and per request only the values are spliced in:
 * the refresh delay (a number), the no-JS URL (escaped for an attribute) twice, the JSON block.
 */
export function challengePageHtml(
  token: string,
  bits: number,
  delayToken: string,
  delaySec: number,
  returnTo: string,
  failed: boolean,
): string {
  const t = failed ? FAILED_PAGE : FIRST_PAGE;
  const refresh = String(delaySec + 1); // the token's notBefore is rounded up to a second
  // escapeHtml(verifyUrl('delay', delayToken, returnTo)) without escaping the whole URL: only the
  // encoded values may hold a character to escape (encodeURIComponent leaves `'`), the rest is static.
  const noJs = `${DELAY_URL}${escapeHtml(encodeURIComponent(delayToken))}&amp;return=${escapeHtml(encodeURIComponent(returnTo))}`;
  const json = jsonForScript({ token, bits, returnTo });
  return t[0] + refresh + t[1] + noJs + t[2] + refresh + t[3] + noJs + t[4] + json + t[5];
}

/** The page as it was rendered whole, here with markers in its slots to cut the template from. */
function pageWith(refresh: string, noJs: string, json: string, failed: boolean): string {
  return CHALLENGE_PAGE.render(
    'Checking your browser',
    `<h1>One moment, please</h1>` +
      `<p>This site is protecting itself from automated traffic. Your browser is solving a small puzzle; you will be on your way in a second or two.</p>` +
      (failed ? `<p>The previous check did not succeed (it expired or was already used); trying again.</p>` : '') +
      `<p id="status" role="status">Working&hellip;</p>` +
      `<noscript><p>JavaScript is off: this page continues by itself in ${refresh} seconds. ` +
      `If it does not, wait that long and <a href="${noJs}">continue here</a>.</p></noscript>` +
      `<p><small>403 &middot; RMP_ERR_CHALLENGE</small></p>` +
      `<script type="application/json" id="rempart-challenge">${json}</script>`,
    `<meta name="robots" content="noindex"><noscript><meta http-equiv="refresh" content="${refresh};url=${noJs}"></noscript>`,
  );
}

const DELAY_URL = `${VERIFY_PATH}?delay=`;
const SLOT_REFRESH = '\u0000R\u0000';
const SLOT_URL = '\u0000U\u0000';
const SLOT_JSON = '\u0000J\u0000';

/** The static text between the slots, in page order: refresh, URL, refresh, URL, JSON. */
function template(failed: boolean): readonly [string, string, string, string, string, string] {
  const page = pageWith(SLOT_REFRESH, SLOT_URL, SLOT_JSON, failed);
  const parts = page.split(/\u0000[RUJ]\u0000/);
  const order = [...page.matchAll(/\u0000([RUJ])\u0000/g)].map((m) => m[1]).join('');
  // The shell or the text changed the slots' order: splicing would put a value in the wrong place.
  if (parts.length !== 6 || order !== 'RURUJ') throw new Error(`challenge page template: slots ${order}`);
  return parts as unknown as readonly [string, string, string, string, string, string];
}

const FIRST_PAGE = template(false);
const FAILED_PAGE = template(true);
