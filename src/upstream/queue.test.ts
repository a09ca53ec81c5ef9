import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TRAFFIC_CLASSES, type TrafficClass } from '../core/traffic.ts';
import { AdmissionQueue, QueueEntry, Outcome, classIndex, type QueueSettings } from './queue.ts';
import { clientKey, cookieValue, networkKey, prefixKey } from '../core/client-key.ts';

const settings: QueueSettings = {
  classOrder: [...TRAFFIC_CLASSES],
  maxEntries: 10,
  maxEntriesPerClass: 10,
  timeoutMs: { critical: 5000, authenticated: 3000, cacheable: 1000, public: 1000, static: 500 },
  maxSharePercent: 100,
  reservePercent: [0, 0, 0, 0, 0],
};

let seq = 0;
function entry(q: AdmissionQueue<string>, cls: TrafficClass, key = `k${seq++}`, nowMs = 0): QueueEntry<string> {
  const c = classIndex(cls);
  return new QueueEntry(`${cls}#${seq++}`, c, key, nowMs, q.deadlineFor(c, nowMs));
}

test('the queue serves the highest class first and FIFO within a class', () => {
  const q = new AdmissionQueue<string>(settings);
  const out: QueueEntry<string>[] = [];
  const s1 = entry(q, 'static');
  const p1 = entry(q, 'public');
  const c1 = entry(q, 'critical');
  const p2 = entry(q, 'public');
  const c2 = entry(q, 'critical');
  for (const e of [s1, p1, c1, p2, c2]) assert.equal(q.push(e, out), null);
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift(), q.shift(), q.shift()], [c1, c2, p1, p2, s1, null]);
  assert.equal(q.size, 0);
});

test('a configured class order changes who goes first', () => {
  const q = new AdmissionQueue<string>({
    ...settings,
    classOrder: ['static', 'public', 'cacheable', 'authenticated', 'critical'],
  });
  const out: QueueEntry<string>[] = [];
  const c = entry(q, 'critical');
  const s = entry(q, 'static');
  q.push(c, out);
  q.push(s, out);
  assert.equal(q.shift(), s);
});

test('a full queue evicts the newest entry of the lowest class to admit a higher class, and refuses when nothing lower waits', () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 3 });
  const out: QueueEntry<string>[] = [];
  const p1 = entry(q, 'public');
  const s1 = entry(q, 'static');
  const s2 = entry(q, 'static');
  for (const e of [p1, s1, s2]) assert.equal(q.push(e, out), null);
  const c1 = entry(q, 'critical');
  assert.equal(q.push(c1, out), null);
  assert.deepEqual(out, [s2], 'the newest static entry made room');
  assert.equal(s2.outcome, Outcome.Evicted);
  assert.equal(q.push(entry(q, 'static'), out), 'queue-full', 'nothing lower than static');
  assert.equal(q.push(entry(q, 'critical'), out), null);
  assert.deepEqual(out, [s2, s1]);
  assert.equal(q.push(entry(q, 'critical'), out), null);
  assert.deepEqual(out, [s2, s1, p1]);
  assert.equal(q.push(entry(q, 'critical'), out), 'queue-full', 'a class never evicts its own');
  assert.equal(q.size, 3);
});

test('each class is bounded by maxEntriesPerClass', () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntriesPerClass: 2 });
  const out: QueueEntry<string>[] = [];
  assert.equal(q.push(entry(q, 'public'), out), null);
  assert.equal(q.push(entry(q, 'public'), out), null);
  assert.equal(q.push(entry(q, 'public'), out), 'queue-full');
  assert.equal(q.push(entry(q, 'static'), out), null);
});

test('one client key holds at most maxSharePercent of a class, at least one slot, and its count is forgotten once it has nothing queued', () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 20, maxEntriesPerClass: 20, maxSharePercent: 10 });
  assert.equal(q.keyCap, 2);
  const out: QueueEntry<string>[] = [];
  const a1 = entry(q, 'cacheable', '198.51.100');
  assert.equal(q.push(a1, out), null);
  assert.equal(q.push(entry(q, 'cacheable', '198.51.100'), out), null);
  assert.equal(q.push(entry(q, 'cacheable', '198.51.100'), out), 'fairness');
  assert.equal(q.push(entry(q, 'public', '198.51.100'), out), null, 'the share is per class');
  assert.equal(q.push(entry(q, 'cacheable', '203.0.113'), out), null, 'another client still gets in');
  assert.equal(q.heldBy(classIndex('cacheable'), '198.51.100'), 2);
  q.remove(a1);
  assert.equal(q.push(entry(q, 'cacheable', '198.51.100'), out), null, 'a freed place can be taken again');
  while (q.shift() !== null);
  assert.equal(q.trackedKeys(), 0);
  const tiny = new AdmissionQueue<string>({ ...settings, maxEntries: 5, maxEntriesPerClass: 5, maxSharePercent: 1 });
  assert.equal(tiny.keyCap, 1);
});

test('the waiting entries counted up to a cap per key, or per network of keys (the attack level)', () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 40, maxEntriesPerClass: 40 });
  const out: QueueEntry<string>[] = [];
  // Four /64s of one /48 with 3 entries each, one IPv4 /24 in two classes with 3 and 2, one more /24 with 1.
  for (let i = 0; i < 4; i++)
    for (let n = 0; n < 3; n++) assert.equal(q.push(entry(q, 'public', `2001:db8:1:${i}::/64`), out), null);
  for (let n = 0; n < 3; n++) assert.equal(q.push(entry(q, 'public', '203.0.113'), out), null);
  for (let n = 0; n < 2; n++) assert.equal(q.push(entry(q, 'static', '203.0.113'), out), null);
  assert.equal(q.push(entry(q, 'public', '198.51.100'), out), null);
  assert.equal(q.size, 18);
  assert.equal(q.sizeCappedPerKey(18), 18);
  assert.equal(q.sizeCappedPerKey(4), 4 * 3 + 4 + 1);
  assert.equal(q.sizeCappedPerKey(4, networkKey), 4 + 4 + 1);
});

test('memory stays bounded whatever the number of client keys', () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 50, maxEntriesPerClass: 50, maxSharePercent: 10 });
  const out: QueueEntry<string>[] = [];
  for (let i = 0; i < 100_000; i++) {
    q.push(entry(q, 'public', `key-${i}`), out);
    if (i % 3 === 0) q.shift();
  }
  assert.ok(q.size <= 50);
  assert.ok(q.trackedKeys() <= 50);
});

test('entries past their class deadline expire with Timeout; others stay', () => {
  const q = new AdmissionQueue<string>(settings);
  const out: QueueEntry<string>[] = [];
  const s = entry(q, 'static', 'a', 0); // 500 ms
  const p = entry(q, 'public', 'b', 0); // 1000 ms
  const c = entry(q, 'critical', 'c', 0); // 5000 ms
  for (const e of [s, p, c]) q.push(e, out);
  assert.equal(q.nextDeadlineMs(), 500);
  const expired: QueueEntry<string>[] = [];
  q.expire(499, expired);
  assert.equal(expired.length, 0);
  q.expire(1000, expired);
  assert.deepEqual(
    expired,
    [p, s].sort((x, y) => x.cls - y.cls),
  );
  assert.ok(expired.every((e) => e.outcome === Outcome.Timeout));
  assert.equal(q.nextDeadlineMs(), 5000);
  assert.equal(q.size, 1);
});

test('removing an entry that already left the queue does nothing', () => {
  const q = new AdmissionQueue<string>(settings);
  const out: QueueEntry<string>[] = [];
  const e = entry(q, 'public');
  q.push(e, out);
  assert.equal(q.remove(e), true);
  assert.equal(q.remove(e), false);
  assert.equal(q.size, 0);
});

test('client keys: /24 for IPv4 and mapped IPv4, /64 for IPv6, or the session cookie', () => {
  assert.equal(prefixKey('203.0.113.7'), '203.0.113');
  assert.equal(prefixKey('::ffff:203.0.113.7'), '203.0.113');
  assert.equal(prefixKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  assert.equal(prefixKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(prefixKey('2001:0db8:0001:0002::9'), '2001:db8:1:2::/64');
  assert.equal(prefixKey('::1'), '0:0:0:0::/64');
  assert.equal(cookieValue('a=1; sid=abc; b=2', 'sid'), 'abc');
  assert.equal(cookieValue('xsid=1', 'sid'), '');
  assert.equal(clientKey('session', '203.0.113.7', 'sid=abc', 'sid'), 's:abc');
  assert.equal(clientKey('session', '203.0.113.7', undefined, 'sid'), '203.0.113');
  assert.equal(clientKey('address', '203.0.113.7', undefined, 'sid'), '203.0.113.7');
});

test('within a class, a client’s first waiting request goes before another client’s second: one key with many entries takes turns', () => {
  const q = new AdmissionQueue<string>(settings);
  const out: QueueEntry<string>[] = [];
  const hammer = [0, 1, 2, 3, 4].map(() => entry(q, 'public', 'hammer'));
  for (const e of hammer) assert.equal(q.push(e, out), null);
  const alice = entry(q, 'public', 'alice');
  const bob = entry(q, 'public', 'bob');
  assert.equal(q.push(alice, out), null);
  assert.equal(q.push(bob, out), null);
  // The hammer's first (oldest, round 0), then alice and bob (round 0), then the hammer's others in order.
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift()], [hammer[0], alice, bob, hammer[1]]);
  assert.equal(q.size, 3);
});

test('a known client’s first waiting request goes before unknown clients’ within its class (bias); its second ties with their first', () => {
  const q = new AdmissionQueue<string>(settings);
  const out: QueueEntry<string>[] = [];
  const unknownA = entry(q, 'public', 'a');
  const unknownB = entry(q, 'public', 'b');
  unknownA.bias = 1;
  unknownB.bias = 1;
  const known1 = entry(q, 'public', 'customer');
  const known2 = entry(q, 'public', 'customer');
  const critical = entry(q, 'critical', 'c');
  critical.bias = 1;
  for (const e of [unknownA, unknownB, known1, known2, critical]) assert.equal(q.push(e, out), null);
  // Class first (an unknown critical request still beats a known public one), then the known client's
  // first (round 0); its second (round 1) ties with the unknown clients' first, and the oldest goes.
  assert.deepEqual(
    [q.shift(), q.shift(), q.shift(), q.shift(), q.shift()],
    [critical, known1, unknownA, unknownB, known2],
  );
});

test('a class below its reserved share of the limit is served before higher classes; at its share, strict order again', () => {
  const reserve = [0, 0, 20, 0, 0]; // cacheable: 20 % of the limit
  const q = new AdmissionQueue<string>({
    ...settings,
    maxEntries: 20,
    maxEntriesPerClass: 20,
    reservePercent: reserve,
  });
  for (let i = 0; i < 3; i++) q.push(entry(q, 'authenticated'), []);
  for (let i = 0; i < 3; i++) q.push(entry(q, 'cacheable'), []);
  const inFlight = new Int32Array(5);
  const c = classIndex('cacheable');
  // limit 10 → 2 reserved slots: two cacheable entries go first, then authenticated takes over.
  const served: string[] = [];
  for (let i = 0; i < 6; i++) {
    const e = q.shift(inFlight, 10)!;
    inFlight[e.cls]!++;
    served.push(TRAFFIC_CLASSES[e.cls]!);
  }
  assert.deepEqual(served, ['cacheable', 'cacheable', 'authenticated', 'authenticated', 'authenticated', 'cacheable']);
  // A tiny limit still reserves one slot for a class with a share above 0.
  const q2 = new AdmissionQueue<string>({ ...settings, reservePercent: reserve });
  q2.push(entry(q2, 'critical'), []);
  q2.push(entry(q2, 'cacheable'), []);
  assert.equal(q2.shift(new Int32Array(5), 2)!.cls, c);
  // Unused, the share goes to the others: without cacheable waiting, authenticated gets every slot.
  const q3 = new AdmissionQueue<string>({ ...settings, reservePercent: reserve });
  q3.push(entry(q3, 'authenticated'), []);
  assert.equal(q3.shift(new Int32Array(5), 10)!.cls, classIndex('authenticated'));
  // Strict order when no share is configured, whatever the in-flight counts.
  const q4 = new AdmissionQueue<string>(settings);
  q4.push(entry(q4, 'cacheable'), []);
  q4.push(entry(q4, 'critical'), []);
  assert.equal(q4.shift(new Int32Array(5), 10)!.cls, classIndex('critical'));
});

test('the lowest round is found the same way however entries leave: pushes, takes, cancels, evictions and expiries mixed', () => {
  // Reference: the oldest entry of the lowest round, found by reading the whole line.
  let rand = 7;
  const next = (n: number): number => {
    rand = (rand * 1103515245 + 12345) % 2147483648;
    return rand % n;
  };
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 40, maxEntriesPerClass: 40 });
  const model: QueueEntry<string>[] = [];
  const out: QueueEntry<string>[] = [];
  let now = 0;
  for (let step = 0; step < 5000; step++) {
    const op = next(10);
    if (op < 5) {
      const e = new QueueEntry(`p${step}`, classIndex('public'), `k${next(4)}`, now, now + 50 + next(100));
      if (next(3) === 0) e.bias = 1;
      if (q.push(e, out) === null) model.push(e);
      for (const v of out.splice(0)) model.splice(model.indexOf(v), 1);
    } else if (op < 8) {
      const got = q.shift();
      if (model.length === 0) {
        assert.equal(got, null);
        continue;
      }
      let best = 0;
      for (let i = 1; i < model.length; i++) if (model[i]!.round < model[best]!.round) best = i;
      assert.equal(got, model[best]);
      model.splice(best, 1);
    } else if (op === 8 && model.length > 0) {
      const victim = model[next(model.length)]!;
      assert.equal(q.remove(victim), true);
      model.splice(model.indexOf(victim), 1);
    } else {
      now += next(40);
      q.expire(now, out);
      for (const v of out.splice(0)) model.splice(model.indexOf(v), 1);
    }
  }
});

test("one key's entries keep their arrival order however the queue's depth changes: no newcomer overtakes an older entry", () => {
  const q = new AdmissionQueue<string>({ ...settings, maxEntries: 100, maxEntriesPerClass: 100 });
  const made: QueueEntry<string>[] = [];
  const push = () => {
    const e = entry(q, 'public', '198.51.100');
    e.bias = 1; // an unknown client
    assert.equal(q.push(e, []), null);
    made.push(e);
  };
  const taken: QueueEntry<string>[] = [];
  // A deep queue from one address (a NAT, a load test), mostly drained, then refilled: the old rule
  // (rounds counted from the key's waiting entries) numbered the newcomers 6-10 and served them before
  // the five left from the deep queue (26-30), which then waited past their deadline.
  for (let i = 0; i < 30; i++) push();
  for (let i = 0; i < 25; i++) taken.push(q.shift()!);
  for (let i = 0; i < 5; i++) push();
  while (q.size > 0) taken.push(q.shift()!);
  assert.deepEqual(taken, made);
  // Another client arriving now still goes before the first one's second waiting request.
  for (let i = 0; i < 3; i++) push();
  const other = entry(q, 'public', '203.0.113');
  other.bias = 1;
  q.push(other, []);
  assert.equal(q.shift(), made[made.length - 3]);
  assert.equal(q.shift(), other);
});
