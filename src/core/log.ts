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
  // Under attack logs are an amplifier: when the log reader falls behind, drop lines past 16 MiB of
  // backlog rather than grow the heap without bound.
  const bounded = { sync: false, maxLength: 16 * 1024 * 1024 };
  const dest = destination === undefined ? pino.destination({ dest: 1, ...bounded }) : typeof destination === 'number' ? pino.destination({ dest: destination, ...bounded }) : destination;
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
