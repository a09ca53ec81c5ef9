// Listener plumbing shared by the gateway, `rempart check` and the demo: addresses and TLS files.
import tls from 'node:tls';
import { readFile } from 'node:fs/promises';

/** Read a listener's certificate and key (start-up, reload and `rempart check` share this). */
export async function loadSecureContext(files: { certFile: string; keyFile: string }): Promise<tls.SecureContext> {
  const [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
  return tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
}

export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(address.slice(colon + 1)) };
}
