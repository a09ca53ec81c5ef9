// Start a throw-away redis-server (or valkey-server) on a free loopback port for the cluster tests;
// `skip` says why when neither binary exists (CI installs redis-server: .ci/run).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { freePort, waitFor } from './helpers.ts';

const CANDIDATES = [
  '/usr/bin/redis-server',
  '/usr/bin/valkey-server',
  '/usr/local/bin/redis-server',
  '/usr/local/bin/valkey-server',
];

export const redisBinary: string | null =
  process.env.REMPART_TEST_REDIS_SERVER ?? CANDIDATES.find((p) => existsSync(p)) ?? null;
export const skipRedis: string | false =
  redisBinary === null ? 'no redis-server nor valkey-server on this machine (apt-get install redis-server)' : false;

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** Kill it (SIGKILL: a crash, not a shutdown). */
  kill(): Promise<void>;
  /** Start it again on the same port, empty. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** True once something accepts connections on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

async function waitListening(port: number, ms = 5000): Promise<void> {
  await waitFor(() => accepts(port), { timeoutMs: ms, intervalMs: 30, message: `redis-server to listen on ${port}` });
}

/** A TLS-only server (`--port 0 --tls-port`): its certificate, key and the authority of the clients' certificates. */
export interface RedisTls {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  /** `tls-auth-clients yes`: a client without a certificate signed by `ca` is refused. */
  readonly authClients: boolean;
}

export async function startRedis(tls?: RedisTls): Promise<RedisServer> {
  if (redisBinary === null) throw new Error('no redis-server');
  const port = await freePort();
  const listen =
    tls === undefined
      ? ['--port', String(port)]
      : [
          ...['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.cert, '--tls-key-file', tls.key],
          ...['--tls-ca-cert-file', tls.ca, '--tls-auth-clients', tls.authClients ? 'yes' : 'no'],
        ];
  let child: ChildProcess | null = null;
  const launch = async () => {
    child = spawn(
      redisBinary,
      [...listen, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
      { stdio: 'ignore' },
    );
    await waitListening(port);
  };
  const kill = async () => {
    const c = child as ChildProcess | null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
    child = null;
  };
  await launch();
  return {
    port,
    url: `${tls === undefined ? 'redis' : 'rediss'}://127.0.0.1:${port}`,
    kill,
    restart: launch,
    stop: kill,
  };
}
