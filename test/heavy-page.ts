// A heavy page in a real browser: an origin serving a page with `n` same-origin subresources (images,
// scripts, stylesheets, as a shop's or a portal's first load), a gateway in front of it, and headless
// Chromium loading it over HTTP/1.1 or HTTP/2 (TLS, ALPN h2). Counts what each load got: statuses of
// the subresources, failed requests, the time to the load event. Shared by test/heavy-page-browser.test.ts
// and bench/heavy-page.ts.
import { createHash } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { startGateway, startUpstream, type RecordingUpstream, type Teardown, type TestGateway } from './helpers.ts';
import { startTlsGateway } from './h2-client.ts';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The page at /page/<n>: `n` subresources, one in 10 a script, one in 20 a stylesheet, the rest images. */
export function pageHtml(n: number, tag = ''): string {
  const parts = ['<!doctype html><meta charset="utf-8"><title>heavy</title>'];
  for (let i = 0; i < n; i++) {
    if (i % 20 === 1) parts.push(`<link rel="stylesheet" href="/s/${i}${tag}.css">`);
    else if (i % 10 === 0) parts.push(`<script src="/j/${i}${tag}.js"></script>`);
    else parts.push(`<img src="/i/${i}${tag}.svg" width="4" height="4">`);
  }
  parts.push('<p id="end">end</p>');
  return parts.join('\n');
}

/**
 * The origin: what a static file server sends by default (express.static, nginx with etag on): an
 * ETag, Last-Modified and `Cache-Control: public, max-age=0`, so a reload revalidates every
 * subresource (304s) and the gateway's cache keeps nothing fresh. HTML is never cached.
 */
export function startHeavyOrigin(t: Teardown): Promise<RecordingUpstream> {
  return startUpstream(t, (req, res) => {
    const url = req.url ?? '/';
    const m = /^\/page\/(\d+)(?:\?tag=(\w+))?/.exec(url);
    if (m) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(pageHtml(Number(m[1]), m[2] ?? ''));
      return;
    }
    const type = url.endsWith('.js') ? 'text/javascript' : url.endsWith('.css') ? 'text/css' : 'image/svg+xml';
    const body =
      type === 'text/javascript'
        ? 'window.__n = (window.__n || 0) + 1;'
        : type === 'text/css'
          ? 'p { margin: 0 }'
          : '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>';
    const etag = `"${createHash('sha1').update(url).digest('hex').slice(0, 16)}"`;
    const headers = {
      'content-type': type,
      etag,
      'last-modified': 'Mon, 07 Dec 2026 00:00:00 GMT',
      'cache-control': 'public, max-age=0',
    };
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, headers);
    res.end(body);
  });
}

export type PageProto = 'h1' | 'h2';

/** A gateway on 127.0.0.1:0 (h1: cleartext; h2: TLS with ALPN h2) in front of `upstreamUrl`. */
export async function startPageGateway(
  t: Teardown,
  proto: PageProto,
  upstreamUrl: string,
  partial: Record<string, unknown> = {},
): Promise<{ gw: TestGateway; base: string }> {
  const quiet = { logging: { level: 'warn', requests: false }, ...partial };
  if (proto === 'h1') {
    const gw = await startGateway(t, upstreamUrl, quiet);
    return { gw, base: `http://127.0.0.1:${gw.port}` };
  }
  const gw = await startTlsGateway(t, upstreamUrl, quiet);
  return { gw, base: `https://localhost:${gw.port}` };
}

export interface PageLoad {
  /** Subresource responses by status (the document excluded). */
  statuses: Record<number, number>;
  /** Subresource requests that got no response (reset, refused connection). */
  failed: number;
  /** Milliseconds from navigation to the load event. */
  ms: number;
  /** The document itself got no answer (its client banned: the connection reset at accept), or ''. */
  documentError: string;
}

/** Watch the subresources of `page` until the returned function is called: it gives the counts so far. */
function watch(page: Page): () => Omit<PageLoad, 'ms' | 'documentError'> {
  const statuses: Record<number, number> = {};
  let failed = 0;
  const onResponse = (r: import('playwright-core').Response) => {
    if (r.request().resourceType() === 'document') return;
    statuses[r.status()] = (statuses[r.status()] ?? 0) + 1;
  };
  const onFailed = (r: import('playwright-core').Request) => {
    if (r.resourceType() !== 'document') failed++;
  };
  page.on('response', onResponse);
  page.on('requestfailed', onFailed);
  return () => {
    page.off('response', onResponse);
    page.off('requestfailed', onFailed);
    return { statuses, failed };
  };
}

/** Load `url` in `page` (a navigation or, with `reload`, a reload) and count its subresources. */
export async function loadPage(page: Page, url: string | null): Promise<PageLoad> {
  const stop = watch(page);
  const t0 = performance.now();
  let documentError = '';
  try {
    if (url === null) await page.reload({ waitUntil: 'load', timeout: 60_000 });
    else await page.goto(url, { waitUntil: 'load', timeout: 60_000 });
  } catch (err) {
    documentError = (err as Error).message.split('\n')[0]!;
  }
  const ms = Math.round(performance.now() - t0);
  return { ...stop(), ms, documentError };
}

export interface HeavyPageRun {
  first: PageLoad;
  reload: PageLoad;
  /** Two tabs of one browser opening two heavy pages (different subresources) at once. */
  tabs: PageLoad[];
  /** Requests that reached the origin over the whole run. */
  originRequests: number;
}

/**
 * One person's browser (a fresh context: empty cache, no cookies) against a fresh gateway: the page's
 * first load, a reload, then two tabs opening two other heavy pages at once.
 */
export async function runHeavyPage(
  t: Teardown,
  browser: Browser,
  proto: PageProto,
  n: number,
  partial: Record<string, unknown> = {},
): Promise<HeavyPageRun> {
  const origin = await startHeavyOrigin(t);
  const { base } = await startPageGateway(t, proto, origin.url, partial);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  try {
    const page = await context.newPage();
    const first = await loadPage(page, `${base}/page/${n}`);
    const reload = await loadPage(page, null);
    // The bucket refills between what a person does: a second later, two tabs at once.
    await new Promise((r) => setTimeout(r, 1000));
    const tabs = await Promise.all(
      ['a', 'b'].map(async (tag) => loadPage(await context.newPage(), `${base}/page/${n}?tag=${tag}`)),
    );
    return { first, reload, tabs, originRequests: origin.requests.length };
  } finally {
    await context.close();
  }
}
