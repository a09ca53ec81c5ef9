// A 304 to a conditional GET may carry the Content-Length a 200 would have (RFC 9110 §8.6), and some
// origins send one on a 204 too: the answer is whole at its head either way. undici (the node engine's
// pool) took those for a body cut short and the client got its connection closed with nothing written;
// the lean pool answered them. Both engines must answer, and keep the client's connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startGateway, track, type Teardown } from './helpers.ts';

async function origin(t: Teardown): Promise<string> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const target = buf.slice(buf.indexOf(' ') + 1, buf.indexOf(' HTTP/'));
        buf = buf.slice(end + 4);
        const status = target === '/204' ? '204 No Content' : target === '/304' ? '304 Not Modified' : '200 OK';
        const body = status === '200 OK' ? 'x'.repeat(100) : '';
        s.write(`HTTP/1.1 ${status}\r\nContent-Length: 100\r\nETag: "v1"\r\n\r\n${body}`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Sends the requests one after the other on one connection; the answers' status lines, in order. */
function sequence(port: number, targets: string[], heads: string[] = []): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const statuses: string[] = [];
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timed out after ${statuses.length} answers: ${JSON.stringify(statuses)}`));
    }, 5000);
    const next = () => {
      if (statuses.length === targets.length) {
        clearTimeout(timer);
        sock.end();
        return resolve(statuses);
      }
      sock.write(`GET ${targets[statuses.length]} HTTP/1.1\r\nHost: a\r\nIf-None-Match: "v1"\r\n\r\n`);
    };
    sock.on('connect', next);
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (statuses.length < targets.length) reject(new Error(`closed after ${JSON.stringify(statuses)}`));
    });
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        const status = head.slice(9, 12);
        // 204 and 304 have no body whatever their Content-Length says; a 200 has its 100 bytes.
        const length = status === '200' ? Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0) : 0;
        if (buf.length < end + 4 + length) return;
        buf = buf.slice(end + 4 + length);
        heads.push(head);
        statuses.push(status);
        next();
      }
    });
  });
}

for (const engine of ['node', 'lean'] as const) {
  test(`${engine}: a 204 or 304 with a Content-Length is answered and the connection kept`, async (t) => {
    const url = await origin(t);
    const gw = await startGateway(t, url, {
      logging: { level: 'error', requests: false },
      defense: { rateLimit: { mode: 'off' } },
      // No cache: each request goes to the origin.
      routes: [{ name: 'site', path: '/*', upstream: 'origin', class: 'critical' }],
      server: { engine },
    });
    const heads: string[] = [];
    const got = await sequence(gw.port, ['/304', '/a', '/204', '/304', '/b', '/204'], heads);
    assert.deepEqual(got, ['304', '200', '204', '304', '200', '204']);
    // A 204 never carries a Content-Length (RFC 9110 §8.6); a 304 may keep the one a 200 would have.
    assert.doesNotMatch(heads[2]!, /content-length/i, heads[2]);
    assert.match(heads[0]!, /\r\ncontent-length: 100\r\n/i, heads[0]);
  });
}
