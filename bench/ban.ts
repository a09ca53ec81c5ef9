// Ban cost benchmark: CPU the gateway spends on a proxied request against CPU it spends refusing a
// connection from a banned address (reset on accept, before any HTTP parsing). The gateway runs in
// its own process (bin/rempart.js with a config file), measured from /proc; the small origin and the
// clients run here. Target (issue 5): a banned address's attempt costs at most a tenth of a proxied request.
// With --nftables the gateway mirrors its bans into an nftables set whose chain drops the banned
// address's packets in the kernel; it needs the rights to, so run it in a network namespace:
//   unshare -rn sh -c 'ip link set lo up && node bench/ban.ts --nftables'
// A banned attempt then never reaches the process: its SYN is dropped and the client gives up after
// a short timeout. (The kernel's own cost for the drop is not charged to the gateway and not measured.)
// usage: node bench/ban.ts [--requests N] [--concurrency C] [--no-pin] [--nftables]
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { processCpu } from './lib/cpu.ts';
import { benchGatewayConfig } from './lib/gateway-config.ts';
import {
  canPin,
  freePort,
  installCleanupHandlers,
  onCleanup,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';
import { gitCommit, machineInfo } from './lib/sysinfo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TOKEN = `bench-${Math.random().toString(36).slice(2)}-token`;
const BANNED = '127.0.0.2';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string' },
      concurrency: { type: 'string' },
      'no-pin': { type: 'boolean' },
      nftables: { type: 'boolean' },
    },
  });
  const nft = values.nftables === true;
  const n = Number(values.requests ?? 20000);
  const concurrency = Number(values.concurrency ?? 16);
  installCleanupHandlers();
  const pin = !values['no-pin'] && canPin(2);

  // The origin: 100 bytes, keep-alive, in this process.
  const body = Buffer.alloc(100, 'x');
  const origin = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  onCleanup(() => new Promise<void>((r) => origin.close(() => r())));
  const originPort = (origin.address() as net.AddressInfo).port;

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'rempart-bench-ban-'));
  onCleanup(() => rm(tmp, { recursive: true, force: true }));
  const port = await freePort();
  const adminPort = await freePort();
  const config = benchGatewayConfig(port, adminPort, `http://127.0.0.1:${originPort}`, {
    defense: {
      rateLimit: { mode: 'off' },
      ...(nft ? { bans: { nftables: { enabled: true, table: 'rempart_bench' } } } : {}),
    },
  });
  const file = path.join(tmp, 'rempart.json');
  await writeFile(file, JSON.stringify(config));
  const gw = startProcess('rempart', process.execPath, [path.join(ROOT, 'bin', 'rempart.js'), '--config', file], {
    cwd: ROOT,
    env: { ...process.env, REMPART_ADMIN_TOKEN: TOKEN },
    cpu: pin ? '1' : undefined,
  });
  await waitForPort(port, gw, 20000);

  const cpu = () => {
    const c = processCpu(gw.pid);
    return c.user + c.sys;
  };

  // Proxied: keep-alive connections, as browsers and balancers send them.
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const proxied = async (count: number, fresh = false) => {
    let left = count;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left-- > 0) {
          await new Promise<void>((resolve, reject) => {
            http
              .get({ host: '127.0.0.1', port, path: '/', agent: fresh ? false : agent }, (res) => {
                if (res.statusCode !== 200) reject(new Error(`proxied request got ${res.statusCode}`));
                res.resume();
                res.on('end', resolve);
              })
              .on('error', reject);
          });
        }
      }),
    );
  };
  // Banned: each attempt a new connection that sends a request; the gateway resets it on accept.
  let answered = 0;
  const banned = async (count: number) => {
    let left = count;
    // Dropped attempts each wait out the client's timeout: many at once, or the run takes minutes.
    await Promise.all(
      Array.from({ length: nft ? 500 : concurrency }, async () => {
        while (left-- > 0) {
          await new Promise<void>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port, localAddress: BANNED });
            // A dropped SYN never connects: give up as a client would, after a short wait.
            if (nft) s.setTimeout(200, () => s.destroy());
            s.on('connect', () => s.write('GET / HTTP/1.1\r\nHost: bench\r\n\r\n'));
            s.on('data', () => answered++);
            s.on('error', () => {});
            s.on('close', () => resolve());
          });
        }
      }),
    );
  };

  await proxied(2000); // warm-up: JIT, pools
  let t0 = cpu();
  let w0 = performance.now();
  await proxied(n);
  const proxiedCpu = cpu() - t0;
  const proxiedWall = (performance.now() - w0) / 1000;

  t0 = cpu();
  w0 = performance.now();
  await proxied(n, true);
  const freshCpu = cpu() - t0;
  const freshWall = (performance.now() - w0) / 1000;

  const res = await fetch(`http://127.0.0.1:${adminPort}/api/bans`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ target: BANNED, ttlSec: 3600, reason: 'bench' }),
  });
  if (res.status !== 201) throw new Error(`ban failed: ${res.status} ${await res.text()}`);
  if (nft) {
    // Wait for the mirror to put the address in the kernel's set.
    const { execFileSync } = await import('node:child_process');
    for (let i = 0; i < 100; i++) {
      let listed = '';
      try {
        listed = execFileSync('nft', ['list', 'set', 'inet', 'rempart_bench', 'banned_v4'], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        });
      } catch {}
      if (listed.includes(BANNED)) break;
      if (i === 99) throw new Error('the nftables mirror did not list the banned address');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await banned(nft ? 200 : 2000); // warm-up
  t0 = cpu();
  w0 = performance.now();
  await banned(n);
  const bannedCpu = cpu() - t0;
  const bannedWall = (performance.now() - w0) / 1000;
  if (answered > 0) throw new Error(`${answered} banned attempts got HTTP bytes back`);

  const per10k = (c: number) => (c / n) * 10000;
  const ratio = bannedCpu / proxiedCpu;
  const info = machineInfo();
  const lines = [
    `machine: ${info.cpuModel} × ${info.nproc}, node ${info.node}, kernel ${info.kernel}, load ${info.loadavg}, commit ${gitCommit(ROOT)}${pin ? ', gateway pinned to CPU 1' : ''}`,
    `proxied (keep-alive):           ${n} requests in ${proxiedWall.toFixed(2)} s, gateway CPU ${per10k(proxiedCpu).toFixed(3)} s per 10k`,
    `proxied (new connection each):  ${n} requests in ${freshWall.toFixed(2)} s, gateway CPU ${per10k(freshCpu).toFixed(3)} s per 10k`,
    `banned (new connection each${nft ? ', dropped by nftables' : ''}): ${n} attempts in ${bannedWall.toFixed(2)} s, gateway CPU ${per10k(bannedCpu).toFixed(3)} s per 10k`,
    `ratio banned/proxied keep-alive: ${ratio.toFixed(3)}; banned/proxied new connection: ${(bannedCpu / freshCpu).toFixed(3)} (target ≤ 0.1)`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  agent.destroy();
  return 0;
}

main()
  .then(async (code) => {
    await stopAll();
    process.exit(code);
  })
  .catch(async (err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    await stopAll();
    process.exit(1);
  });
