// `npm start`: the reference postal service with Rempart in front, on loopback, printing the URLs
// to open. Everything runs in this one process; Ctrl-C stops it.
import { loadConfigFile } from '../../src/config/load.ts';
import { createGateway } from '../../src/app/gateway.ts';
import { guardUnhandledRejections } from '../../src/server/process-guard.ts';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { portProblem } from '../../src/app/preflight.ts';
import { splitHostPort } from '../../src/core/listen.ts';
import { UsageError } from '../../src/core/user-error.ts';
import type { CommandModule } from '../../src/cli.ts';
import { startPostalOrigin, startSmsApprovals } from './origin.ts';

// fileURLToPath: a path with a space is percent-encoded in the URL. The package build copies the
// config beside the compiled demo (dist/examples/postal/).
const configFile = fileURLToPath(new URL('./rempart.yaml', import.meta.url));
/** How to run `rempart` from here: the checkout's bin, or the installed package's command. */
const rempartCommand = existsSync(new URL('../../src/cli.ts', import.meta.url)) ? 'node bin/rempart.js' : 'npx rempart';

export const DEMO_USAGE = `usage: rempart demo [--listen HOST:PORT] [--admin HOST:PORT] [--origin-port N] [--sms-port N]

The reference postal service with Rempart in front, all on this machine (\`npm start\`). Ctrl-C stops it.

  --listen HOST:PORT    Rempart's listener (default 127.0.0.1:8080)
  --admin HOST:PORT     metrics, dashboard and admin API (default 127.0.0.1:9180)
  --origin-port N       the postal origin (default 3000)
  --sms-port N          the SMS approvals service (default 3001)
  -h, --help            this help

A port another program holds (a dev server on 3000, another demo...) is replaced by a free one, and
the demo says which, and the flag that chooses it. 0 picks a free port.
`;

interface DemoPorts {
  listen: string;
  admin: string;
  origin: number;
  sms: number;
}

/** The flags, validated; a bad one is a UsageError (exit 2 with the usage). */
export function parseDemoArgs(argv: string[]): { ports: DemoPorts; given: Set<string>; help: boolean } {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        admin: { type: 'string' },
        'origin-port': { type: 'string' },
        'sms-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message, DEMO_USAGE);
  }
  const address = (flag: string, def: string): string => {
    const v = values[flag];
    if (v === undefined) return def;
    if (
      typeof v !== 'string' ||
      !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(v) ||
      splitHostPort(v).port > 65535
    )
      throw new UsageError(`--${flag} takes HOST:PORT, e.g. 127.0.0.1:8080 (got ${JSON.stringify(v)})`, DEMO_USAGE);
    return v;
  };
  const port = (flag: string, def: number): number => {
    const v = values[flag];
    if (v === undefined) return def;
    const n = Number(v);
    if (typeof v !== 'string' || !/^\d{1,5}$/.test(v) || n > 65535)
      throw new UsageError(`--${flag} takes a port number from 0 to 65535 (got ${JSON.stringify(v)})`, DEMO_USAGE);
    return n;
  };
  const given = new Set(['listen', 'admin', 'origin-port', 'sms-port'].filter((f) => values[f] !== undefined));
  return {
    help: values.help === true,
    ports: {
      listen: address('listen', '127.0.0.1:8080'),
      admin: address('admin', '127.0.0.1:9180'),
      origin: port('origin-port', 3000),
      sms: port('sms-port', 3001),
    },
    given,
  };
}

interface Moved {
  what: string;
  flag: string;
  port: number;
}

/**
 * A port another program holds becomes 0 (the system picks a free one), remembered in `moved` so the
 * banner can say which port was taken, which one is used instead and which flag chooses it. A demo
 * that starts beats one that stops on the first busy port (3000 is every dev server's).
 */
async function freeOrMove(host: string, port: number, what: string, flag: string, moved: Moved[]): Promise<number> {
  if ((await portProblem(`${host.includes(':') ? `[${host}]` : host}:${port}`)) === '') return port;
  moved.push({ what, flag, port });
  return 0;
}

/** Start the demo; it runs until SIGINT or SIGTERM, which exit the process (`--help`: print the usage and return). */
export async function runDemo(argv: string[]): Promise<void> {
  const { ports, given, help } = parseDemoArgs(argv);
  if (help) {
    process.stdout.write(DEMO_USAGE);
    return;
  }
  const loaded = await loadConfigFile(configFile);
  const moved: Moved[] = [];
  const listen = splitHostPort(ports.listen);
  const admin = splitHostPort(ports.admin);
  const originPort = await freeOrMove('127.0.0.1', ports.origin, 'postal origin', 'origin-port', moved);
  const smsPort = await freeOrMove('127.0.0.1', ports.sms, 'sms approvals', 'sms-port', moved);
  const listenPort = await freeOrMove(listen.host, listen.port, 'Rempart', 'listen', moved);
  const adminPort = await freeOrMove(admin.host, admin.port, 'admin', 'admin', moved);
  const hostPort = (host: string, port: number) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

  // The dashboard and the admin API need a token: without REMPART_ADMIN_TOKEN, the demo makes one for
  // this run and shows it below (a demo on loopback; a deployment uses `rempart token create`).
  let demoToken = '';
  if (process.env.REMPART_ADMIN_TOKEN === undefined || process.env.REMPART_ADMIN_TOKEN === '') {
    demoToken = `demo-${randomBytes(18).toString('base64url')}`;
    process.env.REMPART_ADMIN_TOKEN = demoToken;
  }
  const postal = await startPostalOrigin({ port: originPort, workers: 8, serviceTimeMs: 20, queueLength: 64 });
  const sms = await startSmsApprovals({ port: smsPort });
  // The config names the usual ports: use the ones chosen and the origins as started.
  const config = {
    ...loaded,
    listeners: loaded.listeners.map((l, i) => (i === 0 ? { ...l, address: hostPort(listen.host, listenPort) } : l)),
    admin: { ...loaded.admin, address: hostPort(admin.host, adminPort) },
    upstreams: loaded.upstreams.map((u) => ({ ...u, url: u.name === 'sms-approvals' ? sms.url : postal.url })),
  };
  const gateway = await createGateway(config);
  guardUnhandledRejections(gateway.log);
  await gateway.start();
  const bound = gateway.addresses();
  const front = `http://${hostPort(listen.host, bound.listeners[0]!.port)}`;
  const adminUrl = `http://${hostPort(admin.host, bound.admin!.port)}`;
  const used: Record<string, number> = {
    'origin-port': postal.port,
    'sms-port': sms.port,
    listen: bound.listeners[0]!.port,
    admin: bound.admin!.port,
  };
  const notes = moved.map(
    (m) =>
      `port ${m.port} (${m.what}) is taken by another program: using ${used[m.flag]} instead (--${m.flag} chooses another)`,
  );
  process.stdout.write(
    [
      '',
      'Rempart demo: the reference postal service behind Rempart.',
      ...notes.map((n) => `  note: ${n}`),
      `  site (through Rempart)   ${front}/`,
      `  parcel tracking          ${front}/track/LP123456789FR`,
      `  login (user alice)       curl -i -X POST ${front}/login -d 'user=alice&password=alice-pass'`,
      `  payment approval         curl -i -X POST ${front}/payments/approve -H 'content-type: application/json' -d '{"paymentId":"p-1"}'`,
      `  metrics                  ${adminUrl}/metrics`,
      `  dashboard                ${adminUrl}/dashboard   token: ${demoToken !== '' ? `${demoToken} (this run only)` : 'REMPART_ADMIN_TOKEN'}`,
      `  rehearse an attack       ${rempartCommand} drill botnet-5x --target ${front} --origin ${postal.url} --metrics ${adminUrl}/metrics`,
      `  origin (unprotected)     ${postal.url}/   sms approvals ${sms.url}`,
      `  config                   ${configFile}${moved.length > 0 || given.size > 0 ? ' (with the ports above)' : ''}`,
      `  failover rehearsal       kill -USR2 ${process.pid}   (postal origin down; again to bring it back)`,
      '  Ctrl-C to stop.',
      '',
    ].join('\n') + '\n',
  );
  // Failover rehearsal: `kill -USR2 <pid>` takes the postal origin down (its connections dropped,
  // new ones closed, as if its process died) and the next one brings it back. Payment approvals
  // fall over to the SMS service, tracking is answered stale, the rest gets the status page.
  let postalDown = false;
  process.on('SIGUSR2', () => {
    postalDown = !postalDown;
    postal.setDown(postalDown);
    process.stdout.write(
      `${JSON.stringify({ time: new Date().toISOString(), demo: postalDown ? 'postal origin down (SIGUSR2)' : 'postal origin back (SIGUSR2)' })}\n`,
    );
  });
  const stop = async () => {
    await gateway.stop(2000);
    await Promise.all([postal.close(), sms.close()]);
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/** `rempart demo` (bin/rempart.js hands it to src/cli.ts): runs until Ctrl-C, which exits the process. */
export const demoCommand: CommandModule = {
  usage: DEMO_USAGE,
  async run(argv) {
    await runDemo(argv);
    return new Promise<number>(() => {});
  },
};

if (import.meta.main) {
  runDemo(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`demo: ${(err as Error).message}\n${err instanceof UsageError ? `\n${err.usage}` : ''}`);
    process.exit(err instanceof UsageError ? 2 : 1);
  });
}
