// Both HTTP/1.1 engines (server.engine node | lean, issue 17) side by side on the hostile shapes: each
// case runs on each engine and must give a clear answer or correct service, never a crash or a hang,
// and the same answer on both (the lean engine is a replacement, not a relaxation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  errorCodeOf,
  holdConnection,
  rawRequest,
  sleep,
  startGateway,
  startUpstream,
  statusOf,
  waitFor,
  type RecordingUpstream,
  type Teardown,
  type TestGateway,
} from './helpers.ts';

const ENGINES = ['node', 'lean'] as const;
type Engine = (typeof ENGINES)[number];

async function pair(
  t: Teardown,
  engine: Engine,
  partial: Record<string, unknown> = {},
  admission?: Record<string, unknown>,
): Promise<{ gw: TestGateway; up: RecordingUpstream }> {
  const up = await startUpstream(t, (req, res, body) => {
    res.setHeader('x-body-bytes', String(body.length));
    res.end(`${req.method} ${req.url}`);
  });
  const upstreams = admission === undefined ? {} : { upstreams: [{ name: 'origin', url: up.url, admission }] };
  const gw = await startGateway(t, up.url, { ...partial, ...upstreams, server: { engine } });
  // A warm pool: whatever is dispatched reaches the upstream at once.
  assert.equal((await fetch(`${gw.url}/warm`)).status, 200);
  up.requests.length = 0;
  return { gw, up };
}

const responses = (raw: string) => raw.match(/HTTP\/1\.[01] \d{3}/g) ?? [];

// Shapes beyond the smuggling corpus (test/edge-smuggling.test.ts runs that on both engines too).
const MALFORMED: [string, string, number, string][] = [
  ['NUL in a field value', 'GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\x00b\r\n\r\n', 400, 'RMP_ERR_EDGE_SMUGGLING'],
  ['bare CR in a value', 'GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\rb\r\n\r\n', 400, 'RMP_ERR_EDGE_SMUGGLING'],
  ['NUL in the target', 'GET /a\x00b HTTP/1.1\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['a space in the target', 'GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['no version', 'GET /\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['a TLS hello on a plain listener', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['a lower-case method', 'get / HTTP/1.1\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['an unknown method', 'XXXX / HTTP/1.1\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['a byte above 0x7f in the target', 'GET /caf\xe9 HTTP/1.1\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['an HTTP/2.0 request line', 'GET / HTTP/2.0\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_BAD_REQUEST'],
  ['a duplicate Host', 'GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n', 400, 'RMP_ERR_EDGE_DUPLICATE_HOST'],
  [
    'a trailer field without a colon',
    'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nNoColon\r\n\r\n',
    400,
    'RMP_ERR_EDGE_SMUGGLING',
  ],
  [
    'a Content-Length trailer',
    'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nContent-Length: 5\r\n\r\n',
    400,
    'RMP_ERR_EDGE_SMUGGLING',
  ],
  [
    'a space before a trailer colon',
    'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T : a\r\n\r\n',
    400,
    'RMP_ERR_EDGE_SMUGGLING',
  ],
  [
    'a chunk extension with a control byte',
    'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n4;x\x01\r\nabcd\r\n0\r\n\r\n',
    400,
    'RMP_ERR_EDGE_SMUGGLING',
  ],
];

for (const [what, payload, status, code] of MALFORMED) {
  test(`${what}: the same clear refusal from both engines, nothing forwarded`, async (t) => {
    const answers: string[] = [];
    for (const engine of ENGINES) {
      const { gw, up } = await pair(t, engine);
      const raw = await rawRequest(gw.port, payload, { timeoutMs: 2000 });
      assert.equal(statusOf(raw), status, `${engine}: ${JSON.stringify(raw)}`);
      assert.equal(errorCodeOf(raw), code, `${engine}: ${JSON.stringify(raw)}`);
      assert.match(raw, /\r\nconnection: close\r\n/i, engine);
      assert.equal(responses(raw).length, 1, engine);
      await sleep(50);
      assert.equal(up.requests.length, 0, `${engine}: a complete request reached the upstream`);
      answers.push(`${statusOf(raw)} ${errorCodeOf(raw)}`);
    }
    assert.equal(answers[0], answers[1]);
  });
}

for (const engine of ENGINES) {
  test(`${engine}: a thousand pipelined requests in one write, read by their client, are all answered in order`, async (t) => {
    const { gw, up } = await pair(
      t,
      engine,
      {
        limits: { maxPipelinedRequests: 1000 },
        defense: { rateLimit: { mode: 'off' } },
      },
      // About pipelining, not admission: one client's thousand requests would be held to its fair
      // share of the queue (the rest shed), which is admission working, not what is tested here.
      { mode: 'off' },
    );
    const c = holdConnection(t, gw.port);
    await c.connected;
    let all = '';
    for (let i = 0; i < 1000; i++) all += `GET /p${i} HTTP/1.1\r\nHost: a.test\r\n\r\n`;
    c.socket.write(all);
    await waitFor(() => responses(c.data).length === 1000, { timeoutMs: 30000, message: 'a thousand answers' });
    const order = [...c.data.matchAll(/GET \/p(\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(
      order,
      Array.from({ length: 1000 }, (_, i) => i),
    );
    assert.equal(up.requests.length, 1000);
  });

  test(`${engine}: a thousand pipelined requests past the bound close the connection; the gateway serves on`, async (t) => {
    const { gw } = await pair(t, engine, { defense: { rateLimit: { mode: 'off' } } });
    const c = holdConnection(t, gw.port, '127.0.0.9');
    await c.connected;
    c.socket.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n'.repeat(1000));
    await Promise.race([c.closed, sleep(5000)]);
    assert.ok(c.isClosed, 'the flooding connection was closed');
    assert.ok(responses(c.data).length <= 2 * 32, `${responses(c.data).length} answers`);
    assert.equal((await fetch(`${gw.url}/after`)).status, 200);
  });

  test(`${engine}: bytes after a body are read as the next request and refused as such`, async (t) => {
    const { gw, up } = await pair(t, engine);
    const raw = await rawRequest(
      gw.port,
      'POST /one HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhellogarbage-after-the-body\r\n\r\n',
      { timeoutMs: 2000 },
    );
    assert.deepEqual(responses(raw), ['HTTP/1.1 200', 'HTTP/1.1 400'], JSON.stringify(raw));
    assert.match(raw, /POST \/one/);
    assert.equal(up.requests.length, 1);
    assert.equal(up.requests[0]!.bodyBytes, 5);
  });

  test(`${engine}: a client sending a byte at a time is served, chunked body included`, async (t) => {
    const { gw, up } = await pair(t, engine);
    const c = holdConnection(t, gw.port);
    await c.connected;
    c.socket.setNoDelay(true);
    const text =
      'POST /slow HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
      '5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\n\r\n';
    for (const ch of text) {
      c.socket.write(ch);
      await sleep(1);
    }
    await Promise.race([c.closed, sleep(5000)]);
    assert.equal(statusOf(c.data), 200, c.data);
    assert.match(c.data, /x-body-bytes: 8/i);
    assert.equal(up.requests[0]!.bodyBytes, 8);
  });

  test(`${engine}: Expect: 100-continue gets 100 only once the phases let the request by, then the answer`, async (t) => {
    const { gw, up } = await pair(t, engine);
    const c = holdConnection(t, gw.port);
    await c.connected;
    c.socket.write('POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n');
    await waitFor(() => c.data.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), { timeoutMs: 3000, message: 'the 100' });
    c.socket.write('data');
    await waitFor(() => responses(c.data).length === 2, { timeoutMs: 3000, message: 'the answer' });
    assert.deepEqual(responses(c.data), ['HTTP/1.1 100', 'HTTP/1.1 200']);
    assert.equal(up.requests[0]!.bodyBytes, 4);
  });

  test(`${engine}: keep-alive serves requests in turn on one connection; HTTP/1.0 without keep-alive closes`, async (t) => {
    const { gw } = await pair(t, engine);
    const c = holdConnection(t, gw.port);
    await c.connected;
    for (let i = 1; i <= 3; i++) {
      c.socket.write(`GET /k${i} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      await waitFor(() => responses(c.data).length === i, { timeoutMs: 3000, message: `answer ${i}` });
    }
    assert.equal(c.isClosed, false);
    assert.doesNotMatch(c.data, /connection: close/i);
    const old = await rawRequest(gw.port, 'GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n', { timeoutMs: 3000 });
    assert.equal(statusOf(old), 200, old);
    assert.match(old, /connection: close/i);
  });

  test(`${engine}: pipelined refusals queued behind proxied answers go out in request order, none past a close`, async (t) => {
    // The first three are proxied (the rule's burst), the next refused at once while the proxied ones
    // are still out: their answers wait and go out together (lean: attached in one corked write).
    const { gw, up } = await pair(t, engine, {
      defense: {
        bans: { mode: 'off' },
        rateLimit: { mode: 'enforce', rules: [{ id: 'pipe', key: 'address', ratePerSec: 0.001, burst: 3 }] },
      },
    });
    const c = holdConnection(t, gw.port, '127.0.0.7');
    await c.connected;
    let all = '';
    for (let i = 0; i < 12; i++)
      all += `GET /p${i} HTTP/1.1\r\nHost: a.test\r\n${i === 9 ? 'Connection: close\r\n' : ''}\r\n`;
    c.socket.write(all);
    await Promise.race([c.closed, sleep(5000)]);
    assert.ok(c.isClosed, 'closed after the answer to the request that said close');
    assert.deepEqual(responses(c.data), [
      ...Array.from({ length: 3 }, () => 'HTTP/1.1 200'),
      ...Array.from({ length: 7 }, () => 'HTTP/1.1 429'),
    ]);
    const order = [...c.data.matchAll(/GET \/p(\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(order, [0, 1, 2]);
    assert.deepEqual(
      up.requests.map((r) => r.url),
      ['/p0', '/p1', '/p2'],
    );
  });

  test(`${engine}: a request pipelined behind Connection: close is not served`, async (t) => {
    const { gw, up } = await pair(t, engine);
    const raw = await rawRequest(
      gw.port,
      'GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: a.test\r\n\r\n',
      { timeoutMs: 2000 },
    );
    assert.deepEqual(responses(raw), ['HTTP/1.1 200']);
    await sleep(50);
    assert.deepEqual(
      up.requests.map((r) => r.url),
      ['/last'],
    );
  });
}

for (const engine of ENGINES) {
  test(`${engine}: bad chunk framing in a body already streaming upstream cuts that request only; the gateway serves on`, async (t) => {
    const { gw, up } = await pair(t, engine, { limits: { bufferBodyBytes: 0 } });
    for (let i = 0; i < 5; i++) {
      const c = holdConnection(t, gw.port);
      await c.connected;
      c.socket.write('POST /stream HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      await sleep(30);
      c.socket.write('zz\r\nnot a chunk\r\n0\r\n\r\n');
      await Promise.race([c.closed, sleep(3000)]);
      assert.ok(c.isClosed, 'the connection with the bad body was closed');
    }
    assert.equal((await fetch(`${gw.url}/after`)).status, 200, 'the gateway is alive and serving');
    assert.equal(up.requests.filter((r) => r.url === '/stream').length, 0, 'a complete request reached the upstream');
  });
}
