// Config fragment for alerts (alerts), part of the one schema. The webhook URL and signing secret are
// never in the YAML: they may carry a token, so they come from a file or the environment (docs/alerts.md).
import { Type, type Static } from '@sinclair/typebox';
import { Obj } from '../core/schema-util.ts';

export const AlertsSchema = Obj(
  {
    node: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 128,
        description: 'Name of this node in alert payloads (default: the host name).',
      }),
    ),
    webhook: Obj(
      {
        urlFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'File holding the webhook URL (http or https; it may carry a secret token, so it is never written in this file and never logged: logs name its host only). REMPART_ALERT_WEBHOOK_URL wins over it. Without either, alerts are logged and counted only.',
          }),
        ),
        secretFile: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              'File holding the secret that signs each POST body (`Rempart-Signature: sha256=HMAC_HEX`). REMPART_ALERT_WEBHOOK_SECRET wins over it. Never logged.',
          }),
        ),
        minIntervalMs: Type.Integer({
          minimum: 0,
          maximum: 86400000,
          default: 60000,
          description:
            'At most one POST per alert kind per this period; alerts of a kind raised meanwhile are coalesced into the next POST, with their count.',
        }),
        maxQueue: Type.Integer({
          minimum: 1,
          maximum: 10000,
          default: 100,
          description: 'POSTs waiting at most; past it the oldest is dropped (counted as `dropped`).',
        }),
        retries: Type.Integer({
          minimum: 0,
          maximum: 20,
          default: 5,
          description:
            'Retries of a POST that failed (network error, timeout, 5xx or 429), with exponential backoff from `retryBaseMs`.',
        }),
        retryBaseMs: Type.Integer({
          minimum: 1,
          maximum: 3600000,
          default: 1000,
          description: 'Wait before the first retry; each next retry waits twice as long (at most 5 minutes).',
        }),
        timeoutMs: Type.Integer({
          minimum: 100,
          maximum: 120000,
          default: 5000,
          description: 'Time one POST may take, answer included.',
        }),
      },
      {
        default: {},
        description:
          'Delivery of alerts to an HTTP endpoint (a chat bridge, an incident tool): asynchronous, rate-limited, coalesced, bounded, retried.',
      },
    ),
  },
  {
    default: {},
    description: 'Where alerts go besides the log line and `rempart_alerts_total`: a webhook (docs/alerts.md).',
  },
);

export type AlertsConfig = Static<typeof AlertsSchema>;
