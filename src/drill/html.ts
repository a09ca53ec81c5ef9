// Self-contained HTML report: inline SVG charts rendered here, inline CSS, no script, no external URL.
// Names and messages come from a scenario file and from what the target answered: escaped, and the
// report's own CSP (a <meta>, it is a file) allows its one style sheet and no script at all.
import type { DrillReport, ClassReport } from './report.ts';
import { cspHash, escapeHtml } from '../core/html.ts';

const esc = (s: unknown) => escapeHtml(String(s));

const REPORT_STYLE = `
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:960px}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:13px}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.chart{display:block;margin:.6rem 0;border:1px solid #eee}.chart .t{font-weight:600;font-size:13px}
.chart .g{stroke:#e5e5e5}.chart .yl{font-size:10px;text-anchor:end;dominant-baseline:middle;fill:#666}
.chart .xl{font-size:10px;text-anchor:middle;fill:#666}.chart .lg{font-size:11px}
.muted{color:#777}.warn{color:#a40}
`;
const REPORT_CSP = `default-src 'none'; style-src ${cspHash(REPORT_STYLE)}; img-src data:; base-uri 'none'; form-action 'none'`;
const fmt = (v: number | null | undefined, unit = '') => (v === null || v === undefined ? '–' : `${v}${unit}`);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf'];

interface Series {
  name: string;
  values: Array<number | null>;
  color?: string;
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function chart(
  title: string,
  unit: string,
  series: Series[],
  windows: Array<[number, number, string]>,
  fixedMax?: number,
): string {
  const W = 900,
    H = 240,
    L = 56,
    R = 12,
    T = 34,
    B = 28;
  const n = Math.max(1, ...series.map((s) => s.values.length));
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const yMax = fixedMax ?? niceMax(max);
  const x = (i: number) => L + ((W - L - R) * i) / Math.max(1, n - 1);
  const y = (v: number) => T + (H - T - B) * (1 - Math.min(v, yMax) / yMax);
  const parts: string[] = [
    `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`,
  ];
  parts.push(`<text x="${L}" y="14" class="t">${esc(title)}</text>`);
  for (const [from, to, label] of windows) {
    const x0 = x(Math.min(from, n - 1)),
      x1 = x(Math.min(to, n - 1));
    parts.push(
      `<rect x="${x0.toFixed(1)}" y="${T}" width="${Math.max(1, x1 - x0).toFixed(1)}" height="${H - T - B}" fill="#f6d5d5" opacity="0.45"><title>${esc(label)}</title></rect>`,
    );
  }
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    const yy = y(v).toFixed(1);
    parts.push(
      `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" class="g"/><text x="${L - 6}" y="${yy}" class="yl">${esc(+v.toPrecision(3))}${esc(unit)}</text>`,
    );
  }
  const step = Math.max(1, Math.ceil(n / 15));
  for (let i = 0; i < n; i += step) parts.push(`<text x="${x(i).toFixed(1)}" y="${H - 10}" class="xl">${i}s</text>`);
  let lx = L + 20 + title.length * 8.2; // legend after the (bold, 13 px) title
  series.forEach((s, k) => {
    const color = s.color ?? COLORS[k % COLORS.length];
    parts.push(
      `<rect x="${lx}" y="6" width="10" height="10" fill="${color}"/><text x="${lx + 14}" y="15" class="lg">${esc(s.name)}</text>`,
    );
    lx += 24 + s.name.length * 6.5;
    let d = '';
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d)
      parts.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"><title>${esc(s.name)}</title></path>`,
      );
    if (n <= 120)
      s.values.forEach((v, i) => {
        if (v !== null)
          parts.push(
            `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2" fill="${color}"><title>${esc(`${s.name} @${i}s: ${v}${unit}`)}</title></circle>`,
          );
      });
  });
  parts.push('</svg>');
  return parts.join('');
}

function classRow(name: string, c: ClassReport): string {
  return (
    `<tr><td>${esc(name)}</td><td>${c.requests}</td><td>${fmt(c.successPct, '%')}</td><td>${fmt(c.p50Ms)}</td><td>${fmt(c.p95Ms)}</td><td>${fmt(c.p99Ms)}</td>` +
    `<td>${c.failures.status}</td><td>${c.failures.challenge}</td><td>${c.failures.timeout}</td><td>${c.failures.error}</td></tr>`
  );
}

export function renderHtml(r: DrillReport): string {
  const t = r.timeline;
  const windows: Array<[number, number, string]> = r.attack.byAttack.map((a) => [
    a.startSec,
    a.startSec + a.durationSec,
    `${a.kind} ${a.startSec}s–${+(a.startSec + a.durationSec).toFixed(1)}s`,
  ]);
  const charts: string[] = [
    chart('Legit success rate', '%', [{ name: 'success', values: t.legitSuccessPct, color: '#2ca02c' }], windows, 100),
    chart(
      'Legit latency',
      'ms',
      [
        { name: 'p50', values: t.p50Ms },
        { name: 'p95', values: t.p95Ms, color: '#ff7f0e' },
        { name: 'p99', values: t.p99Ms, color: '#d62728' },
      ],
      windows,
    ),
  ];
  if (r.attack.byAttack.length > 0) {
    charts.push(
      chart(
        'Attack requests per second',
        '',
        [
          { name: 'sent', values: t.attackSent, color: '#7f7f7f' },
          { name: 'blocked', values: t.attackBlocked, color: '#2ca02c' },
          { name: 'answered by origin', values: t.attackPassed, color: '#d62728' },
          { name: 'timeout', values: t.attackTimeout, color: '#9467bd' },
          { name: 'not sent (cap)', values: t.attackNotSent, color: '#bcbd22' },
        ],
        windows,
      ),
    );
    if (t.slowOpen.some((v) => v > 0))
      charts.push(chart('Slow connections held open', '', [{ name: 'open', values: t.slowOpen }], windows));
  }
  if (r.origin.available) {
    const load: Series[] = [
      { name: 'served', values: t.originServed },
      { name: 'rejected (own 503)', values: t.originRejected, color: '#d62728' },
    ];
    if (t.originReceivedAttack.some((v) => v !== null))
      load.push(
        { name: 'received attack', values: t.originReceivedAttack, color: '#ff7f0e' },
        { name: 'received legit', values: t.originReceivedLegit, color: '#2ca02c' },
      );
    charts.push(chart('Origin: requests per second', '', load, windows));
    charts.push(
      t.originUtilPct.some((v) => v !== null)
        ? chart(
            'Origin utilisation',
            '%',
            [{ name: 'busy / capacity', values: t.originUtilPct, color: '#8c564b' }],
            windows,
            100,
          )
        : chart(
            'Origin busy time',
            'ms/s',
            [{ name: 'busy', values: t.originBusyMsPerSec, color: '#8c564b' }],
            windows,
          ),
    );
  }
  if (r.rempart.available) {
    if (t.attackLevel.some((v) => v !== null))
      charts.push(
        chart('Rempart attack level', '', [{ name: 'rempart_attack_level', values: t.attackLevel }], windows),
      );
    const names = Object.keys(t.decisions);
    if (names.length > 0)
      charts.push(
        chart(
          'Rempart decisions per second',
          '',
          names.map((k) => ({ name: k, values: t.decisions[k]! })),
          windows,
        ),
      );
  }

  const classes =
    Object.entries(r.legit.byClass)
      .map(([k, c]) => classRow(k, c))
      .join('') + classRow('all', r.legit.total);
  const attacks = r.attack.byAttack
    .map(
      (a) =>
        `<tr><td>${esc(a.kind)}</td><td>${a.startSec}–${+(a.startSec + a.durationSec).toFixed(1)}s</td><td>${a.addresses}</td><td>${a.ratePerSecond || '–'}</td><td>${a.connections}</td>` +
        `<td>${a.sent}</td><td>${a.notSent}</td><td>${a.blocked}</td><td>${a.passed}</td><td>${a.timeout}</td><td>${a.other}</td><td>${a.held}</td><td>${a.unanswered}</td><td>${a.error}</td></tr>`,
    )
    .join('');
  const o = r.origin;
  const originHtml = o.available
    ? `<p>Served ${o.served}, rejected by its own overload control ${o.rejected}, received attack ${fmt(o.receivedAttack)}, received legit ${fmt(o.receivedLegit)}, utilisation ${fmt(o.utilisationPct, '%')} (peak ${fmt(o.peakUtilisationPct, '%')}), max queued ${o.maxQueued}; ${o.polls} polls, ${o.failures} failed.</p>`
    : '<p>Not observed (give <code>--origin URL</code>).</p>';
  const rp = r.rempart;
  const rempartHtml = rp.available
    ? `<p>Max attack level ${fmt(rp.maxAttackLevel)}; decisions over the run: ${
        Object.entries(rp.decisions)
          .map(([k, v]) => `${esc(k)} ${v}`)
          .join(', ') || 'none'
      }; ${rp.polls} polls, ${rp.failures} failed.</p>` +
      `<p>Refusals by reason: ${
        Object.entries(rp.refusals)
          .map(([k, v]) => `${esc(k)} ${v}`)
          .join(', ') || 'none'
      }. Admission sheds by class/reason: ${
        Object.entries(rp.shed)
          .map(([k, v]) => `${esc(k)} ${v}`)
          .join(', ') || 'none'
      }.</p>`
    : '<p>Not observed (give <code>--metrics URL</code>).</p>';

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}">
<title>rempart drill: ${esc(r.scenario.name)}</title>
<style>${REPORT_STYLE}</style></head><body>
<h1>rempart drill: ${esc(r.scenario.name)}</h1>
<p>${esc(r.scenario.description)}</p>
<p class="muted">Target <code>${esc(r.target)}</code> · started ${esc(r.startedAt)} · ${r.durationSec}s (stopped by ${esc(r.stoppedBy)}) · ${r.requestsIssued} requests · ${r.settings.users} legit users (scale ${r.settings.scale}) · deadline ${r.settings.deadlineMs} ms · source addresses ${r.settings.bindSources ? 'bound per client in 127/8' : 'not bound'}</p>
<h2>Legitimate users</h2>
<table><tr><th>class</th><th>requests</th><th>success</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>status fail</th><th>challenged</th><th>timeout</th><th>conn. error</th></tr>${classes}</table>
<h2>Attacks</h2>
${
  r.attack.byAttack.length
    ? `<table><tr><th>kind</th><th>window</th><th>addresses</th><th>rate/s</th><th>conns</th><th>sent</th><th>not sent</th><th>blocked</th><th>answered by origin</th><th>timeout</th><th>other</th><th>held to end</th><th>unanswered</th><th>local error</th></tr>${attacks}</table>
<p>Reaching the origin: <b>${fmt(r.attack.reachingOriginPct, '%')}</b> of attack requests sent (${esc(r.attack.reachingOriginSource ?? '')}).</p>`
    : '<p>None in this scenario.</p>'
}
<h2>Origin</h2>${originHtml}
<h2>Rempart</h2>${rempartHtml}
<h2>Over time</h2>
<p class="muted">1-second buckets; shaded: attack windows.</p>
${charts.join('\n')}
${r.warnings.length ? `<h2>Warnings</h2><ul>${r.warnings.map((w) => `<li class="warn">${esc(w)}</li>`).join('')}</ul>` : ''}
</body></html>
`;
}
