// The Rapid Reset drill (`rempart drill rapid-reset`) through Rempart, three times in one run: the
// defaults (rate limit and bans see the attackers' addresses too), the HTTP/2 defence alone
// (listeners[].http2.maxResetsPerSecond, guards off), and nothing (the cap raised out of reach,
// nghttp2's own burst limit of 1000 resets then 33 a second still there). The gateway runs in its own process
// (bin/rempart.js, a cleartext HTTP/2 listener), pinned alone on CPU 1 when it can be; its CPU is
// read from /proc each second while the attack lasts. The postal origin and the drill run here.
// Prints real users' success and p99 during the attack, the gateway's CPU, the streams sent and how
// many reached the origin; writes the table to bench/RESULTS.md.
// usage: node bench/h2-drill.ts [--seconds N] [--rate R] [--no-pin] [--no-write]
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostalOrigin } from '../examples/postal/origin.ts';
import { runDrill } from '../src/drill/engine.ts';
import { loadScenario } from '../src/drill/scenario.ts';
import { processCpu } from './lib/cpu.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import {
  canPin,
  freePort,
  installCleanupHandlers,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
const HEADING = '## Rapid Reset drill (issue 16)';

interface Figures {
  label: string;
  legitPct: number | null;
  legitP99: number | null;
  cpuPct: number;
  sent: number;
  reachedOrigin: number | null;
  goaways: number;
}

async function once(
  label: string,
  maxResetsPerSecond: number,
  guards: boolean,
  seconds: number,
  rate: number,
  pin: boolean,
  tmp: string,
): Promise<Figures> {
  const origin = await startPostalOrigin({ port: 0, workers: 16, serviceTimeMs: 5, queueLength: 2000 });
  const port = await freePort();
  const adminPort = await freePort();
  const config = benchGatewayConfig(port, adminPort, origin.url, {
    logging: { level: 'error', requests: false },
    // Without the address-keyed guards, the attack meets the HTTP/2 defence alone.
    ...(guards ? {} : { defense: { rateLimit: { mode: 'off' }, bans: { mode: 'off' } } }),
  });
  (config.listeners as Record<string, unknown>[])[0]!.http2 = { cleartext: true, maxResetsPerSecond };
  const file = path.join(tmp, `rempart-${maxResetsPerSecond}.json`);
  await writeFile(file, JSON.stringify(config));
  const gw = startProcess('rempart', process.execPath, [path.join(ROOT, 'bin', 'rempart.js'), '--config', file], {
    cwd: ROOT,
    cpu: pin ? '1' : undefined,
  });
  await waitForPort(port, gw, 20000);
  const base = await loadScenario('rapid-reset');
  const attack = { ...base.attacks[0]!, ratePerSecond: rate };
  const scenario = { ...base, attacks: [attack] };
  // CPU of the gateway, sampled each second; the attack's window is then picked out.
  const samples: { at: number; cpu: number }[] = [];
  const t0 = performance.now();
  const sample = () => {
    const c = processCpu(gw.pid);
    samples.push({ at: (performance.now() - t0) / 1000, cpu: c.user + c.sys });
  };
  sample();
  const timer = setInterval(sample, 1000);
  const report = await runDrill({
    scenario,
    seconds,
    target: `http://127.0.0.1:${port}`,
    originUrl: origin.url,
    quiet: true,
  });
  clearInterval(timer);
  const scale = seconds / base.seconds;
  const from = attack.startSec * scale + 1;
  const to = (attack.startSec + attack.durationSec) * scale - 1;
  const inWindow = samples.filter((s) => s.at >= from && s.at <= to);
  const cpuPct =
    inWindow.length >= 2
      ? ((inWindow.at(-1)!.cpu - inWindow[0]!.cpu) / (inWindow.at(-1)!.at - inWindow[0]!.at)) * 100
      : Number.NaN;
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const goaways = Number(
    metrics.match(/rempart_refusals_total\{reason="RMP_ERR_EDGE_H2_RAPID_RESET"\} (\d+)/)?.[1] ?? 0,
  );
  // Real users while the attack lasted: the per-second series, its window.
  const perSecond = report.timeline;
  const okIn = perSecond.legitOk.slice(Math.ceil(from), Math.floor(to)).reduce((a, b) => a + b, 0);
  const failIn = perSecond.legitFail.slice(Math.ceil(from), Math.floor(to)).reduce((a, b) => a + b, 0);
  const p99s = perSecond.p99Ms.slice(Math.ceil(from), Math.floor(to)).filter((x): x is number => x !== null);
  await gw.stop();
  await origin.close();
  return {
    label,
    legitPct: okIn + failIn === 0 ? null : (100 * okIn) / (okIn + failIn),
    legitP99: p99s.length === 0 ? null : Math.max(...p99s),
    cpuPct,
    sent: report.attack.byAttack[0]!.sent,
    reachedOrigin: report.origin.available ? report.origin.receivedAttack : null,
    goaways,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      rate: { type: 'string' },
      'no-pin': { type: 'boolean' },
      'no-write': { type: 'boolean' },
    },
  });
  const seconds = Number(values.seconds ?? 30);
  const rate = Number(values.rate ?? 5000);
  installCleanupHandlers();
  const pin = !values['no-pin'] && canPin(2);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-h2-drill-'));
  onCleanup(() => rm(tmp, { recursive: true, force: true }));
  const runs = [
    await once('defaults (rate limit and bans on, maxResetsPerSecond 100)', 100, true, seconds, rate, pin, tmp),
    await once('rate limit and bans off, maxResetsPerSecond 100', 100, false, seconds, rate, pin, tmp),
    await once('rate limit and bans off, no reset cap (nghttp2 alone)', 1_000_000_000, false, seconds, rate, pin, tmp),
  ];
  const f = (n: number | null, d = 1) => (n === null || !Number.isFinite(n) ? '—' : n.toFixed(d));
  const table = markdownTable(
    [
      'Rempart',
      'real users OK during the attack',
      'their worst p99 (ms)',
      'gateway CPU (% of a core)',
      'streams sent',
      'reached the origin',
      'GOAWAY (Rapid Reset)',
    ],
    runs.map((r) => [
      r.label,
      `${f(r.legitPct, 2)} %`,
      f(r.legitP99, 0),
      f(r.cpuPct, 0),
      String(r.sent),
      r.reachedOrigin === null ? '—' : String(r.reachedOrigin),
      String(r.goaways),
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
  const info = machineInfo();
  const command = ['node bench/h2-drill.ts', ...process.argv.slice(2)].join(' ');
  const body = `\`${command}\` @ ${gitCommit(ROOT)}: the \`rapid-reset\` scenario (${seconds} s; 120 real users on HTTP/1.1; from a fifth of the run to five sixths, 4 addresses × 4 cleartext HTTP/2 connections open and reset ${rate} streams a second, each HEADERS + RST_STREAM in the same write) through Rempart in its own process${pin ? ' pinned alone on CPU 1' : ''}, the postal origin (16 workers, 5 ms) and the drill on the other CPU. Gateway CPU from /proc over the attack window (its first and last second left out). ${info.nproc} CPUs, ${info.cpuModel}, Node ${info.node}, load before ${info.loadavg} (shared machine).

${table}
`;
  process.stdout.write(`\n${HEADING}\n\n${body}\n`);
  if (!values['no-write']) upsertSection(RESULTS, HEADING, body);
  return 0;
}

main()
  .then(async (code) => {
    await stopAll();
    process.exit(code);
  })
  .catch(async (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : err}\n`);
    await stopAll();
    process.exit(1);
  });
