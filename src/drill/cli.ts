// `rempart drill SCENARIO --target URL [...]`: runs a scenario, shows one live progress line,
// prints a summary and writes report.json + report.html. Exit codes: 0 ran, 1 failed, 2 usage.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { runDrill, DEFAULT_MAX_REQUESTS } from './engine.ts';
import { summaryText } from './report.ts';
import { ScenarioError, describeBuiltins, loadScenario } from './scenario.ts';
import { SafetyError } from './safety.ts';
import { debugWanted, formatError } from '../core/user-error.ts';

/** The usage text; the scenario list is read from scenarios/ each time (never a copy that drifts). */
export function drillUsage(): string {
  const builtins = describeBuiltins();
  const width = Math.max(0, ...builtins.map((b) => b.name.length));
  const list = builtins.map((b) => `  ${b.name.padEnd(width)}  ${b.description}`).join('\n');
  return `usage: rempart drill SCENARIO --target URL [options]
       rempart drill matrix [options]   (randomized scenarios: rempart drill matrix --help)

SCENARIO is a YAML file or one of the bundled scenarios:
${list}

Options:
  --target URL          where to send traffic (loopback only, see below)
  --seconds N           run length (default: the scenario's); attack windows scale with it
  --scale N             multiply every legit population's users (flash crowds)
  --report DIR          report directory (default ./reports/<scenario>-<timestamp>)
  --origin URL          the origin itself, polled each second at /__origin/stats
  --origin-workers N    origin worker count, to compute its utilisation
  --metrics URL         Rempart's admin /metrics, polled each second
  --max-requests N      hard cap on requests + connections (default ${DEFAULT_MAX_REQUESTS})
  --deadline-ms N       a legit request slower than this fails (default: scenario's, 5000)
  --quiet               no progress line, no summary
  --allow-remote --i-own-this-target
                        both required to target a non-loopback host you own
  -h, --help            this help
`;
}

function num(raw: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max)
    throw new UsageError(`--${flag} must be a number in [${min}, ${max}] (got "${raw}")`);
  return v;
}

class UsageError extends Error {}

export async function drillMain(argv: string[]): Promise<number> {
  // `rempart drill matrix …`: the randomized matrix (src/drill/matrix.ts), its own options.
  if (argv[0] === 'matrix') return (await import('./matrix-cli.ts')).matrixMain(argv.slice(1));
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        target: { type: 'string' },
        seconds: { type: 'string' },
        scale: { type: 'string' },
        report: { type: 'string' },
        origin: { type: 'string' },
        'origin-workers': { type: 'string' },
        metrics: { type: 'string' },
        'max-requests': { type: 'string' },
        'deadline-ms': { type: 'string' },
        quiet: { type: 'boolean' },
        'allow-remote': { type: 'boolean' },
        'i-own-this-target': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`rempart drill: ${(e as Error).message}\n\n${drillUsage()}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(drillUsage());
    return 0;
  }
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    // First Ctrl-C: stop and still write the report. Second: give up at once.
    if (++interrupts > 1) process.exit(130);
    process.stderr.write('\nrempart drill: stopping (Ctrl-C again to quit without a report)\n');
    controller.abort();
  };
  try {
    if (positionals.length !== 1) throw new UsageError('exactly one SCENARIO is required');
    if (typeof values.target !== 'string') throw new UsageError('--target URL is required');
    const scenario = await loadScenario(positionals[0]!);
    const stamp = new Date()
      .toISOString()
      .replace(/[:.]/g, '-')
      .replace(/-\d{3}Z$/, 'Z');
    const reportDir =
      typeof values.report === 'string' ? values.report : path.join('reports', `${scenario.name}-${stamp}`);
    process.on('SIGINT', onSigint);
    const report = await runDrill({
      scenario,
      target: values.target,
      reportDir,
      seconds: num(values.seconds as string | undefined, 'seconds', 1, 600),
      scale: num(values.scale as string | undefined, 'scale', 0.01, 1000),
      originUrl: values.origin as string | undefined,
      originWorkers: num(values['origin-workers'] as string | undefined, 'origin-workers', 1, 1e6),
      metricsUrl: values.metrics as string | undefined,
      maxRequests: num(values['max-requests'] as string | undefined, 'max-requests', 1, 1e8),
      deadlineMs: num(values['deadline-ms'] as string | undefined, 'deadline-ms', 100, 60_000),
      quiet: Boolean(values.quiet),
      allowRemote: Boolean(values['allow-remote']),
      iOwnThisTarget: Boolean(values['i-own-this-target']),
      signal: controller.signal,
    });
    if (!values.quiet) process.stdout.write(`${summaryText(report)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`rempart drill: ${e.message}\n\n${drillUsage()}`);
      return 2;
    }
    if (e instanceof ScenarioError || e instanceof SafetyError) {
      process.stderr.write(`rempart drill: ${e.message}\n`);
      return 2;
    }
    // A network or file failure is a message and a hint; the stack only with --debug / REMPART_DEBUG=1.
    process.stderr.write(formatError(e, 'rempart drill', debugWanted(process.argv)));
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

if (import.meta.main) {
  drillMain(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
