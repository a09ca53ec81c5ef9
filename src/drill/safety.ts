// Target safety: the drill only ever sends traffic to loopback unless the operator states, with
// two explicit flags, that they own a remote target.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

export class SafetyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafetyError';
  }
}

export function isLoopback(address: string): boolean {
  if (isIP(address) === 4) return address.startsWith('127.');
  const a = address.toLowerCase();
  return a === '::1' || a === '0:0:0:0:0:0:0:1' || a.startsWith('::ffff:127.');
}

export interface ResolvedTarget {
  url: URL;
  /** scheme://host:port, as given (for Host headers and reports). */
  origin: string;
  /** IP to connect to. */
  address: string;
  port: number;
  /** Source addresses in 127/8 can be bound only when the target is IPv4 loopback. */
  bindSources: boolean;
  remote: boolean;
}

export interface SafetyOptions {
  allowRemote?: boolean;
  iOwnThisTarget?: boolean;
}

/** Parses and resolves a target URL; throws SafetyError unless it is loopback (or remote is doubly allowed). */
export async function resolveTarget(raw: string, what: string, opts: SafetyOptions = {}): Promise<ResolvedTarget> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SafetyError(`${what}: not a valid URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:')
    throw new SafetyError(`${what}: only http:// targets are supported (got ${url.protocol})`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch (e) {
    throw new SafetyError(`${what}: cannot resolve ${host}: ${(e as Error).message}`);
  }
  const allLoopback = addresses.length > 0 && addresses.every(isLoopback);
  if (!allLoopback && !(opts.allowRemote && opts.iOwnThisTarget)) {
    throw new SafetyError(
      `${what}: refusing to send traffic to ${host} (${addresses.join(', ') || 'no address'}): not a loopback address. ` +
        'The drill is an attack generator; it targets 127.0.0.0/8 or ::1 only, unless both --allow-remote and ' +
        '--i-own-this-target are given for a target you own.',
    );
  }
  const v4 = addresses.find((a) => isIP(a) === 4);
  const address = v4 ?? addresses[0];
  if (address === undefined) throw new SafetyError(`${what}: ${host} resolves to no address`);
  const port = url.port ? Number(url.port) : 80;
  return {
    url,
    origin: url.origin,
    address,
    port,
    bindSources: allLoopback && v4 !== undefined && v4.startsWith('127.'),
    remote: !allLoopback,
  };
}

/** Source address n (0-based) of population block b: 127.b.x.y, never .0 or .255 in the last octets. */
export function sourceAddress(block: number, n: number): string {
  return `127.${block}.${1 + Math.floor(n / 254)}.${1 + (n % 254)}`;
}
