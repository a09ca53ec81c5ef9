// The `rempart` command: run the gateway (from a config file or from flags alone), check a config
// file, or run a drill. Flags are validated strictly: a nonsense value stops with a clear message.
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { ConfigError, loadConfigFile, validateConfig } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { createGateway } from './server/gateway.ts';
import { guardUnhandledRejections } from './server/process-guard.ts';

const USAGE = `Usage:
  rempart --upstream URL [--listen HOST:PORT] [--admin HOST:PORT|off] [--trust CIDR]... [--log-level LEVEL] [--quiet]
  rempart --config FILE [--listen HOST:PORT] [--admin HOST:PORT|off] [--log-level LEVEL]   (flags win over the file)
  rempart ... --workers N|auto                       (N worker processes sharing the listeners; see docs/cluster.md)
  rempart check FILE
  rempart demo                                       (the bundled demo, as \`npm start\`)
  rempart drill SCENARIO --target URL [--seconds N] [--report DIR]   (see docs/drill.md)
  rempart token create --name NAME --scope read|operator --file TOKENS_FILE   (admin API token; see docs/admin-api.md)
  rempart --version

Without a config file, Rempart protects one upstream with safe defaults:
  npx rempart --upstream http://127.0.0.1:3000 --listen 0.0.0.0:8080
SIGHUP reloads the config file (validated first; a bad file keeps the running config).
`;

/** Build a config from flags alone (zero-config mode). */
export function configFromFlags(flags: { upstream: string; listen?: string; admin?: string; trust?: string[]; logLevel?: string; quiet?: boolean }): Config {
  return validateConfig(
    {
      version: 1,
      listeners: [{ address: flags.listen ?? '0.0.0.0:8080' }],
      upstreams: [{ name: 'origin', url: flags.upstream }],
      routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
      clientAddress: { trustedProxies: flags.trust ?? [] },
      admin: { address: flags.admin ?? '127.0.0.1:9180' },
      logging: { level: flags.logLevel ?? 'info', requests: !flags.quiet },
    },
    '(command-line flags)',
  );
}

/**
 * Command-line flags over a config file's values (before validation, so a bad flag is reported as a
 * config problem): `--listen` replaces the first listener's address (a file without listeners gets
 * one), `--admin` sets admin.address, `--log-level` logging.level.
 */
export function applyOverrides(raw: Record<string, unknown>, flags: { listen?: string; admin?: string; logLevel?: string }): void {
  const section = (key: string): Record<string, unknown> => {
    const v = raw[key];
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    return (raw[key] = {});
  };
  if (flags.listen !== undefined) {
    const listeners = Array.isArray(raw.listeners) ? raw.listeners : (raw.listeners = []);
    const first = listeners[0];
    if (first !== null && typeof first === 'object' && !Array.isArray(first)) (first as Record<string, unknown>).address = flags.listen;
    else listeners[0] = { address: flags.listen };
  }
  if (flags.admin !== undefined) section('admin').address = flags.admin;
  if (flags.logLevel !== undefined) section('logging').level = flags.logLevel;
}

async function packageVersion(): Promise<string> {
  // This module is src/cli.ts in the repository and dist/src/cli.js in the package: package.json is
  // one or two directories up.
  for (const up of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'rempart' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'demo') {
    // `npm start`: the reference postal service with Rempart in front (examples/postal/demo.ts).
    await import('../examples/postal/demo.ts');
    return new Promise<number>(() => {}); // runs until Ctrl-C; the demo exits the process itself
  }
  if (argv[0] === 'drill') {
    const { drillMain } = await import('./drill/cli.ts');
    return drillMain(argv.slice(1));
  }
  if (argv[0] === 'token') return tokenMain(argv.slice(1));
  if (argv[0] === 'check') {
    if (argv.length !== 2) {
      process.stderr.write('usage: rempart check FILE\n');
      return 2;
    }
    try {
      await loadConfigFile(argv[1]!);
      process.stdout.write(`${argv[1]}: ok\n`);
      return 0;
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`${err.message}\n`);
        return 1;
      }
      throw err;
    }
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
        quiet: { type: 'boolean', short: 'q' },
        workers: { type: 'string', short: 'w' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    }));
  } catch (err) {
    process.stderr.write(`rempart: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`rempart ${await packageVersion()}\n`);
    return 0;
  }
  // Flags that would be silently ignored next to a file are refused instead; --listen, --admin and
  // --log-level override the file (docs/config.md, "Command-line overrides").
  const fileOnly = (['upstream', 'trust', 'quiet'] as const).filter((f) => values[f] !== undefined).map((f) => `--${f}`);
  if (values.config !== undefined && fileOnly.length > 0) {
    process.stderr.write(`rempart: --config cannot be combined with ${fileOnly.join(', ')}; put them in the file\n`);
    return 2;
  }
  const loadOptions = { override: (raw: Record<string, unknown>) => applyOverrides(raw, { listen: values.listen, admin: values.admin, logLevel: values['log-level'] }) };
  if (values.config === undefined && values.upstream === undefined) {
    process.stderr.write(`rempart: give --upstream URL or --config FILE\n\n${USAGE}`);
    return 2;
  }

  let config: Config;
  try {
    config =
      values.config !== undefined
        ? await loadConfigFile(values.config, loadOptions)
        : configFromFlags({ upstream: values.upstream!, listen: values.listen, admin: values.admin, trust: values.trust, logLevel: values['log-level'], quiet: values.quiet });
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
      process.stderr.write(`rempart: --workers takes an integer from 1 to 1024, or auto (got ${JSON.stringify(values.workers)})\n`);
      return 2;
    }
    // The primary only forks and supervises; each worker runs this same command line as a gateway.
    if (n > 1 && cluster.isPrimary) {
      const { runPrimary } = await import('./server/workers.ts');
      const { createLogger } = await import('./core/log.ts');
      return runPrimary(n, createLogger(config.logging.level), config.cluster.store === 'memory', (config.shutdown.drainSeconds + config.shutdown.readinessDelaySeconds) * 1000);
    }
  }

  let gateway;
  try {
    gateway = await createGateway(config);
  } catch (err) {
    // e.g. a TLS certificate or key file that cannot be read.
    process.stderr.write(`rempart: cannot start: ${(err as Error).message}\n`);
    return 1;
  }
  // From here on a dropped promise is logged, not the end of the process (src/server/process-guard.ts).
  guardUnhandledRejections(gateway.log);
  try {
    await gateway.start();
  } catch (err) {
    process.stderr.write(`rempart: cannot listen: ${(err as Error).message}\n`);
    await gateway.stop(0);
    return 1;
  }
  const { listeners, admin } = gateway.addresses();
  const shown = config.listeners.map((l, i) => `${l.tls ? 'https' : 'http'}://${l.address.replace(/:\d+$/, '')}:${listeners[i]!.port}`);
  gateway.log.info({ listeners: shown, admin: admin ? `http://${config.admin.address}` : 'off', upstreams: config.upstreams.map((u) => `${u.name}=${u.url}`) }, 'rempart started');

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
            gateway.audit.record('config_reload_rejected', 'rempart', 'configuration reload rejected; the running configuration stays', { file });
            gateway.log.error({ file, problems: err instanceof ConfigError ? err.problems : String(err) }, 'configuration reload rejected; the running configuration stays');
          },
        );
    });
  }
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      // config `shutdown`: /readyz 503 at once, then stop accepting, then drain (docs/deploy.md).
      const { drainSeconds, readinessDelaySeconds } = gateway.runtime().config.shutdown;
      gateway.log.info({ signal, drainSeconds, readinessDelaySeconds }, 'shutting down');
      gateway.stop(drainSeconds * 1000, readinessDelaySeconds * 1000).then(resolve, resolve);
    };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  });
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
    process.stderr.write(`rempart token: ${(err as Error).message}\n`);
    return 2;
  }
  if (argv[0] !== 'create' || values.name === undefined || values.file === undefined || (values.scope !== 'read' && values.scope !== 'operator')) {
    process.stderr.write('usage: rempart token create --name NAME --scope read|operator --file TOKENS_FILE\n');
    return 2;
  }
  const { createToken } = await import('./control/api.ts');
  const { appendFile } = await import('node:fs/promises');
  let made;
  try {
    made = createToken(values.name, values.scope);
  } catch (err) {
    process.stderr.write(`rempart token: ${(err as Error).message}\n`);
    return 2;
  }
  await appendFile(values.file, `${made.line}\n`, { mode: 0o600 });
  process.stderr.write(`token "${values.name}" (${values.scope}) added to ${values.file}; it is shown once, below. SIGHUP reloads the file.\n`);
  process.stdout.write(`${made.token}\n`);
  return 0;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`rempart: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
