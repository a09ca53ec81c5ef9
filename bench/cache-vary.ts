// Cache memory under a hostile Vary: every request asks a new URL of a cacheable route with its own
// huge Accept-Encoding, and the origin answers `Vary: Accept-Encoding`. What the store keeps per entry
// must be charged to cache.maxBytes, so the heap stays near the store's own figure whatever the
// requests carry (finding 4 of issue 12: 16,000 such requests held 270 MB while the store said 6.7 MiB).
// One process: gateway, origin and client; heap and ArrayBuffer memory measured after a forced GC,
// before and after.
// usage: node --expose-gc bench/cache-vary.ts [--requests N] [--value-bytes B] [--max-bytes M]
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { validateConfig } from '../src/config/load.ts';
import { createGateway } from '../src/app/gateway.ts';
import { createLogger } from '../src/core/log.ts';

const { values } = parseArgs({
  options: { requests: { type: 'string' }, 'value-bytes': { type: 'string' }, 'max-bytes': { type: 'string' } },
});
const requests = Number(values.requests ?? 16000);
const valueBytes = Number(values['value-bytes'] ?? 15000);
const maxBytes = Number(values['max-bytes'] ?? 67108864);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

/** Heap plus ArrayBuffer memory (cached bodies live there), after a full GC. */
function heapMiB(): number {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return (m.heapUsed + m.arrayBuffers) / 1048576;
}

const origin = http.createServer((_req, res) =>
  res.writeHead(200, { 'cache-control': 'max-age=600', vary: 'Accept-Encoding' }).end('tracked'),
);
await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
const originPort = (origin.address() as AddressInfo).port;
const config = validateConfig(
  {
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'origin', url: `http://127.0.0.1:${originPort}` }],
    routes: [{ name: 'track', path: '/*', upstream: 'origin', class: 'cacheable' }],
    admin: { address: 'off' },
    cache: { maxBytes, maxObjectBytes: Math.min(maxBytes, 1048576) },
    logging: { level: 'error', requests: false },
    defense: { rateLimit: { mode: 'off' } },
  },
  '(bench)',
);
const sink = new Writable({ write: (_c, _e, cb) => cb() });
const gateway = await createGateway(config, { logger: createLogger('error', sink) });
await gateway.start();
const port = gateway.addresses().listeners[0]!.port;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

const before = heapMiB();
const statuses = new Map<number, number>();
let next = 0;
async function worker(): Promise<void> {
  while (next < requests) {
    const i = next++;
    // A distinct value per request: a counter in front of filler, like a random one.
    const ae = `${i},${'x'.repeat(Math.max(0, valueBytes - 12))}`;
    const status = await new Promise<number>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: `/track/${i}`, agent, headers: { 'accept-encoding': ae } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        })
        .on('error', reject);
    });
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: 8 }, worker));
const seconds = (performance.now() - t0) / 1000;
agent.destroy();
const after = heapMiB();
const store = gateway.cache.store;
console.log(
  JSON.stringify({
    requests,
    valueBytes,
    statuses: Object.fromEntries(statuses),
    seconds: Number(seconds.toFixed(1)),
    cacheEntries: store.entries,
    cacheMiB: Number((store.bytes / 1048576).toFixed(1)),
    maxMiB: Number((maxBytes / 1048576).toFixed(1)),
    heapBeforeMiB: Number(before.toFixed(1)),
    heapAfterMiB: Number(after.toFixed(1)),
    heapGrowthMiB: Number((after - before).toFixed(1)),
  }),
);
await gateway.stop(100);
origin.close();
