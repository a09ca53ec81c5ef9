// The escaping helpers and the page shell every Rempart HTML page is built with; the return-path
// sanitiser of the challenge; each page rendered with hostile values. The same pages in Chromium,
// with their headers: test/html-pages-browser.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { HtmlPage, PAGE_STYLE, PLAIN_PAGE, cspHash, escapeAttr, escapeHtml, jsonForScript } from './html.ts';
import { CHALLENGE_PAGE, CHALLENGE_SCRIPT, challengePageHtml } from '../phases/challenge/pages.ts';
import { safeReturnPath } from '../phases/challenge/index.ts';
import { waitingPageHtml } from '../phases/waiting-room/index.ts';
import { renderHtml } from '../drill/html.ts';
import type { DrillReport } from '../drill/report.ts';

const HOSTILE = [
  '</script><script>alert(1)</script>',
  '"><img src=x onerror=alert(1)>',
  "'><svg onload=alert(1)>",
  '<!--<script>',
  '&lt;script&gt; already escaped',
  '\u2028\u2029 line separators',
];

/** The inline scripts of a page (their text) and whether it holds any tag or handler it should not. */
function scriptsOf(html: string): string[] {
  return [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)].map((m) => `${m[1]}|${m[2]}`);
}

test('escapeHtml: the five special characters become entities, everything else is kept; escapeAttr is the same', () => {
  assert.equal(
    escapeHtml(`<a href="x" title='y'>&</a>`),
    '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;',
  );
  assert.equal(escapeHtml('plain text, 100 % é'), 'plain text, 100 % é');
  assert.equal(escapeHtml('&amp;'), '&amp;amp;', 'escaped once more, never taken for already escaped');
  assert.equal(escapeAttr, escapeHtml);
  for (const s of HOSTILE) assert.doesNotMatch(escapeHtml(s), /[<>"']/);
});

test('jsonForScript: nothing that ends or bends a script element, and JSON.parse gives the value back', () => {
  for (const s of HOSTILE) {
    const out = jsonForScript({ s, n: 1 });
    assert.doesNotMatch(out, /[<>&\u2028\u2029]/, out);
    assert.deepEqual(JSON.parse(out), { s, n: 1 });
  }
  assert.equal(jsonForScript('</script>'), '"\\u003c/script\\u003e"');
  assert.equal(jsonForScript(undefined), 'null');
});

test('cspHash is the base64 SHA-256 of the exact text; a page script that could end its element is refused', () => {
  assert.equal(cspHash('a'), `'sha256-${createHash('sha256').update('a').digest('base64')}'`);
  assert.throws(() => new HtmlPage({ script: 'var x="</script>"' }), /must not contain/);
  assert.throws(() => new HtmlPage({ script: 'x<!--y' }), /must not contain/);
});

test('every page shell: strict CSP (no script unless its own hash), nosniff, no referrer, no framing by others', () => {
  for (const page of [PLAIN_PAGE, CHALLENGE_PAGE]) {
    const h = page.headers;
    assert.equal(h['content-type'], 'text/html; charset=utf-8');
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.equal(h['referrer-policy'], 'no-referrer');
    assert.equal(h['x-frame-options'], 'SAMEORIGIN');
    const csp = h['content-security-policy']!;
    assert.match(csp, /^default-src 'none'; /);
    assert.ok(csp.includes(`style-src ${cspHash(PAGE_STYLE)}`), csp);
    for (const d of ["base-uri 'none'", "form-action 'self'", "frame-ancestors 'self'", "img-src 'self' data:"])
      assert.ok(csp.includes(d), d);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  }
  assert.doesNotMatch(PLAIN_PAGE.csp, /script-src|worker-src/, 'pages without script allow none');
  assert.ok(CHALLENGE_PAGE.csp.includes(`script-src ${cspHash(CHALLENGE_SCRIPT)};`));
  assert.ok(CHALLENGE_PAGE.csp.includes('worker-src blob:'));
  assert.equal(PLAIN_PAGE.render('<t>', '<p>x</p>').match(/<title>&lt;t&gt;<\/title>/)?.length, 1, 'the title is text');
  assert.doesNotMatch(PLAIN_PAGE.render('t', '<p>x</p>'), /style="/, 'no style attribute (a hash cannot allow one)');
});

test('safeReturnPath: same-origin paths only; anything else is /; markup characters are percent-encoded', () => {
  for (const ok of ['/', '/track/1?from=test', '/a/b?c=d&e=f#frag', '/%2F%2Fevil.example', '/..//x'])
    assert.equal(safeReturnPath(ok), ok, ok);
  for (const bad of [
    null,
    undefined,
    '',
    'https://evil.example/',
    '//evil.example/',
    '/\\evil.example',
    '\\\\evil.example',
    '/a\\b',
    'javascript:alert(1)',
    ' /x',
    '/\t/evil.example',
    '/\n/evil.example',
    '/x\r\nSet-Cookie: a=b',
    '/caf\u00e9',
    `/${'a'.repeat(2048)}`,
    '/.rempart/challenge/verify?x=1',
    'evil.example',
  ])
    assert.equal(safeReturnPath(bad), '/', JSON.stringify(bad));
  assert.equal(
    safeReturnPath('/</script><script>alert(1)</script>'),
    '/%3C/script%3E%3Cscript%3Ealert(1)%3C/script%3E',
  );
  assert.equal(safeReturnPath(`/"'\`x`), '/%22%27%60x');
});

test('the challenge page with a hostile return path: one static script (the hashed one), the values only as escaped data', () => {
  for (const s of HOSTILE) {
    // Rendered with the raw value (as if safeReturnPath had let it through) and with the sanitised one.
    for (const returnTo of [`/${s}`, safeReturnPath(`/${s}`)]) {
      const html = challengePageHtml('tok.en', 12, 'de.lay', 3, returnTo, true);
      const scripts = scriptsOf(html);
      assert.equal(scripts.length, 2, `${returnTo}: the data block and the script, nothing more`);
      assert.equal(scripts[1], `|${CHALLENGE_SCRIPT}`, 'the executed script is exactly the hashed text');
      const data = /<script type="application\/json" id="rempart-challenge">([\s\S]*?)<\/script>/.exec(html)![1]!;
      assert.deepEqual(JSON.parse(data), { token: 'tok.en', bits: 12, returnTo });
      assert.doesNotMatch(html, /<img|<svg|<!--/i, 'no tag nor comment from the value');
      const meta = /<meta http-equiv="refresh" content="([^"]*)">/.exec(html)![1]!;
      assert.match(meta, /^4;url=\/\.rempart\/challenge\/verify\?delay=de\.lay&amp;return=%2F/);
    }
  }
});

test('the waiting page and the drill report: hostile text escaped; the report carries its own CSP', () => {
  const wp = waitingPageHtml(301, 75, 30);
  assert.match(wp, /<strong id="position">301<\/strong>/);
  assert.match(wp, /<strong id="eta">2 min<\/strong>/);
  assert.doesNotMatch(wp, /<script/);
  const s = '</title><script>alert(1)</script>"><img src=x onerror=alert(2)>';
  const report = {
    scenario: { name: s, description: s, source: '', seconds: 1 },
    target: s,
    startedAt: s,
    durationSec: 1,
    stoppedBy: 'time',
    settings: {
      deadlineMs: 1,
      maxRequests: 1,
      scale: 1,
      users: 1,
      bindSources: false,
      originUrl: null,
      metricsUrl: null,
      originWorkers: null,
    },
    requestsIssued: 0,
    legit: {
      total: {
        requests: 0,
        successPct: null,
        p50Ms: null,
        p95Ms: null,
        p99Ms: null,
        failures: { status: 0, challenge: 0, timeout: 0, error: 0 },
      },
      byClass: {},
    },
    attack: { byAttack: [], reachingOriginPct: null, reachingOriginSource: null },
    origin: { available: false },
    rempart: {
      available: true,
      maxAttackLevel: null,
      decisions: { [s]: 1 },
      refusals: { [s]: 2 },
      shed: {},
      polls: 1,
      failures: 0,
    },
    timeline: { legitSuccessPct: [], p50Ms: [], p95Ms: [], p99Ms: [], attackLevel: [], decisions: {} },
    warnings: [s],
  } as unknown as DrillReport;
  const html = renderHtml(report);
  assert.doesNotMatch(html, /<script|<img|<\/title><script/i);
  assert.ok(
    html.includes('&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;'),
  );
  const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]*)">/.exec(html)?.[1];
  assert.ok(csp !== undefined, 'the report has a CSP');
  assert.match(csp, /^default-src 'none'; style-src 'sha256-/);
  const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
  assert.ok(csp.includes(cspHash(style)), 'the hash is the one of the report style sheet');
});
