// Soak: the gateway under a steady attack for a long time (default 30 minutes), one million distinct
// client addresses over the run, its memory sampled every 10 s. The question is whether memory stays
// flat within its documented budget (docs/memory-budgets.md) once every table has reached its cap, or
// grows without end (a table with no bound, a leak per connection, per address or per ban).
//
//   this process: origin + load generator ──loopback──▶ child: `node bin/rempart.js --config …`
//     listener 1 plain (legit keep-alive clients), listener 2 `proxyProtocol: true`: the generator
//     is a trusted peer in 127/8 and names a new client address in a PROXY v1/v2 header per connection
//
// The mix, per second at the default pace (~560 new addresses a second, ~750 requests):
// - fresh addresses (IPv4 spread over every /24 of 11/8, IPv6 each in a /64 of its own), one
//   connection and one request each: public pages (challenged once the level is under_attack),
//   cacheable tracking pages with a random keyed query (the cache fills to its cap), login POSTs
//   (the origin grants a new session each time: the session table fills), documents on a sensitive
//   route (the exfiltration guard's identities), searches;
// - repeat offenders: 30 pipelined searches on one connection against a 1/s rule, so 25 are refused
//   and the address is banned; from a pool of 500 (they come back: escalation, refused on accept)
//   and from fresh addresses;
// - a small legit population on keep-alive connections with a session the origin granted.
//
// Sampled every 10 s: the gateway's VmRSS (/proc) and its anonymous memory by owner (smaps: the C
// allocator's arenas, V8's pages), the live heap after the last full collection (bench/soak-probe.ts,
// loaded into the gateway), its heap and table sizes (/metrics), the load.
// At the end: a linear fit of RSS and heap over the second half (MB/hour), the plateau against the
// budgets of the tables this config exercises, a JSON file, an HTML page with an SVG plot (no external
// assets) and a Markdown summary, under bench/results/.
//
// usage: node bench/soak.ts [--minutes 30] [--addresses N] [--out bench/results] [--name soak] [--calm 75]
//                           [--cap-scale 1] [--node-flags '--max-semi-space-size=16 …']
//   --cap-scale: every table's cap (and budget) × this (0.2: all full within minutes, see soakConfig)
//   --node-flags: the flags of the gateway's `node` (V8's heap sizing: what RSS follows); by default
//     those deploy/systemd/rempart.service starts it with (launcherFlags), `--node-flags ''` for none
//
// If the gateway dies during the run, the soak stops the load and still writes its report, with the
// exit code or signal and the gateway's last log lines, verdict FAIL. Its temporary directory (config,
// probe file) is removed on every exit, unless it holds a heap snapshot (SIGUSR1): then it is kept.
//   --calm: seconds of legit traffic alone before the attack (default 135: the level's warm-up is 60 s,
//     the legit clients' sessions are on probation for 120 s)
//   --addresses: distinct client addresses over the run (default 1,000,000 × minutes / 30)
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  freePort,
  installCleanupHandlers,
  isStopping,
  onCleanup,
  sleep,
  startProcess,
  stopAll,
  waitForPort,
} from './lib/procs.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MiB = 1024 * 1024;
const HOST = 'shop.example';
const SAMPLE_MS = 10_000;
const TOKEN = `soak-${Math.random().toString(36).slice(2)}-token`;

// ---------------------------------------------------------------- addresses

/** A multiplicative bijection on 32 bits (odd multiplier): consecutive indexes land far apart. */
const scramble = (i: number) => Math.imul(i, 0x9e3779b1) >>> 0;

export interface ClientAddress {
  v6: boolean;
  text: string;
  /** 4 or 16 bytes, for PROXY v2. */
  bytes: Buffer;
}

/**
 * Fresh address number `i` (distinct for distinct i below 2^24): two in three IPv4 in 11.0.0.0/8, the
 * low 24 bits scrambled so the run covers every /24 evenly; one in three IPv6 in 2001:db8::/32, each
 * in a /64 of its own (the gateway counts an IPv6 client by its /64: each is a new key). A million
 * indexes were checked: 1,000,000 distinct addresses, 333,333 distinct /64s.
 */
export function freshAddress(i: number): ClientAddress {
  if (i % 3 !== 2) {
    const k = scramble(i) & 0xffffff;
    const bytes = Buffer.from([11, k >>> 16, (k >>> 8) & 255, k & 255]);
    return { v6: false, text: bytes.join('.'), bytes };
  }
  const net64 = scramble(i >>> 1) >>> 1; // i ≡ 2 (mod 3): no two of them share i >>> 1
  return v6Address(0x2001, 0x0db8, net64 >>> 16, net64 & 0xffff, 1 + (i & 1));
}

function v6Address(a: number, b: number, c: number, d: number, iid: number): ClientAddress {
  const bytes = Buffer.alloc(16);
  const words = [a, b, c, d, 0, 0, 0, iid];
  words.forEach((w, k) => {
    bytes.writeUInt16BE(w, k * 2);
  });
  return {
    v6: true,
    text: `${words
      .slice(0, 4)
      .map((w) => w.toString(16))
      .join(':')}::${iid.toString(16)}`,
    bytes,
  };
}

/** Address of repeat offender `k` (12.0.0.0/8, or 2001:db9::/32 one /64 each) and of legit client `k`. */
function offenderAddress(k: number): ClientAddress {
  if (k % 2 === 0) {
    const bytes = Buffer.from([12, (k >>> 16) & 255, (k >>> 8) & 255, k & 255]);
    return { v6: false, text: bytes.join('.'), bytes };
  }
  return v6Address(0x2001, 0x0db9, 0, k, 1);
}

function legitAddress(k: number): ClientAddress {
  const bytes = Buffer.from([13, 1, k >>> 8, k & 255]);
  return { v6: false, text: bytes.join('.'), bytes };
}

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A PROXY header naming `a` as the client: v1 (text) or v2 (binary). */
export function proxyHeader(a: ClientAddress, srcPort: number, dstPort: number, v2: boolean): Buffer {
  if (!v2) {
    const fam = a.v6 ? 'TCP6' : 'TCP4';
    return Buffer.from(`PROXY ${fam} ${a.text} ${a.v6 ? '::1' : '127.0.0.1'} ${srcPort} ${dstPort}\r\n`);
  }
  const len = a.v6 ? 36 : 12;
  const b = Buffer.alloc(16 + len);
  V2_SIG.copy(b);
  b[12] = 0x21; // version 2, PROXY
  b[13] = a.v6 ? 0x21 : 0x11; // TCP over IPv6 / IPv4
  b.writeUInt16BE(len, 14);
  a.bytes.copy(b, 16);
  if (a.v6) {
    b[16 + 31] = 1; // ::1
    b.writeUInt16BE(srcPort, 48);
    b.writeUInt16BE(dstPort, 50);
  } else {
    b.writeUInt32BE(0x7f000001, 20);
    b.writeUInt16BE(srcPort, 24);
    b.writeUInt16BE(dstPort, 26);
  }
  return b;
}

// ---------------------------------------------------------------- responses

/** Counts complete HTTP/1.1 responses in a byte stream (Content-Length or chunked bodies). */
export class ResponseCounter {
  count = 0;
  readonly statuses: number[] = [];
  #buf = '';
  feed(chunk: Buffer): void {
    this.#buf += chunk.toString('latin1');
    for (;;) {
      const head = this.#buf.indexOf('\r\n\r\n');
      if (head === -1) return;
      const lines = this.#buf.slice(0, head);
      const status = Number(lines.slice(9, 12));
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(lines);
      let end: number;
      if (cl) {
        end = head + 4 + Number(cl[1]);
        if (this.#buf.length < end) return;
      } else if (/\r\ntransfer-encoding:\s*chunked/i.test(lines)) {
        const last = this.#buf.indexOf('\r\n0\r\n\r\n', head);
        if (last === -1) return;
        end = last + 7;
      } else {
        end = head + 4; // 1xx, 204, 304, or a close-delimited body (counted at its head)
      }
      this.#buf = this.#buf.slice(end);
      this.count++;
      this.statuses.push(status);
    }
  }
}

// ---------------------------------------------------------------- the origin

interface OriginStats {
  requests: number;
  sessionsGranted: number;
}

/** A tiny origin: a small page, cacheable tracking pages, a login that grants a new session, documents. */
function startOrigin(): Promise<{ port: number; stats: OriginStats; close(): void }> {
  const stats: OriginStats = { requests: 0, sessionsGranted: 0 };
  const page = `<!doctype html><title>shop</title><p>${'Lorem ipsum dolor sit amet. '.repeat(20)}</p>`;
  const track = 'x'.repeat(900);
  let sid = 0;
  const server = http.createServer((req, res) => {
    stats.requests++;
    const url = req.url ?? '/';
    req.resume();
    if (url.startsWith('/login')) {
      req.on('end', () => {
        stats.sessionsGranted++;
        const value = `s${(sid++).toString(36)}${Math.random().toString(36).slice(2, 12)}`;
        res.writeHead(200, {
          'content-type': 'application/json',
          'set-cookie': `sid=${value}; Path=/; HttpOnly`,
          'cache-control': 'no-store',
        });
        res.end('{"ok":true}');
      });
      return;
    }
    if (url.startsWith('/track/')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' });
      res.end(track);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'no-store' });
    res.end(page);
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({ port, stats, close: () => server.close() });
    });
  });
}

// ---------------------------------------------------------------- the gateway's config

/** The soak's config: the defaults, plus the routes and rules the mix exercises. */
export function soakConfig(
  p: { port: number; proxyPort: number; adminPort: number; originPort: number },
  capScale = 1,
) {
  // --cap-scale s: every table's cap × s, so that all of them are full early in the run and its
  // second half is steady state only (what a leak would move, and filling tables would not).
  // Every table keyed by client input that this mix reaches is scaled (tableCaps lists them with their
  // caps); none below 1,000 (the replay guard's schema minimum), the fixed sketches stay as they are.
  const t = tableCaps(capScale);
  const caps = capScale === 1 ? undefined : { maxKeys: t.rateLimitKeys };
  return {
    version: 1,
    listeners: [{ address: `127.0.0.1:${p.port}` }, { address: `127.0.0.1:${p.proxyPort}`, proxyProtocol: true }],
    upstreams: [{ name: 'origin', url: `http://127.0.0.1:${p.originPort}`, connections: 64 }],
    routes: [
      // Logins and tracking pages stay open under attack (as an operator would leave them), so the
      // session table and the cache keep seeing new keys after the level rises.
      {
        name: 'login',
        path: '/login',
        methods: ['POST'],
        upstream: 'origin',
        class: 'authenticated',
        challenge: false,
      },
      {
        name: 'tracking',
        path: '/track/*',
        methods: ['GET', 'HEAD'],
        upstream: 'origin',
        class: 'cacheable',
        challenge: false,
        cache: { queryParams: ['q'] },
      },
      {
        name: 'documents',
        path: '/docs/*',
        upstream: 'origin',
        class: 'authenticated',
        challenge: false,
        sensitive: { documentsPerHour: 60, identity: 'address' },
      },
      { name: 'search', path: '/search', upstream: 'origin', class: 'public' },
      { name: 'site', path: '/*', upstream: 'origin', class: 'public' },
    ],
    clientAddress: { trustedProxies: ['127.0.0.0/8'] },
    admin: { address: `127.0.0.1:${p.adminPort}` },
    logging: { level: 'warn', requests: false },
    // One generator host stands for a million clients: no per-peer connection cap.
    limits: { maxConnectionsPerAddress: 1_000_000 },
    ...(caps && { cache: { maxBytes: t.cacheBytes }, audit: { maxRows: t.auditRows } }),
    defense: {
      rateLimit: {
        rules: [
          {
            id: 'per-address',
            key: 'address',
            classes: ['public', 'cacheable', 'static'],
            ratePerSec: 50,
            burst: 100,
            ...caps,
          },
          { id: 'login-per-address', key: 'address', routes: ['login'], ratePerSec: 0.2, burst: 2, ...caps },
          // The offenders' target: 30 searches at once, 25 refused, 20 refusals in 2 s make a ban.
          { id: 'search-per-address', key: 'address', routes: ['search'], ratePerSec: 1, burst: 5, ...caps },
        ],
      },
      ...(caps && {
        bans: { maxEntries: t.banEntries, offences: { maxAddresses: t.offences } },
        exfiltration: { maxIdentities: t.identities },
      }),
      // The solvers' work (SOLVE_SHARE of the fresh addresses) stays cheap for the generator: 8 bits, up
      // to 12 as a prefix buys clearances (difficultyRise), against 14 and 16 by default.
      challenge: {
        difficultyBits: { elevated: 8, underAttack: 8 },
        ...(caps && { replayCapacity: t.replay, difficultyRise: { maxPrefixes: t.prefixWork } }),
      },
      // A credential's budget under attack (60 a minute) with a burst of 20, not 100: a farm solver goes
      // past it with 25 requests at once, and the prefix work table gets a key (docs/challenge.md).
      familiarity: { ...(caps && { maxSessions: t.sessions }), budget: { burst: 20 } },
    },
  };
}

/** The caps of the tables this config fills, at `capScale` × their defaults (at least 1,000 each). */
export function tableCaps(capScale: number) {
  const cap = (n: number) => (capScale === 1 ? n : Math.max(1000, Math.round(n * capScale)));
  return {
    rateLimitKeys: cap(100_000), // each rule, its /24 and its /48 level
    cacheBytes: cap(64 * MiB),
    banEntries: cap(100_000),
    offences: cap(65_536),
    sessions: cap(100_000), // familiarity.maxSessions: sessions, clearance usage, address pace, JWT usage
    identities: cap(100_000),
    replay: cap(200_000), // per generation (two)
    prefixWork: cap(65_536),
    auditRows: cap(100_000), // in memory (no audit.file)
  };
}

/**
 * Budgets (MiB, docs/memory-budgets.md, at the default caps) of the tables this config can fill. An
 * `address` rate-limit rule is three tables (addresses, /24s, /48s) of ≈ 16 MiB each. The audit
 * trail's rows are native memory (SQLite): in the RSS budget, not the heap's.
 */
export const BUDGETS: Record<string, number> = {
  'rate limits (3 address rules × 3 tables × 16 MiB)': 144,
  'ban table': 57,
  'ban offence counters': 7,
  'origin-granted sessions': 24,
  'clearance usage (maxSessions × 250 B)': 24,
  'address pace (maxSessions × 250 B)': 24,
  'challenge replay guard': 31,
  'prefix work (65,536 × 150 B)': 9,
  'exfiltration usage': 33,
  'response cache': 74,
  'audit trail rows (native)': 25,
  'fixed sketches, level, metric cells, JWTs (< 10 MiB together)': 10,
};

// ---------------------------------------------------------------- the load

interface Load {
  connections: number;
  requests: number;
  responses: number;
  /** Connections reset or closed before any answer (refused on accept: a ban). */
  refusedOnAccept: number;
  errors: number;
  statuses: Map<number, number>;
  freshAddresses: number;
  /** Solvers that got their clearance. */
  solved: number;
  skipped: number;
  legit: { requests: number; ok: number; other: Map<number, number> };
}

const UAS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
  'python-requests/2.32.3',
  'curl/8.5.0',
  'Go-http-client/1.1',
];

const rnd = () => Math.random().toString(36).slice(2, 10);

/**
 * The single request of a fresh address. Shares (of 40): products 7, tracking pages 6, logins 9,
 * documents 9, searches 9. Each table that takes one key per address of a kind (login rule, sessions,
 * documents' identities, search rule: 100,000 each at the default caps) then fills after 444,000
 * addresses (≈ 13 minutes into a default run), before the second half the trends are fitted over:
 * with a search share of 10 %, the search rule filled only at the end of the run, and a 30-minute run
 * could not tell a table still filling from a leak.
 */
function attackRequest(i: number): string {
  const ua = UAS[i % UAS.length]!;
  const r = i % 40;
  if (r < 7) return `GET /products/${i % 5000} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\nAccept: */*\r\n\r\n`;
  if (r < 13)
    return `GET /track/${rnd()}?q=${rnd()}&utm=${rnd()} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\n\r\n`;
  if (r < 22) {
    const body = `user=u${i}&password=${rnd()}`;
    return (
      `POST /login HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`
    );
  }
  if (r < 31) return `GET /docs/${i % 100000} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\n\r\n`;
  return `GET /search?q=${rnd()} HTTP/1.1\r\nHost: ${HOST}\r\nAccept: */*\r\nUser-Agent: ${ua}\r\n\r\n`;
}

function offenderBurst(): string {
  let s = '';
  for (let k = 0; k < 30; k++)
    s += `GET /search?q=${rnd()} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: curl/8.5.0\r\n\r\n`;
  return s;
}

/** One fresh address in SOLVE_SHARE solves a challenge, then logs in with its clearance. */
const SOLVE_SHARE = 40;
/**
 * Every other solver is a farm: it spends what is left of its clearance's burst at once (the soak's
 * budget: 20 a credential, of which the login took 1), then goes on one request at a time until refused
 * (at most FARM_AFTER). Not all at once: pipelined requests are all checked before the first of them is
 * charged (25 at once all pass a burst of 20), and a credential that overshoots by more than one request
 * is never a "first refusal", so its prefix's work would not rise (bench/RESULTS.md, "Soak", 2026-12-06
 * afternoon): the prefix work table would stay empty.
 */
const FARM_BURST = 19;
const FARM_AFTER = 5;

function leadingZeroBits(d: Buffer): number {
  let n = 0;
  for (const byte of d) {
    if (byte === 0) {
      n += 8;
      continue;
    }
    return n + Math.clz32(byte) - 24;
  }
  return n;
}

/** A solution of challenge `token` (its third field is the bits asked). */
function solve(token: string): string {
  const bits = Number(token.split('.')[2]);
  for (let nonce = 0; ; nonce++) {
    const s = `${token}.${nonce.toString(36)}`;
    if (leadingZeroBits(createHash('sha256').update(s).digest()) >= bits) return s;
  }
}

/** Many peer addresses in 127/8: the gateway's ephemeral ports per source never run out. */
let peer = 0;
function peerAddress(): string {
  const k = peer++ % 8192;
  return `127.2.${k >>> 6}.${(k & 63) + 1}`;
}

/** One connection: PROXY header + payload, wait for `expect` answers (or a close), then reset. */
function oneShot(port: number, header: Buffer, payload: string, expect: number, load: Load): Promise<void> {
  return new Promise((resolve) => {
    load.connections++;
    const counter = new ResponseCounter();
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: peerAddress() });
    let finished = false;
    const done = (error: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (counter.count === 0) {
        if (error) load.errors++;
        else load.refusedOnAccept++;
      }
      load.responses += counter.count;
      for (const s of counter.statuses) load.statuses.set(s, (load.statuses.get(s) ?? 0) + 1);
      if (!socket.destroyed) socket.resetAndDestroy();
      resolve();
    };
    const timer = setTimeout(() => done(true), 15_000);
    socket.on('connect', () => {
      load.requests += expect;
      socket.write(Buffer.concat([header, Buffer.from(payload)]));
    });
    socket.on('data', (c: Buffer) => {
      counter.feed(c);
      if (counter.count >= expect) done(false);
    });
    // A ban resets the connection on accept (ECONNRESET): a refusal, not a failure of the run.
    socket.on('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNRESET' && e.code !== 'EPIPE'));
    socket.on('close', () => done(false));
  });
}

/**
 * A client that pays: asks a challenge at the API door, solves it, sends a search with the solution
 * (a clearance: the replay guard keeps the solution's id, its prefix is charged in the prefix work
 * table, the clearance's use is counted), then logs in with the clearance: the origin's grant to a
 * known client is remembered at once (the session table and the address's pace). One connection.
 */
function solverShot(port: number, header: Buffer, i: number, load: Load): Promise<void> {
  return new Promise((resolve) => {
    load.connections++;
    const ua = UAS[i % 3]!;
    const counter = new ResponseCounter();
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: peerAddress() });
    let raw = '';
    let step = 0;
    let clearance = '';
    const farm = i % (2 * SOLVE_SHARE) === SOLVE_SHARE - 1;
    let finished = false;
    const done = (error: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (counter.count === 0) {
        if (error) load.errors++;
        else load.refusedOnAccept++;
      }
      load.responses += counter.count;
      for (const s of counter.statuses) load.statuses.set(s, (load.statuses.get(s) ?? 0) + 1);
      if (!socket.destroyed) socket.resetAndDestroy();
      resolve();
    };
    const timer = setTimeout(() => done(true), 15_000);
    const send = (request: string) => {
      load.requests++;
      socket.write(request);
    };
    socket.on('connect', () => {
      load.requests++;
      const ask = `GET /.rempart/challenge/verify HTTP/1.1\r\nHost: ${HOST}\r\nAccept: application/json\r\nUser-Agent: ${ua}\r\n\r\n`;
      socket.write(Buffer.concat([header, Buffer.from(ask)]));
    });
    // Answers expected once each step's requests are answered: ask, redeem, login, then a farm's bursts.
    let expected = 1;
    const farmBurst = (n: number) => {
      let burst = '';
      for (let k = 0; k < n; k++)
        burst += `GET /products/${k} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\nCookie: __rempart_clr=${clearance}\r\n\r\n`;
      load.requests += n - 1;
      expected += n;
      send(burst);
    };
    socket.on('data', (c: Buffer) => {
      raw += c.toString('latin1');
      counter.feed(c);
      if (counter.count < expected) return;
      step++;
      if (step === 1) {
        const token = /\r\nrempart-challenge: ([^\r\n]+)/i.exec(raw)?.[1];
        if (token === undefined) return done(false);
        raw = '';
        expected++;
        send(
          `GET /search?q=${rnd()} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\nCookie: __rempart_sol=${solve(token)}\r\n\r\n`,
        );
      } else if (step === 2) {
        clearance = /\r\nset-cookie: __rempart_clr=([^;\r]+)/i.exec(raw)?.[1] ?? '';
        if (clearance === '') return done(false);
        load.solved++;
        const body = `user=s${i}&password=${rnd()}`;
        expected++;
        send(
          `POST /login HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${ua}\r\nCookie: __rempart_clr=${clearance}\r\n` +
            `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        );
      } else if (farm && (step === 3 || (step < 4 + FARM_AFTER && counter.statuses[counter.count - 1] !== 429))) {
        // A farm spends its clearance past one person's pace: its burst, then one at a time until refused
        // (429): its prefix is asked more work next time (the prefix work table).
        farmBurst(step === 3 ? FARM_BURST : 1);
      } else done(false);
    });
    socket.on('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNRESET' && e.code !== 'EPIPE'));
    socket.on('close', () => done(false));
  });
}

/** A legit client: one keep-alive connection (PROXY header first), logs in, then one request a second. */
async function legitClient(k: number, port: number, until: () => boolean, load: Load): Promise<void> {
  const addr = legitAddress(k);
  let cookie = '';
  while (!until()) {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: peerAddress() });
    const counter = new ResponseCounter();
    let closed = false;
    let wake: (() => void) | null = null;
    socket.on('data', (c: Buffer) => {
      const before = counter.count;
      counter.feed(c);
      if (!cookie) {
        const m = /set-cookie:\s*sid=([^;\r]+)/i.exec(c.toString('latin1'));
        if (m) cookie = m[1]!;
      }
      if (counter.count > before) wake?.();
    });
    const end = () => {
      closed = true;
      wake?.();
    };
    socket.on('error', end);
    socket.on('close', end);
    await new Promise<void>((r) => socket.once('connect', r).once('error', () => r()));
    if (closed) {
      await sleep(1000);
      continue;
    }
    socket.write(proxyHeader(addr, 20000 + k, port, k % 2 === 1));
    while (!closed && !until()) {
      const req = cookie
        ? `GET ${k % 2 ? '/' : `/track/parcel${k}`} HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${UAS[k % 3]}\r\n` +
          `Cookie: sid=${cookie}\r\n\r\n`
        : `POST /login HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: ${UAS[k % 3]}\r\nContent-Length: 2\r\n\r\nok`;
      const want = counter.count + 1;
      load.legit.requests++;
      socket.write(req);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 10_000);
        wake = () => {
          if (counter.count >= want || closed) {
            clearTimeout(t);
            r();
          }
        };
      });
      wake = null;
      const status = counter.statuses[want - 1];
      if (status !== undefined && status < 400) load.legit.ok++;
      else load.legit.other.set(status ?? 0, (load.legit.other.get(status ?? 0) ?? 0) + 1);
      await sleep(800 + Math.random() * 400);
    }
    if (!socket.destroyed) socket.destroy();
  }
}

// ---------------------------------------------------------------- sampling

export interface Sample {
  t: number;
  rssMiB: number;
  hwmMiB: number;
  heapMiB: number;
  /** V8's committed heap (used + free pages it keeps) and memory outside it (buffers): most of RSS. */
  heapTotalMiB: number;
  externalMiB: number;
  /** Anonymous resident memory (RssAnon), and its parts (/proc/<pid>/smaps): the C allocator's arenas
   *  (Node's and libuv's native memory, SQLite, OpenSSL, buffers) and the rest (V8's heap pages, stacks). */
  rssAnonMiB: number;
  mallocMiB: number;
  otherAnonMiB: number;
  /** The heap used just after the last full collection (bench/soak-probe.ts): the live data. */
  liveHeapMiB: number;
  majorGcs: number;
  cpuS: number;
  addresses: number;
  requests: number;
  responses: number;
  refusedOnAccept: number;
  level: number;
  challenges: number;
  bansActive: number;
  /** Ban table entries, active and expired (kept for escalation until the table is full). */
  banEntries: number;
  rateLimitKeys: Record<string, number>;
  /** The other tables keyed by client input (`rempart_table_entries`): sessions, replay guard, … */
  tables: Record<string, number>;
  cacheEntries: number;
  cacheMiB: number;
  connections: number;
}

/**
 * The gateway's anonymous memory by owner, from /proc/<pid>/smaps (KiB → MiB): glibc's main arena is
 * `[heap]` (brk), its thread arenas are 64 MiB-aligned reservations (HEAP_MAX_SIZE on 64 bits: a 64 MiB
 * mapping, or its read-write start followed by the `---p` rest); every other anonymous mapping is V8's
 * (256 KiB heap pages, large objects, code) or a thread stack. Large malloc chunks mapped on their own
 * would count in the rest: the soak saw none (malloc_info: 0 mmapped chunks).
 */
export function anonymousByOwner(smaps: string): { malloc: number; other: number } {
  const ARENA = 64 * MiB;
  const maps: { start: number; end: number; perm: string; name: string; anon: number }[] = [];
  for (const line of smaps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) maps.push({ start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), perm: m[3]!, name: m[4]!, anon: 0 });
    else if (line.startsWith('Anonymous:') && maps.length > 0)
      maps[maps.length - 1]!.anon = Number(line.split(/\s+/)[1]);
  }
  let malloc = 0;
  let other = 0;
  maps.forEach((m, i) => {
    if (m.anon === 0) return;
    const next = maps[i + 1];
    const arena =
      m.name === '[heap]' ||
      (m.name === '' &&
        m.start % ARENA === 0 &&
        (m.end - m.start === ARENA ||
          (next !== undefined && next.start === m.end && next.perm.startsWith('---') && next.end - m.start === ARENA)));
    if (arena) malloc += m.anon;
    else if (m.name === '' || m.name.startsWith('[')) other += m.anon;
  });
  return { malloc: malloc / 1024, other: other / 1024 };
}

function procStatus(pid: number): { rss: number; hwm: number; cpu: number; anon: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, cpu, anon: kb('RssAnon') / 1024 };
}

function getMetrics(adminPort: number, path = '/metrics'): Promise<string> {
  return new Promise((resolve) => {
    const headers = { authorization: `Bearer ${TOKEN}` };
    const req = http.get({ host: '127.0.0.1', port: adminPort, path, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', () => resolve(''));
    req.on('timeout', () => req.destroy());
  });
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

function metricByLabel(text: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{[^}]*${label}="([^"]*)"[^}]*\\} ([0-9.e+-]+)$`, 'gm');
  for (const m of text.matchAll(re)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Least-squares slope of y over x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

// ---------------------------------------------------------------- report

function svgPlot(samples: Sample[], budgetLine: number | undefined, attack: [number, number]): string {
  const W = 900;
  const H = 380;
  const L = 60;
  const R = 20;
  const T = 20;
  const B = 40;
  const tMax = Math.max(1, ...samples.map((s) => s.t)) / 60;
  const yMax = Math.ceil(Math.max(64, budgetLine ?? 0, ...samples.map((s) => s.rssMiB)) / 50) * 50;
  const x = (t: number) => L + ((t / 60) * (W - L - R)) / tMax;
  const y = (v: number) => T + (H - T - B) * (1 - v / yMax);
  const path = (f: (s: Sample) => number) =>
    samples
      .filter((s) => Number.isFinite(f(s)))
      .map((s, i) => `${i ? 'L' : 'M'}${x(s.t).toFixed(1)},${y(f(s)).toFixed(1)}`)
      .join(' ');
  const grid: string[] = [];
  for (let v = 0; v <= yMax; v += yMax / 5) {
    grid.push(
      `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>` +
        `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v)}</text>`,
    );
  }
  const step = tMax > 10 ? 5 : 1;
  for (let m = 0; m <= tMax; m += step) {
    grid.push(
      `<line x1="${x(m * 60)}" x2="${x(m * 60)}" y1="${T}" y2="${H - B}" stroke="#eee"/>` +
        `<text x="${x(m * 60)}" y="${H - B + 16}" text-anchor="middle">${m}</text>`,
    );
  }
  for (const [t, label, dx, anchor] of [
    [attack[0], 'attack starts', 4, 'start'],
    [attack[1], 'attack ends', -4, 'end'],
  ] as const) {
    grid.push(
      `<line x1="${x(t)}" x2="${x(t)}" y1="${T}" y2="${H - B}" stroke="#999" stroke-dasharray="3 3"/>` +
        `<text x="${x(t) + dx}" y="${H - B - 6}" fill="#666" text-anchor="${anchor}">${label}</text>`,
    );
  }
  const budget =
    budgetLine === undefined
      ? ''
      : `<line x1="${L}" x2="${W - R}" y1="${y(budgetLine)}" y2="${y(budgetLine)}" stroke="#c00" stroke-dasharray="6 4"/>` +
        `<text x="${W - R}" y="${y(budgetLine) - 5}" text-anchor="end" fill="#c00">RSS budget ${Math.round(budgetLine)} MiB</text>`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="#fff"/>
${grid.join('\n')}
${budget}
<path d="${path((s) => s.rssMiB)}" fill="none" stroke="#1565c0" stroke-width="2"/>
<path d="${path((s) => s.heapMiB)}" fill="none" stroke="#2e7d32" stroke-width="2"/>
<path d="${path((s) => s.heapTotalMiB)}" fill="none" stroke="#f9a825" stroke-width="1.5"/>
<path d="${path((s) => s.liveHeapMiB)}" fill="none" stroke="#6a1b9a" stroke-width="2"/>
<path d="${path((s) => s.mallocMiB)}" fill="none" stroke="#616161" stroke-width="1.5"/>
<text x="${L + 10}" y="${T + 14}" fill="#1565c0">RSS (VmRSS)</text>
<text x="${L + 110}" y="${T + 14}" fill="#2e7d32">V8 heap used</text>
<text x="${L + 210}" y="${T + 14}" fill="#f9a825">V8 heap committed</text>
<text x="${L + 350}" y="${T + 14}" fill="#6a1b9a">live heap (after a full GC)</text>
<text x="${L + 530}" y="${T + 14}" fill="#616161">malloc arenas</text>
<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">minutes</text>
<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">MiB</text>
</svg>`;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const mb = (n: number) => n.toFixed(1);

/** The flags the systemd unit gives `node` before the gateway's script (deploy/Dockerfile's are the same). */
export function launcherFlags(unit = readFileSync(join(ROOT, 'deploy/systemd/rempart.service'), 'utf8')): string[] {
  const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1]?.split(/\s+/) ?? [];
  const script = exec.findIndex((w) => w.endsWith('/bin/rempart.js'));
  return exec.slice(1, Math.max(1, script)).filter((w) => w.startsWith('--'));
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '30' },
      addresses: { type: 'string' },
      out: { type: 'string', default: join(ROOT, 'bench/results') },
      name: { type: 'string', default: 'soak' },
      concurrency: { type: 'string', default: '256' },
      legit: { type: 'string', default: '30' },
      // Past the level's warm-up (60 s) and the legit clients' session probation (120 s: a session the
      // origin granted in calm to a client nobody vouched for is known only after it; challenged before).
      calm: { type: 'string', default: '135' },
      'cap-scale': { type: 'string', default: '1' },
      'node-flags': { type: 'string' },
    },
  });
  installCleanupHandlers();
  const minutes = Number(values.minutes);
  const capScale = Number(values['cap-scale']);
  const durationS = minutes * 60;
  const target = Number(values.addresses ?? Math.round((1_000_000 * minutes) / 30));
  const maxInFlight = Number(values.concurrency);
  // Fresh addresses a second; 1 in 150 of them is an offender burst, plus 2 bursts a second from the pool.
  const perSecond = target / durationS;
  const say = (s: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

  const origin = await startOrigin();
  onCleanup(() => origin.close());
  const [port, proxyPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'rempart-soak-'));
  // Removed on every exit (stopAll runs it after the gateway is stopped), but not a heap snapshot.
  onCleanup(() => {
    const snapshots = readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot'));
    if (snapshots.length > 0) say(`kept ${dir}: it holds ${snapshots.join(', ')}`);
    else rmSync(dir, { recursive: true, force: true });
  });
  const nodeFlags = (values['node-flags'] ?? launcherFlags().join(' ')).split(/\s+/).filter(Boolean);
  const cfgFile = join(dir, 'rempart.json');
  const probeFile = join(dir, 'probe.json');
  writeFileSync(
    cfgFile,
    JSON.stringify(soakConfig({ port, proxyPort, adminPort, originPort: origin.port }, capScale), null, 2),
  );
  const gw = startProcess(
    'rempart',
    process.execPath,
    [
      // SIGUSR2 is the gateway's upgrade hand-over (it drains and exits): snapshots on SIGUSR1.
      '--heapsnapshot-signal=SIGUSR1',
      ...nodeFlags,
      '--import',
      join(ROOT, 'bench/soak-probe.ts'),
      join(ROOT, 'bin/rempart.js'),
      '--config',
      cfgFile,
    ],
    { cwd: dir, env: { ...process.env, REMPART_ADMIN_TOKEN: TOKEN, SOAK_PROBE: probeFile } },
  );
  await waitForPort(proxyPort, gw);
  await waitForPort(adminPort, gw);
  say(
    `gateway pid ${gw.pid}${nodeFlags.length ? ` (node ${nodeFlags.join(' ')})` : ''}, proxy listener ${proxyPort}, ` +
      `admin ${adminPort}; ${fmt(target)} addresses over ${minutes} min`,
  );

  const load: Load = {
    connections: 0,
    requests: 0,
    responses: 0,
    refusedOnAccept: 0,
    errors: 0,
    statuses: new Map(),
    freshAddresses: 0,
    solved: 0,
    skipped: 0,
    legit: { requests: 0, ok: 0, other: new Map() },
  };
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  let stop = false;
  const isStopped = () => stop;
  // A gateway that dies mid-run (out of memory, a crash) ends the load; the report still gets written.
  let died = null as string | null; // (set in callbacks: not narrowed to null)
  void gw.exited.then(() => {
    if (stop || isStopping()) return; // stopped by us: at the end, or on Ctrl-C
    died = `gateway exited (${gw.child.exitCode !== null ? `code ${gw.child.exitCode}` : gw.child.signalCode}) at t=${Math.round(elapsed())} s`;
    say(`${died}; its last lines:\n${gw.log.slice(-20).join('\n')}`);
  });

  // The legit population starts first (calm traffic the level learns from), the attack 10 s later.
  const legit = Array.from({ length: Number(values.legit) }, (_, k) => legitClient(k, proxyPort, isStopped, load));

  const samples: Sample[] = [];
  const sample = async () => {
    let p: ReturnType<typeof procStatus>;
    let owners: ReturnType<typeof anonymousByOwner>;
    try {
      p = procStatus(gw.pid);
      owners = anonymousByOwner(readFileSync(`/proc/${gw.pid}/smaps`, 'utf8'));
    } catch (e) {
      // ENOENT or ESRCH: the gateway is gone (the exit handler above says why); no sample.
      if (died === null && !stop && !isStopping())
        died = `gateway gone at t=${Math.round(elapsed())} s (${(e as Error).message})`;
      return;
    }
    let probe = { liveBytes: Number.NaN, majorGcs: 0 };
    try {
      probe = JSON.parse(readFileSync(probeFile, 'utf8'));
    } catch {} // not written yet
    const m = await getMetrics(adminPort);
    samples.push({
      t: Math.round(elapsed()),
      rssMiB: p.rss,
      hwmMiB: p.hwm,
      heapMiB: metric(m, 'nodejs_heap_size_used_bytes') / MiB,
      heapTotalMiB: metric(m, 'nodejs_heap_size_total_bytes') / MiB,
      externalMiB: metric(m, 'nodejs_external_memory_bytes') / MiB,
      rssAnonMiB: p.anon,
      mallocMiB: owners.malloc,
      otherAnonMiB: owners.other,
      liveHeapMiB: probe.majorGcs > 0 ? probe.liveBytes / MiB : Number.NaN, // none before the first full GC
      majorGcs: probe.majorGcs,
      cpuS: p.cpu,
      addresses: load.freshAddresses,
      requests: load.requests,
      responses: load.responses,
      refusedOnAccept: load.refusedOnAccept,
      level: metric(m, 'rempart_attack_level'),
      challenges: Object.values(metricByLabel(m, 'rempart_challenges_total', 'result')).reduce((a, b) => a + b, 0),
      bansActive: metric(m, 'rempart_bans_active'),
      banEntries: metric(m, 'rempart_ban_entries'),
      rateLimitKeys: metricByLabel(m, 'rempart_rate_limit_keys', 'rule'),
      tables: metricByLabel(m, 'rempart_table_entries', 'table'),
      cacheEntries: metric(m, 'rempart_cache_entries'),
      cacheMiB: metric(m, 'rempart_cache_bytes') / MiB,
      connections: metric(m, 'rempart_connections_active'),
    });
    const s = samples[samples.length - 1]!;
    say(
      `t=${s.t}s rss=${mb(s.rssMiB)} (malloc ${mb(s.mallocMiB)}, V8 and stacks ${mb(s.otherAnonMiB)}) ` +
        `heap=${mb(s.heapMiB)} live=${mb(s.liveHeapMiB)} MiB addrs=${fmt(s.addresses)} req=${fmt(s.requests)} ` +
        `level=${s.level} challenges=${s.challenges} bans=${s.bansActive}/${s.banEntries} rl=${JSON.stringify(s.rateLimitKeys)} tables=${JSON.stringify(s.tables)} cache=${s.cacheEntries} ` +
        `conns=${s.connections} inflight=${inFlight} skipped=${load.skipped}`,
    );
  };
  let inFlight = 0;
  await sample();
  const sampler = setInterval(() => void sample(), SAMPLE_MS);

  // The attack starts once the level's warm-up (60 s) is over and it has learned a calm baseline from
  // the legit clients: an attack present from the first second would be learned as normal traffic.
  await sleep(Number(values.calm) * 1000);
  const attackStart = elapsed();
  const cpu0 = process.cpuUsage();
  const offenderPool = 500;
  let fresh = 0;
  let credit = 0;
  let last = elapsed();
  const launch = (header: Buffer, payload: string, expect: number) => {
    inFlight++;
    void oneShot(proxyPort, header, payload, expect, load).then(() => inFlight--);
  };
  // 20 ticks a second; each launches the new addresses owed since the last (credit carries fractions).
  // Until the target is reached: a tick skipped while the gateway was behind is made up later (at most
  // 10 % over the duration).
  while (elapsed() - attackStart < durationS * 1.1 && fresh < target && died === null) {
    await sleep(50);
    const now = elapsed();
    credit += (now - last) * perSecond;
    last = now;
    // The pool's offenders: 2 bursts a second.
    if (Math.random() < 0.1 && inFlight < maxInFlight) {
      const a = offenderAddress(Math.floor(Math.random() * offenderPool));
      launch(proxyHeader(a, 1024 + (fresh % 60000), proxyPort, fresh % 2 === 1), offenderBurst(), 30);
    }
    while (credit >= 1 && fresh < target) {
      if (inFlight >= maxInFlight) {
        load.skipped++;
        break; // the gateway is behind: the owed addresses wait for the next tick
      }
      credit--;
      const i = fresh++;
      load.freshAddresses = fresh;
      const a = freshAddress(i);
      const h = proxyHeader(a, 1024 + (i % 60000), proxyPort, i % 2 === 1);
      if (i % 150 === 0) launch(h, offenderBurst(), 30);
      else if (i % SOLVE_SHARE === SOLVE_SHARE - 1) {
        inFlight++;
        void solverShot(proxyPort, h, i, load).then(() => inFlight--);
      } else launch(h, attackRequest(i), 1);
    }
  }
  const attackEnd = elapsed();
  const cpu = process.cpuUsage(cpu0);
  if (died === null) {
    const levelAtEnd = await getMetrics(adminPort, '/api/level');
    say(`level: ${levelAtEnd.slice(0, 1500)}`);
  }
  say(`attack done: ${fmt(fresh)} fresh addresses in ${Math.round(attackEnd - attackStart)} s; draining`);
  const until = Date.now() + (died === null ? 20_000 : 2_000);
  while (inFlight > 0 && Date.now() < until) await sleep(100);
  const gatewayDied = died !== null; // from here on, our own stop is not a death
  stop = true;
  await Promise.race([Promise.all(legit), sleep(died === null ? 15_000 : 2_000)]);
  // A last sample after the load: what memory settles to.
  if (died === null) await sleep(SAMPLE_MS);
  clearInterval(sampler);
  await sample();
  if (samples.length === 0) throw new Error(died ?? 'no sample taken');

  // ---- the figures
  // (The whole attack: "firstHalf" is the first part to halve.)
  const firstHalf = samples.filter((s) => s.t >= attackStart && s.t <= attackEnd);
  const secondHalf = firstHalf.filter((s) => s.t >= attackStart + (attackEnd - attackStart) / 2);
  const hours = (xs: Sample[]) => xs.map((s) => s.t / 3600);
  const rssTrend = slope(
    hours(secondHalf),
    secondHalf.map((s) => s.rssMiB),
  );
  const heapTrend = slope(
    hours(secondHalf),
    secondHalf.map((s) => s.heapMiB),
  );
  // The heap used between collections swings by tens of MiB: its floor (the lowest sample of each
  // minute) follows the live data, which is what a leak would move.
  const floors = (xs: Sample[]) => {
    const out: Sample[] = [];
    for (let k = 0; k < xs.length; k += 6) {
      const w = xs.slice(k, k + 6);
      out.push(w.reduce((a, b) => (b.heapMiB < a.heapMiB ? b : a)));
    }
    return out;
  };
  const floor2 = floors(secondHalf);
  const heapFloorTrend = slope(
    hours(floor2),
    floor2.map((s) => s.heapMiB),
  );
  // RSS is V8's committed heap (sized by its collector: the new space, and an old space let grow to a
  // multiple of the live data before the next full collection) plus native memory. A leak moves one of
  // the two parts under it: the live heap (after a full collection) or the C allocator's arenas.
  const trend = (xs: Sample[], f: (s: Sample) => number) => {
    const ok = xs.filter((s) => Number.isFinite(f(s)));
    return slope(hours(ok), ok.map(f));
  };
  const liveTrend = trend(secondHalf, (s) => s.liveHeapMiB);
  const mallocTrend = trend(secondHalf, (s) => s.mallocMiB);
  const v8Trend = trend(secondHalf, (s) => s.otherAnonMiB);
  const lastThird = firstHalf.filter((s) => s.t >= attackStart + ((attackEnd - attackStart) * 2) / 3);
  // Over the whole attack too: a table still filling at the end shows here and in the second half alike.
  const rssTrendAll = slope(
    hours(firstHalf),
    firstHalf.map((s) => s.rssMiB),
  );
  const liveTrendAll = trend(firstHalf, (s) => s.liveHeapMiB);
  const rssTrend3 = slope(
    hours(lastThird),
    lastThird.map((s) => s.rssMiB),
  );
  const heapTrend3 = slope(
    hours(lastThird),
    lastThird.map((s) => s.heapMiB),
  );
  const start = samples[0]!;
  const attackFirst = firstHalf[0] ?? start;
  const end = samples[samples.length - 1]!;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const plateauRss = mean(secondHalf.map((s) => s.rssMiB));
  const plateauHeap = mean(secondHalf.map((s) => s.heapMiB));
  const plateauLive = mean(secondHalf.map((s) => s.liveHeapMiB).filter(Number.isFinite));
  const plateauMalloc = mean(secondHalf.map((s) => s.mallocMiB));
  const peakRss = Math.max(...samples.map((s) => s.rssMiB));
  const peakHeap = Math.max(...samples.map((s) => s.heapMiB));
  // At other caps, the tables' budgets scale with them (the fixed sketches' 10 MiB do not).
  const budgets = Object.fromEntries(
    Object.entries(BUDGETS).map(([k, v]) => [k, k.startsWith('fixed') ? v : v * capScale]),
  );
  const budget = Object.values(budgets).reduce((a, b) => a + b, 0);
  // The audit trail's rows are native memory: in the RSS budget, not in the heap's.
  const heapBudget = Object.entries(budgets)
    .filter(([k]) => !k.includes('(native)'))
    .reduce((a, [, v]) => a + v, 0);
  // docs/memory-budgets.md: heap growth ≤ budget + 4 MiB; RSS growth ≤ 2 × budget + 256 MiB.
  const heapLimit = start.heapMiB + heapBudget + 4;
  const rssLimit = start.rssMiB + 2 * budget + 256;
  // "No growth trend": over the second half, RSS grows < 5 % of its plateau an hour.
  const flat = rssTrend < plateauRss * 0.05;
  // No leak: the live heap and the allocator's arenas grow < 5 % of the RSS plateau an hour. The live heap
  // exists once V8 has made a full collection; without it (a short run), the heap's floor stands in.
  const haveLive = secondHalf.filter((s) => Number.isFinite(s.liveHeapMiB)).length >= 2;
  const leakFree = (haveLive ? liveTrend : heapFloorTrend) < plateauRss * 0.05 && mallocTrend < plateauRss * 0.05;
  // The budget rule is about the heap after a full collection: the live heap over the first one measured
  // (before the attack). Without the probe, the heap's floor over the first sample (it holds garbage).
  const attackFloors = floors(firstHalf);
  const floorPeak = Math.max(...attackFloors.map((s) => s.heapMiB));
  const lives = samples.map((s) => s.liveHeapMiB).filter(Number.isFinite);
  const liveBase = lives[0] ?? Number.NaN;
  const livePeak = Math.max(...lives);
  const heapWithin = haveLive ? livePeak <= liveBase + heapBudget + 4 : floorPeak <= heapLimit;
  const within = heapWithin && peakRss <= rssLimit;
  const verdict = flat && leakFree && within && !gatewayDied ? 'pass' : 'FAIL';
  const legitShare = load.legit.requests ? load.legit.ok / load.legit.requests : 0;
  const statuses = Object.fromEntries([...load.statuses].sort((a, b) => a[0] - b[0]));
  const result = {
    date: new Date().toISOString(),
    command: `node bench/soak.ts ${process.argv.slice(2).join(' ')}`.trim(),
    minutes,
    attackSeconds: Math.round(attackEnd - attackStart),
    addresses: {
      fresh,
      offenderPool,
      legit: Number(values.legit),
      distinct: fresh + offenderPool + Number(values.legit),
    },
    load: {
      connections: load.connections,
      requests: load.requests,
      responses: load.responses,
      requestsPerSecond: Math.round(load.requests / (attackEnd - attackStart)),
      refusedOnAccept: load.refusedOnAccept,
      errors: load.errors,
      skippedTicks: load.skipped,
      statuses,
      legit: { requests: load.legit.requests, ok: load.legit.ok, other: Object.fromEntries(load.legit.other) },
      originRequests: origin.stats.requests,
      sessionsGranted: origin.stats.sessionsGranted,
    },
    gatewayCpuSeconds: end.cpuS - start.cpuS,
    generatorCpuSeconds: (cpu.user + cpu.system) / 1e6,
    memory: {
      rssStartMiB: start.rssMiB,
      rssAttackStartMiB: attackFirst.rssMiB,
      rssPlateauMiB: plateauRss,
      rssPeakMiB: peakRss,
      rssEndMiB: end.rssMiB,
      heapStartMiB: start.heapMiB,
      heapPlateauMiB: plateauHeap,
      heapPeakMiB: peakHeap,
      heapFloorPeakMiB: floorPeak,
      liveHeapBaseMiB: liveBase,
      liveHeapPeakMiB: livePeak,
      liveHeapLimitMiB: liveBase + heapBudget + 4,
      heapEndMiB: end.heapMiB,
      rssTrendMiBPerHour: rssTrend,
      rssTrendWholeAttackMiBPerHour: rssTrendAll,
      liveHeapTrendWholeAttackMiBPerHour: liveTrendAll,
      heapTrendMiBPerHour: heapTrend,
      rssTrendLastThirdMiBPerHour: rssTrend3,
      heapTrendLastThirdMiBPerHour: heapTrend3,
      heapFloorTrendMiBPerHour: heapFloorTrend,
      liveHeapPlateauMiB: plateauLive,
      liveHeapTrendMiBPerHour: liveTrend,
      mallocPlateauMiB: plateauMalloc,
      mallocTrendMiBPerHour: mallocTrend,
      v8AnonTrendMiBPerHour: v8Trend,
      budgetMiB: budget,
      heapBudgetMiB: heapBudget,
      capScale,
      budgets,
      heapLimitMiB: heapLimit,
      rssLimitMiB: rssLimit,
    },
    verdict,
    gatewayDied: died,
    samples,
  };
  mkdirSync(values.out, { recursive: true });
  const base = join(values.out, values.name);
  writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 1)}\n`);
  const last2 = end.rateLimitKeys;
  // When each capped table was full (minutes into the run): the heap's growth from tables ends there.
  // Every table keyed by client input with a cap: its size at the end, its cap, when it was first full.
  const caps = tableCaps(capScale);
  const firstAt = (f: (s: Sample) => boolean) => {
    const s = samples.find(f);
    return s === undefined ? 'not full' : `${(s.t / 60).toFixed(1)} min`;
  };
  // A table the mix never reaches (0 at the end: no JWT is configured) is named as such.
  const table = (name: string, capOf: number, size: (s: Sample) => number, full = capOf * 0.995) =>
    size(end) === 0 && samples.every((s) => size(s) === 0)
      ? `${name}: not exercised`
      : `${name} ${fmt(size(end))} / ${fmt(capOf)}: ${firstAt((s) => size(s) >= full)}`;
  const named = (t: string) => (s: Sample) => s.tables?.[t] ?? 0;
  const fullTables = [
    ...Object.keys(last2).map((rule) =>
      table(`rate limit ${rule}`, caps.rateLimitKeys, (s) => s.rateLimitKeys[rule] ?? 0),
    ),
    table('cache (MiB)', caps.cacheBytes / MiB, (s) => s.cacheMiB, (caps.cacheBytes / MiB) * 0.98),
    table('ban table', caps.banEntries, (s) => s.banEntries),
    table('ban offence counters', caps.offences, named('ban_offences')),
    table('sessions', caps.sessions, named('sessions')),
    table('clearance usage', caps.sessions, named('clearance_usage')),
    table('address pace', caps.sessions, named('address_pace')),
    table('JWT usage (no JWT here)', caps.sessions, named('jwt_usage')),
    // Two generations: the first rotation comes when one is full (size = its capacity).
    table('replay guard (2 generations)', 2 * caps.replay, named('replay_guard'), caps.replay),
    table('prefix work', caps.prefixWork, named('prefix_work')),
    table('exfiltration identities', caps.identities, named('exfiltration_identities')),
    table('audit rows', caps.auditRows, named('audit_rows')),
  ];
  const fullAt = fullTables;
  // (Tables not exercised have no time: left out.)
  const lastFull = Math.max(
    ...fullTables.flatMap((l) => {
      const m = /: (\d+\.\d) min$/.exec(l);
      return m ? [Number(m[1])] : [];
    }),
  );
  const summary = [
    `Command: \`${result.command}\` (${result.date.slice(0, 16)}Z, gateway pid alone, 2 shared cores).`,
    '',
    `| figure | value |`,
    `|---|---:|`,
    `| attack | ${fmt(result.attackSeconds)} s, ${fmt(load.requests)} requests (${fmt(result.load.requestsPerSecond)}/s) on ${fmt(load.connections)} connections |`,
    `| distinct client addresses | ${fmt(result.addresses.distinct)} (${fmt(fresh)} fresh, ${offenderPool} repeat offenders, ${values.legit} legit) |`,
    `| answers by status | ${Object.entries(statuses)
      .map(([k, v]) => `${k}: ${fmt(v)}`)
      .join(', ')}; refused on accept (banned): ${fmt(load.refusedOnAccept)}; errors/timeouts: ${fmt(load.errors)} |`,
    `| legit clients served (< 400) | ${(legitShare * 100).toFixed(2)} % of ${fmt(load.legit.requests)} |`,
    `| RSS start → attack start → plateau (2nd half mean) → peak → end | ${mb(start.rssMiB)} → ${mb(attackFirst.rssMiB)} → ${mb(plateauRss)} → ${mb(peakRss)} → ${mb(end.rssMiB)} MiB |`,
    `| heap start → plateau → peak → end (highest per-minute floor) | ${mb(start.heapMiB)} → ${mb(plateauHeap)} → ${mb(peakHeap)} → ${mb(end.heapMiB)} MiB (${mb(floorPeak)}) |`,
    `| trend over the 2nd half (last third) | RSS ${mb(rssTrend)} (${mb(rssTrend3)}) MiB/h, heap ${mb(heapTrend)} (${mb(heapTrend3)}) MiB/h, heap floor ${mb(heapFloorTrend)} MiB/h |`,
    `| trend over the whole attack | RSS ${mb(rssTrendAll)} MiB/h, live heap ${mb(liveTrendAll)} MiB/h |`,
    `| RSS by part: plateau, trend over the 2nd half | live heap (after a full GC) ${mb(plateauLive)} MiB, ${mb(liveTrend)} MiB/h; malloc arenas ${mb(plateauMalloc)} MiB, ${mb(mallocTrend)} MiB/h; V8 pages and stacks ${mb(v8Trend)} MiB/h |`,
    `| budget of the tables exercised | ${fmt(budget)} MiB: ${haveLive ? `live heap ≤ ${mb(liveBase + heapBudget + 4)} (peak ${mb(livePeak)})` : `heap floor ≤ ${mb(heapLimit)}`}, RSS ≤ ${mb(rssLimit)} MiB (docs/memory-budgets.md rule) |`,
    `| tables at the end | rate-limit keys ${JSON.stringify(last2)}, bans ${end.bansActive} active / ${fmt(end.banEntries)} entries, cache ${fmt(end.cacheEntries)} entries / ${mb(end.cacheMiB)} MiB |`,
    `| tables: size at the end / cap: first full (≥ 99.5 % of the cap) | ${fullAt.join('; ')} |`,
    `| every table full by | ${fullTables.some((l) => l.endsWith('not full')) ? 'not all full' : `${mb(lastFull)} min`} (attack ${mb(attackStart / 60)}–${mb(attackEnd / 60)} min, 2nd half from ${mb((attackStart + (attackEnd - attackStart) / 2) / 60)}) |`,
    `| solvers (challenge solved, then a login with the clearance) | ${fmt(load.solved)} |`,
    `| CPU: gateway, generator + origin | ${fmt(result.gatewayCpuSeconds)} s, ${fmt(result.generatorCpuSeconds)} s |`,
    `| verdict | **${verdict}** (${died !== null ? died.toUpperCase() : `RSS ${flat ? 'flat' : 'GROWING'}, ${leakFree ? 'live heap and arenas flat' : 'LIVE HEAP OR ARENAS GROWING'}, ${within ? 'within budget' : 'OVER BUDGET'}`}) |`,
  ].join('\n');
  const tail =
    died === null ? '' : `\n\nThe gateway's last lines:\n\n\`\`\`\n${gw.log.slice(-20).join('\n')}\n\`\`\`\n`;
  writeFileSync(`${base}.md`, `# Soak\n\n${summary}\n\nPlot: ${values.name}.html\n${tail}`);
  const html = `<!doctype html><meta charset="utf-8"><title>Rempart soak</title>
<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}</style>
<h1>Rempart soak: ${minutes} min, ${fmt(result.addresses.distinct)} client addresses</h1>
<p>${result.command} · ${result.date} · verdict <b>${verdict}</b></p>
${svgPlot(samples, rssLimit, [attackStart, attackEnd])}
<p>Sampled every 10 s. Attack from ${Math.round(attackStart)} s to ${Math.round(attackEnd)} s. Trend over the second half: RSS ${mb(rssTrend)} MiB/h, heap ${mb(heapTrend)} MiB/h.</p>
<table><tr><th>figure</th><th>value</th></tr>
${summary
  .split('\n')
  .filter((l) => l.startsWith('| ') && !l.startsWith('| figure'))
  .map((l) => {
    const cells = l.slice(2, -2).split(' | ');
    return `<tr><td>${cells[0]}</td><td>${(cells[1] ?? '').replaceAll('**', '')}</td></tr>`;
  })
  .join('\n')}
</table>`;
  writeFileSync(`${base}.html`, html);
  process.stdout.write(`${summary}\n\nwritten: ${base}.json, ${base}.html, ${base}.md\n`);
  await stopAll();
  if (died !== null) process.exitCode = 1;
}

if (import.meta.main) {
  main().catch(async (e) => {
    process.stderr.write(`${e?.stack ?? e}\n`);
    await stopAll();
    process.exit(1);
  });
}
