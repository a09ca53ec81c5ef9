// A small drill through Rempart itself, so a regression in protection fails CI: real users keep
// being served while slow clients attack, and what Rempart already guards never reaches the origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostalOrigin } from '../examples/postal/origin.ts';
import { runDrill } from '../src/drill/engine.ts';
import { validateScenario } from '../src/drill/scenario.ts';
import { startGateway, track } from './helpers.ts';

test('through Rempart, slowloris and slow POST never reach the origin or hold its connections, and real users are all served', async (t) => {
  // A small origin: 4 workers. Without body buffering, 60 slow POSTs would hold every one of
  // Rempart's 8 upstream connections and real users would queue behind them.
  const origin = track(t, await startPostalOrigin({ port: 0, workers: 4, serviceTimeMs: 5, queueLength: 200 }));
  const gw = await startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url, connections: 8 }],
    limits: { headersTimeoutMs: 1000, requestTimeoutMs: 2000 },
    logging: { level: 'warn', requests: false },
  });
  const scenario = validateScenario(
    {
      version: 1,
      name: 'test-slow-through-rempart',
      seconds: 4,
      legit: [
        { kind: 'browser', users: 60, pauseMs: [100, 400] },
        { kind: 'vault', users: 20, pauseMs: [100, 400] },
        { kind: 'approvals', users: 10, pauseMs: [100, 400] },
      ],
      attacks: [
        { kind: 'slowloris', startSec: 0.5, durationSec: 3, addresses: 20, connections: 200, trickleIntervalMs: 300 },
        {
          kind: 'slow-post',
          startSec: 0.5,
          durationSec: 3,
          addresses: 20,
          connections: 60,
          trickleIntervalMs: 300,
          bodyBytes: 4096,
          path: '/login',
        },
      ],
    },
    'test',
  );
  const r = await runDrill({ scenario, target: gw.url, originUrl: origin.url, quiet: true });
  assert.ok(r.legit.total.requests > 100, `enough real traffic: ${r.legit.total.requests}`);
  assert.equal(r.legit.total.successPct, 100, `every real user served: ${JSON.stringify(r.legit.byClass)}`);
  assert.equal(r.origin.available && r.origin.receivedAttack, 0, 'no slow request reached the origin');
});

test('drill browsers in a waiting room wait in line like people, are let in, and the report says how long they waited', async (t) => {
  const origin = track(t, await startPostalOrigin({ port: 0, workers: 4, serviceTimeMs: 2, queueLength: 200 }));
  const gw = await startGateway(t, origin.url, {
    upstreams: [{ name: 'origin', url: origin.url }],
    // The room is forced open on the home page and lets 5 visitors in per second.
    routes: [
      {
        name: 'home',
        path: '/',
        upstream: 'origin',
        class: 'public',
        waitingRoom: { enabled: true, force: true, admitPerSecond: 5 },
      },
      { name: 'rest', path: '/*', upstream: 'origin', class: 'public' },
    ],
    logging: { level: 'warn', requests: false },
  });
  const scenario = validateScenario(
    {
      version: 1,
      name: 'test-waiting-room',
      seconds: 5,
      legit: [{ kind: 'browser', users: 20, pauseMs: [100, 300], returningShare: 1 }],
      attacks: [],
    },
    'test',
  );
  const r = await runDrill({ scenario, target: gw.url, originUrl: origin.url, quiet: true });
  const home = r.legit.byClass.home!;
  assert.ok(home.waitingRoom.waited >= 20, `every first visit waited: ${JSON.stringify(home.waitingRoom)}`);
  assert.ok(home.ok >= 10, `visitors were let in and served: ${JSON.stringify(home)}`);
  assert.ok(
    home.waitingRoom.p50WaitMs !== null && home.waitingRoom.p50WaitMs >= 500,
    `time in line measured: ${JSON.stringify(home.waitingRoom)}`,
  );
  assert.equal(home.failures.status, 0, 'a waiting page is not counted as a failure');
  assert.equal(home.waitingRoom.letInRefused, 0, 'nobody let in was refused after (the origin has room)');
  assert.ok(
    home.waitingRoom.waited - home.waitingRoom.stillWaiting >= 10,
    `let in and still in line are told apart: ${JSON.stringify(home.waitingRoom)}`,
  );
});
