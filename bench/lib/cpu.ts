// CPU accounting from /proc: utime+stime of a process (all its threads) and of its descendants.
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let tck: number | undefined;
/** Clock ticks per second (getconf CLK_TCK, normally 100). */
export function clockTicks(): number {
  if (tck === undefined) {
    try {
      tck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      tck = 100;
    }
  }
  return tck;
}

interface Stat {
  pid: number;
  ppid: number;
  utime: number;
  stime: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3]
  return { pid, ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]) };
}

/** CPU seconds (user + system) used so far by one process, or 0 if it is gone. */
export function processCpuSeconds(pid: number): number {
  const t = processCpu(pid);
  return t.user + t.sys;
}

/** User and system CPU seconds used so far by one process (all threads); zeros if it is gone. */
export function processCpu(pid: number): { user: number; sys: number } {
  const s = readStat(pid);
  return s ? { user: s.utime / clockTicks(), sys: s.stime / clockTicks() } : { user: 0, sys: 0 };
}

/** The pids of all live descendants of `root` (children, grandchildren, …). */
export function descendants(root: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (!s) continue;
    const list = byParent.get(s.ppid) ?? [];
    list.push(s.pid);
    byParent.set(s.ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    for (const c of byParent.get(stack.pop()!) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}

/** A CPU snapshot of a set of pids (each with its descendants), for before/after deltas. */
export interface CpuSnapshot {
  perPid: Map<number, { user: number; sys: number }>;
  at: number;
}

export function snapshot(roots: number[]): CpuSnapshot {
  const perPid = new Map<number, { user: number; sys: number }>();
  for (const r of roots) {
    for (const pid of [r, ...descendants(r)]) perPid.set(pid, processCpu(pid));
  }
  return { perPid, at: performance.now() };
}

/** CPU seconds used between two snapshots (pids that appeared later count from 0). */
export function cpuDelta(
  before: CpuSnapshot,
  after: CpuSnapshot,
): { cpuSeconds: number; userSeconds: number; sysSeconds: number; wallSeconds: number } {
  let user = 0;
  let sys = 0;
  for (const [pid, v] of after.perPid) {
    const b = before.perPid.get(pid) ?? { user: 0, sys: 0 };
    user += v.user - b.user;
    sys += v.sys - b.sys;
  }
  return { cpuSeconds: user + sys, userSeconds: user, sysSeconds: sys, wallSeconds: (after.at - before.at) / 1000 };
}

/** Per-CPU jiffies from /proc/stat: busy (everything but idle + iowait) and total, keyed by CPU index. */
export function cpuTimes(): Map<number, { busy: number; total: number }> {
  const out = new Map<number, { busy: number; total: number }>();
  let text = '';
  try {
    text = readFileSync('/proc/stat', 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is already in user)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    out.set(Number(m[1]), { busy: total - idle, total });
  }
  return out;
}

/** Busy share (0–1) of each CPU between two cpuTimes() readings. */
export function cpuBusy(
  before: Map<number, { busy: number; total: number }>,
  after: Map<number, { busy: number; total: number }>,
): Map<number, number> {
  const out = new Map<number, number>();
  for (const [cpu, a] of after) {
    const b = before.get(cpu);
    if (!b) continue;
    const dt = a.total - b.total;
    out.set(cpu, dt > 0 ? (a.busy - b.busy) / dt : 0);
  }
  return out;
}
