// sendLocalReply's head: the base fields, the reply's own (frozen sets kept merged and checked), the
// headers phases added, with either engine's response (writeCheckedHead for lean, writeHead for node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sendLocalReply } from './reply.ts';
import type { RequestContext } from './context.ts';

interface Written {
  status: number;
  fields: string[];
  checked: string[] | null;
  body: string | undefined;
}

function fakeCtx(
  lean: boolean,
  reply: { status: number; body?: string; headers?: Record<string, string> | null; added?: string[] | null },
  method = 'GET',
): { ctx: RequestContext; out: Written } {
  const out: Written = { status: 0, fields: [], checked: null, body: undefined };
  const res: Record<string, unknown> = {
    headersSent: false,
    writeHead(status: number, fields: string[]) {
      out.status = status;
      out.fields = fields.slice();
    },
    end(body?: string) {
      out.body = body;
    },
  };
  if (lean)
    res.writeCheckedHead = (status: number, checked: string[], extra: string[] | null) => {
      out.status = status;
      out.checked = checked.slice();
      out.fields = [...checked, ...(extra ?? [])];
    };
  const ctx = {
    res,
    req: { method, headers: {}, complete: true },
    finished: false,
    replyStored: null,
    replyStatus: reply.status,
    replyBody: reply.body ?? '',
    replyHeaders: reply.headers ?? null,
    responseHeaders: reply.added ?? null,
    reason: 'RMP_ERR_RATE_LIMITED',
    status: 0,
    h2: false,
    socket: null,
  } as unknown as RequestContext;
  return { ctx, out };
}

/** The fields as name → values (in order), as a client reads them. */
function lines(fields: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i < fields.length; i += 2) m.set(fields[i]!, [...(m.get(fields[i]!) ?? []), fields[i + 1]!]);
  return m;
}

test('a local reply carries the base fields, its own (replacing a base one) and those phases added, on both engines', () => {
  const own = Object.freeze({ 'content-type': 'text/html; charset=utf-8', 'retry-after': '2' });
  for (const lean of [true, false]) {
    for (let round = 0; round < 2; round++) {
      // Twice with the same frozen set: the second reply (merged fields kept) must be the same.
      const { ctx, out } = fakeCtx(lean, {
        status: 503,
        body: '<p>busy</p>',
        headers: own,
        added: ['set-cookie', 'a=1', 'rempart-decision', 'x', 'set-cookie', 'b=2', 'cache-control', 'private'],
      });
      sendLocalReply(ctx);
      const got = lines(out.fields);
      assert.equal(out.status, 503);
      assert.equal(out.body, '<p>busy</p>');
      assert.deepEqual(got.get('content-type'), ['text/html; charset=utf-8']);
      assert.deepEqual(got.get('retry-after'), ['2']);
      assert.deepEqual(got.get('content-length'), ['11']);
      assert.deepEqual(got.get('x-content-type-options'), ['nosniff']);
      // Two cookies stay two; a field given again by a phase replaces the fixed one (one line).
      assert.deepEqual(got.get('set-cookie'), ['a=1', 'b=2']);
      assert.deepEqual(got.get('cache-control'), ['private']);
      assert.deepEqual(got.get('rempart-decision'), ['x']);
      assert.equal(got.has('connection'), false);
    }
  }
});

test('a frozen reply set is checked once on the lean path: a bad value throws; an unfrozen one is checked by writeHead', () => {
  const bad = Object.freeze({ 'retry-after': '1\r\nx-injected: 1' });
  const { ctx } = fakeCtx(true, { status: 429, headers: bad });
  assert.throws(() => sendLocalReply(ctx), { code: 'ERR_INVALID_CHAR' });
  // Not frozen: passed as fields the response checks itself (not as already checked ones).
  const { ctx: c2, out } = fakeCtx(true, { status: 429, headers: { 'retry-after': '3' } });
  sendLocalReply(c2);
  assert.equal(out.checked, null);
  assert.deepEqual(lines(out.fields).get('retry-after'), ['3']);
  // The JSON error body with its type when the reply has no body of its own; HEAD sends none.
  const { ctx: c3, out: o3 } = fakeCtx(true, { status: 429 }, 'HEAD');
  sendLocalReply(c3);
  assert.deepEqual(lines(o3.fields).get('content-type'), ['application/json']);
  assert.ok(Number(lines(o3.fields).get('content-length')![0]) > 50);
  assert.equal(o3.body, undefined);
});
