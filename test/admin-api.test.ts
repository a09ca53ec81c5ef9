// The admin API's gate: bearer tokens stored as hashes, compared in constant time, with scopes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createToken, findToken, parseTokensFile } from '../src/control/api.ts';
import { rawRequest, startGateway, startUpstream, statusOf, tempDir } from './helpers.ts';

const run = promisify(execFile);

test('tokens files hold hashes only, and a bad line is refused with its line number', () => {
  const { token, line } = createToken('alice', 'operator');
  assert.ok(!line.includes(token), 'the stored line does not contain the token');
  const tokens = parseTokensFile(`# comment\n${line}\n`, 't');
  assert.equal(findToken(tokens, token)?.name, 'alice');
  assert.equal(findToken(tokens, `${token}x`), null);
  assert.throws(() => parseTokensFile(`alice operator ${token}\n`, 'tokens.txt'), /tokens\.txt:1:/);
  assert.throws(() => createToken('bad name', 'read'), /token name/);
});

test('`rempart token create` appends a hash line and prints the token once', async (t) => {
  const dir = tempDir(t, 'rmp-tok-');
  const file = join(dir, 'tokens');
  const { stdout } = await run(process.execPath, [
    'bin/rempart.js',
    'token',
    'create',
    '--name',
    'ops',
    '--scope',
    'read',
    '--file',
    file,
  ]);
  const token = stdout.trim();
  assert.match(token, /^rmp_[A-Za-z0-9_-]{40,}$/);
  const text = await readFile(file, 'utf8');
  assert.ok(!text.includes(token));
  assert.equal(findToken(parseTokensFile(text, file), token)?.scope, 'read');
});

test('the admin API answers 401 without a valid token, 403 for a read token acting, and serves with one', async (t) => {
  const dir = tempDir(t, 'rmp-api-');
  const reader = createToken('reader', 'read');
  const operator = createToken('op', 'operator');
  await writeFile(join(dir, 'tokens'), `${reader.line}\n${operator.line}\n`);
  const upstream = await startUpstream(t);
  const tg = await startGateway(t, upstream.url, {
    admin: { address: '127.0.0.1:0', tokensFile: join(dir, 'tokens') },
  });
  const gw = tg.gateway;
  let calls = 0;
  gw.api.route('GET', '/api/ping', 'read', () => ({ status: 200, body: { pong: true } }));
  gw.api.route('POST', '/api/poke', 'operator', (req) => {
    calls++;
    return { status: 200, body: { who: req.who, body: req.body } };
  });
  const base = tg.adminUrl!;
  const none = await fetch(`${base}/api/ping`);
  assert.equal(none.status, 401);
  assert.match(none.headers.get('www-authenticate') ?? '', /Bearer/);
  assert.equal((await fetch(`${base}/api/ping`, { headers: { authorization: 'Bearer rmp_wrong' } })).status, 401);
  const ok = await fetch(`${base}/api/ping`, { headers: { authorization: `Bearer ${reader.token}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { pong: true });
  const denied = await fetch(`${base}/api/poke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${reader.token}` },
    body: '{}',
  });
  assert.equal(denied.status, 403);
  assert.equal(calls, 0);
  const bad = await fetch(`${base}/api/poke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${operator.token}` },
    body: '{nope',
  });
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'RMP_ERR_ADMIN_BAD_REQUEST');
  const acted = await fetch(`${base}/api/poke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${operator.token}` },
    body: '{"x":1}',
  });
  assert.equal(acted.status, 200);
  assert.deepEqual(await acted.json(), { who: 'op', body: { x: 1 } });
  assert.equal(
    (await fetch(`${base}/api/nothing`, { headers: { authorization: `Bearer ${operator.token}` } })).status,
    404,
  );
  assert.equal(
    (await fetch(`${base}/api/ping`, { method: 'DELETE', headers: { authorization: `Bearer ${operator.token}` } }))
      .status,
    405,
  );
  assert.ok(
    tg.logs.some((l) => l.audit === true && l.who === 'op'),
    'the action is in the log',
  );
  assert.ok(!JSON.stringify(tg.logs).includes(operator.token), 'no token in the logs');
});

test('the admin listener answers only to localhost, IP addresses and admin.allowedHosts: a DNS-rebinding page gets 421', async (t) => {
  const up = await startUpstream(t);
  const gw = await startGateway(t, up.url, { admin: { address: '127.0.0.1:0', allowedHosts: ['admin.internal'] } });
  const port = Number(new URL(gw.adminUrl!).port);
  const ask = async (host: string | null, path: string) => {
    const reply = await rawRequest(
      port,
      `GET ${path} HTTP/1.1\r\n${host === null ? '' : `Host: ${host}\r\n`}Connection: close\r\n\r\n`,
    );
    // The admin listener's answers are chunked: the code is read from the body as it stands.
    return { status: statusOf(reply), code: /"code":"([A-Z_]+)"/.exec(reply)?.[1] ?? '' };
  };
  for (const path of ['/metrics', '/healthz', '/api/bans', '/dashboard']) {
    for (const host of [
      'evil.example',
      `evil.example:${port}`,
      'localhost.evil.example',
      'admin.internal.evil',
      'a@localhost',
      'localhost:1:2',
    ]) {
      const r = await ask(host, path);
      assert.deepEqual(r, { status: 421, code: 'RMP_ERR_ADMIN_HOST' }, `${host} ${path}`);
    }
  }
  for (const host of [
    `localhost:${port}`,
    'LOCALHOST',
    `127.0.0.1:${port}`,
    `[::1]:${port}`,
    '10.1.2.3:9180',
    `Admin.Internal:${port}`,
    null,
  ]) {
    assert.equal((await ask(host, '/metrics')).status, 200, String(host));
  }
});
