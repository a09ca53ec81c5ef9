// Structured logs (pino): one JSON line per request with fixed field names. Secrets never reach a
// log line: request logging writes chosen fields only, and redaction covers the rest.
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'req.headers.cookie',
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  'headers.cookie',
  'headers.authorization',
  'token',
  'password',
  '*.token',
  '*.password',
  '*.keyFile',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream | number): Logger {
  const dest = destination === undefined ? pino.destination({ dest: 1, sync: false }) : typeof destination === 'number' ? pino.destination({ dest: destination, sync: false }) : destination;
  return pino(
    {
      level,
      base: { svc: 'rempart' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest as pino.DestinationStream,
  );
}
