// The challenge page spliced from its template is the page rendered whole, whatever the values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHALLENGE_PAGE, challengePageHtml, verifyUrl } from './pages.ts';
import { escapeHtml, jsonForScript } from '../../core/html.ts';

/** The page as it was made before the template: rendered whole, every value escaped where it lands. */
function rendered(token: string, bits: number, delay: string, delaySec: number, returnTo: string, failed: boolean) {
  const noJs = escapeHtml(verifyUrl('delay', delay, returnTo));
  const refreshSec = delaySec + 1;
  return CHALLENGE_PAGE.render(
    'Checking your browser',
    `<h1>One moment, please</h1>` +
      `<p>This site is protecting itself from automated traffic. Your browser is solving a small puzzle; you will be on your way in a second or two.</p>` +
      (failed ? `<p>The previous check did not succeed (it expired or was already used); trying again.</p>` : '') +
      `<p id="status" role="status">Working&hellip;</p>` +
      `<noscript><p>JavaScript is off: this page continues by itself in ${refreshSec} seconds. ` +
      `If it does not, wait that long and <a href="${noJs}">continue here</a>.</p></noscript>` +
      `<p><small>403 &middot; RMP_ERR_CHALLENGE</small></p>` +
      `<script type="application/json" id="rempart-challenge">${jsonForScript({ token, bits, returnTo })}</script>`,
    `<meta name="robots" content="noindex"><noscript><meta http-equiv="refresh" content="${refreshSec};url=${noJs}"></noscript>`,
  );
}

test('the challenge page from its template is byte for byte the page rendered whole, hostile values escaped', () => {
  const token = 'v1.abcdEFGH.16.1700000000.1700000300.AAAAAAAAAAAAAAAA.bbbbbbbbbbbb.mac-_';
  const delay = 'v1.abcdEFGH.1700000011.1700000300.CCCCCCCCCCCCCCCC.bbbbbbbbbbbb.mac';
  const returns = [
    '/',
    '/a?b=1&c=2',
    "/x'onmouseover='alert(1)",
    '/"><script>alert(1)</script>',
    '/</script><!--',
    '/\u2028\u2029é%00',
    "/it's&amp;<b>",
  ];
  for (const returnTo of returns)
    for (const failed of [false, true])
      for (const [bits, delaySec] of [
        [16, 10],
        [32, 0],
      ] as const) {
        const page = challengePageHtml(token, bits, delay, delaySec, returnTo, failed);
        assert.equal(page, rendered(token, bits, delay, delaySec, returnTo, failed), `${returnTo} ${failed}`);
        assert.ok(!page.includes('\u0000'));
        assert.ok(!page.includes('<script>alert'));
      }
  // A quote in a token (never ours: they are base64url) would still be escaped in the attribute.
  const odd = "v1.a'b";
  assert.equal(challengePageHtml(odd, 8, odd, 5, '/', false), rendered(odd, 8, odd, 5, '/', false));
});
