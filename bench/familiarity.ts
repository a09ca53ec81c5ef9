// What telling a known client costs: the same wrk load through one Rempart process in three runs —
// plain requests, requests carrying an ES256 JWT the configured key verifies (calm: nobody asks whether
// the client is known), and the same JWT requests under attack (every request is asked about, and a
// known client skips the challenge). Prints CPU seconds per 10,000 requests and each run's ratio to the
// plain one. Familiarity is looked up only when a phase asks, and a verified token is remembered until
// it expires (docs/challenge.md), so both ratios should stay near 1.
// usage: node bench/familiarity.ts [--seconds N] [--connections C] [--rounds K] [--no-pin]
import { generateKeyPairSync, sign } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuDelta, snapshot } from './lib/cpu.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import { ensureDebianTools, originHttp, startNginx } from './lib/nginx.ts';
import {
  canPin,
  freePort,
  installCleanupHandlers,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { markdownTable } from './lib/results.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';
import { runWrk } from './lib/wrk.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '2' },
    'no-pin': { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
if (![seconds, connections, rounds].every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write('usage: node bench/familiarity.ts [--seconds N] [--connections C] [--rounds K] [--no-pin]\n');
  process.exit(2);
}
const say = (s: string) => process.stderr.write(`${s}\n`);

async function main(): Promise<void> {
  installCleanupHandlers();
  ensureDebianTools({ nginx: 'nginx', wrk: 'wrk' });
  const pin = !values['no-pin'] && canPin();
  const SUT_CPU = pin ? '1' : undefined;
  const LOAD_CPU = pin ? '0' : undefined;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-familiarity-'));
  await chmod(tmp, 0o755);
  onCleanup(() => rm(tmp, { recursive: true, force: true }));

  // An ES256 key pair: Rempart gets the public key, the load carries a token signed with the private one.
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyFile = path.join(tmp, 'jwt.pub.pem');
  await writeFile(keyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${enc({ alg: 'ES256', typ: 'JWT' })}.${enc({ sub: 'app-user', exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const jwt = `${signed}.${sign('sha256', Buffer.from(signed), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;

  const upPort = await freePort();
  await startNginx({
    name: 'origin',
    dir: path.join(tmp, 'origin'),
    port: upPort,
    cpu: LOAD_CPU,
    http: await originHttp(upPort, 100, path.join(tmp, 'origin', 'www')),
  });
  const start = async (name: string, level: 'calm' | 'under_attack') => {
    const port = await freePort();
    const file = path.join(tmp, `${name}.json`);
    // Rate limits and bans off: wrk is one address far above the default per-address limit.
    const defense = {
      rateLimit: { mode: 'off' },
      bans: { mode: 'off' },
      familiarity: { jwt: { algorithm: 'ES256', keyFile } },
      ...(level === 'calm' ? {} : { level: { override: level } }),
    };
    await writeFile(file, JSON.stringify(benchGatewayConfig(port, 'off', `http://127.0.0.1:${upPort}`, { defense })));
    const proc = startProcess(name, process.execPath, [path.join(ROOT, 'bin', 'rempart.js'), '--config', file], {
      cpu: SUT_CPU,
      cwd: ROOT,
    });
    await waitForPort(port, proc, 20_000);
    return { port, proc };
  };
  const calm = await start('rempart-calm', 'calm');
  const attack = await start('rempart-under-attack', 'under_attack');
  const runs: Array<{ label: string; gw: typeof calm; headers: Record<string, string> }> = [
    { label: 'plain requests, calm', gw: calm, headers: {} },
    { label: 'ES256 JWT, calm', gw: calm, headers: { authorization: `Bearer ${jwt}` } },
    { label: 'ES256 JWT, under attack', gw: attack, headers: { authorization: `Bearer ${jwt}` } },
  ];
  // The JWT holder passes under attack (a known client is not challenged); a plain request does not.
  const probe = await fetch(`http://127.0.0.1:${attack.port}/`, { headers: runs[2]!.headers });
  if (probe.status !== 200) throw new Error(`a JWT holder under attack got ${probe.status}`);
  const cpuPer10k: number[][] = runs.map(() => []);
  const rps: number[][] = runs.map(() => []);
  for (const r of runs)
    await runWrk({
      url: `http://127.0.0.1:${r.gw.port}/`,
      connections,
      seconds: 2,
      cpu: LOAD_CPU,
      dir: tmp,
      headers: r.headers,
    });
  for (let k = 0; k < rounds; k++) {
    for (const [i, r] of runs.entries()) {
      const before = snapshot([r.gw.proc.pid]);
      const w = await runWrk({
        url: `http://127.0.0.1:${r.gw.port}/`,
        connections,
        seconds,
        cpu: LOAD_CPU,
        dir: tmp,
        headers: r.headers,
      });
      const d = cpuDelta(before, snapshot([r.gw.proc.pid]));
      if (w.errors.status > 0) throw new Error(`${r.label}: ${w.errors.status} non-2xx answers`);
      cpuPer10k[i]!.push((d.cpuSeconds / w.requests) * 10_000);
      rps[i]!.push(w.rps);
      say(
        `${r.label} (round ${k + 1}/${rounds}): ${Math.round(w.rps)} req/s, ${cpuPer10k[i]!.at(-1)!.toFixed(3)} CPU s/10k`,
      );
    }
  }
  const med = (xs: number[]) => {
    const v = [...xs].sort((a, b) => a - b);
    const m = v.length >> 1;
    return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
  };
  const base = med(cpuPer10k[0]!);
  const info = machineInfo();
  process.stdout.write(
    `${new Date().toISOString()} · ${info.nproc} CPUs, ${info.cpuModel}; Node ${info.node}; git ${gitCommit(ROOT)} · load average ${info.loadavg}\n` +
      `Command: \`node bench/familiarity.ts --seconds ${seconds} --rounds ${rounds}\` · wrk 1 thread, ${connections} connections; Rempart pinned to CPU 1, wrk and the nginx origin to CPU 0${pin ? '' : ' (unpinned)'}\n\n` +
      markdownTable(
        ['run', 'req/s', 'CPU s/10k req', 'vs plain'],
        runs.map((r, i) => [
          r.label,
          String(Math.round(med(rps[i]!))),
          med(cpuPer10k[i]!).toFixed(3),
          `${(med(cpuPer10k[i]!) / base).toFixed(2)}×`,
        ]),
        ['l', 'r', 'r', 'r'],
      ) +
      `\nMedians of ${rounds} rounds; runs interleaved in each round.\n`,
  );
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench/familiarity: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => stopAll());
