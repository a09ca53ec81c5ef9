// A real webhook receiver on loopback for the alert tests (test/alerts.test.ts, test/exfiltration.test.ts).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AlertPayload } from '../src/control/alerts.ts';
import { track, type Teardown } from './helpers.ts';

export interface Received {
  body: string;
  headers: http.IncomingHttpHeaders;
  url: string;
  payload: AlertPayload;
}

export interface Receiver {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/**
 * A webhook receiver on 127.0.0.1:0, closed when the test `t` ends; `answer` picks the status for each
 * POST (default 204), or 0 to never answer.
 */
export async function startReceiver(t: Teardown, answer: (n: number) => number = () => 204): Promise<Receiver> {
  const received: Received[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      received.push({ body, headers: req.headers, url: req.url!, payload: JSON.parse(body) as AlertPayload });
      const status = answer(n++);
      if (status === 0) return; // hang
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return track(t, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}
