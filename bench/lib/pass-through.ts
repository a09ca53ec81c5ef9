// The Rempart config the pass-through benchmarks (bench/proxy.ts, bench/together.ts) run: the CLI's
// default config (`--upstream … --admin off --quiet`) written as a file, except what one wrk address at
// tens of thousands of requests a second would turn into another benchmark. Every phase still runs.

export interface PassThroughOptions {
  /** The gateway's port and its origin's, both on 127.0.0.1. */
  readonly port: number;
  readonly originPort: number;
  /** The engine, its own process and no state file; undefined for an older checkout that may not know it. */
  readonly engine?: 'lean' | 'node';
  /** Every optional phase off: no admission, cache, challenge or signatures. */
  readonly bare?: boolean;
  /** With `bare`: these optional phases back on (to measure each one's cost alone). */
  readonly with?: readonly OptionalPhase[];
  readonly logLevel?: string;
}

export const OPTIONAL_PHASES = ['admission', 'cache', 'challenge', 'signatures'] as const;
export type OptionalPhase = (typeof OPTIONAL_PHASES)[number];

export function passThroughConfig(o: PassThroughOptions): string {
  const bare = o.bare === true;
  const off = (p: OptionalPhase) => bare && !(o.with ?? []).includes(p);
  return JSON.stringify({
    version: 1,
    listeners: [{ address: `127.0.0.1:${o.port}` }],
    upstreams: [
      {
        name: 'origin',
        url: `http://127.0.0.1:${o.originPort}`,
        ...(off('admission') ? { admission: { mode: 'off' } } : {}),
      },
    ],
    routes: [
      {
        name: 'default',
        path: '/*',
        upstream: 'origin',
        class: 'public',
        ...(off('cache') ? { cache: { enabled: false } } : {}),
      },
    ],
    admin: { address: 'off' },
    logging: { level: o.logLevel ?? 'info', requests: false },
    defense: {
      // The default per-address rule (50/s) would answer wrk with 429s, then a ban.
      rateLimit: { mode: 'off' },
      bans: { mode: 'off' },
      // The level pinned calm: its detector still observes every request (the cost stays), but one wrk
      // address at tens of thousands of requests a second is a flood to it, and once its warm-up is over
      // it would turn a pass-through benchmark into a challenge benchmark.
      level: { override: 'calm' },
      ...(off('challenge') ? { challenge: { mode: 'off' } } : {}),
      ...(off('signatures') ? { signatures: { mode: 'off' } } : {}),
    },
    // each engine its own process and no shared state file beside the configs (level baselines, bans)
    ...(o.engine !== undefined ? { server: { engine: o.engine }, state: { file: 'off' } } : {}),
  });
}
