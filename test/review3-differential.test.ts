// Review of the lean engine as default (s24): the same hostile bytes to a gateway on each engine. The
// lean parser was rewritten for speed (tight loops over targets, names and values; the method from its
// bytes; bodiless requests without a stream): whatever it lets through to the origin, node's llhttp
// must let through too (the same requests, the same bodies), and neither engine's process may fall.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rawRequest, startGateway, startUpstream, type RecordingUpstream } from './helpers.ts';

const H = 'Host: a.test\r\n';
const NEXT = `GET /next HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
const CASES: [string, string | Buffer][] = [
  ['CL and TE', `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${NEXT}`],
  ['two CL', `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd${NEXT}`],
  ['CL list', `POST / HTTP/1.1\r\n${H}Content-Length: 4, 4\r\n\r\nabcd${NEXT}`],
  ['CL sign', `POST / HTTP/1.1\r\n${H}Content-Length: +4\r\n\r\nabcd${NEXT}`],
  ['CL 0 then a request', `POST / HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n${NEXT}`],
  ['CL 00 then a request', `POST / HTTP/1.1\r\n${H}Content-Length: 00\r\n\r\n${NEXT}`],
  ['bodiless then a request', `GET / HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['obs-fold', `GET / HTTP/1.1\r\n${H}X-A: a\r\n Transfer-Encoding: chunked\r\n\r\n${NEXT}`],
  ['bare LF', `GET / HTTP/1.1\n${H}\n${NEXT}`],
  ['bare CR', `GET / HTTP/1.1\r\n${H}X-A: a\rTransfer-Encoding: chunked\r\n\r\n${NEXT}`],
  ['NUL in a value', `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n${NEXT}`],
  ['DEL in a value', `GET / HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n${NEXT}`],
  ['8-bit name', Buffer.from(`GET / HTTP/1.1\r\n${H}X-\xe9: a\r\n\r\n${NEXT}`, 'latin1')],
  ['8-bit value', Buffer.from(`GET / HTTP/1.1\r\n${H}X-A: \xe9\xff\r\nConnection: close\r\n\r\n`, 'latin1')],
  ['8-bit target', Buffer.from(`GET /\xe9 HTTP/1.1\r\n${H}\r\n${NEXT}`, 'latin1')],
  ['DEL in the target', `GET /a\x7f HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['TAB in the target', `GET /a\tb HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['space before colon', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${NEXT}`],
  [
    'TE chunked twice',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${NEXT}`,
  ],
  ['TE list', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n${NEXT}`],
  ['TE on 1.0', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${NEXT}`],
  ['TE identity and CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok${NEXT}`],
  ['chunk size bare LF', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n${NEXT}`],
  [
    'chunk size overflow',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff4\r\nabcd\r\n0\r\n\r\n${NEXT}`,
  ],
  ['CL in a trailer', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n${NEXT}`],
  ['lower-case method', `get / HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['GE', `GE / HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['GETX', `GETX / HTTP/1.1\r\n${H}\r\n${NEXT}`],
  ['HTTP/1.2', `GET / HTTP/1.2\r\n${H}\r\n${NEXT}`],
  ['no colon', `GET / HTTP/1.1\r\n${H}XA\r\n\r\n${NEXT}`],
  ['empty name', `GET / HTTP/1.1\r\n${H}: b\r\n\r\n${NEXT}`],
  ['VT in a name', `GET / HTTP/1.1\r\n${H}X\x0bA: b\r\n\r\n${NEXT}`],
  ['Connection: close, then a request', `GET / HTTP/1.1\r\n${H}Connection: keep-alive, close\r\n\r\n${NEXT}`],
  ['h2c upgrade, then a request', `GET / HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n${NEXT}`],
];

/** What reached the origin, one line per request. */
function seen(up: RecordingUpstream, from: number): string[] {
  return up.requests.slice(from).map((r) => `${r.method} ${r.url} ${r.bodyBytes}`);
}

test('differential: the lean engine forwards nothing node refuses, for each hostile request shape', async (t) => {
  const ups = { node: await startUpstream(t), lean: await startUpstream(t) };
  const gws = {
    node: await startGateway(t, ups.node.url, { server: { engine: 'node' }, logging: { level: 'error' } }),
    lean: await startGateway(t, ups.lean.url, { server: { engine: 'lean' }, logging: { level: 'error' } }),
  };
  const problems: string[] = [];
  for (const [what, bytes] of CASES) {
    const from = { node: ups.node.requests.length, lean: ups.lean.requests.length };
    await Promise.all([
      rawRequest(gws.node.port, bytes, { timeoutMs: 800 }),
      rawRequest(gws.lean.port, bytes, { timeoutMs: 800 }),
    ]);
    const node = seen(ups.node, from.node);
    const lean = seen(ups.lean, from.lean);
    // lean may refuse more (it is stricter: two spaces, 16-digit lengths), never forward more.
    for (const r of lean)
      if (!node.includes(r)) problems.push(`${what}: lean forwarded ${r} (node: ${node.join(', ')})`);
  }
  assert.deepEqual(problems, []);
  // Not vacuous: the shapes both engines accept reached the origin (bodiless, CL 0/00, 8-bit values …).
  assert.ok(ups.lean.requests.length >= 8, `lean forwarded ${ups.lean.requests.length}`);
  // Both still serve.
  for (const gw of Object.values(gws)) {
    const ok = await rawRequest(gw.port, `GET /alive HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    assert.match(ok, /^HTTP\/1\.1 200 /);
  }
});
