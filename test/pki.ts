// A private PKI for the TLS tests, made with the openssl command line: authorities and the certificates
// they sign (EC P-256 unless told, valid two days), in a directory the caller owns.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

export const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** `${name}.pem` and `${name}.key`: a self-signed authority. */
export function authority(dir: string, name: string): void {
  openssl(
    dir,
    'req',
    '-x509',
    ...EC,
    '-subj',
    `/CN=${name}`,
    '-days',
    '2',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
  );
}

/** `${out}.pem` and `${out}.key`: a certificate for `cn` signed by authority `ca`, with `ext` (openssl's -extfile). */
export function issue(dir: string, ca: string, out: string, cn: string, ext: string, keyArgs = EC): void {
  writeFileSync(join(dir, `${out}.ext`), ext);
  openssl(dir, 'req', ...keyArgs, '-subj', `/CN=${cn}`, '-keyout', `${out}.key`, '-out', `${out}.csr`);
  openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${out}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    `${out}.ext`,
    '-out',
    `${out}.pem`,
  );
}
