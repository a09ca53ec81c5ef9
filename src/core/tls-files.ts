// TLS files the configuration names for a connection Rempart makes (an https upstream's `tls`, the
// cluster store's `cluster.redis.tls`): whom the server's certificate must come from (`caFile`, replacing
// the system's authorities) and the client certificate presented to it (`certFile` + `keyFile`). Read
// before use (at start, at each reload that uses them, by `rempart check`) into one TLS context that every
// connection shares: OpenSSL's own refusals (a client key too small for its security level, say) fail the
// load instead of every connection, and a connection does not parse the files again (tls.connect builds a
// context from `ca`/`cert`/`key` on each call: about 10 ms of the event loop for a 120-certificate
// bundle). A file that cannot be read or parsed, or a key that is not its certificate's, fails the load
// with its owner and path named, never the file's content.
import { MAX_PEM_FILE_BYTES, readPemFile } from './pem-file.ts';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';

export interface TlsMaterial {
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

export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** The largest TLS file read (core/pem-file.ts). */
export const MAX_TLS_FILE_BYTES = MAX_PEM_FILE_BYTES;

/** A client certificate this close to its end is a warning. */
const EXPIRY_WARNING_MS = 30 * 86_400_000;

/**
 * NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment: Rempart's TLS clients check certificates all the
 * same (upstreams: pool.ts tlsConnectOptions; the alert webhook; a `rediss://` store), which whoever set
 * it may not expect: said at start and by `rempart check` rather than left to Node's one line.
 */
export function tlsEnvironmentWarning(env: NodeJS.ProcessEnv): string | null {
  if (env.NODE_TLS_REJECT_UNAUTHORIZED !== '0') return null;
  return (
    'NODE_TLS_REJECT_UNAUTHORIZED=0 is ignored: upstreams, the alert webhook and a rediss:// store check ' +
    'certificates all the same (trust a private authority through upstreams[].tls.caFile or ' +
    'cluster.redis.tls.caFile); unset it'
  );
}

/**
 * `owner` names whose files they are in every message (`upstreams NAME`, `cluster.redis`): errors and
 * warnings read `${owner}: tls.caFile PATH: why`. `now`: the time certificates are judged at (a test's);
 * `appliesAt`: when a renewed file is read again (`reload`; the store's at a restart or an upgrade).
 */
export async function loadTlsFiles(
  owner: string,
  t: TlsFiles,
  now = Date.now(),
  /** When a renewed file applies (said in the expiry warning). */
  appliesAt = 'reload',
): Promise<TlsMaterial> {
  const at = (key: string, file: string) => `${owner}: tls.${key} ${file}`;
  if ((t.certFile === undefined) !== (t.keyFile === undefined))
    throw new Error(
      t.certFile !== undefined
        ? `${at('certFile', t.certFile)}: a client certificate needs its private key (tls.keyFile)`
        : `${at('keyFile', t.keyFile!)}: the key of a client certificate: give tls.certFile too`,
    );
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
        `${at('certFile', t.certFile!)}: expired on ${leaf.validToDate.toISOString()}: servers asking for it refuse the handshake`,
      );
    else if (leaf.validFromDate.getTime() > now)
      warnings.push(`${at('certFile', t.certFile!)}: not valid before ${leaf.validFromDate.toISOString()}`);
    else if (end - now < EXPIRY_WARNING_MS)
      warnings.push(
        `${at('certFile', t.certFile!)}: expires on ${leaf.validToDate.toISOString()} ` +
          `(in ${days(end - now)}): renew it, then ${appliesAt}`,
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
