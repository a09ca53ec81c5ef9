// Lint of the deployment files (deploy/): what can be checked without Docker or a cluster. The
// Kubernetes manifest parses, its objects refer to each other consistently, and the Rempart config it
// carries passes Rempart's own validation; the Dockerfile pins its base by digest, builds from the
// packed package, runs non-root with a working HEALTHCHECK and keeps the admin port unpublished; the
// systemd unit starts the installed package and can write the audit database its config names.
// Building the image, running it, and the unit under systemd are untested (docs/deploy.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { validateConfig } from '../src/config/load.ts';
import { startGateway, startUpstream, tempDir } from './helpers.ts';
import { launcherFlags } from '../bench/soak.ts';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));

test('the Kubernetes manifest parses, its references agree, and its Rempart config is valid', () => {
  const docs = parseAllDocuments(readFileSync(root('deploy/kubernetes/rempart.yaml'), 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors, [], 'YAML errors');
  const objects = docs.map((d) => d.toJSON() as any).filter((o) => o !== null);
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  assert.deepEqual(objects.map((o) => o.kind).sort(), [
    'ConfigMap',
    'Deployment',
    'Secret',
    'Service',
    'Service',
    'StatefulSet',
  ]);
  for (const o of objects) {
    assert.ok(typeof o.apiVersion === 'string' && o.metadata?.name, `${o.kind} has apiVersion and a name`);
  }
  const secret = byKind('Secret')[0];
  const config = byKind('ConfigMap')[0];
  const deployment = byKind('Deployment')[0];
  const valkey = byKind('StatefulSet')[0];
  // Selectors match their pod labels; Services select existing pods.
  for (const w of [deployment, valkey]) assert.deepEqual(w.spec.selector.matchLabels, w.spec.template.metadata.labels);
  for (const s of byKind('Service'))
    assert.ok(
      [deployment, valkey].some((w) =>
        Object.entries(s.spec.selector).every(([k, v]) => w.spec.template.metadata.labels[k] === v),
      ),
      `Service ${s.metadata.name} selects pods`,
    );
  // Every secret key and config map used exists.
  const pod = deployment.spec.template.spec;
  const vols = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v]));
  assert.equal(vols.secrets.secret.secretName, secret.metadata.name);
  assert.equal(vols.config.configMap.name, config.metadata.name);
  for (const c of valkey.spec.template.spec.containers)
    for (const e of c.env ?? [])
      if (e.valueFrom?.secretKeyRef)
        assert.ok(e.valueFrom.secretKeyRef.key in secret.stringData, e.valueFrom.secretKeyRef.key);
  // The Rempart config is valid, and every file it names is a key of the mounted secret.
  const cfg = validateConfig(
    parseAllDocuments(config.data['rempart.yaml'])[0]!.toJSON(),
    'deploy/kubernetes/rempart.yaml (ConfigMap)',
  );
  assert.equal(cfg.cluster.store, 'redis');
  const mount = pod.containers[0].volumeMounts.find((m: any) => m.name === 'secrets').mountPath;
  for (const f of [
    cfg.cluster.redis.urlFile,
    cfg.defense.challenge.keyFile,
    cfg.waitingRoom.keyFile,
    cfg.admin.tokensFile,
  ]) {
    assert.ok(f?.startsWith(`${mount}/`), `${f} is in the secret mount`);
    assert.ok(f!.slice(mount.length + 1) in secret.stringData, `${f} is a key of the secret`);
  }
  // The Service for Valkey is what the URL names.
  assert.match(
    secret.stringData['redis-url'],
    new RegExp(`@${byKind('Service').find((s) => s.metadata.name.includes('valkey')).metadata.name}:6379`),
  );
  // Probes hit the admin paths that exist.
  assert.equal(pod.containers[0].readinessProbe.httpGet.path, '/readyz');
  assert.equal(pod.containers[0].livenessProbe.httpGet.path, '/healthz');
});

const pkg = JSON.parse(readFileSync(root('package.json'), 'utf8')) as { bin: { rempart: string }; files: string[] };

/** The instructions of a Dockerfile, continuation lines joined, comments dropped. */
function instructions(text: string): { op: string; args: string }[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'))
    .map((l) => /^(\S+)\s+(.*)$/.exec(l.trim())!)
    .map((m) => ({ op: m[1]!.toUpperCase(), args: m[2]! }));
}

test('the Dockerfile: a digest-pinned Node 24 base, the packed package, a non-root user, a HEALTHCHECK on the admin /healthz, the admin port unpublished', async (t) => {
  const ins = instructions(readFileSync(root('deploy/Dockerfile'), 'utf8'));
  // The base image: one ARG pinned by digest, used by every stage.
  const arg = ins.find((i) => i.op === 'ARG' && i.args.startsWith('NODE_IMAGE='));
  assert.ok(arg, 'ARG NODE_IMAGE');
  assert.match(arg.args, /^NODE_IMAGE=node:24-bookworm-slim@sha256:[0-9a-f]{64}$/);
  const froms = ins.filter((i) => i.op === 'FROM');
  assert.equal(froms.length, 2, 'a build stage and a runtime stage');
  for (const f of froms) assert.match(f.args, /^\$\{NODE_IMAGE\}( AS \w+)?$/);
  // Every COPY from the build context exists; the build stage copies every input of the build.
  const copies = ins.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from='));
  for (const c of copies)
    for (const src of c.args.split(/\s+/).slice(0, -1)) assert.ok(existsSync(root(src)), `COPY ${src}`);
  const copied = new Set(copies.flatMap((c) => c.args.split(/\s+/).slice(0, -1)));
  const buildConfig = JSON.parse(readFileSync(root('tsconfig.build.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '')) as {
    include: string[];
  };
  const { RUNTIME_ASSETS } = await import('../scripts/build.ts');
  for (const input of [
    ...buildConfig.include,
    ...RUNTIME_ASSETS,
    'scripts/build.ts',
    'tsconfig.json',
    'tsconfig.build.json',
    'package-lock.json',
  ]) {
    assert.ok(
      [...copied].some((c) => input === c || input.startsWith(`${c}/`)),
      `the build stage copies ${input}`,
    );
  }
  const runtime = ins.slice(ins.indexOf(froms[1]!));
  const run = (re: RegExp) => runtime.some((i) => i.op === 'RUN' && re.test(i.args));
  assert.ok(
    ins.some((i) => i.op === 'RUN' && /\bnpm pack\b/.test(i.args)),
    'the image is built from `npm pack` (which runs the build)',
  );
  assert.ok(run(/npm ci --omit=dev/), 'production dependencies only, from the lockfile');
  // Non-root from the USER line on, and the entry point is the package's bin.
  const user = runtime.filter((i) => i.op === 'USER').at(-1);
  assert.ok(user && !/^(root|0)(:|$)/.test(user.args), `USER ${user?.args}`);
  assert.ok(runtime.indexOf(user) < runtime.findIndex((i) => i.op === 'ENTRYPOINT'));
  const entry = JSON.parse(runtime.find((i) => i.op === 'ENTRYPOINT')!.args) as string[];
  // node, V8's heap flags (the systemd unit's: bench/soak.ts measures the gateway with them), the bin.
  assert.deepEqual(entry, ['node', ...launcherFlags(), `/opt/rempart/${pkg.bin.rempart}`]);
  assert.ok(launcherFlags().includes('--max-semi-space-size=16'));
  assert.ok(pkg.files.includes(pkg.bin.rempart), 'the bin is in the package');
  // The default config: valid, listening on all interfaces of the container, admin on loopback.
  const cmd = JSON.parse(runtime.find((i) => i.op === 'CMD')!.args) as string[];
  assert.deepEqual(cmd, ['--config', '/etc/rempart/rempart.yaml']);
  const configCopy = runtime.find((i) => i.op === 'COPY' && i.args.endsWith(' /etc/rempart/rempart.yaml'))!;
  const cfg = validateConfig(
    parseAllDocuments(readFileSync(root(configCopy.args.split(/\s+/)[0]!), 'utf8'))[0]!.toJSON(),
    'deploy/docker/rempart.yaml',
  );
  assert.match(cfg.listeners[0]!.address, /^0\.0\.0\.0:\d+$/, 'reachable through a published port');
  assert.match(cfg.admin.address, /^127\.0\.0\.1:\d+$/, 'the admin listener is not reachable through a published port');
  const exposed = runtime
    .filter((i) => i.op === 'EXPOSE')
    .flatMap((i) => i.args.split(/\s+/))
    .map((p) => Number.parseInt(p, 10));
  assert.deepEqual(exposed, [Number(cfg.listeners[0]!.address.split(':')[1])], 'only the traffic port is exposed');
  // Its audit file is in the one directory the runtime user may write.
  assert.ok(cfg.audit.file?.startsWith('/var/lib/rempart/'));
  assert.ok(run(/install -d -o node -g node [^&]*\/var\/lib\/rempart/), 'the audit directory belongs to the node user');
  // The HEALTHCHECK asks the admin listener's /healthz at the config's address, and its command
  // works: exit 0 against a live admin listener, 1 against a closed port.
  const env = runtime.find((i) => i.op === 'ENV' && i.args.startsWith('REMPART_HEALTH_URL='))!;
  const healthUrl = env.args.slice('REMPART_HEALTH_URL='.length);
  assert.equal(healthUrl, `http://${cfg.admin.address}/healthz`);
  const hc = runtime.find((i) => i.op === 'HEALTHCHECK')!;
  const check = JSON.parse(hc.args.slice(hc.args.indexOf('CMD ') + 4)) as string[];
  assert.equal(check[0], 'node');
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url);
  const probe = (url: string) =>
    new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, check.slice(1), {
        env: { ...process.env, REMPART_HEALTH_URL: url },
        stdio: 'ignore',
      });
      child.on('exit', (code) => resolve(code));
    });
  assert.equal(await probe(`${gw.adminUrl}${new URL(healthUrl).pathname}`), 0, 'healthy');
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  assert.equal(await probe(`http://127.0.0.1:${port}/healthz`), 1, 'unhealthy when nothing answers');
});

test('the systemd unit starts the installed package, and its audit database is in its StateDirectory', async (t) => {
  const unit = readFileSync(root('deploy/systemd/rempart.service'), 'utf8');
  for (const section of ['[Unit]', '[Service]', '[Install]']) assert.ok(unit.includes(section));
  for (const line of unit.split('\n'))
    if (line.trim() !== '' && !line.startsWith('#') && !line.startsWith('['))
      assert.match(line, /^[A-Za-z]+=/, `unit line: ${line}`);
  const key = (k: string) => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1]!);
  // `npm install --prefix /opt/rempart rempart-X.tgz` puts the package's bin here.
  const exec = /^(\S+) ((?:--\S+ )*)(\S+) (.*)$/.exec(key('ExecStart')[0]!)!;
  assert.deepEqual(exec[2]!.split(' ').filter(Boolean), launcherFlags(unit));
  exec.splice(2, 1); // the bin and its arguments where they were before the flags
  assert.equal(exec[2], `/opt/rempart/node_modules/rempart/${pkg.bin.rempart}`);
  assert.ok(pkg.files.includes(pkg.bin.rempart));
  assert.match(exec[3]!, /--config \/etc\/rempart\/rempart\.yaml/);
  // ProtectSystem=strict makes everything read-only but the StateDirectory (and ReadWritePaths):
  // the audit file the example config recommends must be in one of them.
  assert.deepEqual(key('ProtectSystem'), ['strict']);
  const writable = [
    ...key('StateDirectory').map((d) => `/var/lib/${d}`),
    ...key('ReadWritePaths').flatMap((v) => v.split(/\s+/)),
  ];
  const example = readFileSync(root('deploy/systemd/rempart.yaml'), 'utf8');
  const cfg = validateConfig(parseAllDocuments(example)[0]!.toJSON(), 'deploy/systemd/rempart.yaml');
  assert.ok(cfg.audit.file, 'the example config keeps an audit trail on disk');
  assert.ok(
    writable.some((d) => path.dirname(cfg.audit.file!) === d),
    `${cfg.audit.file} is in a writable directory (${writable.join(', ')})`,
  );
  assert.ok(cfg.admin.tokensFile?.startsWith(`${key('ReadOnlyPaths')[0]}/`), 'the tokens file is under ReadOnlyPaths');
  // With that config (its directories moved into a temporary StateDirectory, its addresses onto
  // loopback port 0), Rempart creates the audit database there and writes to it.
  const state = tempDir(t, 'rempart-state-');
  const up = await startUpstream(t);
  const local = validateConfig(
    parseAllDocuments(
      example
        .replaceAll('/var/lib/rempart/', `${state}/`)
        .replace(/address: \S+/g, 'address: 127.0.0.1:0')
        .replace(/url: http:\S+/, `url: ${up.url}`),
    )[0]!.toJSON(),
    '(test)',
  );
  const gw = await startGateway(t, up.url, { ...local, admin: { address: '127.0.0.1:0' } });
  assert.equal(gw.gateway.audit.file, path.join(state, 'audit.db'));
  gw.gateway.audit.record('config_reload', 'rempart', 'test');
  assert.ok(gw.gateway.audit.query({ kind: 'config_reload' }).length >= 1);
  await gw.close();
  assert.ok(existsSync(path.join(state, 'audit.db')));
});
