// One origin server of a pool, as its own process (bench/pool-failover.ts and test/pool-kill.test.ts
// start three and SIGKILL one): answers every request after `--delay-ms` (so requests are in flight
// when it dies) with its name, and /healthz at once. Prints `listening <port>` when ready.
//   node bench/pool-origin.ts --name a [--port 0] [--delay-ms 10]
import http from 'node:http';
import { parseArgs } from 'node:util';
import type { AddressInfo } from 'node:net';

const { values } = parseArgs({
  options: {
    name: { type: 'string', default: 'origin' },
    port: { type: 'string', default: '0' },
    'delay-ms': { type: 'string', default: '10' },
  },
});
const name = values.name;
const delayMs = Number(values['delay-ms']);
const body = Buffer.from(`${name}\n`);

const server = http.createServer((req, res) => {
  req.resume();
  if (req.url === '/healthz') {
    res.end('ok');
    return;
  }
  setTimeout(() => {
    res.setHeader('x-origin', name);
    res.end(body);
  }, delayMs);
});
server.keepAliveTimeout = 60_000;
server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
