// The full drill matrix (issue 13 point 5) for bench/RESULTS.md: N scenarios drawn from a new seed
// (or --seed), each against zero-config and the demo config, after a 70 s calm warm-up per config.
// Writes bench/results/matrix-<seed>.json (every run: figures, the level each second, the gateway's
// decisions per population from its log) and .md (the distribution, the worst cases, every scenario).
//
//   node bench/matrix.ts [--scenarios 14] [--seed S] [--configs zero,demo] [--out bench/results]
//
// About 25 min for 14 scenarios × 2 configs on a 2-core machine. The gateway, the origin models and
// the generator share the machine: the load average is in the report.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { matrixText, runMatrix, type ConfigName, type MatrixReport } from '../src/drill/matrix.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function scenarioTable(report: MatrixReport): string {
  const rows = [
    "| id | config | served % (calm %) | users challenged / refused | attack reaching origin % | rate achieved / drawn | level max (under_attack after s) | origin util % / 503s | gateway CPU % | gateway decisions for the attack (log) | real users' failures |",
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const top = (t: Record<string, number> | undefined) =>
    Object.entries(t ?? {})
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  for (const r of report.results)
    for (const o of r.runs) {
      rows.push(
        `| ${r.scenario.id}${r.scenario.control ? ' (control)' : ''} | ${o.config} | ${o.servedPct ?? '-'} (${o.servedPctCalm ?? '-'}) | ` +
          `${o.challengedUsers} / ${o.refusedUsers} of ${o.users} | ${o.attackReachPct ?? '-'} | ` +
          `${o.attack ? `${o.attack.achievedRate} / ${o.attack.drawnRate}` : '-'}${o.produced ? '' : ' **not produced**'} | ` +
          `${o.level.max ?? '-'} (${o.level.underAttackAfterSec ?? '-'}) | ${o.origin.utilisationPct} / ${o.origin.rejected} | ` +
          `${o.cpu.gatewayPct ?? '-'} | ${top(o.log.byPopulation.attack)} | ${top(o.legitReasons)} |`,
      );
    }
  return rows.join('\n');
}

async function main(): Promise<void> {
  // Ctrl-C or SIGTERM: exit, so the matrix's exit hook kills the gateway it is running.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const { values } = parseArgs({
    options: {
      scenarios: { type: 'string', default: '14' },
      seed: { type: 'string' },
      configs: { type: 'string', default: 'zero,demo' },
      out: { type: 'string', default: join(ROOT, 'bench/results') },
    },
  });
  const report = await runMatrix({
    seed: values.seed === undefined ? undefined : Number(values.seed),
    scenarios: Number(values.scenarios),
    profile: 'full',
    configs: values.configs.split(',') as ConfigName[],
    worst: 6,
    keepLogs: true,
    log: (line) => process.stderr.write(`[matrix ${new Date().toISOString().slice(11, 19)}] ${line}\n`),
  });
  mkdirSync(values.out, { recursive: true });
  const base = join(values.out, `matrix-${report.seed}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 1)}\n`);
  const text = matrixText(report);
  const command = `node bench/matrix.ts ${process.argv.slice(2).join(' ')}`.trim();
  writeFileSync(
    `${base}.md`,
    `# Drill matrix, seed ${report.seed}\n\n\`${command}\` (${report.startedAt.slice(0, 16)}Z)\n\n${text}\n\n## Every run\n\n${scenarioTable(report)}\n\n## Scenarios\n\n${report.results.map((r) => `- ${r.scenario.id}: ${r.description}`).join('\n')}\n`,
  );
  process.stdout.write(`${text}\n\nwritten: ${base}.json, ${base}.md\n`);
}

main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
