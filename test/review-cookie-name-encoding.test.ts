// Review (attack): "every cookie value counted" compares cookie names byte for byte, but Rack (Rails,
// Sinatra) and PHP URL-decode cookie names and keep the first of two equal names. `%73id=<real>;
// sid=<random>` is read by such an origin as the real session, while Rempart counts the request
// against a fresh identity `<random>` each time: the exfiltration quota (and a `key: session` rate
// limit) never fills for the session that really pulls the documents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { startGateway, startUpstream } from './helpers.ts';

/** Cookies as Rack and PHP read them: names and values %-decoded, the first of a name wins. */
function rackCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? '').split(/;\s*/)) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = decodeURIComponent(part.slice(0, eq).trim());
    if (!out.has(name)) out.set(name, decodeURIComponent(part.slice(eq + 1).trim()));
  }
  return out;
}

test('review: a %-encoded session cookie name cannot hide the real session from the exfiltration quota', async (t) => {
  const up = await startUpstream(t, (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (rackCookies(req.headers.cookie).get('sid') !== 'real-session') return void res.writeHead(401).end('login');
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private, no-store' }).end('document');
  });
  const gw = await startGateway(t, up.url, {
    routes: [
      {
        name: 'vault',
        path: '/vault/*',
        upstream: 'origin',
        class: 'authenticated',
        sensitive: { identity: 'session', documentsPerHour: 3 },
      },
      { name: 'default', path: '/*', upstream: 'origin' },
    ],
  });
  let served = 0;
  for (let i = 0; i < 8; i++) {
    const r = await fetch(`${gw.url}/vault/doc${i}`, { headers: { cookie: `%73id=real-session; sid=fresh${i}` } });
    await r.text();
    if (r.status === 200) served++;
  }
  assert.ok(served <= 3, `the real session was served ${served} documents past its quota of 3`);
});
