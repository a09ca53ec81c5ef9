// `rempart drill matrix [--scenarios N] [--seed S | --replay S:I] [--profile full|short] [--configs zero,demo]`:
// draws and runs the drill matrix (src/drill/matrix.ts), prints the distribution and the worst
// scenarios, and writes the JSON report with --out. Exit codes: 0 ran, 1 failed, 2 usage.
import { parseArgs } from 'node:util';
import { writeFile } from 'node:fs/promises';
import {
  CONFIGS,
  ENGINES,
  PROFILES,
  matrixText,
  parseReplay,
  runMatrix,
  type ConfigName,
  type Engine,
  type Profile,
} from './matrix.ts';
import { runSeven, sevenTable } from './seven.ts';
import { debugWanted, formatError } from '../core/user-error.ts';

export const MATRIX_USAGE = `usage: rempart drill matrix [options]

Draws N scenarios from a seed (attackers 10 to 10,000 over 1 to 5,000 /24s at 0.05 to 100 req/s each,
plain or browser-like, keeping cookies or not, solving the proof of work or not, random, popular or
login paths, step or ramp; crowds of new and returning users; four origin models) and runs each
against zero-config (rempart --upstream) and the demo config (examples/postal/rempart.yaml), a fresh
origin and gateway per run, all on loopback. Prints the distribution of real users served and of the
attack reaching the origin, and the worst scenarios with the id that replays them.

Options:
  --scenarios N         scenarios to draw (default 12; index 0 is a calm control unless --no-control)
  --seed S              the seed (default: a new random one, printed)
  --replay S:I[,I...]   run only these scenarios of seed S (the ids the worst-case listing prints)
  --profile P           full (default: 70 s warm-up per config, 12-20 s calm, 20-30 s attack)
                        or short (a few seconds each, no warm-up: what npm test runs)
  --configs LIST        zero,demo (default both)
  --no-control          no control scenario at index 0
  --engine E            node or lean: every Rempart gateway on that HTTP/1.1 engine (rempart --engine;
                        default: what each config says)
  --set seven           instead of a draw, issue 13's seven fixed drills (src/drill/seven.ts; about
                        14 min for both configs: a 70 s warm-up each, then 7 drills × 40 s × --runs)
  --runs N              with --set seven: runs of each drill per config (default 1; bench/seven.ts: 2)
  --worst N             scenarios listed per config (default 5)
  --out FILE            write the JSON report there
  --keep-logs           keep each gateway's log (JSON lines) and print where
  --quiet               only the summary
  -h, --help            this help
`;

class UsageError extends Error {}

export async function matrixMain(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        scenarios: { type: 'string' },
        seed: { type: 'string' },
        replay: { type: 'string' },
        profile: { type: 'string' },
        configs: { type: 'string' },
        engine: { type: 'string' },
        'no-control': { type: 'boolean' },
        set: { type: 'string' },
        runs: { type: 'string' },
        worst: { type: 'string' },
        out: { type: 'string' },
        'keep-logs': { type: 'boolean' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`rempart drill matrix: ${(e as Error).message}\n\n${MATRIX_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(MATRIX_USAGE);
    return 0;
  }
  try {
    const int = (raw: unknown, flag: string, min: number, max: number): number | undefined => {
      if (raw === undefined) return undefined;
      const v = Number(raw);
      if (!Number.isInteger(v) || v < min || v > max)
        throw new UsageError(`--${flag} must be an integer in [${min}, ${max}] (got "${String(raw)}")`);
      return v;
    };
    const profile = (values.profile ?? 'full') as Profile;
    if (!PROFILES.includes(profile)) throw new UsageError(`--profile must be one of ${PROFILES.join(', ')}`);
    const configs = (typeof values.configs === 'string' ? values.configs.split(',') : [...CONFIGS]) as ConfigName[];
    for (const c of configs)
      if (!CONFIGS.includes(c)) throw new UsageError(`--configs: unknown config "${c}" (${CONFIGS.join(', ')})`);
    const engine = values.engine as Engine | undefined;
    if (engine !== undefined && !ENGINES.includes(engine))
      throw new UsageError(`--engine: ${ENGINES.join(' or ')} (got "${String(engine)}")`);
    let seed = int(values.seed, 'seed', 0, 0xffffffff);
    let only: number[] | undefined;
    if (typeof values.replay === 'string') {
      const r = parseReplay(values.replay);
      if (r === null) throw new UsageError(`--replay must be SEED:INDEX[,INDEX...] (got "${values.replay}")`);
      if (seed !== undefined && seed !== r.seed) throw new UsageError('--seed and --replay name different seeds');
      seed = r.seed;
      only = r.indexes;
    }
    const quiet = Boolean(values.quiet);
    // Ctrl-C: exit, so the matrix's exit hook kills the gateway it is running (never left behind).
    process.once('SIGINT', () => process.exit(130));
    if (values.runs !== undefined && values.set === undefined) throw new UsageError('--runs goes with --set seven');
    if (values.set !== undefined) {
      if (values.set !== 'seven') throw new UsageError(`--set: only "seven" (got "${String(values.set)}")`);
      if (values.replay !== undefined || values.seed !== undefined || values.scenarios !== undefined)
        throw new UsageError('--set seven runs fixed drills: no --seed, --replay or --scenarios');
      const report = await runSeven({
        gateways: configs.map((c) => ({ name: c, config: c })),
        runs: int(values.runs, 'runs', 1, 10) ?? 1,
        engine,
        log: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
      });
      if (typeof values.out === 'string') await writeFile(values.out, `${JSON.stringify(report, null, 1)}\n`);
      process.stdout.write(`${sevenTable(report)}\n`);
      return 0;
    }
    const report = await runMatrix({
      seed,
      profile,
      configs,
      scenarios: int(values.scenarios, 'scenarios', 1, 1000),
      control: !values['no-control'],
      only,
      worst: int(values.worst, 'worst', 1, 100),
      keepLogs: Boolean(values['keep-logs']),
      engine,
      log: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    if (typeof values.out === 'string') await writeFile(values.out, `${JSON.stringify(report, null, 1)}\n`);
    process.stdout.write(`${matrixText(report)}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`rempart drill matrix: ${e.message}\n\n${MATRIX_USAGE}`);
      return 2;
    }
    process.stderr.write(formatError(e, 'rempart drill matrix', debugWanted(process.argv)));
    return 1;
  }
}
