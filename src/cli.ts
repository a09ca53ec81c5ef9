// The `rempart` command: run the gateway (from a config file or from flags alone), check a config
// file, or run a drill. Flags are validated strictly: a nonsense value stops with a clear message.
// `rempart demo` is not here: it is the bundled example (examples/postal), which nothing in src/
// imports (docs/architecture.md); bin/rempart.js hands it to main() as an extra command.
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { ConfigError, loadConfigFile, validateConfig } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { serverUrls, upstreamWarnings } from './upstream/schema.ts';
import { LOG_FORMATS, resolveLogFormat, type LogFormat } from './core/log.ts';
import { UsageError, debugWanted, formatError } from './core/user-error.ts';
// The gateway and what only running needs are imported when running: `--help`, `check` and `token`
// answer without loading the whole proxy.

/** The usage text down to `check`; the entry point's extra commands (`demo`) follow it, then USAGE_REST. */
const USAGE_HEAD = `Usage:
  rempart --upstream URL [--listen HOST:PORT] [--admin HOST:PORT|off] [--trust CIDR]... [--log-level LEVEL] [--quiet]
  rempart --config FILE [--listen HOST:PORT] [--admin HOST:PORT|off] [--log-level LEVEL] [--log-format FORMAT]   (flags win over the file)
  rempart ... --engine node|lean                     (the HTTP/1.1 engine, config server.engine; see docs/config.md)
  rempart ... --workers N|auto                       (N worker processes sharing the listeners; see docs/cluster.md)
  rempart ... --log-format auto|json|pretty|combined (default auto: pretty on a terminal, JSON otherwise)
  rempart ... --upgrade                              (bind beside the running gateway, then send it SIGUSR2; docs/operations.md)
  rempart check FILE [--upgrade]                     (validate FILE and every file it names, as start-up would)
`;

const USAGE_REST = `  rempart drill SCENARIO --target URL [--seconds N] [--report DIR]   (see docs/drill.md)
  rempart token create --name NAME --scope read|operator --file TOKENS_FILE   (admin API token; see docs/admin-api.md)
  rempart help [COMMAND]                             (or COMMAND --help)
  rempart --version

Without a config file, Rempart protects one upstream with safe defaults:
  npx rempart --upstream http://127.0.0.1:3000 --listen 0.0.0.0:8080
SIGHUP reloads the config file (validated first; a bad file keeps the running config).
SIGTERM stops gracefully (config shutdown); SIGUSR2 hands over to a successor started with --upgrade.
Errors are one line and a hint; --debug (or REMPART_DEBUG=1) adds the stack trace.
`;

const CHECK_USAGE = `usage: rempart check FILE [--upgrade]

Validates FILE as start-up would, without starting: the schema and the routes (a route an earlier one
covers is an error), then every file the configuration names, read by the loaders start-up uses: TLS
certificates and keys (listeners', and upstreams' authorities and client certificates), waiting-room and
challenge key files, the admin tokens file, JWT keys, the alert webhook files, the audit database's
directory. A listener or admin port another process holds now is
a warning. Environment variables start-up reads (REMPART_CHALLENGE_KEY...) are read the same way.
--upgrade: for a binary upgrade's new process; also warns when the kernel would reset the connections
queued on the old process's sockets at the hand-over (net.ipv4.tcp_migrate_req 0, deploy/sysctl).

Exit status: 0 valid (warnings, if any, on stderr), 1 problems (all of them on stderr), 2 usage.
`;

const TOKEN_USAGE = `usage: rempart token create --name NAME --scope read|operator --file TOKENS_FILE

Makes an admin API token, appends its SHA-256 hash to TOKENS_FILE (created with mode 0600; name it in
admin.tokensFile) and prints the token once on standard output. The file never holds the token.
SIGHUP makes a running gateway read the file again (docs/admin-api.md).
`;

const DEFAULT_ADMIN = '127.0.0.1:9180';

/** A command loaded only when it runs or its help is asked for. */
export interface CommandModule {
  /** Its usage text (`rempart help NAME`, `rempart NAME --help`). */
  readonly usage: string;
  /** Runs it with the arguments after its name; resolves with the exit status. */
  run(argv: string[]): Promise<number>;
}

/**
 * A command the entry point adds to the gateway's own (bin/rempart.js: `demo`): its line in
 * `rempart --help`, and its module, imported only when needed.
 */
export interface ExtraCommand {
  readonly line: string;
  load(): Promise<CommandModule>;
}

export type ExtraCommands = Readonly<Record<string, ExtraCommand>>;

/** Build a config from flags alone (zero-config mode). */
export function configFromFlags(flags: {
  upstream: string;
  listen?: string;
  admin?: string;
  trust?: string[];
  logLevel?: string;
  quiet?: boolean;
  engine?: string;
}): Config {
  return validateConfig(
    {
      version: 1,
      listeners: [{ address: flags.listen ?? '0.0.0.0:8080' }],
      upstreams: [{ name: 'origin', url: flags.upstream }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
      clientAddress: { trustedProxies: flags.trust ?? [] },
      admin: { address: flags.admin ?? DEFAULT_ADMIN },
      logging: { level: flags.logLevel ?? 'info', requests: !flags.quiet },
      ...(flags.engine !== undefined ? { server: { engine: flags.engine } } : {}),
    },
    '(command-line flags)',
  );
}

/**
 * Command-line flags over a config file's values (before validation, so a bad flag is reported as a
 * config problem): `--listen` replaces the first listener's address (a file without listeners gets
 * one), `--admin` sets admin.address, `--log-level` logging.level, `--engine` server.engine.
 */
export function applyOverrides(
  raw: Record<string, unknown>,
  flags: { listen?: string; admin?: string; logLevel?: string; engine?: string },
): void {
  const section = (key: string): Record<string, unknown> => {
    const v = raw[key];
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    return (raw[key] = {});
  };
  if (flags.listen !== undefined) {
    const listeners = Array.isArray(raw.listeners) ? raw.listeners : (raw.listeners = []);
    const first = listeners[0];
    if (first !== null && typeof first === 'object' && !Array.isArray(first))
      (first as Record<string, unknown>).address = flags.listen;
    else listeners[0] = { address: flags.listen };
  }
  if (flags.admin !== undefined) section('admin').address = flags.admin;
  if (flags.logLevel !== undefined) section('logging').level = flags.logLevel;
  if (flags.engine !== undefined) section('server').engine = flags.engine;
}

async function packageVersion(): Promise<string> {
  // This module is src/cli.ts in the repository and dist/src/cli.js in the package: package.json is
  // one or two directories up.
  for (const up of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(up, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'rempart' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

/**
 * The command line. Never throws and never prints a stack trace unless asked: every failure becomes
 * `rempart: <message>` (with a hint when one helps) and exit status 1, or 2 for a usage mistake.
 */
export async function main(argv: string[], extra: ExtraCommands = {}): Promise<number> {
  const debug = debugWanted(argv);
  try {
    return await run(
      argv.filter((a) => a !== '--debug'),
      extra,
    );
  } catch (err) {
    const usage = err instanceof UsageError;
    // A bad input (config, file, port, flag) is the user's to fix; anything else is a bug to report.
    const expected =
      usage ||
      err instanceof ConfigError ||
      (err instanceof Error && ((err as NodeJS.ErrnoException).code !== undefined || err.constructor === Error));
    process.stderr.write(formatError(err, 'rempart', debug, !expected));
    return usage ? 2 : 1;
  }
}

/** `--help` or `-h` anywhere among a subcommand's arguments. */
function wantsHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}

async function usageOf(command: string | undefined, extra: ExtraCommands, usage: string): Promise<string> {
  switch (command) {
    case 'check':
      return CHECK_USAGE;
    case 'token':
      return TOKEN_USAGE;
    case 'drill':
      return (await import('./drill/cli.ts')).drillUsage();
    default:
      return command !== undefined && Object.hasOwn(extra, command) ? (await extra[command]!.load()).usage : usage;
  }
}

async function run(argv: string[], extra: ExtraCommands): Promise<number> {
  const usage = `${USAGE_HEAD}${Object.values(extra)
    .map((c) => `${c.line}\n`)
    .join('')}${USAGE_REST}`;
  const commands = ['check', ...Object.keys(extra), 'drill', 'token', 'help'];
  const command = argv[0];
  if (command === 'help') {
    if (argv[1] === '--help' || argv[1] === '-h') argv = ['help'];
    if (argv[1] !== undefined && !commands.includes(argv[1]))
      throw new UsageError(`no command ${JSON.stringify(argv[1])} (commands: ${commands.join(', ')})`, usage);
    process.stdout.write(await usageOf(argv[1], extra, usage));
    return 0;
  }
  // `rempart drill matrix --help` is the matrix's own usage (src/drill/matrix-cli.ts), not the drill's.
  const matrix = command === 'drill' && argv[1] === 'matrix';
  if (command !== undefined && commands.includes(command) && wantsHelp(argv.slice(1)) && !matrix) {
    process.stdout.write(await usageOf(command, extra, usage));
    return 0;
  }
  if (command !== undefined && Object.hasOwn(extra, command)) return (await extra[command]!.load()).run(argv.slice(1));
  if (argv[0] === 'drill') {
    const { drillMain } = await import('./drill/cli.ts');
    return drillMain(argv.slice(1));
  }
  if (argv[0] === 'token') return tokenMain(argv.slice(1));
  if (argv[0] === 'check') {
    const upgrade = argv[2] === '--upgrade';
    if (argv.length !== (upgrade ? 3 : 2) || argv[1]!.startsWith('-'))
      throw new UsageError(
        argv.length < 2 ? 'check needs a FILE' : `check takes one FILE (got ${argv.slice(1).join(' ')})`,
        CHECK_USAGE,
      );
    return checkMain(argv[1]!, upgrade);
  }

  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string', short: 'c' },
        upstream: { type: 'string', short: 'u' },
        listen: { type: 'string', short: 'l' },
        admin: { type: 'string' },
        trust: { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        // Either HTTP/1.1 engine without editing the file: an operator trying `lean` (or going back),
        // and the drills and tests, which run the same configs on both (issue 17).
        engine: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        workers: { type: 'string', short: 'w' },
        upgrade: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message, usage);
  }
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`rempart ${await packageVersion()}\n`);
    return 0;
  }
  // Flags that would be silently ignored next to a file are refused instead; --listen, --admin,
  // --log-level and --engine override the file (docs/config.md, "Command-line overrides").
  const fileOnly = (['upstream', 'trust', 'quiet'] as const)
    .filter((f) => values[f] !== undefined)
    .map((f) => `--${f}`);
  if (values.config !== undefined && fileOnly.length > 0) {
    process.stderr.write(`rempart: --config cannot be combined with ${fileOnly.join(', ')}; put them in the file\n`);
    return 2;
  }
  const loadOptions = {
    override: (raw: Record<string, unknown>) =>
      applyOverrides(raw, {
        listen: values.listen,
        admin: values.admin,
        logLevel: values['log-level'],
        engine: values.engine,
      }),
  };
  if (values.config === undefined && values.upstream === undefined) {
    process.stderr.write(`rempart: give --upstream URL or --config FILE\n\n${usage}`);
    return 2;
  }

  const logFormat = values['log-format'];
  if (logFormat !== undefined && !(LOG_FORMATS as readonly string[]).includes(logFormat))
    throw new UsageError(`--log-format takes ${LOG_FORMATS.join(', ')} (got ${JSON.stringify(logFormat)})`, usage);

  // Zero-config: the admin listener's default port may be held (another Rempart, some other tool);
  // a default is not worth refusing to start over, so it moves to a free port and the summary says so.
  // Not with --workers: they share the primary's listeners, and a worker would find the port held by
  // its siblings.
  const { portProblem, upgradeKernelProblem } = await import('./app/preflight.ts');
  let adminNote = '';
  let adminFlag = values.admin;
  if (
    values.config === undefined &&
    adminFlag === undefined &&
    (values.workers === undefined || values.workers === '1') &&
    cluster.isPrimary
  ) {
    const why = await portProblem(DEFAULT_ADMIN);
    if (why !== '') {
      adminFlag = DEFAULT_ADMIN.replace(/:\d+$/, ':0');
      adminNote = `(${DEFAULT_ADMIN} ${why.replace(/ \(.*\)$/, '')}: moved to a free port; --admin HOST:PORT chooses one, --admin off turns it off)`;
    }
  }

  let config: Config;
  try {
    config =
      values.config !== undefined
        ? await loadConfigFile(values.config, loadOptions)
        : configFromFlags({
            upstream: values.upstream!,
            listen: values.listen,
            admin: adminFlag,
            trust: values.trust,
            logLevel: values['log-level'],
            quiet: values.quiet,
            engine: values.engine,
          });
    // Presentation only, so it combines with a file (it also wins over the file's logging.format).
    if (logFormat !== undefined)
      config = { ...config, logging: Object.freeze({ ...config.logging, format: logFormat as LogFormat }) };
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`rempart: ${err.message}\n`);
      return 1;
    }
    throw err;
  }

  if (values.workers !== undefined) {
    const n = values.workers === 'auto' ? availableParallelism() : Number(values.workers);
    if (!Number.isInteger(n) || n < 1 || n > 1024) {
      process.stderr.write(
        `rempart: --workers takes an integer from 1 to 1024, or auto (got ${JSON.stringify(values.workers)})\n`,
      );
      return 2;
    }
    // The primary only forks and supervises; each worker runs this same command line as a gateway.
    if (n > 1 && cluster.isPrimary) {
      // Workers bind beside each other (SO_REUSEPORT), so the primary checks for another holder of the
      // addresses, as a single gateway does at its start (src/core/listen.ts).
      if (values.upgrade !== true) await assertBindable(config);
      const { runPrimary } = await import('./server/workers.ts');
      const { createLogger } = await import('./core/log.ts');
      return runPrimary(
        n,
        createLogger(config.logging.level, undefined, config.logging.format as LogFormat),
        config.cluster.store === 'memory',
        (config.shutdown.drainSeconds + config.shutdown.readinessDelaySeconds) * 1000,
      );
    }
  }

  const { createGateway } = await import('./app/gateway.ts');
  const { guardUnhandledRejections } = await import('./server/process-guard.ts');
  const { startupSummary, warnUnreachableUpstreams } = await import('./server/startup.ts');
  // Read before the listeners open: once they do, nothing may be awaited until the signal handlers
  // below are installed, or a SIGHUP or SIGUSR2 in between meets its default action (exit).
  const version = await packageVersion();
  let gateway;
  try {
    // A worker binds beside its siblings, the new process of an upgrade beside the old one.
    gateway = await createGateway(config, {
      configFile: values.config ?? null,
      join: values.upgrade === true || cluster.isWorker,
    });
  } catch (err) {
    // e.g. a TLS certificate or key file that cannot be read (the message names it, the hint says why).
    throw prefixed(err, 'cannot start');
  }
  // From here on a dropped promise is logged, not the end of the process (src/server/process-guard.ts).
  guardUnhandledRejections(gateway.log);
  try {
    await gateway.start();
  } catch (err) {
    await gateway.stop(0);
    throw prefixed(err, 'cannot listen');
  }
  const { listeners, admin } = gateway.addresses();
  const shown = config.listeners.map(
    (l, i) => `${l.tls ? 'https' : 'http'}://${l.address.replace(/:\d+$/, '')}:${listeners[i]!.port}`,
  );
  const adminShown = admin ? `http://${config.admin.address.replace(/:\d+$/, '')}:${admin.port}` : 'off';
  gateway.log.info(
    {
      listeners: shown,
      admin: adminShown,
      upstreams: config.upstreams.map((u) => `${u.name}=${serverUrls(u).join(',')}`),
      engine: config.server.engine,
    },
    'rempart started',
  );
  for (const w of upstreamWarnings(config.upstreams)) gateway.log.warn(w);
  // One summary for a person (from the first worker only under --workers, not from each), and a look
  // at the upstreams that does not hold anything up.
  // The summary is for a person: a zero-config start, or a readable log format. A configured gateway
  // whose logs are JSON (a service manager, a container) keeps its output machine-readable: the
  // 'rempart started' line above says where it listens.
  const forPerson = values.config === undefined || resolveLogFormat(config.logging.format as LogFormat) === 'pretty';
  if (cluster.isPrimary || cluster.worker?.id === 1) {
    const plain = process.env.REMPART_ADMIN_TOKEN;
    if (forPerson)
      process.stderr.write(
        startupSummary(config, {
          version,
          listeners: shown,
          admin: admin ? adminShown : null,
          adminNote,
          tokenFromEnv: plain !== undefined && plain !== '',
          tokensFile: config.admin.tokensFile,
        }),
      );
    void warnUnreachableUpstreams(config, gateway.log);
    // The successor of an upgrade: say now if the hand-over to come will reset queued connections.
    // Not awaited: a SIGHUP or SIGUSR2 must find its handler below, not the default action (exit).
    if (values.upgrade === true)
      void upgradeKernelProblem().then((why) => {
        if (why !== '') gateway.log.warn({ sysctl: 'net.ipv4.tcp_migrate_req' }, why);
      });
  }

  if (values.config !== undefined) {
    const file = values.config;
    process.on('SIGHUP', () => {
      // reload() itself can fail too (an unreadable TLS file): that must reject the reload, not
      // become an unhandled rejection that stops the process.
      loadConfigFile(file, loadOptions)
        .then((next) => gateway.reload(next))
        .then(
          () => {
            gateway.metrics.configReloads.inc({ result: 'applied' });
            gateway.log.info({ file }, 'configuration reloaded');
          },
          (err: unknown) => {
            gateway.metrics.configReloads.inc({ result: 'rejected' });
            gateway.audit.record(
              'config_reload_rejected',
              'rempart',
              'configuration reload rejected; the running configuration stays',
              { file },
            );
            gateway.log.error(
              { file, problems: err instanceof ConfigError ? err.problems : String(err) },
              'configuration reload rejected; the running configuration stays',
            );
          },
        );
    });
  }
  await new Promise<void>((resolve) => {
    const signals = ['SIGINT', 'SIGTERM', 'SIGUSR2'] as const;
    const shutdown = (signal: NodeJS.Signals) => {
      // Once only: with the handlers gone, a second signal ends the process at once (its default action).
      for (const s of signals) process.removeListener(s, shutdown);
      // config `shutdown`: /readyz 503 at once, then stop accepting, then drain (docs/deploy.md).
      // SIGUSR2 is the hand-over of an upgrade: the successor already listens on the same addresses
      // (--upgrade), so there is no balancer to wait for and the admin listener closes too.
      const handover = signal === 'SIGUSR2';
      const { drainSeconds } = gateway.runtime().config.shutdown;
      const readinessDelaySeconds = handover ? 0 : gateway.runtime().config.shutdown.readinessDelaySeconds;
      gateway.log.info({ signal, drainSeconds, readinessDelaySeconds }, handover ? 'handing over' : 'shutting down');
      gateway.stop(drainSeconds * 1000, readinessDelaySeconds * 1000, handover).then(resolve, resolve);
    };
    for (const s of signals) process.on(s, shutdown);
  });
  // A worker's IPC channel to the primary would keep it alive past its graceful stop, until the
  // primary's kill (its drain time and 5 s later): close it, the process then ends by itself.
  cluster.worker?.disconnect();
  return 0;
}

/** Every listener and the admin address free to bind now (else the bind error: EADDRINUSE...). */
async function assertBindable(config: Config): Promise<void> {
  const { createServer } = await import('node:net');
  const { listenOn } = await import('./core/listen.ts');
  const addresses = config.listeners.map((l) => l.address);
  if (config.admin.address !== 'off') addresses.push(config.admin.address);
  for (const address of addresses) {
    const probe = createServer();
    await listenOn(probe, address, false);
    await new Promise<void>((r) => probe.close(() => r()));
  }
}

/** The same error (its code, hence its hint, kept) with what was being done in front of its message. */
function prefixed(err: unknown, doing: string): unknown {
  if (err instanceof Error) {
    err.message = `${doing}: ${err.message}`;
    return err;
  }
  return new Error(`${doing}: ${String(err)}`);
}

/** `rempart check FILE`: the schema, then everything start-up reads and binds (src/app/preflight.ts). */
async function checkMain(file: string, upgrade: boolean): Promise<number> {
  const config = await loadConfigFile(file); // a ConfigError: every problem, exit 1
  const { preflight } = await import('./app/preflight.ts');
  const { problems, warnings } = await preflight(config, process.env, file, upgrade);
  for (const w of warnings) process.stderr.write(`${file}: warning: ${w}\n`);
  if (problems.length > 0) {
    process.stderr.write(
      `${file}: start-up would fail (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  ${p}\n`).join('')}`,
    );
    return 1;
  }
  process.stdout.write(
    `${file}: ok${warnings.length > 0 ? ` (${warnings.length} warning${warnings.length === 1 ? '' : 's'})` : ''}\n`,
  );
  return 0;
}

/**
 * `rempart token create`: make an admin API token, append its hash to the tokens file (created with
 * mode 0600), and print the token once on standard output. The file never holds the token itself.
 */
async function tokenMain(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv.slice(1),
      strict: true,
      allowPositionals: false,
      options: { name: { type: 'string' }, scope: { type: 'string' }, file: { type: 'string' } },
    }));
  } catch (err) {
    throw new UsageError(`token: ${(err as Error).message}`, TOKEN_USAGE);
  }
  if (argv[0] !== 'create')
    throw new UsageError(
      argv[0] === undefined
        ? 'token needs a subcommand: create'
        : `token: no subcommand ${JSON.stringify(argv[0])} (only create)`,
      TOKEN_USAGE,
    );
  if (values.name === undefined || values.file === undefined)
    throw new UsageError('token create needs --name and --file', TOKEN_USAGE);
  if (values.scope !== 'read' && values.scope !== 'operator')
    throw new UsageError(
      `token create: --scope is read or operator (got ${JSON.stringify(values.scope ?? '')})`,
      TOKEN_USAGE,
    );
  const { createToken } = await import('./control/api.ts');
  const { appendFile } = await import('node:fs/promises');
  let made;
  try {
    made = createToken(values.name, values.scope);
  } catch (err) {
    throw new UsageError(`token create: ${(err as Error).message}`, TOKEN_USAGE);
  }
  await appendFile(values.file, `${made.line}\n`, { mode: 0o600 });
  process.stderr.write(
    `token "${values.name}" (${values.scope}) added to ${values.file}; it is shown once, below. SIGHUP reloads the file.\n`,
  );
  process.stdout.write(`${made.token}\n`);
  return 0;
}

if (import.meta.main) {
  // main() never rejects (it reports every failure itself); this catch is for the impossible.
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(formatError(err, 'rempart', debugWanted(process.argv), true));
      process.exitCode = 1;
    },
  );
}
