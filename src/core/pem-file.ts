// Reading a PEM file the configuration names (listener certificates and keys, upstreams' authorities
// and client certificates): a regular file of at most MAX_PEM_FILE_BYTES. A FIFO never ends the read
// (the start, a reload or `rempart check` hung) and /dev/zero fills memory before it fails; both are
// refused with the path named, never the content.
import { readFile, stat } from 'node:fs/promises';

/** The largest PEM file read: 1 MiB, five times Node's whole bundle of authorities. */
export const MAX_PEM_FILE_BYTES = 1 << 20;

/** The file's bytes and its permission bits; errors say `${where}: why` (an errno code, or the reason). */
export async function readPemFile(file: string, where: string): Promise<{ bytes: Buffer; mode: number }> {
  const failed = (err: unknown) =>
    new Error(`${where}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  const info = await stat(file).catch((err: unknown) => {
    throw failed(err);
  });
  if (!info.isFile()) throw new Error(`${where}: not a regular file`);
  if (info.size > MAX_PEM_FILE_BYTES)
    throw new Error(`${where}: ${info.size} bytes, more than the ${MAX_PEM_FILE_BYTES} a PEM file may hold`);
  try {
    return { bytes: await readFile(file), mode: info.mode & 0o777 };
  } catch (err) {
    throw failed(err);
  }
}
