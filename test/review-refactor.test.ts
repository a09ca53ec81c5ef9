// Findings of the attacker review of the issue-15 redesign. Two were in the code before it (a crash and
// an admission-slot leak, both on the request path); one came with it (the waiting-room key reachable
// from the public Gateway object). Each test failed before its fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { inspect } from 'node:util';
import { fileURLToPath } from 'node:url';
import { sleep, startGateway, startUpstream } from './helpers.ts';

const HELPERS = fileURLToPath(new URL('./helpers.ts', import.meta.url));

// A chunked body cut at maxBodyBytes destroys the request stream, and `req.socket` turns null; the
// done step read the connection's books through it and threw outside any handler: one request, one
// dead process (the default bufferBodyBytes 64 KiB < maxBodyBytes 10 MiB lets the body stream).
test('a chunked body over the default maxBodyBytes is refused and the process lives on', () => {
  const child = `
    import net from 'node:net';
    const H = await import(${JSON.stringify(HELPERS)});
    const up = await H.startUpstream();
    const gw = await H.startGateway(up.url, {});
    const s = net.connect(gw.port, '127.0.0.1');
    s.on('error', () => {});
    s.write('POST /x HTTP/1.1\\r\\nHost: a.example\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n');
    const chunk = Buffer.alloc(1 << 20, 98);
    for (let i = 0; i < 11; i++) {
      s.write((1 << 20).toString(16) + '\\r\\n'); s.write(chunk); s.write('\\r\\n');
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const r = await H.rawRequest(gw.port, 'GET /x HTTP/1.1\\r\\nHost: a.example\\r\\nConnection: close\\r\\n\\r\\n');
    console.log('ALIVE', H.statusOf(r));
    await gw.close(); await up.close(); process.exit(0);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `the gateway process died: ${r.stderr.split('\n').slice(0, 6).join(' | ')}`);
  assert.match(r.stdout, /ALIVE 200/);
});

// A POST whose body completes after a request pipelined behind it was refused (Connection: close) was
// refused in dispatch() but never answered, and kept its admission slot until the socket idled out
// (30 s): four such connections held every slot of a 4-slot upstream.
test('a request meeting a closing connection at dispatch is answered and gives its slot back', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway(up.url, {
    upstreams: [{ name: 'origin', url: up.url, admission: { mode: 'static', staticLimit: 4 } }],
    defense: { rateLimit: { mode: 'off' } },
  });
  const socks: net.Socket[] = [];
  t.after(async () => {
    for (const s of socks) s.destroy();
    await gw.close();
    await up.close();
  });
  const answers: string[] = [];
  for (let i = 0; i < 4; i++) {
    const s = net.connect(gw.port, '127.0.0.1');
    let data = '';
    s.on('data', (c) => {
      data += c.toString('latin1');
      answers[i] = data;
    });
    s.on('error', () => {});
    s.write(
      'POST /a HTTP/1.1\r\nHost: x.example\r\nContent-Length: 5\r\n\r\nhello' +
        'GET /%00 HTTP/1.1\r\nHost: x.example\r\n\r\n',
    );
    socks.push(s);
  }
  const limiter = gw.gateway.runtime().upstreams.get('origin')!.admission.limiter;
  const deadline = Date.now() + 5000;
  while ((limiter.inFlight > 0 || answers.filter(Boolean).length < 4) && Date.now() < deadline) await sleep(25);
  assert.equal(limiter.inFlight, 0, 'slots held by requests nobody answers');
  for (const a of answers) assert.match(a ?? '', /^HTTP\/1\.1 \d{3}/);
  const res = await fetch(`${gw.url}/legit`, { signal: AbortSignal.timeout(3000) });
  assert.equal(res.status, 200);
});

test('the waiting-room signing key is not reachable from the public Gateway object', async (t) => {
  const saved = process.env.REMPART_WAITING_ROOM_KEY;
  process.env.REMPART_WAITING_ROOM_KEY = 'ab'.repeat(32);
  const up = await startUpstream();
  const gw = await startGateway(up.url, {});
  t.after(async () => {
    if (saved === undefined) delete process.env.REMPART_WAITING_ROOM_KEY;
    else process.env.REMPART_WAITING_ROOM_KEY = saved;
    await gw.close();
    await up.close();
  });
  const shown = inspect(gw.gateway.defense, { depth: 4 });
  assert.equal((gw.gateway.defense as unknown as { roomKey?: Buffer }).roomKey, undefined);
  assert.doesNotMatch(shown, /abab|roomKey|roomSigner/);
});
