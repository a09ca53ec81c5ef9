// The fuzzing campaign: grammar-based hostile HTTP/1.1 (request lines, targets, headers, chunked bodies,
// pipelining, upgrades, PROXY headers; test/fuzz/grammar.ts) through a real gateway in a child process,
// with a recording upstream (test/fuzz/harness.ts says what is checked). Prints the result and, with
// --write, replaces the "Fuzzing" section of bench/RESULTS.md. Exit code 1 on any finding.
// usage: node bench/fuzz.ts [--requests N] [--seed S] [--concurrency C] [--max-rss-mb M] [--write]
//        [--root DIR]  (run another checkout's bin/rempart.js as the gateway, e.g. to compare with main)
//        [--engine node|lean]  (the gateway's HTTP/1.1 engine, server.engine; default: the config's default)
//        node bench/fuzz.ts --seed S --replay K [--first-id I]   (print the bytes of connection K)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { markdownTable, upsertSection } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { planOf, runFuzz, summary } from '../test/fuzz/harness.ts';
import { showBytes } from '../test/fuzz/grammar.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '1000000' },
      seed: { type: 'string' },
      concurrency: { type: 'string', default: '48' },
      'max-rss-mb': { type: 'string', default: '1024' },
      'cycle-ms': { type: 'string', default: '2000' },
      'reload-ms': { type: 'string', default: '30000' },
      replay: { type: 'string' },
      root: { type: 'string' },
      engine: { type: 'string' },
      'first-id': { type: 'string', default: '1' },
      write: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node bench/fuzz.ts [--requests N] [--seed S] [--concurrency C] [--max-rss-mb M] [--cycle-ms MS] [--reload-ms MS] [--engine node|lean] [--write]\n       node bench/fuzz.ts --seed S --replay K [--first-id I]\n',
    );
    return 0;
  }
  const seed = values.seed !== undefined ? Number(values.seed) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  if (values.replay !== undefined) {
    const plan = planOf(seed, Number(values.replay), Number(values['first-id']));
    process.stdout.write(
      `connection ${plan.index}: ${plan.listener} listener, from ${plan.localAddress}, write ${plan.write} ${JSON.stringify(plan.cuts)}\n`,
    );
    if (plan.proxy) process.stdout.write(`PROXY ${showBytes(plan.proxy)}\n`);
    for (const r of plan.requests)
      process.stdout.write(
        `#${r.id} framed=${r.framed} last=${r.last} canaries=${JSON.stringify(r.canaries)} tags=${r.tags.join(' ')}\n${showBytes(r.bytes, 100000)}\n`,
      );
    return 0;
  }
  const engine = values.engine;
  if (engine !== undefined && engine !== 'node' && engine !== 'lean') throw new Error('--engine: node or lean');
  const requests = Number(values.requests);
  const concurrency = Number(values.concurrency);
  const maxRssMb = Number(values['max-rss-mb']);
  const command = ['node bench/fuzz.ts', ...process.argv.slice(2).filter((a) => a !== '--write')].join(' ');
  const say = (s: string) => process.stderr.write(`${s}\n`);
  say(`fuzz: seed ${seed} (replay with --seed ${seed}), ${requests} requests, concurrency ${concurrency}`);
  const info = machineInfo();
  const r = await runFuzz({
    requests,
    seed,
    concurrency,
    maxRssMb,
    cycleMs: Number(values['cycle-ms']),
    reloadMs: Number(values['reload-ms']),
    say,
    gatewayRoot: values.root,
    engine,
  });
  process.stdout.write(`${summary(r)}\n`);
  if (values.write) {
    const date = new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
    const codes = Object.entries(r.byCode).sort((a, b) => b[1] - a[1]);
    const body = [
      `${date} · ${info.nproc} CPUs, ${info.cpuModel} · Node ${info.node} · git ${gitCommit(ROOT)} · load average before ${info.loadavg}`,
      `Command: \`${command} --seed ${seed}\``,
      '',
      markdownTable(
        [
          'requests',
          'canaries',
          'connections',
          'seconds',
          'req/s',
          'responses mapped',
          'forwarded',
          'answered by Rempart',
          'upstream requests',
          'RSS start/max/end MiB',
          'result',
        ],
        [
          [
            String(r.requests),
            String(r.canaries),
            String(r.connections),
            r.durationSec.toFixed(0),
            r.rps.toFixed(0),
            String(r.mapped),
            String(r.forwardedSeen),
            String(r.localAnswers),
            String(r.upstreamRequests),
            `${r.rssStartMb.toFixed(0)}/${r.maxRssMb.toFixed(0)}/${r.rssEndMb.toFixed(0)}`,
            r.ok
              ? 'no finding'
              : `findings: ${Object.entries(r.findingCounts)
                  .map(([k, v]) => `${k} ×${v}`)
                  .join(', ')}`,
          ],
        ],
        ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      ),
      '',
      `Statuses: ${Object.entries(r.byStatus)
        .map(([k, v]) => `${k} ×${v}`)
        .join(', ')}.`,
      `Rempart's own answers by code: ${codes.map(([k, v]) => `${k} ×${v}`).join(', ')}.`,
    ].join('\n');
    upsertSection(RESULTS, '## Fuzzing', body);
    say('wrote bench/RESULTS.md (section "## Fuzzing")');
  }
  return r.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench/fuzz: ${err?.stack ?? err}\n`);
    process.exit(2);
  },
);
