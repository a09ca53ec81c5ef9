import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createManualClock } from '../../core/clock.ts';
import { RequestContext } from '../../pipeline/context.ts';
import { createMetrics } from '../../core/metrics.ts';
import { Verdict } from '../../pipeline/phase.ts';
import { compileRuntime, type Runtime } from '../../pipeline/runtime.ts';
import { ConfigError, parseConfig, validateConfig } from '../../config/load.ts';
import { createAdmissionPhase } from './index.ts';

function config(
  upstreamAdmission: Record<string, unknown>,
  admission: Record<string, unknown> = {},
  url = 'http://127.0.0.1:9',
) {
  return validateConfig({
    version: 1,
    listeners: [{ address: '127.0.0.1:0' }],
    upstreams: [{ name: 'app', url, admission: upstreamAdmission }],
    routes: [
      { name: 'pay', path: '/pay', upstream: 'app', class: 'critical' },
      { name: 'all', path: '/*', upstream: 'app', class: 'public' },
    ],
    admission,
  });
}

function setup(
  upstreamAdmission: Record<string, unknown> = { mode: 'static', staticLimit: 1 },
  admission: Record<string, unknown> = {},
) {
  const clock = createManualClock(1000);
  let runtime: Runtime = compileRuntime(config(upstreamAdmission, admission), undefined, clock).runtime;
  const phase = createAdmissionPhase(() => runtime, createMetrics(), clock);
  const request = (path: string, headers: Record<string, string> = {}) => {
    const ctx = new RequestContext(
      { headers, method: 'GET' } as unknown as IncomingMessage,
      {} as ServerResponse,
      clock.now(),
    );
    ctx.clientAddress = '203.0.113.9';
    ctx.path = path;
    ctx.route = runtime.matchRoute('GET', '', path);
    ctx.upstream = ctx.route!.upstream;
    return ctx;
  };
  return {
    clock,
    phase,
    request,
    gate: () => runtime.upstreams.get('app')!.admission,
    reload: (r: Runtime) => (runtime = r),
    runtime: () => runtime,
  };
}

test('a free slot admits synchronously; a waiting request gets a promise that settles when a slot frees, highest class first', async () => {
  const { phase, request, gate } = setup();
  const first = request('/a');
  assert.equal(phase.onRequest(first), Verdict.Continue, 'fast path is a plain verdict, not a promise');
  const publicWaits = phase.onRequest(request('/b'));
  const critical = request('/pay');
  const criticalWaits = phase.onRequest(critical);
  assert.ok(publicWaits instanceof Promise && criticalWaits instanceof Promise);
  assert.equal(gate().queue.size, 2);
  first.forwardStartMs = 1000;
  first.upstreamStatus = 200;
  phase.onDone!(first);
  assert.equal(await criticalWaits, Verdict.Continue, 'the critical request, though it came later, goes first');
  assert.equal(critical.admissionGate, gate(), 'it holds the slot');
  assert.equal(gate().limiter.inFlight, 1);
  phase.onDone!(critical);
  assert.equal(await publicWaits, Verdict.Continue);
});

test('a shed request is answered 503 with Retry-After, JSON by default and HTML for a browser', () => {
  const { phase, request } = setup(
    { mode: 'static', staticLimit: 1 },
    { queue: { maxEntries: 1 }, fairness: { maxSharePercent: 100 } },
  );
  phase.onRequest(request('/a'));
  void phase.onRequest(request('/b'));
  const api = request('/c', { accept: 'application/json' });
  assert.equal(phase.onRequest(api), Verdict.Reply);
  assert.equal(api.reason, 'RMP_ERR_ADMISSION_SHED');
  assert.equal(api.replyStatus, 503);
  assert.equal(api.replyHeaders!['content-type'], 'application/json');
  assert.match(api.replyHeaders!['retry-after']!, /^[123]$/);
  assert.equal((JSON.parse(api.replyBody) as { error: { code: string } }).error.code, 'RMP_ERR_ADMISSION_SHED');
  const browser = request('/d', { accept: 'text/html,*/*;q=0.8' });
  assert.equal(phase.onRequest(browser), Verdict.Reply);
  assert.match(browser.replyHeaders!['content-type']!, /^text\/html/);
  assert.match(browser.replyBody, /^<!doctype html>/);
});

test('a waiting request whose client left is removed from the queue and never takes a slot', async () => {
  const { phase, request, gate } = setup();
  const first = request('/a');
  phase.onRequest(first);
  const gone = request('/b');
  const waiting = phase.onRequest(gone);
  gone.finished = true;
  phase.onDone!(gone);
  assert.equal(gate().queue.size, 0);
  assert.equal(await waiting, Verdict.Reply);
  phase.onDone!(first);
  assert.equal(gate().limiter.inFlight, 0);
  assert.equal(gone.admissionGate, null);
});

test('a request past its deadline is shed with RMP_ERR_ADMISSION_QUEUE_TIMEOUT even when a slot frees later', async () => {
  const { phase, request, clock } = setup();
  const first = request('/a');
  phase.onRequest(first);
  const late = request('/b');
  const waiting = phase.onRequest(late);
  clock.advance(1001); // public: 1000 ms
  phase.onDone!(first);
  assert.equal(await waiting, Verdict.Reply);
  assert.equal(late.reason, 'RMP_ERR_ADMISSION_QUEUE_TIMEOUT');
});

test('upstream 5xx answers cut an adaptive limit; successes feed latency samples', () => {
  const { phase, request, gate, clock } = setup({ mode: 'adaptive', initialLimit: 50, minLimit: 4, maxLimit: 100 });
  const ctx = request('/a');
  phase.onRequest(ctx);
  ctx.forwardStartMs = clock.now();
  ctx.upstreamStatus = 503;
  phase.onDone!(ctx);
  assert.equal(gate().limiter.limit, 45);
  assert.equal(gate().limiter.inFlight, 0);
});

test('neither an Upgrade header nor a real upgrade bypasses admission: a tunnel queues and holds its slot until done', () => {
  const { phase, request, gate } = setup();
  phase.onRequest(request('/a'));
  const sneaky = request('/b', { upgrade: 'websocket' });
  assert.ok(phase.onRequest(sneaky) instanceof Promise, 'queued like any request');
  const tunnel = request('/ws', { upgrade: 'websocket', connection: 'upgrade' });
  (tunnel.req as unknown as { upgrade: boolean }).upgrade = true;
  assert.ok(phase.onRequest(tunnel) instanceof Promise, 'a tunnel is queued like any request');
  assert.equal(gate().limiter.inFlight, 1);
  gate().cancel(sneaky.admissionEntry!);
  gate().cancel(tunnel.admissionEntry!);
  // With a slot free, a tunnel takes it; its long life gives the limiter no sample when it ends.
  const { phase: p2, request: r2, gate: g2 } = setup();
  const open = r2('/ws', { upgrade: 'websocket', connection: 'upgrade' });
  (open.req as unknown as { upgrade: boolean }).upgrade = true;
  assert.equal(p2.onRequest(open), Verdict.Continue);
  assert.equal(g2().limiter.inFlight, 1);
  p2.onDone!(open);
  assert.equal(g2().limiter.inFlight, 0);
});

test('a request whose client already left (an earlier phase waited) takes no slot', () => {
  const { phase, request, gate } = setup();
  const late = request('/a');
  late.finished = true;
  assert.equal(phase.onRequest(late), Verdict.Reply);
  assert.equal(gate().limiter.inFlight, 0);
});

test('mode off admits everything without a slot', () => {
  const { phase, request, gate } = setup({ mode: 'off' });
  for (let i = 0; i < 100; i++) assert.equal(phase.onRequest(request(`/${i}`)), Verdict.Continue);
  assert.equal(gate().limiter.inFlight, 0);
});

test('a reload keeps the gate (limit, in-flight, queue) of an unchanged upstream and replaces it when the URL changes', () => {
  const { phase, request, gate, reload, runtime, clock } = setup({
    mode: 'adaptive',
    initialLimit: 30,
    minLimit: 4,
    maxLimit: 100,
  });
  const before = gate();
  phase.onRequest(request('/a'));
  before.limiter.onDrop();
  const learned = before.limiter.limit;
  reload(
    compileRuntime(
      config({ mode: 'adaptive', initialLimit: 30, minLimit: 4, maxLimit: 100 }, { queue: { maxEntries: 5 } }),
      runtime(),
      clock,
    ).runtime,
  );
  assert.equal(gate(), before);
  assert.equal(gate().limiter.limit, learned);
  assert.equal(gate().limiter.inFlight, 1);
  reload(
    compileRuntime(
      config({ mode: 'adaptive', initialLimit: 30, minLimit: 4, maxLimit: 100 }, {}, 'http://127.0.0.1:10'),
      runtime(),
      clock,
    ).runtime,
  );
  assert.notEqual(gate(), before);
});

test('config: classOrder must name each class once; static needs staticLimit; limits must be ordered', () => {
  const problems = (text: string) => {
    try {
      parseConfig(text, 'x.yaml');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems.map((p) => `${p.path}@${p.line}: ${p.message}`);
    }
    return [];
  };
  const base = `version: 1
listeners: [{ address: 127.0.0.1:8080 }]
routes: [{ name: all, upstream: app }]
`;
  const got = problems(`${base}upstreams:
  - name: app
    url: http://127.0.0.1:3000
    admission: { mode: static, minLimit: 9, maxLimit: 3 }
admission:
  classOrder: [critical, critical, cacheable, public, static]
`);
  assert.ok(
    got.some((p) => p.startsWith('admission.classOrder@9') && p.includes('missing: authenticated')),
    got.join('\n'),
  );
  assert.ok(
    got.some((p) => p.startsWith('upstreams[0].admission.staticLimit') && p.includes('required')),
    got.join('\n'),
  );
  assert.ok(
    got.some((p) => p.startsWith('upstreams[0].admission.minLimit') && p.includes('maxLimit')),
    got.join('\n'),
  );
  assert.ok(
    problems(
      `${base}upstreams: [{ name: app, url: http://127.0.0.1:3000 }]\nadmission: { classOrder: [critical, public] }\n`,
    ).some((p) => p.startsWith('admission.classOrder')),
  );
  assert.ok(
    problems(
      `${base}upstreams: [{ name: app, url: http://127.0.0.1:3000 }]\nadmission: { queue: { timeoutMS: { critical: 1 } } }\n`,
    ).some((p) => p.includes('unknown key')),
  );
  assert.deepEqual(
    problems(
      `${base}upstreams: [{ name: app, url: http://127.0.0.1:3000, admission: { mode: static, staticLimit: 8 } }]\n`,
    ),
    [],
  );
});
