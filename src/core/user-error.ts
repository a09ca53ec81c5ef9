// How a command-line failure reaches a person: one line `rempart: <what went wrong>`, a hint when
// the cause is a common one (a path, a permission, a port), and the stack only when asked for
// (`--debug` or REMPART_DEBUG=1). A stack trace tells an operator nothing they can act on.

/** A mistake in the command line itself: exit status 2, and the usage text follows the message. */
export class UsageError extends Error {
  readonly usage: string;
  constructor(message: string, usage = '') {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}

/** Is the stack wanted? `--debug` on the command line or REMPART_DEBUG=1 (or true) in the environment. */
export function debugWanted(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.REMPART_DEBUG;
  return argv.includes('--debug') || v === '1' || v === 'true';
}

/** What to do about an operating-system error, by its code (`ENOENT`, `EACCES`...); '' when unknown. */
export function hintFor(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
      return 'check the path (a relative path is taken from the current directory)';
    case 'EACCES':
    case 'EPERM':
      return "check the file's permissions and the user Rempart runs as (ports below 1024 need privileges too)";
    case 'EISDIR':
      return 'that path is a directory; give a file';
    case 'EADDRINUSE':
      return 'another process holds that address: stop it, or choose another port (--listen, --admin, or the config file); to replace a running Rempart without dropping a request, start the new one with --upgrade (docs/operations.md)';
    case 'EADDRNOTAVAIL':
      return 'no interface of this machine has that address: use 127.0.0.1, 0.0.0.0 or one of its own addresses';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'the host name does not resolve: check its spelling and the DNS';
    case 'ECONNREFUSED':
      return 'nothing listens there yet: start it, or check the port';
    default:
      return '';
  }
}

/**
 * The text for a failure: `prefix: message`, then `  hint: …` and, when debugging, the stack.
 * `unexpected`: a bug rather than a bad input, so say how to get the stack for a report.
 * Always ends with a newline.
 */
export function formatError(err: unknown, prefix: string, debug: boolean, unexpected = false): string {
  const message = err instanceof Error ? err.message : String(err);
  let out = `${prefix}: ${message}\n`;
  const hint = hintFor(err);
  if (hint !== '') out += `  hint: ${hint}\n`;
  if (err instanceof UsageError && err.usage !== '') out += `\n${err.usage}`;
  if (debug && err instanceof Error && err.stack !== undefined) out += `${err.stack}\n`;
  else if (unexpected) out += '  (run again with --debug or REMPART_DEBUG=1 to see where it failed)\n';
  return out;
}
