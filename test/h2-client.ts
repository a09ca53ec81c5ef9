// One client API over both protocols, for the behaviour suite that runs over HTTP/1.1 and HTTP/2
// (test/h2-suite.test.ts): HTTP/1.1 over TLS (no ALPN offered, as curl --http1.1 without h2) or
// HTTP/2 over TLS with ALPN h2 (node:http2, one connection for every request of the client).
import http2 from 'node:http2';
import https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { cleanup, selfSignedCert, startGateway, type Teardown, type TestGateway } from './helpers.ts';
import type { GatewayOptions } from '../src/app/gateway.ts';

export type Proto = 'h1' | 'h2';
export const PROTOS: readonly Proto[] = ['h1', 'h2'];

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** Send the body without Content-Length (HTTP/1.1: chunked). */
  noLength?: boolean;
}

export interface ProtoClient {
  request(path: string, opts?: RequestOptions): Promise<Reply>;
  /** Whether the client's connection is closed (HTTP/2: the session; HTTP/1.1: no socket left open). */
  closed(): boolean;
  close(): void;
}

/** A client of `port` (a TLS listener on 127.0.0.1) speaking `proto`; closed when the test ends. */
export function clientFor(t: Teardown, proto: Proto, port: number, localAddress?: string): ProtoClient {
  const c = proto === 'h2' ? h2Client(port, localAddress) : h1Client(port, localAddress);
  cleanup(t, () => c.close());
  return c;
}

function h1Client(port: number, localAddress?: string): ProtoClient {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false, localAddress });
  return {
    request: (path, opts = {}) =>
      new Promise((resolve, reject) => {
        const headers: Record<string, string | string[]> = { ...opts.headers };
        if (opts.body !== undefined && opts.noLength !== true)
          headers['content-length'] = String(Buffer.byteLength(opts.body));
        const req = https.request(
          { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers, agent },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(opts.body);
      }),
    closed: () => Object.values(agent.sockets).every((l) => l === undefined || l.length === 0),
    close: () => agent.destroy(),
  };
}

function h2Client(port: number, localAddress?: string): ProtoClient {
  let session: http2.ClientHttp2Session | null = null;
  const connect = () => {
    if (session === null || session.closed || session.destroyed) {
      // localAddress reaches the socket (tls.connect's options); the types do not list it.
      const options = { rejectUnauthorized: false, localAddress } as http2.SecureClientSessionOptions;
      session = http2.connect(`https://127.0.0.1:${port}`, options);
      session.on('error', () => {});
    }
    return session;
  };
  return {
    request: (path, opts = {}) =>
      new Promise((resolve, reject) => {
        const headers: http2.OutgoingHttpHeaders = { ':path': path, ':method': opts.method ?? 'GET', ...opts.headers };
        if (opts.body !== undefined && opts.noLength !== true)
          headers['content-length'] = String(Buffer.byteLength(opts.body));
        const req = connect().request(headers, { endStream: opts.body === undefined });
        let status = 0;
        let head: IncomingHttpHeaders = {};
        let body = '';
        req.on('response', (h) => {
          status = Number(h[':status']);
          head = h as IncomingHttpHeaders;
        });
        req.setEncoding('utf8');
        req.on('data', (c: string) => (body += c));
        req.on('end', () => resolve({ status, headers: head, body }));
        req.on('error', reject);
        if (opts.body !== undefined) req.end(opts.body);
      }),
    closed: () => session === null || session.closed || session.destroyed,
    close: () => session?.destroy(),
  };
}

/**
 * A gateway with one TLS listener (h2 offered by ALPN) in front of `upstreamUrl`: the same gateway serves
 * both protocols, so the suite's two runs differ only by the client's protocol.
 */
export async function startTlsGateway(
  t: Teardown,
  upstreamUrl: string,
  partial: Record<string, unknown> = {},
  options: GatewayOptions = {},
  http2Settings: Record<string, unknown> = {},
): Promise<TestGateway> {
  const { certFile, keyFile } = selfSignedCert(t);
  return startGateway(
    t,
    upstreamUrl,
    { listeners: [{ address: '127.0.0.1:0', tls: { certFile, keyFile }, http2: http2Settings }], ...partial },
    options,
  );
}
