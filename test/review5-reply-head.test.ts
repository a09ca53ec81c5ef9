// Review (issue 17, refusal branch): the head of a local reply made from a frozen header set merged
// once (pipeline/reply.ts) must still say each framing field once. The ban phase's set carries
// `connection: close`; a refusal whose body may still be on the wire adds its own: two Connection lines
// where there was one (harmless to most parsers, but a head a strict intermediary may reject).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { holdConnection, sleep, startGateway, startUpstream, waitFor, type Teardown } from './helpers.ts';

const TOKEN = 'test-operator-token-0123456789';

async function gateway(t: Teardown, engine: 'lean' | 'node') {
  const up = await startUpstream(t);
  const saved = process.env.REMPART_ADMIN_TOKEN;
  process.env.REMPART_ADMIN_TOKEN = TOKEN;
  try {
    return await startGateway(t, up.url, { server: { engine }, defense: { rateLimit: { mode: 'off' } } });
  } finally {
    if (saved === undefined) delete process.env.REMPART_ADMIN_TOKEN;
    else process.env.REMPART_ADMIN_TOKEN = saved;
  }
}

for (const engine of ['lean', 'node'] as const) {
  test(`review5 ${engine}: a banned client's refused POST, its body pending, says Connection: close once`, async (t) => {
    const gw = await gateway(t, engine);
    const c = holdConnection(t, gw.port, '127.0.0.9');
    await c.connected;
    c.socket.write('GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await waitFor(() => c.data.includes('\r\n\r\nok'));
    const r = await fetch(`${gw.adminUrl}/api/bans`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target: '127.0.0.9', ttlSec: 60 }),
    });
    assert.equal(r.status, 201);
    c.data = '';
    c.socket.write('POST /b HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n');
    await Promise.race([c.closed, sleep(3000)]);
    const head = c.data.slice(0, c.data.indexOf('\r\n\r\n'));
    assert.match(head, /^HTTP\/1\.1 403/);
    assert.equal(head.match(/\r\nconnection:/gi)?.length, 1, head);
  });
}
