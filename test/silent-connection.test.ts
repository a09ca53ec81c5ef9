// A client that connects and never sends a byte is closed within limits.headersTimeoutMs, not held
// for limits.idleTimeoutMs: the first request's header timeout runs from the connection's start (as
// nginx's client_header_timeout does), for plain and TLS listeners, on both HTTP/1.1 engines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { cleanup, holdConnection, selfSignedCert, startGateway, startUpstream, type Teardown } from './helpers.ts';

const HEADERS_MS = 1000;
const IDLE_MS = 20_000;
/** Well past headersTimeoutMs and its half-second sweep, well before idleTimeoutMs. */
const BOUND_MS = 6000;

async function gateway(t: Teardown, engine: string, secure: boolean) {
  const up = await startUpstream(t);
  const listener: Record<string, unknown> = { address: '127.0.0.1:0' };
  if (secure) {
    const { certFile, keyFile } = selfSignedCert(t, 'rempart-silent-tls-');
    listener.tls = { certFile, keyFile };
  }
  return startGateway(t, up.url, {
    listeners: [listener],
    server: { engine },
    limits: { headersTimeoutMs: HEADERS_MS, idleTimeoutMs: IDLE_MS },
  });
}

/** When (performance.now()) the connection closed, or Infinity if it was still open after BOUND_MS. */
function closedWithin(closed: Promise<number>): Promise<number> {
  return Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(Infinity), BOUND_MS).unref())]);
}

for (const engine of ['node', 'lean']) {
  test(`${engine} engine: a plain connection that never sends a byte is closed after headersTimeoutMs, not idleTimeoutMs`, async (t) => {
    const gw = await gateway(t, engine, false);
    const c = holdConnection(t, gw.port);
    await c.connected;
    const start = performance.now();
    const end = await closedWithin(c.closed);
    assert.ok(end - start < BOUND_MS, `still open after ${BOUND_MS} ms (headersTimeoutMs ${HEADERS_MS})`);
  });

  test(`${engine} engine: a TLS connection silent after its handshake is closed after headersTimeoutMs, not idleTimeoutMs`, async (t) => {
    const gw = await gateway(t, engine, true);
    const socket = tls.connect({
      port: gw.port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    socket.on('error', () => {});
    socket.resume(); // reads what comes (a 408, the close): an unread socket never sees its end
    cleanup(t, () => socket.destroy());
    const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now())));
    await new Promise((r) => socket.once('secureConnect', r));
    const start = performance.now();
    const end = await closedWithin(closed);
    assert.ok(end - start < BOUND_MS, `still open after ${BOUND_MS} ms (headersTimeoutMs ${HEADERS_MS})`);
  });
}

test('a connection that sent a request and is then idle keeps idleTimeoutMs, not headersTimeoutMs', async (t) => {
  await Promise.all(
    ['node', 'lean'].map(async (engine) => {
      const gw = await gateway(t, engine, false);
      const c = holdConnection(t, gw.port);
      await c.connected;
      c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const end = await closedWithin(c.closed);
      assert.equal(end, Infinity, `${engine}: a kept-alive connection closed early`);
      assert.match(c.data, /^HTTP\/1\.1 200/, engine);
    }),
  );
});

// Node's keep-alive timer is an inactivity timer, and its parser skips the empty lines a client may
// send before a request without starting one: a CRLF every few seconds held a connection for good.
test('a kept-alive connection that trickles empty lines and never starts a request is closed all the same', async (t) => {
  await Promise.all(
    ['node', 'lean'].map(async (engine) => {
      const up = await startUpstream(t);
      const gw = await startGateway(t, up.url, {
        server: { engine },
        limits: { headersTimeoutMs: 1000, idleTimeoutMs: 2000 },
      });
      const c = holdConnection(t, gw.port);
      await c.connected;
      c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const trickle = setInterval(() => c.socket.write('\r\n'), 500);
      cleanup(t, () => clearInterval(trickle));
      // idle 2 s + headers 1 s + the half-second sweep: closed long before BOUND_MS.
      const end = await closedWithin(c.closed);
      clearInterval(trickle);
      assert.notEqual(end, Infinity, `${engine}: still open after ${BOUND_MS} ms of empty lines`);
      assert.match(c.data, /^HTTP\/1\.1 200/, engine);
    }),
  );
});
