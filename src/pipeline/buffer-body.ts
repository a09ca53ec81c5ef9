// Request-body buffering: a body up to limits.bufferBodyBytes is read completely before an upstream
// connection is taken, so a slow-POST client trickling its body holds only its own socket, never an
// upstream connection or an origin worker (nginx's proxy_request_buffering and HAProxy's
// http-buffer-request do the same). Larger bodies stream, the buffered part first.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RempartError } from '../core/errors.ts';

export type BufferedBody = Buffer | AsyncIterable<Buffer> | null;

const kContinueSent = Symbol('rempart.continueSent');

/**
 * Invite the body of an `Expect: 100-continue` request, once, just before reading it: only a request
 * that passed every phase that could refuse it gets "100 Continue", so a client about to upload a
 * gigabyte to a route that would answer 413 is told so before it sends anything (RFC 9110 §10.1.1).
 */
export function sendContinueIfExpected(req: IncomingMessage, res: ServerResponse): void {
  const expect = req.headers.expect;
  if (expect === undefined || expect.toLowerCase() !== '100-continue' || res.headersSent) return;
  const marked = res as ServerResponse & { [kContinueSent]?: true };
  if (marked[kContinueSent]) return;
  marked[kContinueSent] = true;
  // Behind an earlier response still going out (pipelining) this response has no socket yet, and Node
  // would queue the 100 in its buffer; but a final head written later with a Buffer body is put in
  // FRONT of that buffer (OutgoingMessage._send), so the client got [head][100 Continue][body] and
  // read the 100's bytes as the body: every later answer on the connection off by them (found by the
  // fuzzer). So the 100 waits for the socket, and is dropped if the final head came first.
  if (res.socket === null) {
    res.once('socket', continueOnSocket);
    return;
  }
  res.writeContinue();
}

/** The response got its connection (its turn on a pipelined one): the 100, unless it is already answered. */
function continueOnSocket(this: ServerResponse): void {
  if (!this.headersSent && !this.writableEnded) this.writeContinue();
}

/** Streams `head` then the rest of `req`, failing once the total passes maxBytes. */
async function* headThenRest(
  head: Buffer[],
  seenBytes: number,
  req: IncomingMessage,
  maxBytes: number,
): AsyncGenerator<Buffer> {
  for (const chunk of head) yield chunk;
  let seen = seenBytes;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    seen += chunk.length;
    if (seen > maxBytes) throw new RempartError('RMP_ERR_EDGE_BODY_TOO_LARGE');
    yield chunk;
  }
}

/**
 * Read up to `bufferBytes` of the body. Calls `done` once with the whole body as one Buffer, or with
 * an iterable (buffered part + the rest) when the body is larger, or with an error (body over
 * maxBytes, client gone).
 */
export function bufferRequestBody(
  req: IncomingMessage,
  bufferBytes: number,
  maxBytes: number,
  done: (err: Error | null, body: BufferedBody) => void,
): void {
  const chunks: Buffer[] = [];
  let seen = 0;
  let settled = false;
  const cleanup = () => {
    req.removeListener('data', onData);
    req.removeListener('end', onEnd);
    req.removeListener('error', onError);
    req.removeListener('close', onClose);
  };
  const settle = (err: Error | null, body: BufferedBody) => {
    if (settled) return;
    settled = true;
    cleanup();
    done(err, body);
  };
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > maxBytes) return settle(new RempartError('RMP_ERR_EDGE_BODY_TOO_LARGE'), null);
    chunks.push(chunk);
    if (seen > bufferBytes) {
      req.pause();
      settle(null, headThenRest(chunks, seen, req, maxBytes));
    }
  };
  const onEnd = () => settle(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, seen));
  const onError = (err: Error) => settle(err, null);
  const onClose = () => settle(new RempartError('RMP_ERR_CLIENT_ABORTED'), null);
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', onError);
  req.on('close', onClose);
}
