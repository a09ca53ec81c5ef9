// Lint of the deployment files (deploy/): what can be checked without Docker or a cluster. The
// Kubernetes manifest parses, its objects refer to each other consistently, and the Rempart config it
// carries passes Rempart's own validation; the Dockerfile copies what exists; the systemd unit starts
// the real entry point. Building the image and applying the manifest are untested (docs/deploy.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { validateConfig } from '../src/config/load.ts';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));

test('the Kubernetes manifest parses, its references agree, and its Rempart config is valid', () => {
  const docs = parseAllDocuments(readFileSync(root('deploy/kubernetes/rempart.yaml'), 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors, [], 'YAML errors');
  const objects = docs.map((d) => d.toJSON() as any).filter((o) => o !== null);
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Secret', 'Service', 'Service', 'StatefulSet']);
  for (const o of objects) {
    assert.ok(typeof o.apiVersion === 'string' && o.metadata?.name, `${o.kind} has apiVersion and a name`);
  }
  const secret = byKind('Secret')[0];
  const config = byKind('ConfigMap')[0];
  const deployment = byKind('Deployment')[0];
  const valkey = byKind('StatefulSet')[0];
  // Selectors match their pod labels; Services select existing pods.
  for (const w of [deployment, valkey]) assert.deepEqual(w.spec.selector.matchLabels, w.spec.template.metadata.labels);
  for (const s of byKind('Service')) assert.ok([deployment, valkey].some((w) => Object.entries(s.spec.selector).every(([k, v]) => w.spec.template.metadata.labels[k] === v)), `Service ${s.metadata.name} selects pods`);
  // Every secret key and config map used exists.
  const pod = deployment.spec.template.spec;
  const vols = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v]));
  assert.equal(vols.secrets.secret.secretName, secret.metadata.name);
  assert.equal(vols.config.configMap.name, config.metadata.name);
  for (const c of valkey.spec.template.spec.containers) for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) assert.ok(e.valueFrom.secretKeyRef.key in secret.stringData, e.valueFrom.secretKeyRef.key);
  // The Rempart config is valid, and every file it names is a key of the mounted secret.
  const cfg = validateConfig(parseAllDocuments(config.data['rempart.yaml'])[0]!.toJSON(), 'deploy/kubernetes/rempart.yaml (ConfigMap)');
  assert.equal(cfg.cluster.store, 'redis');
  const mount = pod.containers[0].volumeMounts.find((m: any) => m.name === 'secrets').mountPath;
  for (const f of [cfg.cluster.redis.urlFile, cfg.defense.challenge.keyFile, cfg.waitingRoom.keyFile, cfg.admin.tokensFile]) {
    assert.ok(f?.startsWith(`${mount}/`), `${f} is in the secret mount`);
    assert.ok(f!.slice(mount.length + 1) in secret.stringData, `${f} is a key of the secret`);
  }
  // The Service for Valkey is what the URL names.
  assert.match(secret.stringData['redis-url'], new RegExp(`@${byKind('Service').find((s) => s.metadata.name.includes('valkey')).metadata.name}:6379`));
  // Probes hit the admin paths that exist.
  assert.equal(pod.containers[0].readinessProbe.httpGet.path, '/readyz');
  assert.equal(pod.containers[0].livenessProbe.httpGet.path, '/healthz');
});

test('the Dockerfile copies what exists and the systemd unit starts the real entry point', () => {
  const docker = readFileSync(root('deploy/Dockerfile'), 'utf8');
  for (const m of docker.matchAll(/^COPY (.+) \S+$/gm)) for (const src of m[1]!.split(/\s+/)) assert.ok(existsSync(root(src)), `COPY ${src}`);
  assert.match(docker, /^FROM node:24/m);
  const unit = readFileSync(root('deploy/systemd/rempart.service'), 'utf8');
  for (const section of ['[Unit]', '[Service]', '[Install]']) assert.ok(unit.includes(section));
  const exec = /^ExecStart=(\S+) (\S+)/m.exec(unit);
  assert.ok(exec);
  assert.equal(exec[2], '/opt/rempart/bin/rempart.js');
  assert.ok(existsSync(root('bin/rempart.js')));
  for (const line of unit.split('\n')) if (line.trim() !== '' && !line.startsWith('#') && !line.startsWith('[')) assert.match(line, /^[A-Za-z]+=/, `unit line: ${line}`);
});
