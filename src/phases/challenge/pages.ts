// What a challenged browser sees: one small self-contained HTML page (no external resource) that
// solves the proof of work in a Web Worker and sends the solution to the verify path, which sets the
// clearance cookie and redirects back; a <noscript> meta refresh redeems a signed delay token for
// browsers without JavaScript. Every tab gets its own challenge, so several tabs solve side by side.
import { SOLVER_JS } from '../../client/solver.ts';

/** Where Rempart answers itself, whatever the routes: the verify endpoint lives here. */
export const RESERVED_PREFIX = '/.rempart/challenge/';
export const VERIFY_PATH = '/.rempart/challenge/verify';


function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&#39;');
}

/** The verify URL a solution (or delay token) is redeemed at, returning to `returnTo` after. */
export function verifyUrl(param: 'solution' | 'delay', value: string, returnTo: string): string {
  return `${VERIFY_PATH}?${param}=${encodeURIComponent(value)}&return=${encodeURIComponent(returnTo)}`;
}

/**
 * The interstitial. `token` and `delayToken` are base64url, digits and dots (safe anywhere);
 * `returnTo` was validated as a same-origin path and is escaped all the same.
 */
export function challengePageHtml(token: string, bits: number, delayToken: string, delaySec: number, returnTo: string, failed: boolean): string {
  const noJs = escapeHtml(verifyUrl('delay', delayToken, returnTo));
  const refreshSec = delaySec + 1; // the token's notBefore is rounded up to a second
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<meta name="robots" content="noindex"><title>Checking your browser</title>` +
    `<noscript><meta http-equiv="refresh" content="${refreshSec};url=${noJs}"></noscript></head>` +
    `<body style="font-family:sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem">` +
    `<h1>One moment, please</h1>` +
    `<p>This site is protecting itself from automated traffic. Your browser is solving a small puzzle; you will be on your way in a second or two.</p>` +
    (failed ? `<p>The previous check did not succeed (it expired or was already used); trying again.</p>` : '') +
    `<p id="status" role="status">Working&hellip;</p>` +
    `<noscript><p>JavaScript is off: this page continues by itself in ${refreshSec} seconds. ` +
    `If it does not, wait that long and <a href="${noJs}">continue here</a>.</p></noscript>` +
    `<p><small>403 &middot; RMP_ERR_CHALLENGE</small></p>` +
    `<script>(function(){var T=${JSON.stringify(token)},B=${bits},R=${JSON.stringify(returnTo)},V=${JSON.stringify(VERIFY_PATH)};` +
    `var SRC=${JSON.stringify(SOLVER_JS)};` +
    `function done(n){location.replace(V+'?solution='+encodeURIComponent(T+'.'+n)+'&return='+encodeURIComponent(R));}` +
    `function inPage(){var f=new Function(SRC+';return solve;')(),s=0;(function step(){var n=f(T+'.',B,s,20000);if(n>=0)return done(n);s+=20000;setTimeout(step,0);})();}` +
    `try{var u=URL.createObjectURL(new Blob([SRC+';onmessage=function(e){var d=e.data,s=0,n;while((n=solve(d[0],d[1],s,1e6))<0)s+=1e6;postMessage(n);};'],{type:'text/javascript'}));` +
    `var w=new Worker(u);w.onmessage=function(e){done(e.data);};w.onerror=function(e){e.preventDefault();inPage();};w.postMessage([T+'.',B]);}catch(e){inPage();}` +
    `})();</script></body></html>\n`
  );
}
