// Bodies at and past every body limit, on both body paths, in both framings. One chunked body past
// maxBodyBytes on the streamed path (bufferBodyBytes < maxBodyBytes, the default) used to kill the
// process (review of issue 15): the done step read the connection through `req.socket`, null once the
// request stream is destroyed. This sweeps the class: each size just under, at and over each limit, and a
// client that leaves mid-body; after each, the same gateway must still answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rawRequest, startGateway, startUpstream, statusOf, waitFor } from './helpers.ts';

const MAX = 64 * 1024;

function chunked(size: number): Buffer {
  const parts: Buffer[] = [];
  for (let left = size; left > 0; left -= 16 * 1024) {
    const n = Math.min(left, 16 * 1024);
    parts.push(Buffer.from(`${n.toString(16)}\r\n`), Buffer.alloc(n, 120), Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

function post(size: number, framing: 'chunked' | 'length'): Buffer {
  const head =
    framing === 'chunked'
      ? 'POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
      : `POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), framing === 'chunked' ? chunked(size) : Buffer.alloc(size, 120)]);
}

for (const [path, bufferBodyBytes] of [
  ['streamed', 8 * 1024],
  ['buffered', 2 * MAX],
] as const) {
  test(`${path} bodies at and past maxBodyBytes: 200 up to the limit, 413 or a closed connection past it, the process lives on`, async (t) => {
    const up = await startUpstream(t);
    const gw = await startGateway(t, up.url, {
      limits: { maxBodyBytes: MAX, bufferBodyBytes },
      defense: { rateLimit: { mode: 'off' }, bans: { mode: 'off' } },
    });
    for (const framing of ['chunked', 'length'] as const) {
      for (const size of [bufferBodyBytes - 1, MAX - 1, MAX, MAX + 1, 4 * MAX]) {
        const raw = await rawRequest(gw.port, post(size, framing), { timeoutMs: 5000 });
        const status = raw === '' ? 0 : statusOf(raw);
        const what = `${framing} ${size} bytes`;
        if (size <= MAX) assert.equal(status, 200, what);
        // Past the limit: refused before anything was sent, or the connection cut mid-body (streamed).
        else assert.ok(status === 413 || status === 0, `${what}: ${raw.slice(0, 80)}`);
        const alive = await rawRequest(gw.port, 'GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
        assert.equal(statusOf(alive), 200, `the gateway still answers after ${what}`);
      }
    }
    // A client that leaves in the middle of a body, on a connection whose body was cut at the limit too.
    for (const size of [MAX / 2, 2 * MAX]) {
      const s = net.connect(gw.port, '127.0.0.1');
      s.on('error', () => {});
      await new Promise<void>((r) => s.once('connect', () => r()));
      const body = post(size, 'chunked');
      s.write(body.subarray(0, body.length >> 1));
      s.destroy();
    }
    await waitFor(
      async () => statusOf(await rawRequest(gw.port, 'GET /y HTTP/1.1\r\nHost: a.example\r\n\r\n')) === 200,
    );
    const slots = gw.gateway.runtime().upstreams.get('origin')!.admission.limiter;
    await waitFor(() => slots.inFlight === 0, 'every admission slot given back');
  });
}
