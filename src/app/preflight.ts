// `rempart check` beyond the schema: everything start-up reads or binds, read and bound the same way
// (the very loaders createGateway calls), so a file that passes `check` does not then fail to start.
// Problems (exit 1): a TLS certificate or key, a key file, the tokens file, a JWT key, the webhook
// files, the cluster store's URL file and TLS files, or the audit database's directory that cannot be
// read or used. Warnings (exit 0): a port some
// other process holds now (it may be this gateway's own running copy, about to be restarted), and a
// state file that cannot be written (the gateway starts, but keeps nothing across restarts); for an
// upgrade (`check --upgrade`, and the start of a process with `--upgrade`), a kernel that resets the
// connections queued on the old process's sockets at the hand-over (net.ipv4.tcp_migrate_req 0).
import { access, constants, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/schema.ts';
import { loadSecureContext, splitHostPort } from '../core/listen.ts';
import { tlsEnvironmentWarning } from '../core/tls-files.ts';
import { loadUpstreamTls, upstreamTlsWarnings } from '../upstream/tls.ts';
import { loadKey } from '../phases/waiting-room/ticket.ts';
import { loadChallengeKeys } from '../phases/challenge/keys.ts';
import { JwtVerifier, type JwtSettings } from '../phases/challenge/jwt.ts';
import { loadTokens } from '../control/api.ts';
import { loadWebhookTarget } from '../control/alerts.ts';
import { resolveStateFile } from './state-file.ts';
import { NO_STORE_URL, storeTls, storeUrl } from './cluster.ts';
import { upstreamWarnings } from '../upstream/schema.ts';

export interface PreflightResult {
  readonly problems: string[];
  readonly warnings: string[];
}

/**
 * `configFile`: the file `config` was read from (where `state.file: auto` puts the state file).
 * `upgrade`: the file is for a binary upgrade's successor (`check --upgrade`): the kernel is checked too.
 */
export async function preflight(
  config: Config,
  env: NodeJS.ProcessEnv = process.env,
  configFile?: string,
  upgrade = false,
): Promise<PreflightResult> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const attempt = async (where: string, load: () => Promise<unknown>) => {
    try {
      await load();
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  };
  const checks: Promise<void>[] = [];
  config.listeners.forEach((l, i) => {
    if (l.tls) checks.push(attempt(`listeners[${i}].tls`, () => loadSecureContext(l.tls!)));
  });
  // Its messages name the upstream and the file already.
  config.upstreams.forEach((u) => {
    if (u.tls !== undefined)
      checks.push(
        loadUpstreamTls([u]).then(
          (files) => void warnings.push(...upstreamTlsWarnings(files)),
          (err: unknown) => void problems.push((err as Error).message),
        ),
      );
  });
  if (config.cluster.store === 'redis') checks.push(checkStore(config.cluster, env, problems, warnings));
  checks.push(attempt('waitingRoom.keyFile', () => loadKey(env, config.waitingRoom.keyFile)));
  checks.push(attempt('defense.challenge.keyFile', () => loadChallengeKeys(env, config.defense.challenge.keyFile)));
  const jwt = config.defense.familiarity.jwt;
  if (jwt !== undefined)
    checks.push(attempt('defense.familiarity.jwt.keyFile', () => JwtVerifier.load(jwt as JwtSettings)));
  checks.push(attempt('admin.tokensFile', () => loadTokens(env, config.admin.tokensFile)));
  checks.push(attempt('alerts.webhook', () => loadWebhookTarget(env, config.alerts.webhook)));
  const auditFile = config.audit.file;
  if (auditFile !== undefined && auditFile !== ':memory:')
    checks.push(attempt('audit.file', () => writableDirectory(path.dirname(path.resolve(auditFile)))));
  await Promise.all(checks);
  // Never a problem: without its state file the gateway starts all the same, with nothing kept.
  const stateFile = resolveStateFile(config.state.file, configFile ?? null, env);
  if (stateFile !== null) {
    const why = await writableDirectory(path.dirname(stateFile)).then(
      () => '',
      (err: unknown) => (err as Error).message,
    );
    if (why !== '')
      warnings.push(
        `state.file: ${stateFile} cannot be written (${why}): bans and the attack level will not survive a restart`,
      );
  }

  warnings.push(...upstreamWarnings(config.upstreams));
  const tlsEnv = tlsEnvironmentWarning(env);
  if (tlsEnv !== null) warnings.push(tlsEnv);

  if (upgrade) {
    const why = await upgradeKernelProblem();
    if (why !== '') warnings.push(why);
  }

  const addresses = config.listeners.map((l, i) => ({ where: `listeners[${i}].address`, address: l.address }));
  if (config.admin.address !== 'off') addresses.push({ where: 'admin.address', address: config.admin.address });
  for (const { where, address } of addresses) {
    const why = await portProblem(address);
    if (why !== '') warnings.push(`${where}: ${address} ${why}`);
  }
  return { problems, warnings };
}

/**
 * `cluster.store: redis`: the URL as start-up finds it (a `urlFile` that cannot be read is a problem; no
 * URL at all only a warning, as REMPART_REDIS_URL may be set where the gateway runs and not where it is
 * checked) and `cluster.redis.tls`'s files, loaded as start-up loads them.
 */
async function checkStore(
  cfg: Config['cluster'],
  env: NodeJS.ProcessEnv,
  problems: string[],
  warnings: string[],
): Promise<void> {
  let url: string | null = null;
  try {
    url = await storeUrl(cfg, env);
    if (url === null) warnings.push(`${NO_STORE_URL} before the gateway starts`);
  } catch (err) {
    problems.push((err as Error).message);
  }
  try {
    warnings.push(...((await storeTls(cfg, url))?.warnings ?? []));
  } catch (err) {
    problems.push((err as Error).message);
  }
}

export const MIGRATE_REQ = '/proc/sys/net/ipv4/tcp_migrate_req';

/**
 * '' when the kernel moves the connections queued on a closing SO_REUSEPORT socket to a sibling (Linux
 * 5.14+ with net.ipv4.tcp_migrate_req = 1), else why an upgrade's hand-over resets them. Not Linux: ''
 * (`--upgrade` is refused there anyway: the address is held).
 */
export async function upgradeKernelProblem(file = MIGRATE_REQ): Promise<string> {
  if (process.platform !== 'linux') return '';
  const fix = 'install deploy/sysctl/90-rempart.conf (docs/operations.md#reloads-and-upgrades)';
  const value = await readFile(file, 'utf8').then(
    (v) => v.trim(),
    () => null,
  );
  if (value === null)
    return `kernel: no net.ipv4.tcp_migrate_req (Linux < 5.14): at an upgrade's hand-over, connections queued on the old process's sockets are reset`;
  if (value === '0')
    return `kernel: net.ipv4.tcp_migrate_req is 0: at an upgrade's hand-over, connections queued on the old process's sockets are reset; ${fix}`;
  return '';
}

/** The audit database is created at start-up: its directory must exist and be writable. */
async function writableDirectory(dir: string): Promise<void> {
  const s = await stat(dir);
  if (!s.isDirectory()) throw new Error(`${dir} is not a directory`);
  await access(dir, constants.W_OK);
}

/** '' when the address can be bound now, else why not (held by another process, not an address of this machine...). */
export function portProblem(address: string): Promise<string> {
  const { host, port } = splitHostPort(address);
  if (port === 0) return Promise.resolve('');
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      resolve(
        err.code === 'EADDRINUSE'
          ? 'is in use by another process now (start-up will fail unless it is freed)'
          : err.code === 'EACCES'
            ? 'cannot be bound by this user (ports below 1024 need privileges)'
            : `cannot be bound: ${err.code ?? err.message}`,
      );
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve('')));
  });
}
