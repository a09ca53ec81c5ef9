// Config fragment for cluster mode (`cluster`), part of the one schema. See docs/cluster.md.
import { Type } from '@sinclair/typebox';
import { type AddProblem, checkTlsPair, Obj, TlsFilesSchema } from '../core/schema-util.ts';

const Ms = (def: number, min: number, max: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

export const ClusterSchema = Obj(
  {
    store: Type.Union([Type.Literal('memory'), Type.Literal('redis')], {
      default: 'memory',
      description:
        'Where shared defence state lives: `memory` (this process only: one node needs nothing but Node.js) or `redis` (Valkey or Redis, shared by every node).',
    }),
    nodeName: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.:#-]{1,128}$',
        description:
          'This node\u2019s name in the cluster (logs, the level table). Default: the host name (and `#N` for worker N of `--workers`).',
      }),
    ),
    failMode: Type.Union([Type.Literal('open'), Type.Literal('closed')], {
      default: 'open',
      description:
        'When the store is gone or slow: `open` decides `scope: global` rate limits with this node\u2019s local limiter (a store outage never becomes a site outage), `closed` refuses requests of global rules that have no leased token left. Bans and the attack level are always kept locally.',
    }),
    redis: Obj(
      {
        url: Type.Optional(
          Type.String({
            pattern: '^rediss?://',
            description:
              '`redis://host:port/db` or `rediss://` (TLS). May carry a password, so prefer REMPART_REDIS_URL or `urlFile`; never logged; no query but `?db=N`, `?family=4|6` (refused). REMPART_REDIS_URL wins over both.',
          }),
        ),
        urlFile: Type.Optional(
          Type.String({
            minLength: 1,
            description: 'File holding the URL (for a Kubernetes Secret or systemd credential).',
          }),
        ),
        tls: TlsFilesSchema({
          caFile:
            "A PEM file of the certificate authorities the store's certificate is checked against, " +
            "instead of the system's (an internal PKI, or the store's own self-signed certificate). " +
            'The certificate is still checked against the host name of the URL.',
          certFile:
            'The PEM certificate chain Rempart presents as a client, for a store that asks for one ' +
            '(Valkey/Redis `tls-auth-clients yes`). Needs `keyFile`.',
          block:
            'TLS towards a `rediss://` store: whom to trust and what to present. Read at start and by ' +
            '`rempart check` (a file that cannot be read or used is a start-up error); the store is opened ' +
            'once, so a renewed file applies at the next start or upgrade (a reload only warns of a change, ' +
            'a file gone or a certificate near its end). With a `redis://` URL, an error.',
        }),
        keyPrefix: Type.String({
          pattern: '^[A-Za-z0-9_.:-]{0,64}$',
          default: 'rempart:',
          description: 'Prefix of every key and channel: several Rempart clusters can share one Valkey.',
        }),
        commandTimeoutMs: Ms(
          250,
          10,
          60000,
          'A store command not answered within this counts as a failure: the node decides locally until the store answers again.',
        ),
        connectTimeoutMs: Ms(
          2000,
          100,
          60000,
          'Time to connect; start-up waits this long at most, then carries on locally and keeps trying.',
        ),
        reconnectMaxMs: Ms(
          5000,
          100,
          600000,
          'Longest wait between reconnection attempts (exponential backoff with jitter from 100 ms).',
        ),
      },
      { default: {}, description: 'The Valkey/Redis store, with `store: redis`.' },
    ),
    resyncMs: Ms(
      5000,
      200,
      600000,
      'Each node re-reads the shared bans (and the level override) this often, so one that missed a pub/sub message converges.',
    ),
    levelHeartbeatMs: Ms(
      1000,
      100,
      60000,
      'Each node reports its detected attack level this often; the level in force everywhere is the highest any live node reports. Read at start.',
    ),
    leaseMs: Ms(
      100,
      1,
      60000,
      'Size of a token lease for `scope: global` rate limits, as time at the rule\u2019s rate (a 1000/s rule leases 100 tokens at a time): larger means fewer store operations, coarser sharing.',
    ),
    leaseTtlMs: Ms(
      2000,
      50,
      600000,
      'Leased tokens unused after this long are dropped, so a node cannot save up a burst.',
    ),
  },
  {
    default: {},
    description:
      'Cluster mode: several nodes share bans, global rate limits and the attack level through Valkey/Redis (docs/cluster.md).',
  },
);

/**
 * `cluster.redis.tls`: a client certificate with its key; and with a `redis://` URL written in the file,
 * an error here rather than at start (a URL from REMPART_REDIS_URL or `urlFile` is checked when it is read).
 */
export function checkClusterTls(cluster: unknown, add: AddProblem): void {
  const redis = (cluster as { redis?: { url?: unknown; tls?: unknown } } | undefined)?.redis;
  if (redis === undefined || redis === null || typeof redis !== 'object' || redis.tls === undefined) return;
  checkTlsPair(redis.tls, ['cluster', 'redis', 'tls'], add);
  if (typeof redis.url === 'string' && redis.url.startsWith('redis://'))
    add(['cluster', 'redis', 'tls'], 'TLS needs rediss://, and cluster.redis.url is redis:// (plain)');
}
