// A promise some library dropped must not end a gateway in the middle of a flood: Node's default on an
// unhandled rejection is to exit. The guard logs it instead — the error's name, message and stack only
// (ioredis hangs the command and its arguments, client addresses among them, on its errors), at most
// one line per LOG_EVERY_MS with a count of the others, so a rejection per request cannot flood the
// log. An uncaught exception still ends the process (its state may be broken); `--workers` replaces
// such a worker.
import type { Logger } from '../core/log.ts';

export const LOG_EVERY_MS = 10_000;

/** The handler, for process.on('unhandledRejection'): logs sparsely, never throws. */
export function rejectionLogger(log: Logger, now: () => number = () => performance.now()): (reason: unknown) => void {
  let lastLogMs = -Infinity;
  let suppressed = 0;
  return (reason: unknown) => {
    const t = now();
    if (t - lastLogMs < LOG_EVERY_MS) {
      suppressed++;
      return;
    }
    lastLogMs = t;
    const err =
      reason instanceof Error
        ? { name: reason.name, message: reason.message, stack: reason.stack }
        : { message: String(reason) };
    log.error(
      { rejection: err, suppressed },
      'unhandled promise rejection (a bug, please report it): the gateway keeps serving',
    );
    suppressed = 0;
  };
}

/** Install the guard once per process. */
let installed = false;
export function guardUnhandledRejections(log: Logger): void {
  if (installed) return;
  installed = true;
  process.on('unhandledRejection', rejectionLogger(log));
}
