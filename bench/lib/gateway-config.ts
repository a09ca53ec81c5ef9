// The config the benchmarks run Rempart with: one listener, one upstream, one route sending
// everything to it, request logs off, no per-address connection cap (a load generator is one
// address with many connections). `extra` is merged over it (defence and cluster settings).
export function benchGatewayConfig(
  port: number,
  adminPort: number | 'off',
  originUrl: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    version: 1,
    listeners: [{ address: `127.0.0.1:${port}` }],
    upstreams: [{ name: 'origin', url: originUrl }],
    routes: [{ name: 'default', path: '/*', upstream: 'origin', class: 'public' }],
    admin: { address: adminPort === 'off' ? 'off' : `127.0.0.1:${adminPort}` },
    logging: { level: 'warn', requests: false },
    limits: { maxConnectionsPerAddress: 100000 },
    ...extra,
  };
}
