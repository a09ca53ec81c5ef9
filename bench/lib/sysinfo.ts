// Facts about the machine and the checkout, for benchmark reports.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { nproc } from './procs.ts';

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  node: string;
  kernel: string;
  loadavg: string;
}

export function machineInfo(): MachineInfo {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    /* not Linux */
  }
  return {
    nproc: nproc(),
    cpuModel,
    node: process.version,
    kernel: os.release(),
    loadavg: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
  };
}

/** Short commit of HEAD (with "+dirty" when the work tree has changes to tracked files), or "unknown". */
export function gitCommit(cwd: string): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    let dirty = false;
    try {
      execFileSync('git', ['diff', '--quiet', 'HEAD'], { cwd, stdio: 'ignore' });
    } catch {
      dirty = true;
    }
    return dirty ? `${head}+dirty` : head;
  } catch {
    return 'unknown';
  }
}
