import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createManualClock } from '../core/clock.ts';
import {
  ConcurrencyLimiter,
  DROP_MIN_INTERVAL_MS,
  PROBE_MAX_MS,
  PROBE_SAMPLES,
  SHORT_WINDOW_MS,
  SHORT_WINDOW_SAMPLES,
  type LimiterSettings,
} from './limiter.ts';

const adaptive: LimiterSettings = { mode: 'adaptive', initialLimit: 20, minLimit: 4, maxLimit: 200 };

/** One short window of traffic at `rttMs`, with the limit fully used (so growth is allowed). */
function window(l: ConcurrencyLimiter, clock: ReturnType<typeof createManualClock>, rttMs: number): void {
  while (l.tryAcquire());
  for (let i = 0; i < SHORT_WINDOW_SAMPLES; i++) {
    clock.advance(SHORT_WINDOW_MS / SHORT_WINDOW_SAMPLES);
    l.onSuccess(rttMs);
  }
  while (l.inFlight > 0) l.release();
}

test('a static limiter admits exactly staticLimit requests and ignores latency', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(
    { mode: 'static', initialLimit: 20, minLimit: 4, maxLimit: 100, staticLimit: 3 },
    clock,
  );
  assert.equal([l.tryAcquire(), l.tryAcquire(), l.tryAcquire(), l.tryAcquire()].filter(Boolean).length, 3);
  for (let i = 0; i < 100; i++) window(l, clock, 500);
  l.onDrop();
  assert.equal(l.limit, 3);
});

test('an off limiter always has a slot', () => {
  const l = new ConcurrencyLimiter({ mode: 'off', initialLimit: 1, minLimit: 1, maxLimit: 1 }, createManualClock());
  for (let i = 0; i < 50; i++) assert.ok(l.tryAcquire());
});

test('steady latency lets the adaptive limit grow; latency rising above the baseline lowers it', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 20; i++) window(l, clock, 20);
  const grown = l.limit;
  assert.ok(grown > 20, `limit grew at steady latency (${grown})`);
  for (let i = 0; i < 10; i++) window(l, clock, 80);
  assert.ok(l.limit < grown, `limit fell when latency quadrupled (${grown} → ${l.limit})`);
});

test('after latency recovers the adaptive limit rises again', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 15; i++) window(l, clock, 20);
  for (let i = 0; i < 15; i++) window(l, clock, 100);
  const low = l.limit;
  for (let i = 0; i < 30; i++) window(l, clock, 20);
  assert.ok(l.limit > low, `limit recovered (${low} → ${l.limit})`);
});

test('the adaptive limit stays within minLimit and maxLimit', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 10, minLimit: 5, maxLimit: 30 }, clock);
  for (let i = 0; i < 200; i++) window(l, clock, 10);
  assert.equal(l.limit, 30);
  for (let i = 0; i < 200; i++) window(l, clock, 10_000);
  for (let i = 0; i < 50; i++) {
    clock.advance(SHORT_WINDOW_MS);
    l.onDrop();
  }
  assert.equal(l.limit, 5);
});

test('an upstream failure cuts the limit multiplicatively, once per round trip', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 100, minLimit: 4, maxLimit: 1000 }, clock);
  l.onDrop();
  assert.equal(l.limit, 90);
  l.onDrop(); // same moment: a burst of 5xx is one signal
  assert.equal(l.limit, 90);
  clock.advance(DROP_MIN_INTERVAL_MS);
  l.onDrop();
  assert.equal(l.limit, 81);
  // Once a baseline RTT is known, the interval is that RTT.
  const m = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 100, minLimit: 4, maxLimit: 1000 }, clock);
  for (let i = 0; i < 3; i++) window(m, clock, 200);
  const before = m.limit;
  clock.advance(300);
  m.onDrop();
  const cut = m.limit;
  assert.ok(cut < before);
  clock.advance(100);
  m.onDrop();
  assert.equal(m.limit, cut, 'one cut per 200 ms round trip');
  clock.advance(200);
  m.onDrop();
  assert.ok(m.limit < cut);
});

test('a limiter not using half its limit does not grow on good latency', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let w = 0; w < 30; w++) {
    l.tryAcquire();
    for (let i = 0; i < SHORT_WINDOW_SAMPLES; i++) {
      clock.advance(SHORT_WINDOW_MS / SHORT_WINDOW_SAMPLES);
      l.onSuccess(5);
    }
    l.release();
  }
  assert.equal(l.limit, 20);
});

test('reconfiguring with the same settings keeps the learned limit; new settings restart it', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 20; i++) window(l, clock, 20);
  const learned = l.limit;
  l.reconfigure({ ...adaptive });
  assert.equal(l.limit, learned);
  l.tryAcquire();
  l.reconfigure({ ...adaptive, initialLimit: 8 });
  assert.equal(l.limit, 8);
  assert.equal(l.inFlight, 1, 'in-flight requests are still counted');
});

test('a limiter saturated from the start probes at minLimit, learns the no-load RTT as its baseline, then walks the limit down towards the knee', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 40, minLimit: 4, maxLimit: 200 }, clock);
  window(l, clock, 80); // the first busy window: latency already 4× the service time
  assert.ok(l.probing);
  assert.equal(l.limit, 4, 'pinned to minLimit while probing');
  // A request that started before the probe is not a no-load sample.
  clock.advance(10);
  l.onSuccess(80);
  for (let i = 0; i < PROBE_SAMPLES; i++) {
    clock.advance(25);
    l.onSuccess(20);
  }
  assert.equal(l.probing, false);
  assert.equal(l.baselineRttMs, 20);
  assert.equal(l.limit, 40, 'back to the limit it had');
  for (let i = 0; i < 30; i++) window(l, clock, 80);
  assert.ok(l.limit < 20, `the limit fell towards the knee (${l.limit})`);
});

test('a probe whose requests never complete ends after PROBE_MAX_MS and keeps the old baseline', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 10, minLimit: 2, maxLimit: 100 }, clock);
  window(l, clock, 50);
  assert.ok(l.probing);
  while (l.tryAcquire());
  clock.advance(PROBE_MAX_MS);
  assert.ok(l.tryAcquire(), 'a slot at the old limit once the probe gave up');
  assert.equal(l.probing, false);
  assert.equal(l.limit, 10);
});

test('routes of different cost are each measured against their own baseline: a change in the mix is not read as congestion', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 20, minLimit: 4, maxLimit: 200 }, clock);
  const mixed = (staticShare: number, vaultRtt: number) => {
    while (l.tryAcquire());
    for (let i = 0; i < 20; i++) {
      clock.advance(SHORT_WINDOW_MS / 20);
      if (i < staticShare * 20)
        l.onSuccess(1, 0); // a static file: 1 ms
      else l.onSuccess(vaultRtt, 1); // a vault page: 20 ms at rest
    }
    while (l.inFlight > 0) l.release();
  };
  // A crowd loads static files first (the first busy window probes, at no load)…
  for (let i = 0; i < 15; i++) mixed(0.9, 20);
  const before = l.limit;
  // …then mostly vault pages, at the same speed: no congestion, the limit must not fall.
  for (let i = 0; i < 30; i++) mixed(0.1, 20);
  assert.ok(l.limit >= before, `limit held or grew when only the mix changed (${before} → ${l.limit})`);
  // The vault really slowing down (3×) still lowers it.
  const held = l.limit;
  for (let i = 0; i < 15; i++) mixed(0.1, 60);
  assert.ok(l.limit < held, `limit fell when the vault's latency tripled (${held} → ${l.limit})`);
});

test("a sample made mostly of Rempart's own stall teaches nothing; a smaller stall is subtracted", () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 15; i++) window(l, clock, 10); // probe, warm-up: baseline 10 ms
  const before = l.limit;
  for (let w = 0; w < 10; w++) {
    while (l.tryAcquire());
    for (let i = 0; i < SHORT_WINDOW_SAMPLES; i++) {
      clock.advance(SHORT_WINDOW_MS / SHORT_WINDOW_SAMPLES);
      l.onSuccess(i % 2 === 0 ? 60 : 14, 0, i % 2 === 0 ? 55 : 4); // 55 ms of stall in 60: dropped; 14 − 4: kept
    }
    while (l.inFlight > 0) l.release();
  }
  assert.equal(l.stalledSamples, 50);
  assert.ok(l.limit >= before, `the limit did not fall for the gateway's own stalls (${before} → ${l.limit})`);
});

test("with Rempart's own loop saturated a no-load probe ends at its first stalled sample, and stalled samples never raise the limit", () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 15; i++) window(l, clock, 10); // probe, warm-up: baseline 10 ms
  const before = l.limit;
  // Every sample 40 ms of which 38 are the gateway's own busy loop: it says nothing of the origin, so
  // the limit neither falls nor grows on it (growing hid a congested origin behind a flooded gateway).
  for (let w = 0; w < 20; w++) {
    while (l.tryAcquire());
    for (let i = 0; i < SHORT_WINDOW_SAMPLES; i++) {
      clock.advance(SHORT_WINDOW_MS / SHORT_WINDOW_SAMPLES);
      l.onSuccess(40, 0, 38);
    }
    while (l.inFlight > 0) l.release();
  }
  assert.equal(l.limit, before);
  // A minute on, the next window starts a no-load probe (limit pinned to minLimit); a stalled sample
  // ends it at once, back to the estimate, instead of queueing behind minLimit for PROBE_MAX_MS.
  clock.advance(61_000);
  window(l, clock, 10);
  assert.equal(l.limit, adaptive.minLimit, 'probing');
  l.tryAcquire();
  clock.advance(1);
  l.onSuccess(40, 0, 38);
  assert.ok(l.limit >= before, `the probe ended on a stalled sample (${l.limit} vs ${before})`);
});

test('a stalled sample no longer than the baseline is kept; a longer one never raises the limit, however quick', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  for (let i = 0; i < 15; i++) window(l, clock, 10); // probe, warm-up: baseline 10 ms
  const before = l.limit;
  // Mostly stall, but the whole exchange within the baseline (10 ms): the origin's time was at most
  // that, so it shows no congestion and is kept.
  l.onSuccess(9, 0, 8);
  assert.equal(l.withinBaselineSamples, 1);
  assert.equal(l.stalledSamples, 0);
  // Rempart's loop saturated: 40 ms answers, 38 of them its own stall. Read in the turn after they
  // went out or not, they say nothing of the origin: counted as the baseline they grew the limit
  // without bound while the origin's queue grew 8x (attacker review of s23).
  for (let w = 0; w < 20; w++) {
    while (l.tryAcquire());
    for (let i = 0; i < SHORT_WINDOW_SAMPLES; i++) {
      clock.advance(SHORT_WINDOW_MS / SHORT_WINDOW_SAMPLES);
      l.onSuccess(40, 0, 38);
    }
    while (l.inFlight > 0) l.release();
  }
  assert.equal(l.stalledSamples, 20 * SHORT_WINDOW_SAMPLES);
  assert.ok(l.limit <= before, `the limit did not grow on stalled samples (${before} → ${l.limit})`);
});

test('a fast 503 cuts once per window of requests: a refusal of a request sent after the last cut cuts again', () => {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter(adaptive, clock);
  const start = l.limit;
  clock.advance(1);
  l.onDrop(1); // sent 1 ms ago, refused at once
  const once = l.limit;
  assert.ok(once < start);
  l.onDrop(5); // sent before that cut: the same overload, ignored
  assert.equal(l.limit, once);
  clock.advance(2);
  l.onDrop(1); // sent after the cut and still refused: the cut was not enough
  assert.ok(l.limit < once);
});

/**
 * An overloaded origin of `workers` slots behind the limiter, two routes of different cost (1 ms, 20 ms),
 * strict class order with the cheap route first: the origin's busy share over the last 20 s of 30.
 */
function simulate(workers: number): number {
  const clock = createManualClock();
  const l = new ConcurrencyLimiter({ mode: 'adaptive', initialLimit: 20, minLimit: 4, maxLimit: 1000 }, clock);
  const cost = [1, 20];
  const waiting: number[][] = [[], []]; // arrival times, per route (route 0 served first)
  const deadline = [500, 3000];
  const rate = [125 * workers, 62.5 * workers]; // per second: 1.56× the origin's capacity
  const next = [0, 0];
  const running: { end: number; start: number; route: number }[] = [];
  const originQueue: { start: number; route: number }[] = [];
  let busy = 0;
  const dt = 0.1;
  for (let t = 0; t < 30_000; t += dt) {
    clock.advance(dt);
    const now = clock.now();
    for (let r = 0; r < 2; r++)
      while (next[r]! <= now) {
        waiting[r]!.push(next[r]!);
        next[r]! += 1000 / rate[r]!;
      }
    for (let i = running.length - 1; i >= 0; i--) {
      const job = running[i]!;
      if (job.end > now) continue;
      running.splice(i, 1);
      l.onSuccess(now - job.start, job.route);
      l.release();
      const n = originQueue.shift();
      if (n !== undefined) running.push({ end: now + cost[n.route]!, start: n.start, route: n.route });
    }
    if (now > 10_000) busy += running.length * dt;
    for (let r = 0; r < 2; r++)
      while (waiting[r]!.length > 0 && now - waiting[r]![0]! > deadline[r]!) waiting[r]!.shift();
    for (;;) {
      const r = waiting[0]!.length > 0 ? 0 : waiting[1]!.length > 0 ? 1 : -1;
      if (r === -1 || !l.tryAcquire()) break;
      waiting[r]!.shift();
      if (running.length < workers) running.push({ end: now + cost[r]!, start: now, route: r });
      else originQueue.push({ start: now, route: r });
    }
  }
  return busy / (workers * 20_000);
}

test('an overloaded origin stays busy whatever the class order lets through first (the no-load probe subtracts queueing, not scales)', () => {
  // With the probe scaling unseen routes by the seen ones' ratio, this origin was 50 % busy: the probe
  // saw only 1 ms files and divided the 20 ms route's baseline by 2.4.
  const busy = simulate(16);
  assert.ok(busy >= 0.9, `origin busy ${(busy * 100).toFixed(1)} % (≥ 90 %)`);
});
