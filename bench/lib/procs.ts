// Child-process helpers for benchmarks: spawn in its own process group (so a whole nginx master +
// workers tree can be signalled at once), optional CPU pinning with taskset, a registry that kills
// every child on normal exit, error, SIGINT and SIGTERM, and small port helpers.
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import net from 'node:net';

export interface Managed {
  name: string;
  child: ChildProcess;
  pid: number;
  /** Last lines of stdout/stderr (bounded). */
  log: string[];
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  stop(timeoutMs?: number): Promise<void>;
}

const live = new Set<Managed>();
const cleanups: Array<() => void | Promise<void>> = [];

/** True when `cmd` resolves on PATH. */
export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let tasksetOk: boolean | undefined;
/** Whether pinning is possible: taskset exists and the machine has at least `cpus` CPUs. */
export function canPin(cpus = 2): boolean {
  if (tasksetOk === undefined) tasksetOk = have('taskset');
  return tasksetOk && nproc() >= cpus;
}

export function nproc(): number {
  try {
    return Number(execFileSync('nproc', { encoding: 'utf8' }).trim()) || 1;
  } catch {
    return 1;
  }
}

/** Prefix for argv to pin a command to a CPU list (e.g. "1" or "0,1"); empty when cpu is undefined. */
export function pinPrefix(cpu: string | undefined): string[] {
  return cpu === undefined ? [] : ['taskset', '-c', cpu];
}

export interface StartOptions {
  cpu?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Keep at most this many log lines (default 400). */
  maxLog?: number;
}

/** Spawn a managed child in its own process group; it is killed on exit of this process. */
export function startProcess(name: string, cmd: string, args: string[], opts: StartOptions = {}): Managed {
  const argv = [...pinPrefix(opts.cpu), cmd, ...args];
  const spawnOpts: SpawnOptions = {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  };
  const child = spawn(argv[0]!, argv.slice(1), spawnOpts);
  const log: string[] = [];
  const max = opts.maxLog ?? 400;
  const keep = (b: Buffer) => {
    for (const line of b.toString().split('\n')) {
      if (!line.trim()) continue;
      log.push(`${name}: ${line}`);
      if (log.length > max) log.shift();
    }
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (e) => {
      log.push(`${name}: ${e.message}`);
      resolve();
    });
  });
  const m: Managed = {
    name,
    child,
    pid: child.pid ?? -1,
    log,
    exited,
    async stop(timeoutMs = 3000) {
      if (child.exitCode === null && child.signalCode === null) {
        signalGroup(m, 'SIGTERM');
        const t = setTimeout(() => signalGroup(m, 'SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(t);
      }
      // the group may still hold orphans (e.g. nginx workers after a killed master)
      signalGroup(m, 'SIGKILL');
      live.delete(m);
    },
  };
  live.add(m);
  return m;
}

function signalGroup(m: Managed, sig: NodeJS.Signals): void {
  if (m.pid <= 0) return;
  try {
    process.kill(-m.pid, sig);
  } catch {
    /* gone */
  }
}

/** Register a cleanup action (e.g. removing a temp dir); run before exit, after children are stopped. */
export function onCleanup(fn: () => void | Promise<void>): void {
  cleanups.push(fn);
}

let stopping: Promise<void> | undefined;
/** Stop every managed child and run cleanups. Concurrent and repeated calls share one run. */
export function stopAll(): Promise<void> {
  stopping ??= (async () => {
    await Promise.all([...live].map((m) => m.stop(2000)));
    while (cleanups.length) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch {
        /* best effort */
      }
    }
  })();
  return stopping;
}

/** True once stopAll() has begun (e.g. after Ctrl-C): errors from killed children are expected then. */
export function isStopping(): boolean {
  return stopping !== undefined;
}

let installed = false;
/** Kill children on exit, uncaught errors, SIGINT, SIGTERM and SIGHUP. */
export function installCleanupHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const m of live) {
      signalGroup(m, 'SIGKILL');
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: stopping child processes…\n`);
      stopAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    });
  }
  process.on('uncaughtException', (e) => {
    process.stderr.write(`${e?.stack ?? e}\n`);
    stopAll().finally(() => process.exit(1));
  });
  process.on('unhandledRejection', (e) => {
    process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
    stopAll().finally(() => process.exit(1));
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export { freePort } from '../../src/drill/ports.ts';

/** Wait until 127.0.0.1:port accepts connections, failing early if `proc` exits. */
export async function waitForPort(port: number, proc: Managed, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(
        `${proc.name} exited (${proc.child.exitCode ?? proc.child.signalCode}) before listening\n${proc.log.join('\n')}`,
      );
    }
    // Connected, and still open a moment later: Rempart's listenOn first binds a short-lived probe
    // listener on the port (to see whether another process holds it); a connection that landed on the
    // probe is reset when it closes, and the real listener is not up yet.
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        const timer = setTimeout(() => {
          s.destroy();
          resolve(true);
        }, 150);
        s.once('close', () => {
          clearTimeout(timer);
          resolve(false);
        });
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${proc.name} did not listen on ${port} within ${timeoutMs} ms\n${proc.log.join('\n')}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
