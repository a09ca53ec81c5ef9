// The files of `upstreams[].tls` (whom an https upstream's certificate must come from, and the client
// certificate Rempart presents to it), read before a config is compiled: at start, at each reload and by
// `rempart check` (src/core/tls-files.ts). compileRuntime is synchronous and reads no file; it takes what
// this returns. A file that fails fails the whole load with the upstream and the path named, so a reload
// keeps the running config. The files become one TLS context per load, which every connection to the
// upstream's servers shares.
import { loadTlsFiles, type TlsFiles, type TlsMaterial } from '../core/tls-files.ts';

export type UpstreamTlsMaterial = TlsMaterial;

/** By upstream name. */
export type UpstreamTlsFiles = ReadonlyMap<string, UpstreamTlsMaterial>;

export const NO_UPSTREAM_TLS: UpstreamTlsFiles = new Map();

interface TlsFilesConfig {
  readonly name: string;
  readonly tls?: TlsFiles;
}

/** `now`: the time certificates are judged at (a test's). */
export async function loadUpstreamTls(
  upstreams: readonly TlsFilesConfig[],
  now = Date.now(),
): Promise<UpstreamTlsFiles> {
  const out = new Map<string, UpstreamTlsMaterial>();
  for (const u of upstreams)
    if (u.tls !== undefined) out.set(u.name, await loadTlsFiles(`upstreams ${u.name}`, u.tls, now));
  return out;
}

/** Every warning of `files`, upstream by upstream. */
export function upstreamTlsWarnings(files: UpstreamTlsFiles): string[] {
  return [...files.values()].flatMap((m) => m.warnings);
}
