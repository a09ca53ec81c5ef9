// Behaviour tests for the reference postal origin and the SMS approvals service, over real sockets.
// Requests use node:http with agent:false so each one owns a connection (no pooling surprises in capacity tests).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startPostalOrigin, startSmsApprovals, type RunningOrigin } from './origin.ts';

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(path, base),
      { method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}
const postJson = (base: string, path: string, value: unknown, headers: Record<string, string> = {}) =>
  request(base, path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(value),
  });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Poll until `check` holds (5 s at most): no assumption on how fast a loaded machine gets there. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

async function login(base: string, user: string, password: string): Promise<string> {
  const res = await postJson(base, '/login', { user, password });
  assert.equal(res.status, 200);
  const cookie = String(res.headers['set-cookie']?.[0]);
  return cookie.split(';')[0]!;
}

describe('postal origin routes', () => {
  let origin: RunningOrigin;
  before(async () => {
    origin = await startPostalOrigin({ serviceTimeMs: 1 });
  });
  after(() => origin.close());

  test('the home page is small cacheable HTML linking to tracking, login and the vault', async () => {
    const res = await request(origin.url, '/');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/html/);
    assert.equal(res.headers['cache-control'], 'public, max-age=60');
    assert.equal(res.headers['x-origin'], 'postal');
    assert.equal(Number(res.headers['content-length']), Buffer.byteLength(res.body));
    for (const link of ['/track/', '/login', '/vault/documents']) assert.ok(res.body.includes(link), link);
  });

  test('static assets are served with a long public cache lifetime and unknown ones are 404', async () => {
    const css = await request(origin.url, '/static/app.css');
    assert.equal(css.status, 200);
    assert.match(String(css.headers['content-type']), /^text\/css/);
    assert.equal(css.headers['cache-control'], 'public, max-age=3600');
    const js = await request(origin.url, '/static/app.js');
    assert.equal(js.status, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    assert.equal((await request(origin.url, '/static/nope.png')).status, 404);
  });

  test('tracking answers the same JSON for the same id, ignores the query string and varies across ids', async () => {
    const a = await request(origin.url, '/track/6A12345678901');
    const b = await request(origin.url, '/track/6A12345678901?cache-buster=42');
    assert.equal(a.status, 200);
    assert.equal(a.headers['cache-control'], 'public, max-age=30');
    assert.equal(a.body, b.body);
    const parsed = JSON.parse(a.body);
    assert.equal(parsed.id, '6A12345678901');
    assert.equal(typeof parsed.status, 'string');
    assert.ok(Array.isArray(parsed.events) && parsed.events.length > 0);
    assert.equal(parsed.status, parsed.events.at(-1).stage);
    const bodies = new Set<string>();
    for (const id of ['A1', 'B2', 'C3', 'D4', 'E5'])
      bodies.add(JSON.stringify(JSON.parse((await request(origin.url, `/track/${id}`)).body).events));
    assert.ok(bodies.size > 1, 'different ids should not all share one history');
  });

  test('tracking rejects ids that are empty, too long or not alphanumeric with a 400 JSON error', async () => {
    for (const id of ['', 'x'.repeat(33), 'ab-cd', 'a%20b', 'a/b']) {
      const res = await request(origin.url, `/track/${id}`);
      assert.equal(res.status, 400, id);
      assert.match(String(res.headers['content-type']), /^application\/json/);
      assert.equal(JSON.parse(res.body).error, 'bad_tracking_id');
    }
    assert.equal((await request(origin.url, `/track/${'x'.repeat(32)}`)).status, 200);
  });

  test('login accepts the demo accounts and numbered load-test users via JSON or form and sets a session cookie', async () => {
    const form = await request(origin.url, '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'user=alice&password=alice-pass',
    });
    assert.equal(form.status, 200);
    assert.deepEqual(JSON.parse(form.body), { ok: true });
    assert.equal(form.headers['cache-control'], 'no-store');
    assert.match(String(form.headers['set-cookie']?.[0]), /^sid=[0-9a-f]{32}; Path=\/; HttpOnly; SameSite=Lax$/);
    for (const [user, password] of [
      ['bob', 'bob-pass'],
      ['user0', 'pass0'],
      ['user99999', 'pass99999'],
    ]) {
      assert.equal((await postJson(origin.url, '/login', { user, password })).status, 200, user);
    }
    const a = await login(origin.url, 'user7', 'pass7');
    const b = await login(origin.url, 'user7', 'pass7');
    assert.notEqual(a, b, 'each login gets a fresh random session id');
  });

  test('login refuses wrong passwords and out-of-range users with 401 and malformed bodies with 4xx', async () => {
    for (const [user, password] of [
      ['alice', 'bob-pass'],
      ['user100000', 'pass100000'],
      ['user5', 'pass6'],
      ['mallory', 'x'],
    ]) {
      const res = await postJson(origin.url, '/login', { user, password });
      assert.equal(res.status, 401, user);
      assert.equal(res.headers['set-cookie'], undefined);
    }
    assert.equal(
      (
        await request(origin.url, '/login', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"user":',
        })
      ).status,
      400,
    );
    assert.equal((await postJson(origin.url, '/login', { user: 'alice' })).status, 400);
    assert.equal(
      (
        await request(origin.url, '/login', {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: 'alice',
        })
      ).status,
      415,
    );
  });

  test('bodies over 8 KiB are refused with 413, whether announced or streamed', async () => {
    const big = JSON.stringify({ user: 'alice', password: 'x'.repeat(9000) });
    assert.equal((await postJson(origin.url, '/login', { user: 'alice', password: 'x'.repeat(9000) })).status, 413);
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        new URL('/login', origin.url),
        {
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write(big.slice(0, 5000));
      req.end(big.slice(5000));
    });
    assert.equal(chunked, 413);
    assert.equal((await request(origin.url, '/healthz')).status, 200, 'origin still alive');
  });

  test('the vault lists 50 documents and serves each one only to a logged-in session', async () => {
    assert.equal((await request(origin.url, '/vault/documents')).status, 401);
    assert.equal((await request(origin.url, '/vault/documents/1')).status, 401);
    assert.equal(
      (await request(origin.url, '/vault/documents', { headers: { cookie: 'sid=0123456789abcdef0123456789abcdef' } }))
        .status,
      401,
    );
    const cookie = await login(origin.url, 'alice', 'alice-pass');
    const list = await request(origin.url, '/vault/documents', { headers: { cookie: `theme=dark; ${cookie}` } });
    assert.equal(list.status, 200);
    assert.equal(list.headers['cache-control'], 'private, no-store');
    const docs = JSON.parse(list.body) as Array<{ id: number; title: string; bytes: number }>;
    assert.equal(docs.length, 50);
    const third = docs[3]!;
    const doc = await request(origin.url, `/vault/documents/${third.id}`, { headers: { cookie } });
    assert.equal(doc.status, 200);
    assert.equal(doc.headers['cache-control'], 'private, no-store');
    assert.equal(Buffer.byteLength(doc.body), third.bytes);
    assert.ok(third.bytes >= 1024 && third.bytes <= 8192);
    assert.equal(
      (await request(origin.url, `/vault/documents/${third.id}`, { headers: { cookie } })).body,
      doc.body,
      'deterministic',
    );
    assert.equal((await request(origin.url, '/vault/documents/51', { headers: { cookie } })).status, 404);
    assert.equal((await request(origin.url, '/vault/documents/abc', { headers: { cookie } })).status, 404);
  });

  test('payment approval via the app channel echoes the payment id and rejects missing or malformed bodies', async () => {
    const ok = await postJson(origin.url, '/payments/approve', { paymentId: 'PAY-2025-12-24-001' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['cache-control'], 'no-store');
    assert.deepEqual(JSON.parse(ok.body), { approved: true, paymentId: 'PAY-2025-12-24-001', channel: 'app' });
    for (const body of ['', '{', '{}', '{"paymentId":""}', '{"paymentId":{"x":1}}', 'null', '[1]']) {
      assert.equal(
        (
          await request(origin.url, '/payments/approve', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
          })
        ).status,
        400,
        body,
      );
    }
  });

  test('health answers ok, unknown paths answer 404 JSON and wrong methods on known paths 405', async () => {
    const health = await request(origin.url, '/healthz');
    assert.equal(health.status, 200);
    assert.equal(health.body, 'ok');
    const missing = await request(origin.url, '/wp-admin/setup.php?x=1');
    assert.equal(missing.status, 404);
    assert.match(String(missing.headers['content-type']), /^application\/json/);
    assert.equal(missing.headers['x-origin'], 'postal');
    assert.equal((await request(origin.url, '/login')).status, 405);
    assert.equal((await request(origin.url, '/', { method: 'HEAD' })).status, 200);
  });
});

describe('postal origin capacity model', () => {
  // Service times of a second or more: a machine that stalls for a few hundred ms cannot finish a
  // service round early, so every count below is exact.
  test('with 2 workers and a queue of 2, ten simultaneous requests give exactly 4 answers and 6 immediate 503s', async () => {
    const origin = await startPostalOrigin({ workers: 2, serviceTimeMs: 1000, queueLength: 2 });
    try {
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          request(origin.url, `/track/P${i}`).then((res) => ({ ...res, ms: performance.now() - started })),
        ),
      );
      const ok = results.filter((r) => r.status === 200);
      const rejected = results.filter((r) => r.status === 503);
      assert.equal(ok.length, 4);
      assert.equal(rejected.length, 6);
      for (const r of rejected) {
        assert.equal(r.headers['retry-after'], '1');
        assert.ok(r.ms < 1000, `503s come before any service slot frees, took ${r.ms}ms`);
      }
      assert.ok(Math.max(...ok.map((r) => r.ms)) >= 1990, 'queued requests wait for a second service round');
      const s = origin.stats();
      assert.equal(s.rejected, 6);
      assert.equal(s.served, 4);
      assert.equal(s.maxInFlight, 2);
      assert.equal(s.inFlight, 0);
      assert.equal(s.queued, 0);
      assert.ok(s.busyMs >= 4 * 995 && s.busyMs < 4 * 1000 + 1000, `busyMs ${s.busyMs}`);
    } finally {
      await origin.close();
    }
  });

  test('health, stats and static assets stay fast while every service slot and queue place is taken', async () => {
    const origin = await startPostalOrigin({ workers: 1, serviceTimeMs: 2000, queueLength: 1 });
    try {
      const slow = [request(origin.url, '/'), request(origin.url, '/')];
      await until(
        'one request in service and one queued',
        () => origin.stats().inFlight === 1 && origin.stats().queued === 1,
      );
      assert.equal((await request(origin.url, '/')).status, 503);
      const t0 = performance.now();
      assert.equal((await request(origin.url, '/healthz')).status, 200);
      assert.equal((await request(origin.url, '/static/app.css')).status, 200);
      const stats = JSON.parse((await request(origin.url, '/__origin/stats')).body);
      assert.ok(performance.now() - t0 < 1000, 'answered well within one service time');
      assert.equal(stats.inFlight, 1);
      assert.equal(stats.queued, 1);
      assert.equal(stats.rejected, 1);
      assert.deepEqual(
        (await Promise.all(slow)).map((r) => r.status),
        [200, 200],
      );
    } finally {
      await origin.close();
    }
  });

  test('a client that gives up while queued frees its queue place instead of later burning a slot', async () => {
    const origin = await startPostalOrigin({ workers: 1, serviceTimeMs: 1000, queueLength: 1 });
    try {
      const first = request(origin.url, '/');
      await until('the first request in service', () => origin.stats().inFlight === 1);
      const quitter = http.request(new URL('/track/ABC', origin.url), { agent: false });
      quitter.on('error', () => {});
      quitter.end();
      await until('the second request queued', () => origin.stats().queued === 1);
      quitter.destroy();
      await until('the queue place freed', () => origin.stats().queued === 0);
      // Freed while the first still holds the slot: not by the abandoned request moving into service.
      assert.equal(origin.stats().served, 0, 'the first request is still in service');
      assert.equal(origin.stats().inFlight, 1);
      assert.equal((await first).status, 200);
      await until('the slot is free', () => origin.stats().inFlight === 0);
      await sleep(200);
      assert.equal(origin.stats().served, 1);
      assert.equal(
        origin.stats().busyMs < 1000 + 500,
        true,
        `the abandoned request never took a slot (busy ${origin.stats().busyMs} ms)`,
      );
    } finally {
      await origin.close();
    }
  });
});

describe('postal origin operations', () => {
  test('setDown makes every request fail at the socket and setDown(false) brings it back on the same port', async () => {
    const origin = await startPostalOrigin({ serviceTimeMs: 1 });
    try {
      assert.equal((await request(origin.url, '/healthz')).status, 200);
      origin.setDown(true);
      await assert.rejects(request(origin.url, '/healthz'));
      await assert.rejects(request(origin.url, '/track/X1'));
      origin.setDown(false);
      assert.equal((await request(origin.url, '/healthz')).status, 200);
    } finally {
      await origin.close();
    }
  });

  test('stats count served requests per route, exclude their own reads and can be reset', async () => {
    const origin = await startPostalOrigin({ serviceTimeMs: 5, name: 'postal-b' });
    try {
      await request(origin.url, '/track/A1');
      await request(origin.url, '/track/A2?x=1');
      await request(origin.url, '/');
      const res = await request(origin.url, '/nowhere');
      assert.equal(res.headers['x-origin'], 'postal-b');
      const s = JSON.parse((await request(origin.url, '/__origin/stats')).body);
      assert.deepEqual(s.byRoute, { 'GET /track/:id': 2, 'GET /': 1, other: 1 });
      assert.equal(s.served, 4);
      assert.equal(s.rejected, 0);
      assert.ok(s.busyMs >= 4 * 4);
      assert.ok(s.startedAt <= Date.now());
      assert.deepEqual(origin.stats().byRoute, s.byRoute);
      origin.resetStats();
      const r = origin.stats();
      assert.deepEqual([r.served, r.rejected, r.busyMs, r.maxInFlight, r.byRoute], [0, 0, 0, 0, {}]);
    } finally {
      await origin.close();
    }
  });

  test('malformed request lines and aborted uploads do not crash the origin', async () => {
    const origin = await startPostalOrigin({ serviceTimeMs: 1 });
    try {
      const net = await import('node:net');
      await new Promise<void>((resolve) => {
        const s = net.connect(origin.port, '127.0.0.1', () => s.end('GARBAGE \x00\x01 nonsense\r\n\r\n'));
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.resume();
      });
      await new Promise<void>((resolve) => {
        const s = net.connect(origin.port, '127.0.0.1', () => {
          s.write(
            'POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"user":',
          );
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 30);
        });
        s.on('error', () => {});
      });
      // A path-shaped target that WHATWG URL cannot parse (it reads as a bad host) must still get an answer.
      const raw = await new Promise<string>((resolve) => {
        let out = '';
        const s = net.connect(origin.port, '127.0.0.1', () =>
          s.write('GET //%zz/../track/OK1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
        );
        s.on('data', (c: Buffer) => {
          out += c;
        });
        s.on('close', () => resolve(out));
        s.on('error', () => resolve(out));
      });
      assert.match(raw, /^HTTP\/1\.1 404 /);
      assert.equal((await request(origin.url, '/healthz')).status, 200);
    } finally {
      await origin.close();
    }
  });
});

describe('SMS approvals service', () => {
  let sms: RunningOrigin;
  before(async () => {
    sms = await startSmsApprovals({ serviceTimeMs: 1 });
  });
  after(() => sms.close());

  test('approves payments on the sms channel with a deterministic six-digit code', async () => {
    const a = await postJson(sms.url, '/payments/approve', { paymentId: 'PAY-1' });
    assert.equal(a.status, 200);
    assert.equal(a.headers['x-origin'], 'sms');
    const body = JSON.parse(a.body);
    assert.equal(body.approved, true);
    assert.equal(body.paymentId, 'PAY-1');
    assert.equal(body.channel, 'sms');
    assert.match(body.code, /^\d{6}$/);
    assert.equal(
      JSON.parse((await postJson(sms.url, '/payments/approve', { paymentId: 'PAY-1' })).body).code,
      body.code,
    );
    assert.equal((await postJson(sms.url, '/payments/approve', {})).status, 400);
  });

  test('has its own health check, stats and nothing else', async () => {
    assert.equal((await request(sms.url, '/healthz')).body, 'ok');
    assert.equal((await request(sms.url, '/track/A1')).status, 404);
    const s = JSON.parse((await request(sms.url, '/__origin/stats')).body);
    assert.ok(s.byRoute['POST /payments/approve'] >= 1);
    assert.deepEqual(sms.stats().byRoute, s.byRoute);
  });
});

describe('origin CLI', () => {
  const script = fileURLToPath(new URL('./origin.ts', import.meta.url));
  const run = (args: string[]) => spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });

  test('nonsense flags print a clear error and exit with status 2', async () => {
    for (const args of [
      ['--workers', '0'],
      ['--port', '70000'],
      ['--service-ms', '-5'],
      ['--queue', 'lots'],
      ['--frobnicate'],
    ]) {
      const child = run(args);
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => {
        stderr += c;
      });
      const code = await new Promise((r) => child.on('exit', r));
      assert.equal(code, 2, args.join(' '));
      assert.match(stderr, /^origin: /, args.join(' '));
    }
  });

  test('starts both services, prints their URLs and exits cleanly on SIGTERM', async () => {
    const child = run(['--port', '0', '--sms-port', '0', '--workers', '2', '--service-ms', '5', '--queue', '4']);
    let stdout = '';
    const urls = await new Promise<string[]>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        stdout += c;
        const found = stdout.match(/http:\/\/127\.0\.0\.1:\d+/g) ?? [];
        if (found.length === 2) resolve(found);
      });
      child.on('exit', () => reject(new Error(`exited early: ${stdout}`)));
    });
    assert.equal((await request(urls[0]!, '/healthz')).headers['x-origin'], 'postal');
    assert.equal((await request(urls[1]!, '/healthz')).headers['x-origin'], 'sms');
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0);
  });
});
