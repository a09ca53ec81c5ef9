// Review of the lean engine as default (s24): clients that leave while their requests wait in the
// admission queue (Verdict.Wait, resumed by the request cycle in the next tick), at every moment of
// their wait, pipelined or not, with and without a body. Whatever order the leaving and the gate's
// decisions come in, every slot goes back, no place stays taken, and the gateway still serves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rawRequest, sleep, startGateway, startUpstream, statusOf, waitFor } from './helpers.ts';
import type { AdmissionGate } from '../src/upstream/gate.ts';
import type { RequestContext } from '../src/pipeline/context.ts';

for (const engine of ['node', 'lean'] as const) {
  test(`${engine}: clients leaving at any moment of their admission wait leak no slot and no queue place`, async (t) => {
    const up = await startUpstream(t, (_req, res) => setTimeout(() => res.end('ok'), 20 + Math.random() * 60));
    const gw = await startGateway(t, up.url, {
      server: { engine },
      upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 2 } }],
      admission: { queue: { maxEntries: 50, timeoutMs: { public: 3000 } } },
      limits: { maxConnectionsPerAddress: 10000, maxConnections: 20000 },
      defense: { rateLimit: { mode: 'off' } },
      logging: { level: 'error', requests: false },
    });
    const gate = gw.gateway.runtime().upstreams.get('origin')!.admission as AdmissionGate<RequestContext>;
    const H = 'Host: a.test\r\n';
    const shapes = [
      `GET /a HTTP/1.1\r\n${H}\r\n`,
      `GET /a HTTP/1.1\r\n${H}\r\nGET /b HTTP/1.1\r\n${H}\r\nHEAD /c HTTP/1.1\r\n${H}\r\n`,
      `POST /p HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nabcd`,
      `POST /p HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /d HTTP/1.1\r\n${H}\r\n`,
      `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n`,
    ];
    const clients: Promise<void>[] = [];
    for (let i = 0; i < 120; i++) {
      const payload = shapes[i % shapes.length]!;
      const leaveAfter = (i * 7) % 150;
      clients.push(
        new Promise<void>((resolve) => {
          const s = net.connect(gw.port, '127.0.0.1');
          s.on('error', () => {});
          s.on('close', () => resolve());
          s.on('connect', () => {
            s.write(payload);
            // Some reset (RST), some half-close, some just close: each a different way of leaving.
            setTimeout(() => (i % 3 === 0 ? s.resetAndDestroy() : i % 3 === 1 ? s.end() : s.destroy()), leaveAfter);
            // A half-closed client is answered on a connection kept alive: it goes once it has waited.
            setTimeout(() => s.destroy(), leaveAfter + 500);
          });
        }),
      );
      if (i % 10 === 0) await sleep(5);
    }
    await Promise.all(clients);
    await waitFor(() => gate.queue.size === 0 && gate.limiter.inFlight === 0, {
      timeoutMs: 15_000,
      message: `every place and slot back (queue ${gate.queue.size}, in flight ${gate.limiter.inFlight})`,
    });
    const after = await rawRequest(gw.port, `GET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, {
      timeoutMs: 5000,
    });
    assert.equal(statusOf(after), 200, after);
    assert.equal(gate.limiter.inFlight, 0);
  });
}
