// Structured logs (pino): one JSON line per request with fixed field names. Secrets never reach a
// log line: request logging writes chosen fields only, and redaction covers the rest.
//
// Formats (logging.format, --log-format): `json` for machines; `pretty`, one readable line per event,
// for a person at a terminal; `combined`, the Apache/nginx combined access log for the tools that
// read it (request lines on stdout, everything else as JSON on stderr). `auto` (the default) is
// pretty on a terminal and JSON otherwise. The readable formats rewrite pino's JSON lines in a small
// destination (no pino-pretty dependency); JSON output pays nothing for them.
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_FORMATS = ['auto', 'json', 'pretty', 'combined'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

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

/** `auto` decided: pretty when standard output is a terminal, JSON when it is a pipe or a file. */
export function resolveLogFormat(format: LogFormat, isTTY = process.stdout.isTTY === true): Exclude<LogFormat, 'auto'> {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

interface Writable {
  write(chunk: string): unknown;
}

export function createLogger(
  level: string,
  destination?: NodeJS.WritableStream | number,
  format: LogFormat = 'json',
): Logger {
  // Under attack logs are an amplifier: when the log reader falls behind, drop lines past 16 MiB of
  // backlog rather than grow the heap without bound.
  const bounded = { sync: false, maxLength: 16 * 1024 * 1024 };
  const open = (fd: number) => pino.destination({ dest: fd, ...bounded });
  const dest = destination === undefined ? open(1) : typeof destination === 'number' ? open(destination) : destination;
  const resolved = resolveLogFormat(format, destination === undefined || destination === 1 ? undefined : false);
  const out: Writable =
    resolved === 'pretty'
      ? { write: (line: string) => (dest as Writable).write(prettyLine(line)) }
      : resolved === 'combined'
        ? combinedDestination(dest as Writable, destination === undefined ? open(2) : (dest as Writable))
        : (dest as Writable);
  return pino(
    {
      level,
      base: { svc: 'rempart' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    out as pino.DestinationStream,
  );
}

// Fields shown in the fixed part of a pretty request line, or never shown (pino's own).
const REQUEST_FIXED = new Set([
  'time',
  'level',
  'svc',
  'msg',
  'method',
  'path',
  'status',
  'durationMs',
  'client',
  'decision',
  'reason',
  'pid',
  'hostname',
  'url',
  'httpVersion',
  'referer',
  'userAgent',
  'bytes',
]);
const OTHER_FIXED = new Set(['time', 'level', 'svc', 'msg', 'pid', 'hostname']);

/** A value for `key=value`: bare when it is a plain word, else JSON-quoted (so a client's bytes cannot forge a line). */
function show(v: unknown): string {
  if (typeof v === 'string') return /^[\w./:@+-]{1,200}$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/**
 * One pino JSON line as a line for a person:
 *   2026-01-05T10:00:00.000Z GET /track/X 200 12.3ms 127.0.0.1 forwarded route=tracking upstream=postal
 *   2026-01-05T10:00:01.000Z WARN attack level calm → elevated from=calm to=elevated ...
 */
export function prettyLine(line: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = typeof o.time === 'string' ? o.time : '';
  const parts: string[] = [time];
  let fixed = OTHER_FIXED;
  if (o.msg === 'request') {
    fixed = REQUEST_FIXED;
    parts.push(show(o.method), show(o.path), String(o.status), `${o.durationMs}ms`, show(o.client), show(o.decision));
    if (o.reason !== undefined) parts.push(show(o.reason));
  } else {
    parts.push(String(o.level ?? '').toUpperCase(), typeof o.msg === 'string' ? o.msg.replace(/[\r\n]/g, ' ') : '');
  }
  for (const [k, v] of Object.entries(o)) if (!fixed.has(k) && v !== undefined) parts.push(`${k}=${show(v)}`);
  return `${parts.join(' ')}\n`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A quoted combined-log field: quotes, backslashes and control bytes escaped, '-' when absent. */
function quoted(v: unknown): string {
  if (typeof v !== 'string' || v === '') return '"-"';
  return `"${v.replace(/[\\"\x00-\x1f\x7f]/g, (c) => (c === '"' ? '\\"' : c === '\\' ? '\\\\' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))}"`;
}

/**
 * One request line in the combined log format (nginx/Apache `combined`):
 *   127.0.0.1 - - [05/Jan/2026:10:00:00 +0000] "GET /track/X?y=1 HTTP/1.1" 200 5120 "-" "curl/8.5"
 * Null for any other line.
 */
export function combinedLine(line: string): string | null {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (o.msg !== 'request') return null;
  const t = new Date(typeof o.time === 'string' ? o.time : Date.now());
  const p2 = (n: number) => String(n).padStart(2, '0');
  const stamp = `${p2(t.getUTCDate())}/${MONTHS[t.getUTCMonth()]}/${t.getUTCFullYear()}:${p2(t.getUTCHours())}:${p2(t.getUTCMinutes())}:${p2(t.getUTCSeconds())} +0000`;
  const target = typeof o.url === 'string' ? o.url : o.path;
  const request = `${typeof o.method === 'string' ? o.method : '-'} ${typeof target === 'string' ? target : '-'} HTTP/${typeof o.httpVersion === 'string' ? o.httpVersion : '1.1'}`;
  const bytes = typeof o.bytes === 'number' && o.bytes > 0 ? String(o.bytes) : '-';
  const client = typeof o.client === 'string' && /^[0-9a-fA-F.:]+$/.test(o.client) ? o.client : '-';
  return `${client} - - [${stamp}] ${quoted(request)} ${Number(o.status) || 0} ${bytes} ${quoted(o.referer)} ${quoted(o.userAgent)}\n`;
}

/** Request lines in the combined format to `requests`; every other line unchanged (JSON) to `other`. */
function combinedDestination(requests: Writable, other: Writable): Writable {
  return {
    write(line: string) {
      const c = combinedLine(line);
      return c === null ? other.write(line) : requests.write(c);
    },
  };
}
