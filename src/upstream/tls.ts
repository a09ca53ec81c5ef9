// The files of `upstreams[].tls` (whom an https upstream's certificate must come from, and the client
// certificate Rempart presents to it), read before a config is compiled: at start, at each reload and by
// `rempart check`. compileRuntime is synchronous and reads no file; it takes what this returns. A file
// that cannot be read or parsed, or a key that is not its certificate's, fails the whole load with the
// upstream and the path named (never the file's content), so a reload keeps the running config.
//
// The files become one TLS context per load, which every connection to the upstream's servers shares:
// built here, OpenSSL's own refusals (a client key too small for its security level, say) fail the load
// instead of every connection, and a connection does not parse the files again (tls.connect builds a
// context from `ca`/`cert`/`key` on each call: about 10 ms of the event loop for a 120-certificate bundle).
import { MAX_PEM_FILE_BYTES, readPemFile } from '../core/pem-file.ts';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';

export interface UpstreamTlsMaterial {
  /** Its authorities (replacing the system's when `caFile` is given) and its client certificate. */
  readonly secureContext: tls.SecureContext;
  /** A digest of the files: a file renewed on reload changes the server's client key, so new connections use it. */
  readonly digest: string;
  /**
   * What works today and will not for long, or should not be so: a client certificate expired, not yet
   * valid or expiring within 30 days, expired authorities, a key file others than its owner can read.
   * `rempart check` prints them, the start and each reload log them.
   */
  readonly warnings: readonly string[];
}

/** By upstream name. */
export type UpstreamTlsFiles = ReadonlyMap<string, UpstreamTlsMaterial>;

export const NO_UPSTREAM_TLS: UpstreamTlsFiles = new Map();

/** The largest file `upstreams[].tls` reads (core/pem-file.ts). */
export const MAX_TLS_FILE_BYTES = MAX_PEM_FILE_BYTES;

interface TlsFilesConfig {
  readonly name: string;
  readonly tls?: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string };
}

/** A client certificate this close to its end is a warning. */
const EXPIRY_WARNING_MS = 30 * 86_400_000;

/** `now`: the time certificates are judged at (a test's). */
export async function loadUpstreamTls(
  upstreams: readonly TlsFilesConfig[],
  now = Date.now(),
): Promise<UpstreamTlsFiles> {
  const out = new Map<string, UpstreamTlsMaterial>();
  for (const u of upstreams) if (u.tls !== undefined) out.set(u.name, await loadOne(u.name, u.tls, now));
  return out;
}

/**
 * NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment: Rempart's TLS clients check certificates all the
 * same (upstreams: pool.ts tlsConnectOptions; the alert webhook; a `rediss://` store), which whoever set
 * it may not expect: said at start and by `rempart check` rather than left to Node's one line.
 */
export function tlsEnvironmentWarning(env: NodeJS.ProcessEnv): string | null {
  if (env.NODE_TLS_REJECT_UNAUTHORIZED !== '0') return null;
  return (
    'NODE_TLS_REJECT_UNAUTHORIZED=0 is ignored: upstreams, the alert webhook and a rediss:// store check ' +
    'certificates all the same (trust an origin through upstreams[].tls.caFile); unset it'
  );
}

/** Every warning of `files`, upstream by upstream. */
export function upstreamTlsWarnings(files: UpstreamTlsFiles): string[] {
  return [...files.values()].flatMap((m) => m.warnings);
}

async function loadOne(name: string, t: NonNullable<TlsFilesConfig['tls']>, now: number): Promise<UpstreamTlsMaterial> {
  const at = (key: string, file: string) => `upstreams ${name}: tls.${key} ${file}`;
  const warnings: string[] = [];
  let keyMode = 0;
  const read = async (key: string, file: string | undefined): Promise<Buffer | undefined> => {
    if (file === undefined) return undefined;
    const { bytes, mode } = await readPemFile(file, at(key, file));
    if (key === 'keyFile') keyMode = mode;
    return bytes;
  };
  const [ca, cert, key] = await Promise.all([
    read('caFile', t.caFile),
    read('certFile', t.certFile),
    read('keyFile', t.keyFile),
  ]);
  const authorities = ca === undefined ? [] : certificates(ca, at('caFile', t.caFile!));
  if (ca !== undefined && authorities.length === 0)
    throw new Error(`${at('caFile', t.caFile!)}: no PEM certificate in it${derHint(ca)}`);
  const expired = authorities.filter((c) => c.validToDate.getTime() <= now);
  if (expired.length > 0)
    warnings.push(
      `${at('caFile', t.caFile!)}: ${expired.length} of its ${authorities.length} authorities expired ` +
        `(${expired
          .slice(0, 3)
          .map((c) => `${c.subject.replaceAll('\n', ', ')} on ${c.validToDate.toISOString()}`)
          .join('; ')}): nothing they signed is trusted`,
    );
  // Authorities are shared material: a key in the file is the wrong file (an origin's key and certificate,
  // an authority's own key), and a copy of a key the gateway must not hold.
  if (ca !== undefined && /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(ca.toString('latin1')))
    throw new Error(`${at('caFile', t.caFile!)}: holds a private key; give the authorities' certificates only`);
  if (cert !== undefined && key !== undefined) {
    const chain = certificates(cert, at('certFile', t.certFile!));
    if (chain.length === 0) throw new Error(`${at('certFile', t.certFile!)}: no PEM certificate in it${derHint(cert)}`);
    const leaf = chain[0]!;
    const end = leaf.validToDate.getTime();
    if (end <= now)
      warnings.push(
        `${at('certFile', t.certFile!)}: expired on ${leaf.validToDate.toISOString()}: origins asking for it refuse the handshake`,
      );
    else if (leaf.validFromDate.getTime() > now)
      warnings.push(`${at('certFile', t.certFile!)}: not valid before ${leaf.validFromDate.toISOString()}`);
    else if (end - now < EXPIRY_WARNING_MS)
      warnings.push(
        `${at('certFile', t.certFile!)}: expires on ${leaf.validToDate.toISOString()} ` +
          `(in ${days(end - now)}): renew it, then reload`,
      );
    if ((keyMode & 0o077) !== 0)
      warnings.push(
        `${at('keyFile', t.keyFile!)}: others than its owner may read or write it (mode ` +
          `${keyMode.toString(8).padStart(4, '0')}): chmod 600, owned by Rempart's user`,
      );
    let privateKey: ReturnType<typeof createPrivateKey>;
    try {
      privateKey = createPrivateKey(key);
    } catch {
      // OpenSSL's own message can quote a line of the file: not repeated here.
      if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(key.toString('latin1')))
        throw new Error(
          `${at('keyFile', t.keyFile!)}: not an unencrypted PEM private key: it is encrypted, and Rempart ` +
            'takes no passphrase (`openssl pkey -in KEY -out PLAIN`, then `chmod 600 PLAIN`)',
        );
      throw new Error(`${at('keyFile', t.keyFile!)}: not an unencrypted PEM private key${derHint(key)}`);
    }
    if (!new X509Certificate(cert).checkPrivateKey(privateKey))
      throw new Error(`${at('keyFile', t.keyFile!)}: not the key of ${t.certFile}`);
  }
  const pair = cert !== undefined && key !== undefined ? { cert, key } : {};
  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({ ...(ca === undefined ? {} : { ca }), ...pair });
  } catch (err) {
    // Which file: the client certificate if it is refused alone, else the authorities.
    const where = cert !== undefined && refusal(pair) !== null ? at('certFile', t.certFile!) : at('caFile', t.caFile!);
    throw new Error(`${where}: refused by TLS (${reasonOf(err)})`);
  }
  const h = createHash('sha256');
  for (const b of [ca, cert, key])
    h.update(b === undefined ? '-|' : `${createHash('sha256').update(b).digest('hex')}|`);
  return { secureContext, digest: h.digest('hex').slice(0, 32), warnings };
}

/** A file that starts as DER does (an ASN.1 SEQUENCE) says how to make it PEM. */
function derHint(bytes: Buffer): string {
  return bytes[0] === 0x30
    ? ' (it looks like DER: `openssl x509 -inform der` or `openssl pkey -inform der` makes PEM)'
    : '';
}

function days(ms: number): string {
  const n = Math.floor(ms / 86_400_000);
  return n === 1 ? '1 day' : `${n} days`;
}

function refusal(o: tls.SecureContextOptions): unknown {
  try {
    tls.createSecureContext(o);
    return null;
  } catch (err) {
    return err;
  }
}

/** OpenSSL's reason ('ee key too small'), never its whole message. */
function reasonOf(err: unknown): string {
  const e = err as { reason?: unknown; code?: unknown };
  return typeof e.reason === 'string' ? e.reason : typeof e.code === 'string' ? e.code : 'unusable';
}

/** The certificates of a PEM bundle, each parsed (a broken one fails with `where`). */
function certificates(pem: Buffer, where: string): X509Certificate[] {
  const text = pem.toString('latin1');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new Error(`${where}: a certificate that does not parse (${(err as Error).message})`);
    }
  });
}
