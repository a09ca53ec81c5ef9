// Responses on a pipelined connection go out in request order, also when a later request cannot be
// parsed or is a refused upgrade: Rempart writes those answers itself on the raw socket, and one
// written while an earlier request waits for its upstream would be read by the client as the answer
// to that earlier request (a forwarded payment seen as refused). Found by the fuzzer (bench/fuzz.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, rawRequest, startGateway, startUpstream, type Teardown, waitFor } from './helpers.ts';

/** Status lines of every response in a raw reply, in order. */
function statuses(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/** A gateway in front of an upstream that answers after 300 ms; `seen` lists the paths it was asked. */
async function startSlowUpstream(t: Teardown): Promise<{ port: number; seen: string[] }> {
  const seen: string[] = [];
  const up = await startUpstream(t, (req, res) => {
    seen.push(req.url!);
    setTimeout(() => res.end('slow ok'), 300);
  });
  const gw = await startGateway(t, up.url, {
    routes: [{ name: 'slow', path: '/slow*', upstream: 'origin', class: 'public' }],
  });
  return { port: gw.port, seen };
}

const slow = 'GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n';

test('a parse error behind a pending request is answered after it, in order', async (t) => {
  const { port, seen } = await startSlowUpstream(t);
  for (const bad of [
    'GET /x HTTP/1.1\r\nHost: a.test\r\nno colon here\r\n\r\n',
    'GET /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    'GET /x HTTP/1.1\r\nHost: a.test\r\nx: a\r\n b\r\n\r\n',
    `GET /x HTTP/1.1\r\nHost: a.test\r\nx: ${'a'.repeat(20000)}\r\n\r\n`,
  ]) {
    seen.length = 0;
    const raw = await rawRequest(port, slow + bad, { timeoutMs: 3000 });
    const got = statuses(raw);
    assert.deepEqual(seen, ['/slow']);
    assert.equal(got[0], 200, `the forwarded request's answer comes first: ${JSON.stringify(raw.slice(0, 300))}`);
    assert.ok(got[1] === 400 || got[1] === 431, `then the refusal: ${JSON.stringify(raw.slice(0, 400))}`);
    assert.match(raw, /slow ok/);
  }
});

test('a refused upgrade behind a pending request is answered after it, in order', async (t) => {
  const { port } = await startSlowUpstream(t);
  const upgrade =
    'GET /nowhere HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  const raw = await rawRequest(port, slow + upgrade, { timeoutMs: 3000 });
  assert.deepEqual(statuses(raw), [200, 404], JSON.stringify(raw.slice(0, 400)));
});

test('a parse error with nothing pending is still answered at once', async (t) => {
  const { port } = await startSlowUpstream(t);
  const raw = await rawRequest(port, 'GET /x HTTP/1.1\r\nHost: a.test\r\nno colon here\r\n\r\n', { timeoutMs: 3000 });
  assert.deepEqual(statuses(raw), [400]);
});

// Found by the fuzzer (seed 3071735723, connection 58378): "100 Continue" for a request queued behind
// an earlier response was sent between its final head and its body ([head][100 Continue][body]), so a
// client read the 100's first bytes as the body, and every later answer on the connection off by them.
async function startSlowAndFast(t: Teardown): Promise<number> {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow ok'), 300);
    else {
      // A Content-Length answer: forwarded as Buffer writes, not chunked (the first chunk-size line
      // is a string, which Node happens to keep behind a queued 100).
      res.writeHead(200, { 'content-length': '4' });
      res.end('fast');
    }
  });
  const gw = await startGateway(t, up.url);
  return gw.port;
}

const expecting = 'POST /fast HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nConnection: close\r\n';

test('a 100 Continue for a pipelined request never lands between its final head and its body', async (t) => {
  const port = await startSlowAndFast(t);
  for (const body of ['Content-Length: 5\r\n\r\nhello', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n']) {
    const raw = await rawRequest(port, slow + expecting + body, { timeoutMs: 5000 });
    // The body came with the head, so the 100 may be left out; if sent, it comes before the final
    // head, and the final head's Content-Length frames exactly the bytes that follow it.
    assert.match(
      raw,
      /slow ok(?:HTTP\/1\.1 100 Continue\r\n\r\n)?HTTP\/1\.1 200 OK\r\n(?:(?!\r\n\r\n)[\s\S])*\r\n\r\nfast$/,
      JSON.stringify(raw.slice(0, 600)),
    );
  }
});

test('a pipelined request waiting for 100 Continue gets it once the answers before it are out', async (t) => {
  const port = await startSlowAndFast(t);
  const socket = net.connect({ port, host: '127.0.0.1' });
  let raw = '';
  socket.on('data', (c: Buffer) => (raw += c.toString('latin1')));
  socket.on('error', () => {});
  const closed = new Promise((r) => socket.once('close', r));
  cleanup(t, () => socket.destroy());
  socket.write(`${slow}${expecting}Content-Length: 5\r\n\r\n`); // the body waits for the 100, as curl's does
  await waitFor(() => raw.includes('100 Continue'), {
    timeoutMs: 5000,
    intervalMs: 50,
    message: () => JSON.stringify(raw.slice(0, 600)),
  });
  assert.match(raw, /slow okHTTP\/1\.1 100 Continue\r\n\r\n$/, JSON.stringify(raw.slice(0, 600)));
  socket.write('hello');
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  assert.match(
    raw,
    /100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n(?:(?!\r\n\r\n)[\s\S])*\r\n\r\nfast$/,
    JSON.stringify(raw.slice(0, 600)),
  );
});
