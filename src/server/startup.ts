// What `rempart` says when it starts: where it listens, what it protects and with what, where the
// admin listener is and how to get a token; and a check, off the start-up path, that the upstreams
// answer at all (a typo in --upstream should be a warning at once, not a 502 on the first request).
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { serverUrls } from '../upstream/schema.ts';

/** The protections in force, in words (from the configuration, so a change there shows here). */
export function describeProtections(config: Config): string[] {
  const out: string[] = [];
  const l = config.limits;
  out.push(
    `request limits (headers ${kib(l.maxHeaderBytes)}, URL ${kib(l.maxUrlBytes)}, body ${kib(l.maxBodyBytes)}, ${l.maxConnectionsPerAddress} connections per address)`,
  );
  const d = config.defense;
  const rules = d.rateLimit.rules;
  if (rules.length > 0)
    out.push(
      `rate limits${mode(d.rateLimit.mode)}: ${rules.map((r) => `${r.id} ${r.ratePerSec}/s burst ${r.burst}`).join(', ')}`,
    );
  out.push(
    `bans on repeated offences${mode(d.bans.mode)} (${d.bans.offences.threshold} in ${d.bans.offences.windowMs / 1000} s)`,
  );
  out.push(
    `attack-level detection${d.level.override !== 'auto' ? ` (pinned to ${d.level.override})` : ''}, challenges from ${d.challenge.atLevel}${mode(d.challenge.mode)}`,
  );
  out.push(`attack signatures${mode(d.signatures.mode)}`);
  const admitted = config.upstreams.filter((u) => u.admission.mode !== 'off');
  out.push(
    admitted.length > 0
      ? `admission control (${admitted.map((u) => `${u.name}: ${u.admission.mode}`).join(', ')})`
      : 'admission control off (set upstreams[].admission in a config file to queue by class)',
  );
  const cached = config.routes.filter((r) => r.cache?.enabled === true).length;
  if (cached > 0) out.push(`response cache on ${cached} route(s)`);
  const rooms = config.routes.filter((r) => r.waitingRoom.enabled).length;
  if (rooms > 0) out.push(`waiting room on ${rooms} route(s)`);
  return out;
}

function kib(n: number): string {
  return n >= 1048576 && n % 1048576 === 0
    ? `${n / 1048576} MiB`
    : n >= 1024 && n % 1024 === 0
      ? `${n / 1024} KiB`
      : `${n} B`;
}

function mode(m: string): string {
  return m === 'enforce' ? '' : ` (${m})`;
}

export interface StartupFacts {
  version: string;
  listeners: string[];
  /** The admin listener's URL, or null when off. */
  admin: string | null;
  /** Why the admin listener is not where it was asked to be ('' when it is). */
  adminNote: string;
  tokenFromEnv: boolean;
  tokensFile: string | undefined;
}

/** The start-up summary for a person (written on standard error, beside the JSON log line). */
export function startupSummary(config: Config, f: StartupFacts): string {
  const lines = [`rempart ${f.version} started`];
  lines.push(`  listening     ${f.listeners.join(', ')}`);
  for (const u of config.upstreams) {
    const routes = config.routes.filter((r) => r.upstream === u.name).map((r) => `${r.host ?? ''}${r.path}`);
    lines.push(
      `  upstream      ${u.name} = ${serverUrls(u).join(' ')}${routes.length > 0 ? ` (${routes.join(', ')})` : ''}`,
    );
  }
  const protections = describeProtections(config);
  lines.push(`  protections   ${protections[0]}`);
  for (const p of protections.slice(1)) lines.push(`                ${p}`);
  if (f.admin === null) lines.push('  admin         off');
  else lines.push(`  admin         ${f.admin}  (/metrics, /dashboard, /api/)`);
  if (f.adminNote !== '') lines.push(`                ${f.adminNote}`);
  if (f.admin !== null) {
    if (f.tokenFromEnv || f.tokensFile !== undefined)
      lines.push(
        `  admin token   ${[f.tokenFromEnv ? 'REMPART_ADMIN_TOKEN (operator)' : '', f.tokensFile !== undefined ? `the tokens in ${f.tokensFile}` : ''].filter(Boolean).join(' and ')}`,
      );
    else
      lines.push(
        '  admin token   none yet: the dashboard and /api/ need one. Restart with REMPART_ADMIN_TOKEN=<16+ random characters>',
        '                (e.g. `export REMPART_ADMIN_TOKEN=$(openssl rand -hex 24)`), or in a config file set admin.tokensFile',
        '                and run `rempart token create --name NAME --scope operator --file FILE` (docs/admin-api.md)',
      );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * '' when something accepts a TCP connection at the URL's host and port within `timeoutMs`, else
 * why not ("does not resolve", "refused the connection"...). Never throws.
 */
export async function probeUpstream(url: string, timeoutMs = 2000): Promise<string> {
  let host: string;
  let port: number;
  try {
    const u = new URL(url);
    host = u.hostname.replace(/^\[|\]$/g, '');
    port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
  } catch {
    return 'is not a valid URL';
  }
  let address = host;
  if (net.isIP(host) === 0) {
    try {
      address = (await lookup(host)).address;
    } catch (err) {
      return `host ${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
    }
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port });
    const done = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer from ${host}:${port} within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(''));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(
        err.code === 'ECONNREFUSED'
          ? `${host}:${port} refused the connection (nothing listens there?)`
          : `cannot connect to ${host}:${port} (${err.code ?? err.message})`,
      ),
    );
  });
}

/** Probe every upstream and warn about those that do not answer; requests are served meanwhile. */
export async function warnUnreachableUpstreams(config: Config, log: Logger, timeoutMs = 2000): Promise<void> {
  await Promise.all(
    config.upstreams.flatMap((u) =>
      serverUrls(u).map(async (url) => {
        const why = await probeUpstream(url, timeoutMs);
        if (why !== '')
          log.warn(
            { upstream: u.name, url, problem: why },
            `upstream ${u.name} cannot be reached at ${url}: ${why}; its requests fail (502/503) until it answers`,
          );
      }),
    ),
  );
}
