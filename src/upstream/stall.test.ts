import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROBE_MS, StallProbe } from './stall.ts';

/** A probe fed by hand: `idle` stands for the loop's idle time so far. */
function manual() {
  const loop = { idle: 0 };
  return { loop, probe: new StallProbe(0, false, () => loop.idle) };
}

test('a loop busy in short chunks throughout a sample delays its reading by the last chunk, not by them all', () => {
  const { loop, probe } = manual();
  // Every tick 3 ms late (busy 3 ms of every 13, waiting for I/O the rest): 200 ms of that ...
  let now = 0;
  for (let k = 0; k < 100; k++) {
    loop.idle += PROBE_MS;
    probe.tick((now += PROBE_MS + 3));
  }
  // ... then an answer, there since the loop last waited, read at the end of one more busy chunk.
  loop.idle += PROBE_MS - 1;
  const stalled = probe.stalledWithin(now - 200, now + PROBE_MS + 3);
  assert.ok(stalled >= 3 && stalled <= 4, `subtracted ${stalled} ms, not the ~45 ms of every stall in the span`);
});

test('the busy stretch the answer waited behind is subtracted whole: a stall, the backlog after it, one going on', () => {
  const { loop, probe } = manual();
  for (let now = PROBE_MS; now <= 1000; now += PROBE_MS) {
    loop.idle += 8;
    probe.tick(now);
  }
  // Waiting for I/O until 1005, then busy until 1050 (the probe's tick due at 1010 ran then), the read at 1052.
  loop.idle += 5;
  probe.tick(1050);
  assert.equal(probe.stalledWithin(1000, 1052), 1052 - 1010);
  // Still busy with the backlog, no wait for I/O: the tick due at 1060 ran at 1067, the read at 1068.
  probe.tick(1067);
  assert.equal(probe.stalledWithin(1000, 1068), 1068 - 1010);
  // A stall going on at the read: the tick due at 1077 has not run yet at 1100.
  assert.equal(probe.stalledWithin(1000, 1100), 1100 - 1010);
  // Once the loop has waited for I/O again (ticks on time), an old stall is not: the origin was working meanwhile.
  for (let now = 1110; now <= 1300; now += PROBE_MS) {
    loop.idle += 8;
    probe.tick(now);
  }
  loop.idle += 3;
  assert.equal(probe.stalledWithin(1000, 1305), 0);
});
