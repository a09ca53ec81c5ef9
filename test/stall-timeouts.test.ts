// The gateway's own event loop blocked (a GC pause, a synchronous write, another process holding the
// core: what the chaos drill's SIGSTOP does from outside): a client's bytes that arrived meanwhile are
// read before any timeout judges the connection. Node runs the timers that fell due during a stall
// before it reads the sockets, so a sweep run straight from its timer saw a connection that had sent a
// request in time as idle past its limit, and closed it with that request unread: a reset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs';
import {
  holdConnection,
  sleep,
  startGateway,
  startGatewayAndUpstream,
  startUpstream,
  statusOf,
  waitFor,
} from './helpers.ts';

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: a.test\r\n\r\n`;

/**
 * Block this process's event loop (the gateway runs in it) for `ms`, from an I/O callback: where a
 * gateway spends its time (a request's work), and the case that matters. The sockets were polled just
 * before; after the callback the loop runs its due timers, then polls again. (Blocked from a timer
 * instead, the loop polls before it runs timers again: bytes that came meanwhile are read first.)
 */
function blockInIoCallback(ms: number, before: () => void): Promise<void> {
  return new Promise((resolve) =>
    stat('.', () => {
      before();
      const until = performance.now() + ms;
      while (performance.now() < until);
      resolve();
    }),
  );
}

test('a request sent on a keep-alive connection inside idleTimeoutMs while the event loop is blocked past it is answered, not reset', async (t) => {
  const { gw } = await startGatewayAndUpstream(t, { server: { engine: 'lean' }, limits: { idleTimeoutMs: 2000 } });
  const c = holdConnection(t, gw.port);
  await c.connected;
  c.socket.write(GET('/first'));
  await waitFor(() => c.data.includes('\r\n\r\nok'), { timeoutMs: 2000, message: 'the first answer' });
  assert.equal(statusOf(c.data), 200);
  c.data = '';
  // Idle for 200 ms of its 2000, then the next request goes out (into the kernel: the write does not
  // wait for the loop), and the loop is blocked for 2 s: past the connection's idle limit, and past
  // the sweep's 500 ms period, so the sweep is due when the loop runs again.
  await sleep(200);
  let reset = '';
  c.socket.on('error', (err: NodeJS.ErrnoException) => (reset = err.code ?? err.message));
  await blockInIoCallback(2000, () => c.socket.write(GET('/second')));
  await waitFor(() => c.data.includes('\r\n\r\nok') || c.isClosed, { timeoutMs: 3000, message: 'an outcome' });
  assert.equal(statusOf(c.data), 200, `the request sent in time is answered: ${JSON.stringify(c.data)} ${reset}`);
  assert.equal(c.isClosed, false);
});

test("an upstream answer that arrived while the event loop was blocked past the upstream's headersTimeoutMs is relayed, not a 504", async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url !== '/slow') return void res.end('ok');
    // 300 ms into its 1000, the answer goes out (into the kernel), and the loop is blocked 1.5 s: past
    // the upstream's headersTimeoutMs, and past the pool's sweep period, so it is due when the loop runs.
    setTimeout(() => blockInIoCallback(1500, () => res.end('slow ok')), 300);
  });
  const gw = await startGateway(t, up.url, {
    server: { engine: 'lean' },
    upstreams: [{ name: 'origin', url: up.url, headersTimeoutMs: 1000 }],
  });
  // A warm pool: the request goes out on an open connection, no connect to time.
  assert.equal((await fetch(`${gw.url}/warm`)).status, 200);
  const r = await fetch(`${gw.url}/slow`);
  assert.equal(r.status, 200, await r.clone().text());
  assert.equal(await r.text(), 'slow ok');
});
