// A listener's certificate and key are read as the upstreams' TLS files are (src/core/pem-file.ts): a
// FIFO named by mistake failed start-up, a reload or `rempart check` by hanging (the read never ends), and
// /dev/zero filled memory first. Now each is a clear error naming the file, at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadSecureContext } from '../src/core/listen.ts';
import { runCli, selfSignedCert, tempDir } from './helpers.ts';
import { writeFileSync } from 'node:fs';

test('a FIFO, a device or a directory as a listener certificate or key: a clear error at once, not a hang', async (t) => {
  const cert = selfSignedCert(t);
  const dir = tempDir(t, 'rempart-listener-tls-');
  const fifo = join(dir, 'cert.pem');
  execFileSync('mkfifo', [fifo]);
  const t0 = performance.now();
  await assert.rejects(
    loadSecureContext({ certFile: fifo, keyFile: cert.keyFile }),
    /certFile .*cert\.pem: not a regular file/,
  );
  await assert.rejects(
    loadSecureContext({ certFile: cert.certFile, keyFile: '/dev/zero' }),
    /keyFile \/dev\/zero: not a regular file/,
  );
  await assert.rejects(loadSecureContext({ certFile: dir, keyFile: cert.keyFile }), /not a regular file/);
  await assert.rejects(
    loadSecureContext({ certFile: join(dir, 'gone.pem'), keyFile: cert.keyFile }),
    /gone\.pem: ENOENT/,
  );
  assert.ok(performance.now() - t0 < 2000, 'no read waited on the FIFO');
  // The real files still load.
  assert.ok(await loadSecureContext(cert));
  // `rempart check` says it, and ends.
  const cfg = join(dir, 'rempart.yaml');
  writeFileSync(
    cfg,
    [
      'version: 1',
      `listeners: [{ address: "127.0.0.1:0", tls: { certFile: "${fifo}", keyFile: "${cert.keyFile}" } }]`,
      'admin: { address: "off" }',
      'upstreams: [{ name: o, url: "http://127.0.0.1:1" }]',
      'routes: [{ name: d, path: "/*", upstream: o }]',
      '',
    ].join('\n'),
  );
  const r = await runCli(['check', cfg]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /listeners\[0\]\.tls: certFile .*cert\.pem: not a regular file/);
});
