// The upstream side of both engines (issue 17): undici's pool under `node`, the raw pool of
// src/upstream/h1-pool.ts under `lean`. A response with ambiguous framing is refused (502), and an
// upstream that sends more than its response (response splitting) never gets those bytes read as the
// answer to a later request: every client connection stays in step with its own requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { errorCodeOf, holdConnection, startGateway, statusOf, track, waitFor, type Teardown } from './helpers.ts';

const ENGINES = ['node', 'lean'] as const;

/** A raw upstream: each request head gets `answer(n)` (n counts requests over all connections). */
async function rawUpstream(t: Teardown, answer: (n: number, head: string) => string) {
  let n = 0;
  const heads: string[] = [];
  const server = net.createServer((s) => {
    let buf = '';
    s.on('error', () => {});
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        s.write(answer(++n, head));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, heads, server };
}

const ok = (body: string) => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

/** Two requests on one client connection, one after the other: their two answers. */
async function twoOnOneConnection(t: Teardown, port: number): Promise<string> {
  const c = holdConnection(t, port);
  await c.connected;
  c.socket.write('GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n');
  await waitFor(() => /\r\n\r\n/.test(c.data), { timeoutMs: 5000, message: 'the first answer' });
  await new Promise((r) => setTimeout(r, 100));
  c.socket.write('GET /second HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
  await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5000))]);
  return c.data;
}

for (const engine of ENGINES) {
  test(`${engine}: bytes an upstream sends past its response are never taken for a later answer`, async (t) => {
    // The first answer smuggles a second one behind it; an honest 'fresh' follows for any later request.
    const up = await rawUpstream(t, (n) => (n === 1 ? `${ok('ok')}${ok('evil')}` : ok(`fresh${n}`)));
    const gw = await startGateway(t, up.url, { server: { engine } });
    const data = await twoOnOneConnection(t, gw.port);
    assert.match(data, /\r\n\r\nok/, data);
    assert.doesNotMatch(data, /evil/, `the smuggled answer reached a client: ${JSON.stringify(data)}`);
    assert.match(data, /fresh\d/, data);
  });

  for (const [what, response] of [
    [
      'Content-Length with Transfer-Encoding',
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['two Content-Length fields', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nokok'],
    ['a bare LF in the head', 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok'],
    ['an invalid status line', 'HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['a NUL in a field', 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok'],
  ] as const) {
    test(`${engine}: an upstream response with ${what} is answered 502 and the client connection stays in step`, async (t) => {
      const up = await rawUpstream(t, (n) => (n === 1 ? response : ok(`fresh${n}`)));
      const gw = await startGateway(t, up.url, { server: { engine } });
      const data = await twoOnOneConnection(t, gw.port);
      assert.equal(statusOf(data), 502, data);
      assert.equal(errorCodeOf(data), 'RMP_ERR_UPSTREAM_BAD_RESPONSE', data);
      const second = data.slice(data.search(/\nHTTP\/1\.1 \d{3} /) + 1);
      assert.equal(statusOf(second), 200, JSON.stringify(data));
      assert.match(second, /fresh\d/);
    });
  }

  test(`${engine}: a chunked upstream answer is passed on whole, and a 1xx before it is not`, async (t) => {
    const up = await rawUpstream(
      t,
      () =>
        'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n',
    );
    const gw = await startGateway(t, up.url, { server: { engine } });
    const res = await fetch(`${gw.url}/c`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'abcde');
  });
}

for (const engine of ENGINES) {
  test(`${engine}: an upstream that answers before reading the request body never gets the next request inside it`, async (t) => {
    // Each upstream connection: the first head is answered at once, body unread; what follows is recorded.
    const connections: string[] = [];
    const server = net.createServer((s) => {
      const i = connections.push('') - 1;
      let answered = 0;
      s.on('error', () => {});
      s.on('data', (d) => {
        connections[i] += d.toString('latin1');
        const heads = connections[i]!.match(/^[A-Z]+ \/\S* HTTP\/1\.1\r\n/gm)?.length ?? 0;
        for (; answered < heads; answered++) s.write(ok('early'));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const gw = await startGateway(t, url, { server: { engine }, limits: { bufferBodyBytes: 0 } });
    const c = holdConnection(t, gw.port);
    await c.connected;
    const body = 'b'.repeat(256 * 1024);
    c.socket.write(
      `POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 1000)}`,
    );
    await waitFor(() => c.data.includes('early'), { timeoutMs: 5000, message: 'the early answer' });
    c.socket.write(body.slice(1000));
    const res = await fetch(`${gw.url}/next`);
    assert.equal(res.status, 200);
    await res.text();
    // The GET's head starts a request line of its own: never inside the body bytes of the POST.
    for (const data of connections) {
      const at = data.indexOf('GET /next');
      if (at > 0) assert.match(data.slice(0, at), /\r\n\r\n$/, 'the next request was written into an unfinished body');
    }
    assert.ok(
      connections.some((d) => d.includes('GET /next')),
      'the next request reached the upstream',
    );
  });
}

for (const engine of ENGINES) {
  test(`${engine}: an HTTP/1.0 request without Host reaches the upstream with exactly one Host (fuzz finding)`, async (t) => {
    const up = await rawUpstream(t, () => ok('fine'));
    const gw = await startGateway(t, up.url, { server: { engine } });
    const c = holdConnection(t, gw.port);
    await c.connected;
    c.socket.write('GET /old HTTP/1.0\r\n\r\n');
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5000))]);
    assert.equal(statusOf(c.data), 200, c.data);
    assert.equal(up.heads.length, 1);
    assert.equal(up.heads[0]!.match(/^host:/gim)?.length, 1, up.heads[0]);
  });
}

for (const engine of ENGINES) {
  test(`${engine}: a POST the origin read and then dropped unanswered is not sent to it again`, async (t) => {
    // The origin takes each POST in (as a payment would be) and closes without a word: it may have
    // acted on it. Sent again, it is acted on twice (RFC 9110 §9.2.2: no automatic retry of a
    // non-idempotent request); undici fails it (502), and so must the raw pool.
    let posts = 0;
    const server = net.createServer((s) => {
      let buf = '';
      s.on('error', () => {});
      s.on('data', (d) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          if (head.startsWith('POST')) {
            posts++;
            s.destroy();
            return;
          }
          s.write(ok('ok'));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    track(t, { close: () => new Promise<void>((r) => server.close(() => r())) });
    const gw = await startGateway(t, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
      server: { engine },
    });
    // A first request leaves a kept-alive upstream connection: the POST goes out on a reused one.
    assert.equal((await fetch(`${gw.url}/warm`)).status, 200);
    const res = await fetch(`${gw.url}/pay`, { method: 'POST', body: 'amount=10' });
    await res.arrayBuffer();
    assert.equal(res.status, 502);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(posts, 1, `the origin received the POST ${posts} times`);
  });
}

for (const engine of ENGINES) {
  test(`${engine}: a status below 100 is refused, not skipped as a 1xx for the answer behind it`, async (t) => {
    const up = await rawUpstream(t, (n) => (n === 1 ? `HTTP/1.1 000 X\r\n\r\n${ok('evil')}` : ok(`fresh${n}`)));
    const gw = await startGateway(t, up.url, { server: { engine } });
    const data = await twoOnOneConnection(t, gw.port);
    assert.equal(statusOf(data), 502, data);
    assert.doesNotMatch(data, /evil/, `an answer behind the bad status reached a client: ${JSON.stringify(data)}`);
    assert.match(data, /fresh\d/, data);
  });
}
