// The gateway side of bench/memory-bounds.ts: one gateway in this process and nothing else, so this
// process's RSS and heap are the gateway's alone. Driven over IPC by the parent:
//   parent ─{ config }─▶ child          child ─{ ports }─▶ parent
//   parent ─{ sample }─▶ child          child ─{ memory after a full GC, peak RSS, table sizes }─▶ parent
// The tables' sizes are read from the instances themselves (their prototypes are wrapped to note the
// instances the gateway creates): the harness needs no hook in the gateway.
// Run with --expose-gc (the parent does): heap figures are taken after a full collection.
import { Writable } from 'node:stream';
import { validateConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/core/log.ts';
import { createGateway } from '../../src/app/gateway.ts';
import { BanTable } from '../../src/phases/ban/table.ts';
import { GcraLimiter } from '../../src/phases/ratelimit/gcra.ts';
import { ReplayGuard } from '../../src/phases/challenge/replay.ts';
import { UsageTable } from '../../src/phases/exfiltration/usage.ts';
import { SpaceSaving } from '../../src/phases/level/space-saving.ts';

export interface TableSizes {
  rateLimitKeys: number;
  rateLimitSharedBytes: number;
  banEntries: number;
  offenceCounters: number;
  sessions: number;
  replayIds: number;
  exfiltrationIdentities: number;
  cacheEntries: number;
  cacheBytes: number;
  sketchValues: number;
}

export interface MemorySample {
  rss: number;
  /** Peak RSS of the process so far (getrusage ru_maxrss). */
  maxRss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  sizes: TableSizes;
}

const limiters = new Set<GcraLimiter>();
const replays = new Set<ReplayGuard>();
const usages = new Set<UsageTable>();
const sketches = new Set<SpaceSaving>();

function note<T extends object>(proto: T, method: keyof T, into: Set<T>): void {
  const orig = proto[method] as unknown as (...a: unknown[]) => unknown;
  (proto as Record<keyof T, unknown>)[method] = function (this: T, ...a: unknown[]) {
    into.add(this);
    return orig.apply(this, a);
  };
}
note(GcraLimiter.prototype, 'check', limiters);
note(ReplayGuard.prototype, 'use', replays);
note(UsageTable.prototype, 'getOrCreate', usages);
note(SpaceSaving.prototype, 'add', sketches);

const gc = (globalThis as { gc?: () => void }).gc;

function sum<T>(set: Set<T>, f: (t: T) => number): number {
  let n = 0;
  for (const t of set) n += f(t);
  return n;
}

async function main(): Promise<void> {
  const { config } = await new Promise<{ config: Record<string, unknown> }>((r) =>
    process.once('message', (m) => r(m as { config: Record<string, unknown> })),
  );
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const cfg = validateConfig(config, '(memory-bounds)');
  const gateway = await createGateway(cfg, { logger: createLogger(cfg.logging.level, sink) });
  await gateway.start();
  const { listeners, admin } = gateway.addresses();
  const sample = (): MemorySample => {
    if (gc !== undefined) {
      gc();
      gc();
    }
    const m = process.memoryUsage();
    const bans = gateway.defense.bans as BanTable;
    return {
      rss: m.rss,
      maxRss: process.resourceUsage().maxRSS * 1024,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      sizes: {
        rateLimitKeys: sum(limiters, (l) => l.size),
        rateLimitSharedBytes: sum(limiters, (l) => l.sharedBytes),
        banEntries: bans instanceof BanTable ? bans.size : 0,
        offenceCounters: bans instanceof BanTable ? bans.offenceCount : 0,
        sessions: gateway.challenge.sessions.size,
        replayIds: sum(replays, (r) => r.size),
        exfiltrationIdentities: sum(usages, (u) => u.size),
        cacheEntries: gateway.cache.store.entries,
        cacheBytes: gateway.cache.store.bytes,
        sketchValues: sum(sketches, (s) => s.size),
      },
    };
  };
  process.on('message', (m: { type: string }) => {
    if (m.type === 'sample') process.send!({ type: 'sample', sample: sample() });
    else if (m.type === 'stop') void gateway.stop(100).then(() => process.exit(0));
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ type: 'ready', ports: listeners.map((l) => l.port), admin: admin?.port ?? 0 });
}

void main().catch((err: unknown) => {
  process.stderr.write(`memory-child: ${String(err instanceof Error ? err.stack : err)}\n`);
  process.exit(1);
});
