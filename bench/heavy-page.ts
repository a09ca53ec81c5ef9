// A heavy page's first load, reload and two tabs in headless Chromium through a zero-config gateway:
// how many of its subresources come back 429 (test/heavy-page.ts). Loopback only, a few seconds a row.
//
//   node bench/heavy-page.ts [--n 60,120,200,300] [--protos h1,h2] [--variants default,burst300,...]
//
// Variants: `default` (the defaults as they are), `nodelay` (the per-address rule without its wait:
// every request past the burst refused at once, as before the wait existed), `burstB` (no wait, burst
// B), `delayMS` (a wait of at most MS), `burstBdelayMS` (both); the other default rules unchanged.
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  DEFAULT_RATE_LIMIT_RULE,
  DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE,
  DEFAULT_UNSAFE_RATE_LIMIT_RULE,
} from '../src/phases/ratelimit/schema.ts';
import { CHROMIUM, runHeavyPage, type PageLoad, type PageProto } from '../test/heavy-page.ts';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '60,120,200,300' },
    protos: { type: 'string', default: 'h1,h2' },
    variants: { type: 'string', default: 'default' },
  },
});
if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);

function variant(name: string): Record<string, unknown> {
  if (name === 'default') return {};
  const rule: Record<string, unknown> = { ...DEFAULT_RATE_LIMIT_RULE };
  const m = /^(?:burst(\d+))?(?:delay(\d+))?$/.exec(name);
  if (name === 'nodelay') rule.maxDelayMs = 0;
  else if (m !== null) {
    if (m[1] !== undefined) rule.burst = Number(m[1]);
    rule.maxDelayMs = Number(m[2] ?? 0);
  } else throw new Error(`--variants: default, nodelay, burstB, delayMS or burstBdelayMS (got ${name})`);
  return {
    defense: { rateLimit: { rules: [rule, DEFAULT_UNSAFE_ALL_RATE_LIMIT_RULE, DEFAULT_UNSAFE_RATE_LIMIT_RULE] } },
  };
}

const fmt = (l: PageLoad) =>
  l.documentError !== ''
    ? `page failed (${l.documentError.replace(/^.*(net::\w+).*$/, '$1')})`
    : `${l.statuses[429] ?? 0}${l.failed > 0 ? ` (+${l.failed} failed)` : ''} / ${l.ms} ms`;

const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
console.log(
  '| variant | proto | n | first load: 429s / ms | reload: 429s / ms | two tabs: 429s / ms | at the origin |',
);
console.log('|---|---|---|---|---|---|---|');
try {
  for (const v of values.variants.split(','))
    for (const proto of values.protos.split(',') as PageProto[])
      for (const n of values.n.split(',').map(Number)) {
        const fns: (() => unknown)[] = [];
        const t = { after: (fn: () => unknown) => void fns.push(fn) };
        try {
          const r = await runHeavyPage(t, browser, proto, n, variant(v));
          const tabs = r.tabs.map(fmt).join(' + ');
          console.log(
            `| ${v} | ${proto} | ${n} | ${fmt(r.first)} | ${fmt(r.reload)} | ${tabs} | ${r.originRequests} |`,
          );
        } finally {
          for (let f = fns.pop(); f !== undefined; f = fns.pop()) await f();
        }
      }
} finally {
  await browser.close();
}
