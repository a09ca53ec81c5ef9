// One way to pick a port for a process that must be told it in advance (a child gateway, nginx, an
// origin): `rempart drill matrix` (its gateways' client and admin listeners), the tests (test/helpers.ts)
// and the benches (bench/lib/procs.ts) share it.
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** Ports this process handed out: never twice (the kernel gave a just-closed port again at once). */
const handedPorts = new Set<number>();
const PORT_FLOOR = 10_000;
const ephemeralStart = (() => {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > PORT_FLOOR + 1000 ? low : 32_768;
  } catch {
    return 32_768; // not Linux: the IANA dynamic range starts at 49152, so this stays below it too
  }
})();

/**
 * A port on 127.0.0.1 that was free a moment ago, drawn at random **below the kernel's ephemeral range**.
 * A port from listen(0) is an ephemeral one, and every outgoing connection of every process beside this
 * one (another test file, a load generator) takes its local port from that same range: between this call
 * and the child's bind, a client socket could take it (EADDRINUSE in CI: test/upgrade-handover, chaos);
 * and two listen(0) in a row returned the same port once (a config whose admin and client listener then
 * shared an address, CI). Below the range only another explicit bind can take it, out of ~22,000, and
 * this process never hands a port twice.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = PORT_FLOOR + Math.floor(Math.random() * (ephemeralStart - PORT_FLOOR));
    if (handedPorts.has(port)) continue;
    const s = net.createServer();
    const bound = await new Promise<boolean>((r) => {
      s.once('error', () => r(false));
      s.listen(port, '127.0.0.1', () => r(true));
    });
    if (!bound) continue;
    await new Promise<void>((r) => s.close(() => r()));
    handedPorts.add(port);
    return port;
  }
}
