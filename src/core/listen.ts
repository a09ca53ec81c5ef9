// Listener plumbing shared by the gateway, `rempart check` and the demo: addresses, TLS files, binding.
import tls from 'node:tls';
import { readPemFile } from './pem-file.ts';
import { createServer, type Server } from 'node:net';

/** Read a listener's certificate and key (start-up, reload and `rempart check` share this). */
export async function loadSecureContext(files: { certFile: string; keyFile: string }): Promise<tls.SecureContext> {
  // Regular files of at most 1 MiB: a FIFO or a device named by mistake fails the load, not hangs it.
  const [cert, key] = await Promise.all([
    readPemFile(files.certFile, `certFile ${files.certFile}`),
    readPemFile(files.keyFile, `keyFile ${files.keyFile}`),
  ]);
  return tls.createSecureContext({ cert: cert.bytes, key: key.bytes, minVersion: 'TLSv1.2' });
}

export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(address.slice(colon + 1)) };
}

/**
 * SO_REUSEPORT on every listening socket where the kernel balances new connections between the sockets
 * sharing an address (Linux): a successor (`rempart --upgrade`) binds the same addresses while this process
 * still serves, then this one closes its sockets and drains (docs/operations.md, "Reloads and upgrades").
 */
export const REUSE_PORT = process.platform === 'linux';

/**
 * Bind `server` to `address`, with SO_REUSEPORT where supported. Unless `join` (an upgrade, or a worker
 * beside its siblings), an address another socket holds is refused with EADDRINUSE, as without
 * SO_REUSEPORT: a second gateway started by mistake must fail, not silently take half the connections.
 */
export async function listenOn(server: Server, address: string, join: boolean, backlog?: number): Promise<void> {
  const { host, port } = splitHostPort(address);
  if (REUSE_PORT && !join && port !== 0) await bindable(host, port);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog, reusePort: REUSE_PORT }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

/** Rejects with the bind error (EADDRINUSE...) when nothing could bind host:port alone now. */
function bindable(host: string, port: number): Promise<void> {
  const probe = createServer();
  return new Promise((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}
